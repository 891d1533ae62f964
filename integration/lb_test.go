package integration

import (
	"bufio"
	"bytes"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cifha/cifha/internal/cluster"
	"github.com/cifha/cifha/internal/testutil"
)

// metricValue reads one sample of a metric from a member's /metrics
// (labels as written, e.g. `standby="db2"`); ok false when absent.
func metricValue(t *testing.T, n *cluster.Node, name, labels string) (float64, bool) {
	t.Helper()
	code, body, err := n.API(ctxT(t, 5*time.Second), "/metrics")
	if err != nil || code != 200 {
		t.Fatalf("GET %s/metrics: %d %v", n.Name, code, err)
	}
	sc := bufio.NewScanner(bytes.NewReader(body))
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name+"{") || !strings.Contains(line, labels) {
			continue
		}
		v, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
		return v, err == nil
	}
	return 0, false
}

// TestLoadBalancerEndpoints (issue 12, acceptance 4 and the idle half of
// 5), on a live 2-member cluster: /read-write, /read-only, /replica with
// and without ?lag=, /liveness and /readiness answer with Patroni's
// meanings on the primary and the standby; the standby's lag in seconds
// stays 0 on the idle cluster over several loops, the same in /metrics and
// `cifhactl status --json`; with replay paused under writes ?lag=1kB
// turns 503 and the lag in seconds grows, and both recover on resume.
func TestLoadBalancerEndpoints(t *testing.T) {
	c := newCluster(t, 2, nil)
	p := waitHealthy(t, c, 60*time.Second)
	s := others(c, p)[0]
	code := func(n *cluster.Node, path string) int {
		got, _, err := n.API(ctxT(t, 5*time.Second), path)
		if err != nil {
			return 0
		}
		return got
	}
	want := func(n *cluster.Node, paths map[string]int) {
		t.Helper()
		testutil.Eventually(t, 20*time.Second, n.Name+"'s endpoints", func() error {
			var bad []string
			for path, w := range paths {
				if got := code(n, path); got != w {
					bad = append(bad, fmt.Sprintf("%s %d (want %d)", path, got, w))
				}
			}
			if bad != nil {
				return fmt.Errorf("%s", strings.Join(bad, ", "))
			}
			return nil
		})
	}
	want(p, map[string]int{"/read-write": 200, "/primary": 200, "/read-only": 200, "/readiness": 200, "/liveness": 200,
		"/replica": 503, "/replica?lag=1MB": 503})
	want(s, map[string]int{"/read-write": 503, "/primary": 503, "/read-only": 200, "/readiness": 200, "/liveness": 200,
		"/replica": 200, "/replica?lag=1MB": 200, "/replica?lag=10s": 200, "/replica?lag=nonsense": 400})

	// Idle: 0 s of lag in /metrics and cifhactl status, over several loops.
	for i := 0; i < 5; i++ {
		testutil.Eventually(t, 10*time.Second, "lag seconds published", func() error {
			v, ok := metricValue(t, p, "cifha_replication_lag_seconds", `standby="`+s.Name+`"`)
			if !ok {
				return fmt.Errorf("cifha_replication_lag_seconds{standby=%q} absent", s.Name)
			}
			if v != 0 {
				t.Fatalf("idle cluster: %s's lag %v s, want 0", s.Name, v)
			}
			return nil
		})
		st, _ := statusJSON(t, c)
		for _, m := range st.Members {
			if m.Name == s.Name && (m.LagSeconds == nil || *m.LagSeconds != 0) {
				t.Fatalf("idle cluster: cifhactl status shows %s's lag seconds %v, want 0", s.Name, m.LagSeconds)
			}
		}
		time.Sleep(time.Second) // spans loop intervals (1 s): the point is that it stays 0 over time
	}

	// Replay paused under writes: behind in bytes and in seconds.
	exec1(t, s, "SELECT pg_wal_replay_pause()")
	exec1(t, p, "CREATE TABLE lb_probe (v text)")
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			case <-time.After(100 * time.Millisecond):
			}
			conn, err := p.Connect(ctxT(t, 5*time.Second))
			if err != nil {
				continue
			}
			_, _ = conn.Exec(ctxT(t, 5*time.Second), "INSERT INTO lb_probe SELECT repeat('x', 1000) FROM generate_series(1, 50)")
			conn.Close(ctxT(t, 5*time.Second))
		}
	}()
	want(s, map[string]int{"/replica?lag=1kB": 503, "/replica": 200})
	testutil.Eventually(t, 20*time.Second, "lag seconds grow while replay is paused", func() error {
		if v, ok := metricValue(t, p, "cifha_replication_lag_seconds", `standby="`+s.Name+`"`); !ok || v < 1 {
			return fmt.Errorf("lag %v s (present %v)", v, ok)
		}
		return nil
	})
	close(stop)
	<-done
	exec1(t, s, "SELECT pg_wal_replay_resume()")
	want(s, map[string]int{"/replica?lag=1kB": 200, "/replica?lag=1s": 200})
}
