package integration

import (
	"os/exec"
	"testing"
)

// TestAlertRules: deploy/prometheus's rules and scrape configuration are
// valid, and the rules' unit tests pass (promtool, installed by make test).
func TestAlertRules(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Fatal("promtool not found: run scripts/deps.sh (make test does)")
	}
	for _, args := range [][]string{
		{"check", "rules", "cifha-alerts.yml"},
		{"test", "rules", "cifha-alerts.test.yml"},
		{"check", "config", "prometheus.yml"},
	} {
		cmd := exec.Command(promtool, args...)
		cmd.Dir = "../deploy/prometheus"
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("promtool %v: %v\n%s", args, err, out)
		}
	}
}
