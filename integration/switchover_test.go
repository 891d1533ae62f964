package integration

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cifha/cifha/internal/cluster"
	"github.com/cifha/cifha/internal/testutil"
)

// controlCluster starts 3 nodes with the control API enabled and returns
// the cluster, the healthy primary and the token file.
func controlCluster(t *testing.T, mutate func(*cluster.Options)) (*cluster.Cluster, *cluster.Node, string) {
	t.Helper()
	var tokenFile string
	c := newCluster(t, 3, func(o *cluster.Options) {
		tokenFile = filepath.Join(o.Root, "secrets", "api.token")
		o.APIToken = "s3cret-token"
		if mutate != nil {
			mutate(o)
		}
	})
	p := waitHealthy(t, c, 60*time.Second)
	return c, p, tokenFile
}

func leaderName(t *testing.T, c *cluster.Cluster) string {
	t.Helper()
	st, _ := statusJSON(t, c)
	return st.Leader
}

// TestSwitchover is acceptance 1: a planned switchover under a client
// writing every 50 ms through a multi-host connection string loses no
// acknowledged row, the old leader follows the new one without pg_rewind,
// and there are never two primaries.
func TestSwitchover(t *testing.T) {
	c, p, tok := controlCluster(t, nil)
	ctx := ctxT(t, 3*time.Minute)
	cand := others(c, p)[0]
	exec1(t, p, "CREATE TABLE fence_probe (node text)")
	writers := startWriters(t, c)
	w, err := startClientWriter(ctx, c, p)
	if err != nil {
		t.Fatal(err)
	}
	w.waitRows(t, 20)
	// Metrics before: the leader leads and sees both standbys' lag.
	testutil.Eventually(t, 10*time.Second, "metrics before the switchover", func() error {
		if err := wantMetrics(t, p, map[string]float64{"cifha_is_leader": 1, "cifha_postgres_primary": 1, "cifha_cluster_has_leader": 1,
			"cifha_etcd_reachable": 1, "cifha_cluster_members": 3}); err != nil {
			return err
		}
		got, err := metricsOf(t, p)
		if err != nil {
			return err
		}
		for _, n := range others(c, p) {
			if _, ok := got["cifha_replication_lag_bytes{standby="+n.Name+"}"]; !ok {
				return fmt.Errorf("no lag series for %s", n.Name)
			}
		}
		return wantMetrics(t, cand, map[string]float64{"cifha_is_leader": 0, "cifha_postgres_streaming": 1, "cifha_postgres_primary": 0})
	})
	seen := watchPrimaries(t, c)
	requested := time.Now()
	out, code := cifhactl(t, c, "--token-file", tok, "switchover", "--to", cand.Name, "--force")
	if code != 0 {
		t.Fatalf("switchover: exit %d: %s\n%s", code, out, tail(p.Log(), 40))
	}
	t.Logf("cifhactl switchover: %s (took %s)", strings.TrimSpace(out), time.Since(requested).Round(time.Millisecond))
	testutil.Eventually(t, 20*time.Second, "client writes resume", func() error {
		if !w.ackedSince(time.Now().Add(-100 * time.Millisecond)) {
			return fmt.Errorf("no acknowledged write in the last 100 ms")
		}
		return nil
	})
	w.waitRows(t, w.count()+5) // a few more acknowledged rows after the switch
	gap := w.finish()
	t.Logf("write unavailability during switchover: %s", gap.Round(time.Millisecond))
	if gap > time.Second {
		t.Logf("client errors: %s", strings.Join(w.errs, "\n"))
	}
	assertNoOverlap(t, writers())
	if got := waitHealthy(t, c, 10*time.Second); got != cand {
		t.Fatalf("primary is %s, want %s", got.Name, cand.Name)
	}
	lost, err := w.missing(ctx, cand)
	if err != nil {
		t.Fatal(err)
	}
	if lost != 0 {
		t.Fatalf("%d acknowledged rows missing on the new primary", lost)
	}
	testutil.Eventually(t, 30*time.Second, "old leader streams from the new one", func() error { return followsFrom(t, p, cand) })
	if strings.Contains(p.Log(), "rewinding") {
		t.Fatalf("old leader was rewound:\n%s", tail(p.Log(), 40))
	}
	if s := seen(); len(s) != 2 {
		t.Fatalf("primaries seen: %v", s)
	}
	out, _ = cifhactl(t, c, "history", "--json")
	if !strings.Contains(out, "planned switchover from "+p.Name) {
		t.Fatalf("history lacks the switchover:\n%s", out)
	}
	testutil.Eventually(t, 10*time.Second, "metrics after the switchover", func() error {
		if err := wantMetrics(t, p, map[string]float64{"cifha_is_leader": 0, "cifha_postgres_streaming": 1, "cifha_switchovers_total{result=done}": 1}); err != nil {
			return err
		}
		return wantMetrics(t, cand, map[string]float64{"cifha_is_leader": 1, "cifha_postgres_primary": 1, "cifha_actions_total{action=promote}": 1})
	})
}

// TestSwitchoverRefusals is acceptance 2: each refusal names its reason and
// changes nothing.
func TestSwitchoverRefusals(t *testing.T) {
	c, p, tok := controlCluster(t, func(o *cluster.Options) {
		o.Extra = "maximum_lag_on_failover = \"64kB\"\n"
		o.NodeExtra = map[string]string{"db3": "[tags]\nnofailover = true\n"}
	})
	ctx := ctxT(t, 2*time.Minute)
	var standby *cluster.Node
	for _, n := range others(c, p) {
		if n.Name != "db3" {
			standby = n
		}
	}
	wrong := filepath.Join(t.TempDir(), "wrong")
	if err := os.WriteFile(wrong, []byte("nope"), 0o600); err != nil {
		t.Fatal(err)
	}
	refused := func(want string, args ...string) {
		t.Helper()
		out, code := cifhactl(t, c, args...)
		if code != 1 || !strings.Contains(out, want) {
			t.Fatalf("%v: exit %d, want 1 and %q in:\n%s", args, code, want, out)
		}
		if l := leaderName(t, c); l != p.Name {
			t.Fatalf("leader changed to %q after a refused switchover", l)
		}
	}
	sw := func(to string, extra ...string) []string {
		return append([]string{"--token-file", tok, "switchover", "--force", "--to", to}, extra...)
	}
	// Without --force it asks; anything but yes aborts and changes nothing.
	cmd := exec.Command(filepath.Join(binDir, "cifhactl"), "--endpoints", strings.Join(c.Opt.EtcdEndpoints, ","), "--cluster", c.Opt.Cluster,
		"--token-file", tok, "switchover", "--to", standby.Name)
	cmd.Stdin = strings.NewReader("n\n")
	out, err := cmd.CombinedOutput()
	if ee, isExit := err.(*exec.ExitError); !isExit || ee.ExitCode() != 1 || !strings.Contains(string(out), "[y/N]") || !strings.Contains(string(out), "aborted") {
		t.Fatalf("confirmation prompt: %v\n%s", err, out)
	}
	if l := leaderName(t, c); l != p.Name {
		t.Fatalf("leader changed to %q after an aborted switchover", l)
	}
	refused("not a member", sw("db9")...)
	refused("already the leader", sw(p.Name)...)
	if p.Name != "db3" {
		refused("nofailover", sw("db3")...)
	}
	refused("missing or wrong token", "--token-file", wrong, "switchover", "--force", "--to", standby.Name)
	if code, _, _ := postNoAuth(ctx, p.APIURL+"/switchover"); code != 401 {
		t.Fatalf("no token: HTTP %d", code)
	}
	// JSON answers carry the HTTP status.
	out2, code := cifhactl(t, c, append(sw("db9"), "--json")...)
	if code != 1 || !strings.Contains(out2, `"status": 409`) || !strings.Contains(out2, `"ok": false`) {
		t.Fatalf("--json refusal: exit %d:\n%s", code, out)
	}

	// Replay paused on the standby while the primary writes past the limit.
	exec1(t, standby, "SELECT pg_wal_replay_pause()")
	exec1(t, p, "CREATE TABLE filler AS SELECT g, repeat('x', 200) AS pad FROM generate_series(1, 5000) g")
	refused("replay paused", sw(standby.Name)...)
	exec1(t, standby, "SELECT pg_wal_replay_resume()")

	if out, code := cifhactl(t, c, "--token-file", tok, "pause"); code != 0 {
		t.Fatalf("pause: %d %s", code, out)
	}
	refused("paused", sw(standby.Name)...)
	if out, code := cifhactl(t, c, "--token-file", tok, "resume"); code != 0 {
		t.Fatalf("resume: %d %s", code, out)
	}
	st, _ := statusJSON(t, c)
	if st.Switchover != "" {
		t.Fatalf("a refused switchover left a request: %q", st.Switchover)
	}

	// Scheduled: pending in status, then cancelled; nothing happens.
	at := time.Now().Add(time.Hour).UTC().Format(time.RFC3339)
	if out, code := cifhactl(t, c, append(sw(standby.Name), "--at", at)...); code != 0 || !strings.Contains(out, "scheduled") {
		t.Fatalf("scheduled switchover: exit %d: %s", code, out)
	}
	if st, _ := statusJSON(t, c); !strings.Contains(st.Switchover, "to "+standby.Name+" at") {
		t.Fatalf("status does not show the pending switchover: %+v", st)
	}
	refused("already pending", sw(standby.Name)...)
	if out, code := cifhactl(t, c, "--token-file", tok, "switchover", "--cancel"); code != 0 || !strings.Contains(out, "cancelled") {
		t.Fatalf("cancel: exit %d: %s", code, out)
	}
	if st, _ := statusJSON(t, c); st.Switchover != "" || st.Leader != p.Name {
		t.Fatalf("after cancel: %+v", st)
	}
	tooFar := time.Now().Add(30 * 24 * time.Hour).UTC().Format(time.RFC3339)
	refused("more than", append(sw(standby.Name), "--at", tooFar)...)
}

// TestSwitchoverCandidateKilled is acceptance 3: the candidate is killed
// while the old leader waits for it to replay the shutdown checkpoint (its
// replay is held back by recovery_min_apply_delay so that "mid-way" is not a
// race). The old leader rolls back and is the one working primary; there are
// never two.
func TestSwitchoverCandidateKilled(t *testing.T) {
	var tok string
	c := newClusterStartingFirst(t, 3, func(o *cluster.Options) {
		tok = filepath.Join(o.Root, "secrets", "api.token")
		o.APIToken = "s3cret-token"
		o.Extra = "switchover_timeout = \"5s\"\n"
		o.NodeExtra = map[string]string{"db2": "[postgres.parameters]\nrecovery_min_apply_delay = \"30s\"\n"}
	})
	p, cand := c.Nodes[0], c.Nodes[1]
	ctx := ctxT(t, 2*time.Minute)
	exec1(t, p, "CREATE TABLE fence_probe (node text)")
	writers := startWriters(t, c)
	w, err := startClientWriter(ctx, c, p)
	if err != nil {
		t.Fatal(err)
	}
	w.waitRows(t, 10)
	done := make(chan string, 1)
	go func() {
		out, code := cifhactl(t, c, "--token-file", tok, "switchover", "--force", "--to", cand.Name)
		done <- fmt.Sprintf("exit %d: %s", code, out)
	}()
	testutil.Eventually(t, 20*time.Second, "old leader waits for the candidate", func() error {
		if !strings.Contains(p.Log(), "waiting for the candidate to replay") {
			return fmt.Errorf("not yet")
		}
		return nil
	})
	cand.KillHost()
	res := <-done
	t.Logf("candidate killed; cifhactl: %s", res)
	if !strings.HasPrefix(res, "exit 1") || !strings.Contains(res, "resumed as primary") {
		t.Fatalf("cifhactl: %s", res)
	}
	testutil.Eventually(t, 30*time.Second, "old leader writable again", func() error {
		if !w.ackedSince(time.Now().Add(-200 * time.Millisecond)) {
			return fmt.Errorf("no recent acknowledged write")
		}
		return nil
	})
	gap := w.finish()
	t.Logf("write unavailability: %s", gap.Round(time.Millisecond))
	assertNoOverlap(t, writers())
	if got, err := c.Primary(ctx); err != nil || got != p {
		t.Fatalf("primary %v, %v; want %s", got, err, p.Name)
	}
	if lost, err := w.missing(ctx, p); err != nil || lost != 0 {
		t.Fatalf("%d acknowledged rows missing (%v)", lost, err)
	}
}

// TestManualFailover: with the only standby tagged nofailover, losing the
// primary leaves no leader; `cifhactl failover --to` promotes it anyway. It is
// refused while a leader holds the key.
func TestManualFailover(t *testing.T) {
	var tok string
	c := newClusterStartingFirst(t, 2, func(o *cluster.Options) {
		tok = filepath.Join(o.Root, "secrets", "api.token")
		o.APIToken = "s3cret-token"
		o.NodeExtra = map[string]string{"db2": "[tags]\nnofailover = true\n"}
	})
	p, s := c.Nodes[0], c.Nodes[1]
	if out, code := cifhactl(t, c, "--token-file", tok, "failover", "--force", "--to", s.Name); code != 1 || !strings.Contains(out, "use switchover") {
		t.Fatalf("failover with a leader: exit %d: %s", code, out)
	}
	exec1(t, p, "CREATE TABLE before_failover (id int)")
	testutil.Eventually(t, 10*time.Second, "standby has the table", rowsAtLeast(s, "SELECT count(*) FROM pg_class WHERE relname = 'before_failover'", 1))
	p.KillHost()
	testutil.Eventually(t, 3*c.Opt.TTL+5*time.Second, "no leader, standby waits", func() error {
		st, _ := statusJSON(t, c)
		if st.Leader != "" {
			return fmt.Errorf("leader %s", st.Leader)
		}
		for _, m := range st.Members {
			if m.Name == s.Name && strings.Contains(m.Reason, "nofailover") {
				return nil
			}
		}
		return fmt.Errorf("standby does not say it waits for nofailover: %+v", st.Members)
	})
	out, code := cifhactl(t, c, "--token-file", tok, "failover", "--force", "--to", s.Name, "--json")
	if code != 0 || !strings.Contains(out, `"ok": true`) {
		t.Fatalf("failover: exit %d: %s\n%s", code, out, tail(s.Log(), 30))
	}
	exec1(t, s, "CREATE TABLE after_failover (id int)")
	// The new leader records the change after its post-promotion
	// checkpoint, a moment after it answers.
	testutil.Eventually(t, 10*time.Second, "history records the manual failover", func() error {
		out, _ = cifhactl(t, c, "history")
		if !strings.Contains(out, "manual failover") {
			return fmt.Errorf("history:\n%s", out)
		}
		return nil
	})
	st, _ := statusJSON(t, c)
	if st.Leader != s.Name {
		t.Fatalf("leader %q", st.Leader)
	}
}
