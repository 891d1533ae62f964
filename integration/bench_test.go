package integration

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cifha/cifha/internal/cluster"
	"github.com/cifha/cifha/internal/devetcd"
	"github.com/cifha/cifha/internal/testutil"
	"github.com/jackc/pgx/v5"
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

// BenchmarkIdleAgent: resident memory and CPU of one idle agent (the
// leader's) over 60 s, with the default 1 s loop and ttl 10 s.
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
	window := 60 * time.Second
	if v := os.Getenv("CIFHA_IDLE_WINDOW"); v != "" {
		window, _ = time.ParseDuration(v)
	}
	b.ResetTimer()
	for _, n := range []*cluster.Node{p, s} {
		cpu0 := cpuTicks(b, n.PID())
		time.Sleep(window) // the measurement window itself, not synchronisation
		cpu1 := cpuTicks(b, n.PID())
		role := "leader"
		if n == s {
			role = "standby"
		}
		b.ReportMetric(float64(rssKB(b, n.PID()))/1024, "MiB-rss-"+role)
		b.ReportMetric(100*float64(cpu1-cpu0)/100/window.Seconds(), "%cpu-"+role)
	}
}

func cpuTicks(b *testing.B, pid int) int64 {
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatal(err)
	}
	f := strings.Fields(string(st[strings.LastIndexByte(string(st), ')')+2:]))
	u, _ := strconv.ParseInt(f[11], 10, 64) // utime (field 14)
	s, _ := strconv.ParseInt(f[12], 10, 64) // stime (field 15)
	return u + s                            // clock ticks, 100 per second on Linux
}

func rssKB(b *testing.B, pid int) int64 {
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatal(err)
	}
	for _, l := range strings.Split(string(st), "\n") {
		if strings.HasPrefix(l, "VmRSS:") {
			v, _ := strconv.ParseInt(strings.Fields(l)[1], 10, 64)
			return v
		}
	}
	return 0
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
		{"host-loss-ttl10", 10 * time.Second, func(p *cluster.Node) { p.KillHost() }},
		{"host-loss-ttl3", 3 * time.Second, func(p *cluster.Node) { p.KillHost() }},
		{"clean-shutdown-ttl10", 10 * time.Second, func(p *cluster.Node) { go p.Stop(30 * time.Second) }},
	}
	for _, sc := range scenarios {
		b.Run(sc.name, func(b *testing.B) {
			var gaps []float64
			lost := 0
			for i := 0; i < benchRuns; i++ {
				gap, l := failoverRun(b, sc.ttl, sc.event)
				gaps = append(gaps, gap.Seconds())
				lost += l
			}
			report(b, gaps, "s-unavailable")
			b.ReportMetric(float64(lost), "acked-rows-lost-total")
		})
	}
}

func failoverRun(b *testing.B, ttl time.Duration, event func(*cluster.Node)) (time.Duration, int) {
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
	conn, err := p.Connect(ctx)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := conn.Exec(ctx, "CREATE TABLE bench (id int primary key)"); err != nil {
		b.Fatal(err)
	}
	conn.Close(ctx)
	var hosts []string
	for _, n := range c.Nodes {
		hosts = append(hosts, n.Addr)
	}
	dsn := fmt.Sprintf("host=%s port=5432 user=postgres password=%s dbname=postgres sslmode=disable connect_timeout=1 target_session_attrs=read-write",
		strings.Join(hosts, ","), c.Opt.SuperuserPassword)
	var acked []int
	var ackAt []time.Time
	var w *pgx.Conn
	next := 0
	write := func() {
		wctx, wcancel := context.WithTimeout(ctx, time.Second)
		defer wcancel()
		if w == nil {
			if w, err = pgx.Connect(wctx, dsn); err != nil {
				w = nil
				return
			}
		}
		next++
		if _, err := w.Exec(wctx, "INSERT INTO bench VALUES ($1)", next); err != nil {
			w.Close(context.Background())
			w = nil
			return
		}
		acked, ackAt = append(acked, next), append(ackAt, time.Now())
	}
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for len(acked) < 20 {
		<-tick.C
		write()
	}
	event(p)
	eventAt := time.Now()
	deadline := eventAt.Add(3*ttl + 20*time.Second)
	resumed := time.Time{}
	for time.Now().Before(deadline) {
		<-tick.C
		write()
		if resumed.IsZero() && len(ackAt) > 0 && ackAt[len(ackAt)-1].After(eventAt) {
			resumed = ackAt[len(ackAt)-1]
		}
		if !resumed.IsZero() && time.Since(resumed) > time.Second {
			break
		}
	}
	if w != nil {
		w.Close(context.Background())
	}
	if resumed.IsZero() {
		b.Fatalf("writes never resumed")
	}
	// The unavailability is the longest gap between acknowledgements.
	var gap time.Duration
	for i := 1; i < len(ackAt); i++ {
		if d := ackAt[i].Sub(ackAt[i-1]); d > gap {
			gap = d
		}
	}
	// Acknowledged rows missing on the new primary.
	q, err := c.Primary(ctx)
	if err != nil {
		b.Fatal(err)
	}
	qc, err := q.Connect(ctx)
	if err != nil {
		b.Fatal(err)
	}
	defer qc.Close(ctx)
	lost := 0
	for _, id := range acked {
		var one int
		if err := qc.QueryRow(ctx, "SELECT 1 FROM bench WHERE id = $1", id).Scan(&one); err != nil {
			lost++
		}
	}
	b.Logf("unavailable %s, %d acknowledged rows lost, new primary %s", gap.Round(time.Millisecond), lost, q.Name)
	return gap, lost
}
