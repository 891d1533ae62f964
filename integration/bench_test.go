package integration

import (
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
)

// BenchmarkBootstrap3: from nothing (empty etcd, empty data dirs) to one
// primary and two streaming standbys.
func BenchmarkBootstrap3(b *testing.B) {
	var secs []float64
	for i := 0; i < b.N; i++ {
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
	for i := 0; i < b.N*10; i++ {
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
