package integration

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cifha/cifha/internal/cluster"
	"github.com/cifha/cifha/internal/etcdcluster"
	"github.com/cifha/cifha/internal/testutil"
	"github.com/cifha/cifha/pkg/config"
)

// etcd3 starts a 3-member etcd cluster (separate processes) for one test.
func etcd3(t *testing.T) *etcdcluster.Cluster {
	t.Helper()
	root := testutil.Dir(t, "cifha-etcd3-")
	e, err := etcdcluster.Start(filepath.Join(binDir, "cifha-devetcd"), root, 3)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			for _, m := range e.Members {
				b, _ := os.ReadFile(filepath.Join(m.Dir, "etcd.log"))
				t.Logf("==== %s log ====\n%s", m.Name, tail(string(b), 15))
			}
		}
		e.Close()
	})
	return e
}

// TestOneEtcdMemberLostNoFailover is issue 10's acceptance 4 at CI scale:
// under a client's writes, the etcd leader member is killed, then a
// follower is frozen with SIGSTOP, then the (new) leader is cut off from its
// peers while clients still reach it, each for longer than the lease ttl.
// No failover, no demotion: the same primary, the same postmaster, writes
// continue. (Freezing the etcd *leader* for longer than the ttl is
// TestEtcdLeaderFrozenIsSafe: etcd itself then revokes every lease.)
func TestOneEtcdMemberLostNoFailover(t *testing.T) {
	e := etcd3(t)
	c := newClusterStartingFirst(t, 3, func(o *cluster.Options) {
		o.EtcdEndpoints = e.Endpoints()
		// From its last renewal a leader has ttl - margin - its renewal
		// interval (4.5 s at the default 7 s) for an etcd leader change,
		// which takes up to two election timeouts (2 s here, etcd's
		// default) and measured up to 3.9 s on a loaded machine. The
		// default held in every measured run (docs/benchmarks.md: 8 of 8;
		// ttl 6 fenced once in five, safe but not available). The suite
		// runs at 10 s so a slow CI machine does not turn that margin into
		// a spurious failure; CIFHA_ETCD_TTL=7s measures the default.
		o.TTL = max(config.DefaultTTL, 10*time.Second)
		o.LoopInterval = time.Second
		// CIFHA_ETCD_TTL tries another ttl (the smallest that holds is
		// the default's lower bound, docs/benchmarks.md).
		if d, err := time.ParseDuration(os.Getenv("CIFHA_ETCD_TTL")); err == nil && d >= 3*time.Second {
			o.TTL, o.LoopInterval = d, min(time.Second, d/3)
		}
		if os.Getenv("CIFHA_ETCD_FAILSAFE") != "" {
			o.Extra += "failsafe_mode = true\n"
		}
	})
	p := c.Nodes[0]
	ctx := ctxT(t, 3*time.Minute)
	pid := p.PostmasterPID()
	w, err := startClientWriter(ctx, c, p)
	if err != nil {
		t.Fatal(err)
	}
	w.waitRows(t, 10)
	faults := []struct {
		name          string
		pick          func(context.Context) (*etcdcluster.Member, error)
		inject, clear func(m *etcdcluster.Member)
	}{
		{"leader killed", e.Leader, func(m *etcdcluster.Member) { m.Kill() }, func(m *etcdcluster.Member) {
			if err := e.Restart(m); err != nil {
				t.Fatal(err)
			}
		}},
		{"follower frozen", e.Follower, func(m *etcdcluster.Member) { _ = m.Freeze() }, func(m *etcdcluster.Member) { _ = m.Thaw() }},
		{"leader isolated from its peers", e.Leader, e.Isolate, e.Heal},
	}
	for _, f := range faults {
		m, err := f.pick(ctx)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("etcd %s: %s", f.name, m.Name)
		f.inject(m)
		// Held for more than the ttl: 220 more acknowledged rows at one
		// every 50 ms take at least 11 s. CIFHA_ETCD_HOLD (a duration)
		// holds each fault longer, for the record in docs/benchmarks.md.
		rows, wait := 220, 60*time.Second
		if d, err := time.ParseDuration(os.Getenv("CIFHA_ETCD_HOLD")); err == nil && d > 0 {
			rows, wait = int(d/(50*time.Millisecond)), 2*d+time.Minute
			ctx = ctxT(t, 3*wait+3*time.Minute)
		}
		n := w.count() + rows
		testutil.Eventually(t, wait, fmt.Sprintf("writes continue with etcd member %s %s", m.Name, f.name), func() error {
			if got := w.count(); got < n {
				return fmt.Errorf("%d of %d rows", got, n)
			}
			return nil
		})
		f.clear(m)
		if err := e.WaitHealthy(30 * time.Second); err != nil {
			t.Fatal(err)
		}
	}
	gap := w.finish()
	t.Logf("longest write gap: %s", gap.Round(time.Millisecond))
	if q, err := c.Primary(ctx); err != nil || q != p {
		t.Fatalf("primary %v (%v), want %s: a failover happened", q, err, p.Name)
	}
	if got := p.PostmasterPID(); got != pid {
		t.Fatalf("postmaster %d, was %d: the primary was restarted or demoted", got, pid)
	}
	for _, n := range c.Nodes {
		for _, bad := range []string{"fencing", "plan: member=" + n.Name + " action=demote", "action=take-over"} {
			if strings.Contains(n.Log(), bad) {
				t.Errorf("%s's log has %q", n.Name, bad)
			}
		}
	}
	if gap > 3*time.Second {
		t.Errorf("writes stopped for %s", gap)
	}
	if lost, err := w.missing(ctx, p); err != nil || lost != 0 {
		t.Fatalf("%d acknowledged rows missing (%v)", lost, err)
	}
}

// TestEtcdLeaderFrozenIsSafe: the etcd leader is frozen (SIGSTOP) for longer
// than the lease ttl under writes, then resumed. etcd 3.7 then revokes
// every lease from the resumed member's stale lease table (its check for
// etcd #15247 passes once the process ticks again), which deletes the
// leader key early: agents must not trust a renewal answered by that
// member, and a leader whose key vanished stops writing before anyone can
// take the key. Whatever etcd does, there are never two writable primaries
// and no acknowledged row is lost.
func TestEtcdLeaderFrozenIsSafe(t *testing.T) {
	e := etcd3(t)
	c := newClusterStartingFirst(t, 3, func(o *cluster.Options) {
		o.EtcdEndpoints = e.Endpoints()
		o.TTL = 6 * time.Second
		o.LoopInterval = time.Second
	})
	p := c.Nodes[0]
	ctx := ctxT(t, 3*time.Minute)
	exec1(t, p, "CREATE TABLE fence_probe (node text)")
	writers := startWriters(t, c)
	w, err := startClientWriter(ctx, c, p)
	if err != nil {
		t.Fatal(err)
	}
	w.waitRows(t, 10)
	m, err := e.Leader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Freeze(); err != nil {
		t.Fatal(err)
	}
	n := w.count() + 160 // at least 8 s, more than the ttl
	testutil.Eventually(t, 60*time.Second, "writes continue with the etcd leader frozen", func() error {
		if got := w.count(); got < n {
			return fmt.Errorf("%d of %d rows", got, n)
		}
		return nil
	})
	_ = m.Thaw()
	if err := e.WaitHealthy(30 * time.Second); err != nil {
		t.Fatal(err)
	}
	thawed := time.Now()
	testutil.Eventually(t, 60*time.Second, "writes after the etcd leader resumed", func() error {
		if !w.ackedSince(thawed.Add(c.Opt.TTL)) {
			return fmt.Errorf("no acknowledged write since")
		}
		return nil
	})
	gap := w.finish()
	t.Logf("longest write gap: %s", gap.Round(time.Millisecond))
	assertNoOverlap(t, writers())
	var q *cluster.Node
	testutil.Eventually(t, 30*time.Second, "one primary", func() error {
		var err error
		q, err = c.Primary(ctx)
		return err
	})
	if lost, err := w.missing(ctx, q); err != nil || lost != 0 {
		t.Fatalf("%d acknowledged rows missing on %s (%v)", lost, q.Name, err)
	}
}
