package integration

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cifha/cifha/internal/testutil"
)

// TestPrometheusAlertsOnLag (issue 12, acceptance 5): a real Prometheus
// server (Debian's prometheus package; its service is not used) scrapes a
// 3-member cluster with the shipped rules, CifhaReplicationLagHigh's
// threshold lowered to 64 kB and its `for` to 3 s so that a test can
// cross it. With replay paused on a standby under writes the alert fires
// through Prometheus' HTTP API for that standby; after resume it clears.
func TestPrometheusAlertsOnLag(t *testing.T) {
	prom, err := exec.LookPath("prometheus")
	if err != nil {
		t.Fatal("prometheus not found: scripts/deps.sh installs it (make test does)")
	}
	c := newCluster(t, 3, nil)
	p := waitHealthy(t, c, 60*time.Second)
	s := others(c, p)[0]

	dir := testutil.Dir(t, "cifha-prom-")
	rules, err := os.ReadFile("../deploy/prometheus/cifha-alerts.yml")
	if err != nil {
		t.Fatal(err)
	}
	// Only CifhaReplicationLagHigh's threshold and duration change.
	lag := regexp.MustCompile(`(?s)(- alert: CifhaReplicationLagHigh\n.*?expr: .*?) > 16 \* 1024 \* 1024\n(\s*)for: 5m`)
	if !lag.Match(rules) {
		t.Fatal("CifhaReplicationLagHigh's expression or duration changed: update this test")
	}
	rules = lag.ReplaceAll(rules, []byte("$1 > 64 * 1024\n${2}for: 3s"))
	if err := os.WriteFile(filepath.Join(dir, "rules.yml"), rules, 0o644); err != nil {
		t.Fatal(err)
	}
	var targets []string
	for _, n := range c.Nodes {
		u, _ := url.Parse(n.APIURL)
		targets = append(targets, `"`+u.Host+`"`)
	}
	cfg := fmt.Sprintf(`global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files: [rules.yml]
scrape_configs:
  - job_name: cifha
    static_configs:
      - targets: [%s]
`, strings.Join(targets, ", "))
	if err := os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	cmd := exec.Command(prom, "--config.file="+filepath.Join(dir, "prometheus.yml"), "--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+addr)
	cmd.Dir = dir
	logf, _ := os.Create(filepath.Join(dir, "prometheus.log"))
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		logf.Close()
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(dir, "prometheus.log"))
			t.Logf("prometheus log:\n%s", tail(string(b), 40))
		}
	})
	api := func(path string, out any) error {
		resp, err := (&http.Client{Timeout: 3 * time.Second}).Get("http://" + addr + path)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if resp.StatusCode != 200 {
			return fmt.Errorf("%s: %s", path, resp.Status)
		}
		return json.NewDecoder(resp.Body).Decode(out)
	}
	type vector struct {
		Data struct {
			Result []struct {
				Metric map[string]string `json:"metric"`
				Value  []any             `json:"value"`
			} `json:"result"`
		} `json:"data"`
	}
	testutil.Eventually(t, 60*time.Second, "Prometheus scrapes all three agents", func() error {
		var v vector
		if err := api("/api/v1/query?query="+url.QueryEscape(`up{job="cifha"} == 1`), &v); err != nil {
			return err
		}
		if len(v.Data.Result) != 3 {
			return fmt.Errorf("%d targets up", len(v.Data.Result))
		}
		return nil
	})
	alert := func() (string, error) {
		var a struct {
			Data struct {
				Alerts []struct {
					Labels map[string]string `json:"labels"`
					State  string            `json:"state"`
				} `json:"alerts"`
			} `json:"data"`
		}
		if err := api("/api/v1/alerts", &a); err != nil {
			return "", err
		}
		for _, x := range a.Data.Alerts {
			if x.Labels["alertname"] == "CifhaReplicationLagHigh" && x.Labels["standby"] == s.Name {
				return x.State, nil
			}
		}
		return "", nil
	}
	if st, err := alert(); err != nil || st != "" {
		t.Fatalf("lag alert before any lag: %q %v", st, err)
	}

	exec1(t, s, "SELECT pg_wal_replay_pause()")
	exec1(t, p, "CREATE TABLE prom_probe (v text)")
	testutil.Eventually(t, 90*time.Second, "CifhaReplicationLagHigh fires for "+s.Name, func() error {
		conn, err := p.Connect(ctxT(t, 5*time.Second))
		if err == nil {
			_, _ = conn.Exec(ctxT(t, 5*time.Second), "INSERT INTO prom_probe SELECT repeat('x', 1000) FROM generate_series(1, 200)")
			conn.Close(ctxT(t, 5*time.Second))
		}
		st, err := alert()
		if err != nil {
			return err
		}
		if st != "firing" {
			return fmt.Errorf("alert state %q", st)
		}
		return nil
	})
	exec1(t, s, "SELECT pg_wal_replay_resume()")
	testutil.Eventually(t, 60*time.Second, "CifhaReplicationLagHigh clears", func() error {
		st, err := alert()
		if err != nil {
			return err
		}
		if st != "" {
			return fmt.Errorf("alert state %q", st)
		}
		return nil
	})
}
