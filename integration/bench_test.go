package integration

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cifha/cifha/internal/cluster"
	"github.com/cifha/cifha/internal/devetcd"
	"github.com/cifha/cifha/internal/testutil"
	"github.com/cifha/cifha/pkg/config"
)

// benchRuns is how many times each scenario runs; run the benchmarks with
// -benchtime 1x (make bench does).
const benchRuns = 5

// BenchmarkBootstrap3: from nothing (empty etcd, empty data dirs) to one
// primary and two streaming standbys.
func BenchmarkBootstrap3(b *testing.B) {
	var secs []float64
	for i := 0; i < benchRuns; i++ {
		b.StopTimer()
		c, cleanup := benchCluster(b, 3)
		b.StartTimer()
		start := time.Now()
		if err := c.Start(); err != nil {
			b.Fatal(err)
		}
		waitHealthyB(b, c, 60*time.Second)
		secs = append(secs, time.Since(start).Seconds())
		b.StopTimer()
		cleanup()
	}
	report(b, secs, "s/bootstrap")
}

// BenchmarkStatus: wall time of `cifhactl status` (a process start, an etcd
// read and three API calls) against a healthy 3-node cluster.
func BenchmarkStatus(b *testing.B) {
	c, cleanup := benchCluster(b, 3)
	defer cleanup()
	if err := c.Start(); err != nil {
		b.Fatal(err)
	}
	waitHealthyB(b, c, 60*time.Second)
	tt := &testing.T{}
	var ms []float64
	b.ResetTimer()
	for i := 0; i < 50; i++ {
		start := time.Now()
		if _, code := cifhactl(tt, c, "status"); code != 0 {
			b.Fatalf("status exit %d", code)
		}
		ms = append(ms, float64(time.Since(start).Microseconds())/1000)
	}
	report(b, ms, "ms/status")
}

// BenchmarkIdleAgent: CPU and memory of one idle agent (the leader's, then
// a standby's) with the default 1 s loop and ttl 10 s. "Idle" means settled:
// the window starts settle after the cluster is healthy (slots created, first
// publications made, the agents in their idle loop), and CPU is the time
// the process's threads spent on a CPU (/proc/PID/task/*/schedstat, ns)
// rather than clock ticks, which round a 0.2 % load to 0 or 1 tick a second.
// Memory is reported as RSS and split into private (anonymous) pages and
// pages of the executable mapped from the page cache (shared, clean).
func BenchmarkIdleAgent(b *testing.B) {
	c, cleanup := benchCluster(b, 3, func(o *cluster.Options) { o.TTL, o.LoopInterval = 10*time.Second, time.Second })
	defer cleanup()
	if err := c.Start(); err != nil {
		b.Fatal(err)
	}
	p := waitHealthyB(b, c, 60*time.Second)
	var s *cluster.Node
	for _, n := range c.Nodes {
		if n != p {
			s = n
		}
	}
	window, settle := 60*time.Second, 15*time.Second
	if v := os.Getenv("CIFHA_IDLE_WINDOW"); v != "" {
		window, _ = time.ParseDuration(v)
	}
	time.Sleep(settle) // the settling time itself, not synchronisation
	b.ResetTimer()
	for _, n := range []*cluster.Node{p, s} {
		cpu0, sw0 := schedNanos(b, n.PID())
		time.Sleep(window) // the measurement window itself, not synchronisation
		cpu1, sw1 := schedNanos(b, n.PID())
		role := "leader"
		if n == s {
			role = "standby"
		}
		mem := memKB(b, n.PID())
		b.ReportMetric(float64(mem["VmRSS"])/1024, "MiB-rss-"+role)
		b.ReportMetric(float64(mem["RssAnon"])/1024, "MiB-anon-"+role)
		b.ReportMetric(float64(mem["RssFile"])/1024, "MiB-file-"+role)
		b.ReportMetric(100*float64(cpu1-cpu0)/float64(window.Nanoseconds()), "%cpu-"+role)
		b.ReportMetric(float64(sw1-sw0)/window.Seconds(), "wakeups/s-"+role)
	}
}

// schedNanos sums, over the process's threads, the time spent on a CPU and
// the number of times each was scheduled in (/proc/PID/task/TID/schedstat).
func schedNanos(b *testing.B, pid int) (cpu, switches int64) {
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		b.Fatal(err)
	}
	for _, t := range tasks {
		st, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/schedstat", pid, t.Name()))
		if err != nil {
			continue // the thread exited meanwhile
		}
		f := strings.Fields(string(st))
		if len(f) < 3 {
			b.Fatalf("schedstat: %q", st)
		}
		ns, _ := strconv.ParseInt(f[0], 10, 64)
		n, _ := strconv.ParseInt(f[2], 10, 64)
		cpu, switches = cpu+ns, switches+n
	}
	return cpu, switches
}

// memKB returns the kB fields of /proc/PID/status (VmRSS, RssAnon, RssFile, ...).
func memKB(b *testing.B, pid int) map[string]int64 {
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatal(err)
	}
	m := map[string]int64{}
	for _, l := range strings.Split(string(st), "\n") {
		k, v, ok := strings.Cut(l, ":")
		if f := strings.Fields(v); ok && len(f) == 2 && f[1] == "kB" {
			m[k], _ = strconv.ParseInt(f[0], 10, 64)
		}
	}
	return m
}

func report(b *testing.B, xs []float64, unit string) {
	sort.Float64s(xs)
	b.ReportMetric(xs[len(xs)/2], "median-"+unit)
	b.ReportMetric(xs[0], "min-"+unit)
	b.ReportMetric(xs[len(xs)-1], "max-"+unit)
	b.Logf("%s over %d runs on %d cores: %v", unit, len(xs), runtime.NumCPU(), xs)
}

// benchCluster is newCluster for benchmarks: not started, with an explicit cleanup.
func benchCluster(b *testing.B, n int, mutate ...func(*cluster.Options)) (*cluster.Cluster, func()) {
	b.Helper()
	ep := benchEtcd(b)
	root, err := mkdirPG("cifha-bench-")
	if err != nil {
		b.Fatal(err)
	}
	opt := cluster.Options{BinDir: binDir, Root: root, EtcdEndpoints: []string{ep.Endpoint}, Cluster: "bench"}
	for i := 0; i < n; i++ {
		opt.Addrs = append(opt.Addrs, fmt.Sprintf("127.0.0.%d", 11+i))
	}
	for _, m := range mutate {
		m(&opt)
	}
	c, err := cluster.New(opt)
	if err != nil {
		b.Fatal(err)
	}
	return c, func() {
		if b.Failed() {
			for _, n := range c.Nodes {
				b.Logf("==== %s ====\n%s", n.Name, tail(n.Log(), 40))
			}
		}
		c.Close(15 * time.Second)
		ep.Close()
		os.RemoveAll(root)
	}
}

func waitHealthyB(b *testing.B, c *cluster.Cluster, timeout time.Duration) *cluster.Node {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if p, err := healthy(c); err == nil {
			return p
		}
		time.Sleep(20 * time.Millisecond) // poll interval within the deadline
	}
	b.Fatal("cluster not healthy")
	return nil
}

func benchEtcd(b *testing.B) *devetcd.Server {
	dir, err := os.MkdirTemp("", "cifha-bench-etcd-")
	if err != nil {
		b.Fatal(err)
	}
	s, err := devetcd.Start(dir, "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { os.RemoveAll(dir) })
	return s
}

func mkdirPG(pattern string) (string, error) { return testutil.MkdirForPostgres(pattern) }

// BenchmarkFailover measures write unavailability as a client sees it: one
// writer inserting every 50 ms through a libpq multi-host connection string
// with target_session_attrs=read-write, across three scenarios, and counts
// acknowledged rows missing on the new primary (asynchronous replication).
func BenchmarkFailover(b *testing.B) {
	scenarios := []struct {
		name  string
		ttl   time.Duration
		event func(p *cluster.Node)
	}{
		{"host-loss-default", config.DefaultTTL, func(p *cluster.Node) { p.KillHost() }},
		{"host-loss-ttl3", 3 * time.Second, func(p *cluster.Node) { p.KillHost() }},
		{"clean-shutdown-default", config.DefaultTTL, func(p *cluster.Node) { go p.Stop(30 * time.Second) }},
	}
	for _, sc := range scenarios {
		b.Run(sc.name, func(b *testing.B) {
			var gaps, rejoins []float64
			lost := 0
			for i := 0; i < benchRuns; i++ {
				gap, l, rejoin := failoverRun(b, sc.ttl, sc.event)
				gaps = append(gaps, gap.Seconds())
				if rejoin > 0 {
					rejoins = append(rejoins, rejoin.Seconds())
				}
				lost += l
			}
			report(b, gaps, "s-unavailable")
			b.ReportMetric(float64(lost), "acked-rows-lost-total")
			if len(rejoins) > 0 {
				report(b, rejoins, "s-rejoin")
				b.ReportMetric(slices.Max(rejoins), "s-rejoin-max")
			}
		})
	}
}

func failoverRun(b *testing.B, ttl time.Duration, event func(*cluster.Node)) (time.Duration, int, time.Duration) {
	loop := time.Second
	if ttl < 6*time.Second {
		loop = 500 * time.Millisecond
	}
	c, cleanup := benchCluster(b, 3, func(o *cluster.Options) { o.TTL, o.LoopInterval = ttl, loop })
	defer cleanup()
	if err := c.Start(); err != nil {
		b.Fatal(err)
	}
	p := waitHealthyB(b, c, 60*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	w := benchWriter(b, ctx, c, p)
	event(p)
	gap, lost, q := awaitResumed(b, ctx, c, w, time.Now(), 3*ttl+20*time.Second)
	b.Logf("unavailable %s, %d acknowledged rows lost, new primary %s", gap.Round(time.Millisecond), lost, q.Name)
	// Rejoin: the lost host comes back (its agent starts again); the time
	// until it streams from the new primary (pg_rewind included).
	var rejoin time.Duration
	if !p.Running() {
		start := time.Now()
		if err := p.Start(); err != nil {
			b.Fatal(err)
		}
		for time.Since(start) < 60*time.Second {
			if code, body, err := p.API(ctx, "/replica"); err == nil && code == 200 && len(body) > 0 {
				rejoin = time.Since(start)
				break
			}
			time.Sleep(20 * time.Millisecond) // poll interval within the deadline
		}
		if rejoin == 0 {
			b.Fatalf("%s did not rejoin within 60 s:\n%s", p.Name, p.Log())
		}
		b.Logf("old primary %s streams again after %s", p.Name, rejoin.Round(time.Millisecond))
	}
	return gap, lost, rejoin
}

// benchWriter starts a client writer and waits for 20 acknowledged rows.
func benchWriter(b *testing.B, ctx context.Context, c *cluster.Cluster, p *cluster.Node) *clientWriter {
	w, err := startClientWriter(ctx, c, p)
	if err != nil {
		b.Fatal(err)
	}
	for w.count() < 20 {
		if ctx.Err() != nil {
			b.Fatal("writer did not start")
		}
		time.Sleep(50 * time.Millisecond) // poll interval within ctx's deadline
	}
	return w
}

// awaitResumed waits until writes were acknowledged for a second after the
// event, then returns the longest gap, the acknowledged rows missing on the
// primary, and the primary.
func awaitResumed(b *testing.B, ctx context.Context, c *cluster.Cluster, w *clientWriter, eventAt time.Time, within time.Duration) (time.Duration, int, *cluster.Node) {
	deadline := eventAt.Add(within)
	var resumed time.Time
	for time.Now().Before(deadline) {
		// 100 ms after the event: an insert in flight when the host was
		// lost can still be acknowledged just after it (the same grace
		// as the checker's).
		if resumed.IsZero() && w.ackedSince(eventAt.Add(100*time.Millisecond)) {
			resumed = time.Now()
		}
		if !resumed.IsZero() && time.Since(resumed) > time.Second {
			break
		}
		time.Sleep(50 * time.Millisecond) // poll interval within the deadline
	}
	gap := w.finish()
	if resumed.IsZero() {
		b.Fatalf("writes never resumed")
	}
	q, err := c.Primary(ctx)
	if err != nil {
		b.Fatal(err)
	}
	lost, err := w.missing(ctx, q)
	if err != nil {
		b.Fatal(err)
	}
	return gap, lost, q
}

// BenchmarkSwitchover: write unavailability of `cifhactl switchover` as the
// client writing every 50 ms through a multi-host connection string sees
// it, and acknowledged rows missing on the new primary (must be 0). The
// switchover alternates between two members of one cluster.
func BenchmarkSwitchover(b *testing.B) {
	c, cleanup, tok := benchControlCluster(b)
	defer cleanup()
	p := waitHealthyB(b, c, 60*time.Second)
	tt := &testing.T{}
	var gaps, cmd []float64
	lost := 0
	for i := 0; i < 2*benchRuns; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		w := benchWriter(b, ctx, c, p)
		var to *cluster.Node
		for _, n := range c.Nodes {
			if n != p {
				to = n
				break
			}
		}
		start := time.Now()
		out, code := cifhactl(tt, c, "--token-file", tok, "switchover", "--force", "--to", to.Name)
		if code != 0 {
			cancel()
			b.Fatalf("switchover: exit %d: %s", code, out)
		}
		cmd = append(cmd, time.Since(start).Seconds())
		gap, l, q := awaitResumed(b, ctx, c, w, start, 30*time.Second)
		cancel()
		if q != to {
			b.Fatalf("primary is %s, want %s", q.Name, to.Name)
		}
		b.Logf("switchover %s -> %s: unavailable %s, %d acknowledged rows lost", p.Name, to.Name, gap.Round(time.Millisecond), l)
		if gap > time.Second {
			b.Logf("client errors around it:\n%s", strings.Join(w.errs, "\n"))
		}
		gaps = append(gaps, gap.Seconds())
		lost += l
		p = waitHealthyB(b, c, 60*time.Second)
	}
	report(b, gaps, "s-unavailable")
	report(b, cmd, "s-cifhactl-switchover")
	b.ReportMetric(float64(lost), "acked-rows-lost-total")
}

// BenchmarkCifhactl: wall time of read and action commands (process start,
// etcd read, one API call) against a healthy 3-node cluster.
func BenchmarkCifhactl(b *testing.B) {
	c, cleanup, tok := benchControlCluster(b)
	defer cleanup()
	waitHealthyB(b, c, 60*time.Second)
	tt := &testing.T{}
	for _, args := range [][]string{{"history"}, {"show-config"}, {"pause"}, {"resume"}, {"set", "postgresql.parameters.work_mem=8MB"}} {
		b.Run(args[0], func(b *testing.B) {
			var ms []float64
			for i := 0; i < 20; i++ {
				start := time.Now()
				if out, code := cifhactl(tt, c, append([]string{"--token-file", tok}, args...)...); code != 0 {
					b.Fatalf("%v: exit %d: %s", args, code, out)
				}
				ms = append(ms, float64(time.Since(start).Microseconds())/1000)
			}
			report(b, ms, "ms")
		})
	}
}

// benchControlCluster starts 3 nodes with the control API enabled and
// returns the token file's path.
func benchControlCluster(b *testing.B) (*cluster.Cluster, func(), string) {
	var tok string
	c, cleanup := benchCluster(b, 3, func(o *cluster.Options) {
		o.APIToken = "bench-token"
		tok = o.Root + "/secrets/api.token"
	})
	if err := c.Start(); err != nil {
		cleanup()
		b.Fatal(err)
	}
	return c, cleanup, tok
}
