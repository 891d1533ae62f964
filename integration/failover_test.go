package integration

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cifha/cifha/internal/cluster"
	"github.com/cifha/cifha/internal/testutil"
	"github.com/jackc/pgx/v5"
)

type span struct{ start, end time.Time }

// startWriters pins one writer to each node: every 20 ms it inserts a row
// and records the interval of every write that was acknowledged. Only a
// writable primary acknowledges, so the intervals show who accepted writes
// when.
func startWriters(t *testing.T, c *cluster.Cluster) (stop func() map[string][]span) {
	t.Helper()
	done := make(chan struct{})
	var wg sync.WaitGroup
	var mu sync.Mutex
	acks := map[string][]span{}
	for _, n := range c.Nodes {
		wg.Add(1)
		go func(n *cluster.Node) {
			defer wg.Done()
			var conn *pgx.Conn
			defer func() {
				if conn != nil {
					conn.Close(context.Background())
				}
			}()
			for {
				select {
				case <-done:
					return
				case <-time.After(20 * time.Millisecond): // write pacing
				}
				ctx, cancel := context.WithTimeout(context.Background(), time.Second)
				if conn == nil {
					conn, _ = pgx.Connect(ctx, n.DSN()+" connect_timeout=1")
				}
				if conn != nil {
					start := time.Now()
					_, err := conn.Exec(ctx, "INSERT INTO fence_probe(node) VALUES ($1)", n.Name)
					if err == nil {
						mu.Lock()
						acks[n.Name] = append(acks[n.Name], span{start, time.Now()})
						mu.Unlock()
					} else {
						conn.Close(context.Background())
						conn = nil
					}
				}
				cancel()
			}
		}(n)
	}
	return func() map[string][]span {
		close(done)
		wg.Wait()
		mu.Lock()
		defer mu.Unlock()
		return acks
	}
}

// assertNoOverlap: for every two nodes, all acknowledged writes of one
// happened before all of the other's (never two writable primaries).
func assertNoOverlap(t *testing.T, acks map[string][]span) {
	t.Helper()
	type rng struct {
		name       string
		first, end time.Time
	}
	var rs []rng
	for name, ss := range acks {
		if len(ss) == 0 {
			continue
		}
		r := rng{name: name, first: ss[0].start, end: ss[0].end}
		for _, s := range ss {
			if s.start.Before(r.first) {
				r.first = s.start
			}
			if s.end.After(r.end) {
				r.end = s.end
			}
		}
		rs = append(rs, r)
	}
	sort.Slice(rs, func(i, j int) bool { return rs[i].first.Before(rs[j].first) })
	for i := 1; i < len(rs); i++ {
		if !rs[i-1].end.Before(rs[i].first) {
			t.Errorf("writes overlapped: %s acknowledged until %s, %s from %s", rs[i-1].name,
				rs[i-1].end.Format("15:04:05.000"), rs[i].name, rs[i].first.Format("15:04:05.000"))
		} else {
			t.Logf("%s stopped acknowledging %s before %s started", rs[i-1].name, rs[i].first.Sub(rs[i-1].end).Round(time.Millisecond), rs[i].name)
		}
	}
}

func exec1(t *testing.T, n *cluster.Node, sql string, args ...any) {
	t.Helper()
	ctx := ctxT(t, 10*time.Second)
	conn, err := n.Connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, sql, args...); err != nil {
		t.Fatalf("%s: %s: %v", n.Name, sql, err)
	}
}

func queryInt(t *testing.T, n *cluster.Node, sql string) int {
	t.Helper()
	v, err := queryIntE(n, sql)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func queryIntE(n *cluster.Node, sql string) (int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, err := n.Connect(ctx)
	if err != nil {
		return 0, err
	}
	defer conn.Close(ctx)
	var v int
	if err := conn.QueryRow(ctx, sql).Scan(&v); err != nil {
		return 0, fmt.Errorf("%s: %s: %w", n.Name, sql, err)
	}
	return v, nil
}

// rowsAtLeast returns a condition: sql's count on n reaches min.
func rowsAtLeast(n *cluster.Node, sql string, min int) func() error {
	return func() error {
		v, err := queryIntE(n, sql)
		if err != nil {
			return err
		}
		if v < min {
			return fmt.Errorf("%s: %d rows, want %d", n.Name, v, min)
		}
		return nil
	}
}

// waitWritable waits until some node other than old accepts a write and
// returns it.
func waitWritable(t *testing.T, c *cluster.Cluster, old *cluster.Node, timeout time.Duration) *cluster.Node {
	t.Helper()
	var got *cluster.Node
	testutil.Eventually(t, timeout, "a new primary accepts writes", func() error {
		for _, n := range c.Nodes {
			if n == old {
				continue
			}
			ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
			conn, err := pgx.Connect(ctx, n.DSN()+" connect_timeout=1")
			if err == nil {
				_, err = conn.Exec(ctx, "INSERT INTO fence_probe(node) VALUES ('probe')")
				conn.Close(ctx)
			}
			cancel()
			if err == nil {
				got = n
				return nil
			}
		}
		return fmt.Errorf("no writable node yet")
	})
	return got
}

// cutReplication makes the primary refuse replication connections and drops
// the current ones, so what it writes next reaches no standby.
func cutReplication(t *testing.T, p *cluster.Node) {
	t.Helper()
	hba := filepath.Join(p.DataDir, "pg_hba.conf")
	b, err := os.ReadFile(hba)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(hba, append([]byte("host replication all all reject\n"), b...), 0o600); err != nil {
		t.Fatal(err)
	}
	exec1(t, p, "SELECT pg_reload_conf()")
	testutil.Eventually(t, 10*time.Second, "walsenders gone", func() error {
		if _, err := queryIntE(p, "SELECT count(pg_terminate_backend(pid))::int FROM pg_stat_replication"); err != nil {
			return err
		}
		n, err := queryIntE(p, "SELECT count(*)::int FROM pg_stat_replication")
		if err == nil && n != 0 {
			err = fmt.Errorf("%d walsenders", n)
		}
		return err
	})
}

func others(c *cluster.Cluster, n *cluster.Node) []*cluster.Node {
	var out []*cluster.Node
	for _, m := range c.Nodes {
		if m != n {
			out = append(out, m)
		}
	}
	return out
}

func followsFrom(t *testing.T, n, leader *cluster.Node) error {
	code, body, err := n.API(ctxT(t, 5*time.Second), "/replica")
	if err != nil || code != 200 {
		return fmt.Errorf("%s /replica %d %v %s", n.Name, code, err, body)
	}
	b, err := os.ReadFile(filepath.Join(n.DataDir, "cifha.recovery.conf"))
	if err != nil || !strings.Contains(string(b), "cifha-target: "+leader.Name+" ") {
		return fmt.Errorf("%s does not follow %s: %s %v", n.Name, leader.Name, b, err)
	}
	return nil
}

// TestHostLossFailoverAndRewind: kill -9 the leader's agent and postmaster
// together after a row that no standby received; a standby is primary and
// accepts writes within ttl + 2 s and the survivor streams from it. The old
// node, restarted, is rewound (not re-cloned), loses the diverged row and
// streams from the new primary.
func TestHostLossFailoverAndRewind(t *testing.T) {
	c := newCluster(t, 3, nil)
	p := waitHealthy(t, c, 60*time.Second)
	exec1(t, p, "CREATE TABLE fence_probe (node text, at timestamptz DEFAULT clock_timestamp()); INSERT INTO fence_probe VALUES ('before')")
	for _, s := range others(c, p) {
		testutil.Eventually(t, 10*time.Second, s.Name+" has the row", rowsAtLeast(s, "SELECT count(*)::int FROM fence_probe", 1))
	}
	cutReplication(t, p)
	exec1(t, p, "INSERT INTO fence_probe VALUES ('diverged')")
	inode0 := inode(t, p.DataDir)
	p.KillHost()
	killed := time.Now()
	q := waitWritable(t, c, p, 3*c.Opt.TTL) // a deadline, not a speed target: benchmarks measure that
	t.Logf("%s accepted writes %s after the host loss", q.Name, time.Since(killed).Round(time.Millisecond))
	for _, s := range others(c, q) {
		if s == p {
			continue
		}
		testutil.Eventually(t, 15*time.Second, s.Name+" streams from "+q.Name, func() error { return followsFrom(t, s, q) })
	}

	// Rejoin.
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 30*time.Second, p.Name+" rejoins as a standby of "+q.Name, func() error { return followsFrom(t, p, q) })
	if n := queryInt(t, p, "SELECT count(*)::int FROM fence_probe WHERE node = 'diverged'"); n != 0 {
		t.Errorf("the diverged row survived on %s", p.Name)
	}
	if n := queryInt(t, p, "SELECT count(*)::int FROM fence_probe WHERE node = 'before'"); n != 1 {
		t.Errorf("committed row lost on %s", p.Name)
	}
	if !strings.Contains(p.Log(), "rewound; starting as standby") {
		t.Errorf("%s was not rewound", p.Name)
	}
	if inode(t, p.DataDir) != inode0 || strings.Contains(p.Log(), "cloning") {
		t.Errorf("%s was re-cloned, not rewound", p.Name)
	}
	out, code := cifhactl(t, c, "history")
	if code != 0 || !strings.Contains(out, p.Name) || !strings.Contains(out, q.Name) {
		t.Errorf("history exit %d:\n%s", code, out)
	}
}

// TestAgentDeathFencesPostgres: kill -9 only the leader's agent. Its
// postgres dies with it (parent-death signal), so it stops acknowledging
// writes before another node is promoted; a standby is promoted.
func TestAgentDeathFencesPostgres(t *testing.T) {
	c := newCluster(t, 3, nil)
	p := waitHealthy(t, c, 60*time.Second)
	exec1(t, p, "CREATE TABLE fence_probe (node text, at timestamptz DEFAULT clock_timestamp())")
	pm := p.PostmasterPID()
	stop := startWriters(t, c)
	testutil.Eventually(t, 10*time.Second, "writes flowing", rowsAtLeast(p, "SELECT count(*)::int FROM fence_probe", 5))
	p.Kill()
	q := waitWritable(t, c, p, 3*c.Opt.TTL)
	time.Sleep(300 * time.Millisecond) // let the writers record the new primary's acknowledgements
	acks := stop()
	assertNoOverlap(t, acks)
	if len(acks[q.Name]) == 0 {
		t.Errorf("no write acknowledged by the new primary %s", q.Name)
	}
	if syscall.Kill(pm, 0) == nil {
		t.Errorf("old postmaster %d still alive after its agent was killed", pm)
	}
}

// TestEtcdPartitionFencesLeader: cut the leader's link to etcd. It demotes
// before its lease expires, a standby is promoted, writes never overlap;
// once the link is back the old leader rejoins as a standby.
func TestEtcdPartitionFencesLeader(t *testing.T) {
	c := newCluster(t, 3, func(o *cluster.Options) { o.EtcdProxies = true })
	p := waitHealthy(t, c, 60*time.Second)
	exec1(t, p, "CREATE TABLE fence_probe (node text, at timestamptz DEFAULT clock_timestamp())")
	stop := startWriters(t, c)
	testutil.Eventually(t, 10*time.Second, "writes flowing", rowsAtLeast(p, "SELECT count(*)::int FROM fence_probe", 5))
	p.EtcdProxy.Cut()
	q := waitWritable(t, c, p, 3*c.Opt.TTL)
	time.Sleep(300 * time.Millisecond) // let the writers record the new primary's acknowledgements
	acks := stop()
	assertNoOverlap(t, acks)
	// Either path is a fence: the HA loop's plan, or the fencer's deadline
	// (which wins when the loop is itself stuck on an etcd call).
	// or the fence watchdog (when the agent itself is starved).
	if l := p.Log(); !strings.Contains(l, "action=fence") && !strings.Contains(l, "fencing: lease deadline reached") &&
		!strings.Contains(l, "fence watchdog: the agent did not renew in time") {
		t.Errorf("%s did not fence itself", p.Name)
	}
	p.EtcdProxy.Restore()
	testutil.Eventually(t, 30*time.Second, p.Name+" rejoins as a standby", func() error { return followsFrom(t, p, q) })
}

// TestCleanShutdownHandsOver: SIGTERM to the leader's agent stops postgres,
// releases the key, and a standby is primary within 2 s.
//
// The role-change hooks run on each node (in its working directory).
func TestCleanShutdownHandsOver(t *testing.T) {
	c := newCluster(t, 3, func(o *cluster.Options) {
		o.Extra = "[callbacks]\n" + `on_start = ["sh", "-c", "echo \"$0 $1 $2\" >> hooks.log"]` + "\n" +
			`on_stop = ["sh", "-c", "echo \"$0 $1 $2\" >> hooks.log"]` + "\n" +
			`on_role_change = ["sh", "-c", "echo \"$0 $1 $2\" >> hooks.log"]` + "\n"
	})
	p := waitHealthy(t, c, 60*time.Second)
	exec1(t, p, "CREATE TABLE fence_probe (node text, at timestamptz DEFAULT clock_timestamp())")
	start := time.Now()
	go p.Stop(30 * time.Second)
	// 2 s is the target (BenchmarkFailover measures it); the deadline
	// leaves room for a loaded machine.
	q := waitWritable(t, c, p, 5*time.Second)
	t.Logf("%s accepted writes %s after SIGTERM to %s", q.Name, time.Since(start).Round(time.Millisecond), p.Name)
	if err, _ := p.Wait(30 * time.Second); err != nil {
		t.Errorf("agent exit: %v", err)
	}
	hookLog := func(n *cluster.Node) string {
		b, _ := os.ReadFile(filepath.Join(n.Dir, "hooks.log"))
		return string(b)
	}
	testutil.Eventually(t, 10*time.Second, "hooks ran", func() error {
		want := map[*cluster.Node]string{
			p: "on_start primary it\non_stop primary it\n",
			q: "on_start replica it\non_role_change primary it\n",
		}
		for n, w := range want {
			if got := hookLog(n); got != w {
				return fmt.Errorf("%s hooks.log = %q, want %q", n.Name, got, w)
			}
		}
		return nil
	})
}

// TestHungAgentIsFenced: SIGSTOP the leader's agent (alive, not running:
// no goroutine of it can act). The fence watchdog, a separate process fed
// by the agent, stops its postgres before the lease can expire, so writes
// never overlap with the standby promoted after it; once resumed, the old
// leader rejoins as a standby.
func TestHungAgentIsFenced(t *testing.T) {
	c := newCluster(t, 3, nil)
	p := waitHealthy(t, c, 60*time.Second)
	exec1(t, p, "CREATE TABLE fence_probe (node text, at timestamptz DEFAULT clock_timestamp())")
	stop := startWriters(t, c)
	testutil.Eventually(t, 10*time.Second, "writes flowing", rowsAtLeast(p, "SELECT count(*)::int FROM fence_probe", 5))
	agentPID := p.PID()
	if err := syscall.Kill(agentPID, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	resumed := false
	resume := func() {
		if !resumed {
			syscall.Kill(agentPID, syscall.SIGCONT)
			resumed = true
		}
	}
	t.Cleanup(resume)
	q := waitWritable(t, c, p, 3*c.Opt.TTL)
	time.Sleep(300 * time.Millisecond) // let the writers record the new primary's acknowledgements
	acks := stop()
	assertNoOverlap(t, acks)
	resume()
	testutil.Eventually(t, 30*time.Second, p.Name+" rejoins as a standby", func() error { return followsFrom(t, p, q) })
}
