package agent

import (
	"github.com/cifha/cifha/pkg/agent/agenttest"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/cifha/cifha/pkg/election"
)

// TestAlertRulesUseExistingMetrics: every cifha_* name in the shipped alert
// rules is one the agent exports (a renamed metric must not silently
// disable an alert).
func TestAlertRulesUseExistingMetrics(t *testing.T) {
	b, err := os.ReadFile("../../deploy/prometheus/cifha-alerts.yml")
	if err != nil {
		t.Fatal(err)
	}
	a := New(Options{Name: "db1", Cluster: "c", PG: &agenttest.Postgres{}, DCS: agenttest.NewDCS("db1", election.LeaseState{}), LoopInterval: time.Second})
	have := map[string]bool{"cifha_replication_lag_bytes": true, "cifha_wal_lsn_bytes": true,
		"cifha_loop_duration_seconds": true, "cifha_actions_total": true, "cifha_switchovers_total": true}
	for _, d := range stateDescs {
		have[d.name] = true
	}
	used := regexp.MustCompile(`cifha_[a-z_]+`).FindAllString(string(b), -1)
	if len(used) == 0 {
		t.Fatal("no cifha metric in the rules")
	}
	for _, n := range used {
		if !have[n] {
			t.Errorf("alert rules use %s, which the agent does not export", n)
		}
	}
	// Before the first observation only cifha_up is exported: unknown is
	// absent, never a healthy-looking 0 or 1.
	fams, err := a.metrics.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if strings.HasPrefix(f.GetName(), "cifha_") && f.GetName() != "cifha_up" &&
			f.GetName() != "cifha_loop_duration_seconds" && len(f.GetMetric()) > 0 {
			t.Errorf("%s exported before the first observation", f.GetName())
		}
		if f.GetName() == "cifha_up" && f.GetMetric()[0].GetGauge().GetValue() != 1 {
			t.Error("cifha_up is not 1")
		}
	}
}
