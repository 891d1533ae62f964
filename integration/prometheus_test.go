package integration

import (
	"os"
	"os/exec"
	"regexp"
	"strings"
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
		{"test", "rules", "cifha-alerts.test.yml", "cifha-alerts.long.test.yml"},
		{"check", "config", "prometheus.yml"},
	} {
		cmd := exec.Command(promtool, args...)
		cmd.Dir = "../deploy/prometheus"
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("promtool %v: %v\n%s", args, err, out)
		}
	}
}

// TestEveryAlertHasAFiringCase: each rule of cifha-alerts.yml has a promtool
// case in which it fires (expected labels), not only cases where it stays
// quiet.
func TestEveryAlertHasAFiringCase(t *testing.T) {
	rules, err := os.ReadFile("../deploy/prometheus/cifha-alerts.yml")
	if err != nil {
		t.Fatal(err)
	}
	var cases string
	for _, f := range []string{"cifha-alerts.test.yml", "cifha-alerts.long.test.yml"} {
		b, err := os.ReadFile("../deploy/prometheus/" + f)
		if err != nil {
			t.Fatal(err)
		}
		cases += string(b)
	}
	firing := map[string]bool{}
	// A case: "alertname: X" up to the next "alertname:"; it fires when
	// it expects labels.
	parts := strings.Split(cases, "alertname:")
	for _, p := range parts[1:] {
		name := strings.Fields(strings.Trim(p, " ,"))[0]
		name = strings.Trim(name, ",}")
		if strings.Contains(p, "exp_labels") {
			firing[name] = true
		}
	}
	alerts := regexp.MustCompile(`(?m)^\s*- alert:\s*(\S+)`).FindAllStringSubmatch(string(rules), -1)
	if len(alerts) < 10 {
		t.Fatalf("found %d alerts in cifha-alerts.yml", len(alerts))
	}
	for _, m := range alerts {
		if !firing[m[1]] {
			t.Errorf("alert %s has no promtool case in which it fires", m[1])
		}
	}
}
