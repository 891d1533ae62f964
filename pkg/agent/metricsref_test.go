package agent

import (
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/cifha/cifha/pkg/agent/agenttest"
	"github.com/cifha/cifha/pkg/election"
	"github.com/cifha/cifha/pkg/ha"
	dto "github.com/prometheus/client_model/go"
)

type okWatchdog struct{}

func (okWatchdog) Arm(int, time.Time, time.Duration) error { return nil }
func (okWatchdog) Disarm()                                 {}
func (okWatchdog) Err() string                             { return "" }

// metricsReference is docs/metrics.md as the agent's registry describes
// it: every cifha_* metric with its type, labels and help, gathered from
// an agent whose snapshot has everything a metric can show.
func metricsReference(t *testing.T) string {
	t.Helper()
	a := New(Options{Name: "db1", Cluster: "cif", PG: &agenttest.Postgres{Up: true}, DCS: agenttest.NewDCS("db1", election.LeaseState{}),
		LoopInterval: time.Second, Watchdog: okWatchdog{}})
	a.metrics.loop.Observe(0.01)
	a.metrics.actions.WithLabelValues("promote").Inc()
	a.metrics.switchovs.WithLabelValues("done").Inc()
	half := 0.5
	a.snap.Store(&Snapshot{Member: election.Member{Name: "db1", Role: "primary", State: "running", Timeline: 2, CurrentLSN: "0/5000",
		ReceiveLSN: "0/5000", ReplayLSN: "0/5000", PendingRestart: []string{"shared_buffers"},
		Replicas: []election.ReplicaLag{{Name: "db2", LagBytes: 10, LagSeconds: &half}}},
		Cluster:  election.Cluster{Leader: &election.Leader{Name: "db1", Valid: true}, Members: map[string]election.Member{"db1": {}}},
		IsLeader: true, Running: true, Lease: election.LeaseState{ID: 1, ValidUntil: time.Now().Add(time.Hour)}, ObservedAt: time.Now(),
		Sync: ha.SyncConfig{On: true}, Archiver: &Archiver{On: true, Archived: 1, LastArchivedAt: time.Now()}})
	fams, err := a.metrics.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	b.WriteString(`# Metrics

Every agent serves these at ` + "`GET /metrics`" + ` on its API address (open like
` + "`/health`" + `, or behind the token with ` + "`api.protect_reads`" + `), besides Go's and the
process's standard ` + "`go_*`" + ` and ` + "`process_*`" + `. Each carries the labels ` + "`cluster`" + ` and
` + "`member`" + `. The state gauges are computed from the HA loop's last observation
when Prometheus scrapes, so a scrape never queries postgres or etcd; until
the first observation they are absent (unknown is never a healthy-looking
0 or 1). Alert rules: deploy/prometheus/cifha-alerts.yml
([operations.md](operations.md#metrics-and-alerts)).

Generated from the agent's registry by ` + "`make docs`" + `; ` + "`TestMetricsReference`" + ` fails
when a metric is missing here or no longer exists.

| metric | type | labels | meaning |
|---|---|---|---|
`)
	sort.Slice(fams, func(i, j int) bool { return fams[i].GetName() < fams[j].GetName() })
	for _, f := range fams {
		if !strings.HasPrefix(f.GetName(), "cifha_") {
			continue
		}
		var labels []string
		if len(f.GetMetric()) > 0 {
			for _, l := range f.GetMetric()[0].GetLabel() {
				if l.GetName() != "cluster" && l.GetName() != "member" {
					labels = append(labels, "`"+l.GetName()+"`")
				}
			}
		}
		fmt.Fprintf(&b, "| `%s` | %s | %s | %s |\n", f.GetName(), strings.ToLower(dto.MetricType_name[int32(f.GetType())]),
			strings.Join(labels, ", "), strings.ReplaceAll(f.GetHelp(), "|", "\\|"))
	}
	// Every metric the agent can export must have shown up.
	got := b.String()
	for _, d := range stateDescs {
		if !strings.Contains(got, "`"+d.name+"`") {
			t.Fatalf("%s did not show in the populated snapshot: extend metricsReference", d.name)
		}
	}
	for _, n := range []string{"cifha_replication_lag_bytes", "cifha_replication_lag_seconds", "cifha_wal_lsn_bytes", "cifha_loop_duration_seconds", "cifha_actions_total", "cifha_switchovers_total"} {
		if !strings.Contains(got, "`"+n+"`") {
			t.Fatalf("%s missing", n)
		}
	}
	return got
}

// TestMetricsReference: docs/metrics.md lists every metric the agent
// exports, as its registry describes them (UPDATE_METRICSREF=1 rewrites it:
// make docs).
func TestMetricsReference(t *testing.T) {
	got := metricsReference(t)
	if os.Getenv("UPDATE_METRICSREF") == "1" {
		if err := os.WriteFile("../../docs/metrics.md", []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile("../../docs/metrics.md")
	if err != nil {
		t.Fatal(err)
	}
	if string(want) != got {
		t.Fatal("docs/metrics.md is out of date with the agent's metrics: run make docs")
	}
}

// TestGrafanaDashboardUsesExistingMetrics: every cifha_* metric in
// deploy/grafana/cifha-dashboard.json is one the agent exports (a
// histogram's _bucket/_sum/_count series count as its name), and the file
// is valid JSON with panels.
func TestGrafanaDashboardUsesExistingMetrics(t *testing.T) {
	b, err := os.ReadFile("../../deploy/grafana/cifha-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatal(err)
	}
	ref := metricsReference(t)
	n := 0
	for _, p := range d.Panels {
		for _, tg := range p.Targets {
			for _, m := range regexp.MustCompile(`cifha_[a-z_]+`).FindAllString(tg.Expr, -1) {
				n++
				base := m
				for _, suf := range []string{"_bucket", "_sum", "_count"} {
					if strings.HasSuffix(m, suf) && strings.Contains(ref, "`"+strings.TrimSuffix(m, suf)+"` | histogram") {
						base = strings.TrimSuffix(m, suf)
					}
				}
				if !strings.Contains(ref, "`"+base+"`") {
					t.Errorf("panel %q uses %s, which the agent does not export", p.Title, m)
				}
			}
		}
	}
	if n < 10 {
		t.Fatalf("only %d metric uses in the dashboard", n)
	}
}
