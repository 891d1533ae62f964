package checker

import (
	"context"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/cifha/cifha/internal/cluster"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// LoadOptions configures a load soak: pgbench against the primary for
// Duration with no fault injected.
type LoadOptions struct {
	Duration time.Duration
	// Clients is pgbench's -c (default 8).
	Clients int
	// PgBench is the pgbench binary (default: next to the cluster's
	// postgres, /usr/lib/postgresql/*/bin/pgbench).
	PgBench string
	// Sample is how often agent memory is sampled (default 30 s).
	Sample time.Duration
	Logf   func(format string, args ...any)
}

// LoadReport is a load soak's result. A healthy run has no failover, no
// demotion and no fence.
type LoadReport struct {
	Duration                    time.Duration
	Failovers, Demotions, Fence int
	// Actions are the HA actions every agent took during the soak, by
	// action (only those that change a role: promote, take-over, fence,
	// demote, start-primary, acquire-and-start, ...).
	Actions map[string]int
	// TPS and the transactions pgbench reported as failed.
	TPS    float64
	Failed int
	// RSS is each agent's resident memory, sampled (KiB).
	RSS map[string][]int64
	// Loop is each agent's loop latency (upper bucket bounds, seconds).
	Loop map[string]LoopLatency
	// PrimaryChanged: the primary at the end is not the one at the start.
	PrimaryChanged bool
}

// LoopLatency is read from an agent's cifha_loop_duration_seconds
// histogram: each figure is the upper bound of the bucket it falls in.
type LoopLatency struct {
	Count         float64
	P50, P99, Max float64
}

// OK reports whether the soak saw no failover, demotion or fence, and
// pgbench ran without failed transactions.
func (r LoadReport) OK() bool {
	return r.Failovers == 0 && r.Demotions == 0 && r.Fence == 0 && !r.PrimaryChanged && r.Failed == 0
}

// Print writes the report.
func (r LoadReport) Print(w io.Writer) {
	fmt.Fprintf(w, "load soak: %s of pgbench, %.0f tps, %d failed transactions\n", r.Duration.Round(time.Second), r.TPS, r.Failed)
	fmt.Fprintf(w, "failovers %d, demotions %d, fence events %d, primary changed %v\n", r.Failovers, r.Demotions, r.Fence, r.PrimaryChanged)
	if len(r.Actions) > 0 {
		var parts []string
		for _, k := range slices.Sorted(mapKeys(r.Actions)) {
			parts = append(parts, fmt.Sprintf("%s=%d", k, r.Actions[k]))
		}
		fmt.Fprintf(w, "role-changing actions: %s\n", strings.Join(parts, " "))
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "agent\trss first (MiB)\trss max (MiB)\trss last (MiB)\tloop rounds\tloop p50\tloop p99\tloop max\t")
	for _, n := range slices.Sorted(mapKeys(r.RSS)) {
		s := r.RSS[n]
		if len(s) == 0 {
			continue
		}
		l := r.Loop[n]
		fmt.Fprintf(tw, "%s\t%.1f\t%.1f\t%.1f\t%.0f\t%s\t%s\t%s\t\n", n, mib(s[0]), mib(slices.Max(s)), mib(s[len(s)-1]), l.Count,
			bound(l.P50), bound(l.P99), bound(l.Max))
	}
	tw.Flush()
}

func mib(kib int64) float64 { return float64(kib) / 1024 }

func bound(s float64) string {
	if math.IsInf(s, 1) {
		return "> 30s"
	}
	return "<= " + (time.Duration(s * float64(time.Second))).String()
}

func mapKeys[V any](m map[string]V) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// roleActions are the actions that change who writes.
var roleActions = map[string]string{"take-over": "failover", "promote": "failover", "fence": "fence", "demote": "demote"}

// RunLoad runs the load soak on a healthy cluster.
func RunLoad(ctx context.Context, c *cluster.Cluster, opt LoadOptions) (LoadReport, error) {
	rep := LoadReport{Actions: map[string]int{}, RSS: map[string][]int64{}, Loop: map[string]LoopLatency{}}
	logf := opt.Logf
	if logf == nil {
		logf = func(string, ...any) {}
	}
	if opt.Clients <= 0 {
		opt.Clients = 8
	}
	if opt.Sample <= 0 {
		opt.Sample = 30 * time.Second
	}
	if opt.PgBench == "" {
		m, _ := filepath.Glob("/usr/lib/postgresql/*/bin/pgbench")
		if len(m) == 0 {
			return rep, fmt.Errorf("pgbench not found under /usr/lib/postgresql/*/bin")
		}
		slices.Sort(m)
		opt.PgBench = m[len(m)-1]
	}
	p, err := primaryOf(ctx, c)
	if err != nil {
		return rep, err
	}
	before := map[string]map[string]float64{}
	loopBefore := map[string][]bucket{}
	logAt := map[string]int{}
	for _, n := range c.Nodes {
		before[n.Name], _ = actions(ctx, n)
		loopBefore[n.Name], _ = loopBuckets(ctx, n)
		logAt[n.Name] = len(n.Log())
	}
	env := append(os.Environ(), "PGPASSWORD="+c.Opt.SuperuserPassword)
	args := []string{"-h", p.Addr, "-p", "5432", "-U", "postgres"}
	logf("pgbench -i on %s", p.Name)
	ini := exec.CommandContext(ctx, opt.PgBench, append(append([]string{"-i", "-q", "-s", "10"}, args...), "postgres")...)
	ini.Env = env
	if out, err := ini.CombinedOutput(); err != nil {
		return rep, fmt.Errorf("pgbench -i: %v: %s", err, out)
	}
	secs := max(int(opt.Duration/time.Second), 1)
	cmd := exec.CommandContext(ctx, opt.PgBench, append(append([]string{"-n", "-c", strconv.Itoa(opt.Clients), "-j", "2", "-T", strconv.Itoa(secs), "-P", "60"}, args...), "postgres")...)
	cmd.Env = env
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	logf("pgbench: %d clients for %s against %s", opt.Clients, time.Duration(secs)*time.Second, p.Name)
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return rep, err
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	sample := func() {
		var row []string
		for _, n := range c.Nodes {
			if kib, err := rssKiB(n.PID()); err == nil {
				rep.RSS[n.Name] = append(rep.RSS[n.Name], kib)
				row = append(row, fmt.Sprintf("%s %.1f MiB", n.Name, mib(kib)))
			}
		}
		logf("agent memory: %s", strings.Join(row, ", "))
	}
	sample()
	t := time.NewTicker(opt.Sample)
	var werr error
loop:
	for {
		select {
		case <-ctx.Done():
			_ = cmd.Process.Kill()
			<-done
			return rep, ctx.Err()
		case werr = <-done:
			break loop
		case <-t.C:
			sample()
		}
	}
	t.Stop()
	sample()
	rep.Duration = time.Since(start)
	rep.TPS, rep.Failed = parsePgbench(out.String())
	if werr != nil {
		logf("pgbench exited: %v\n%s", werr, tailLines(out.String(), 20))
		rep.Failed = max(rep.Failed, 1)
	}
	for _, n := range c.Nodes {
		after, err := actions(ctx, n)
		if err != nil {
			return rep, fmt.Errorf("%s metrics: %w", n.Name, err)
		}
		for k, v := range after {
			if d := int(v - before[n.Name][k]); d > 0 {
				rep.Actions[k] += d
				switch roleActions[k] {
				case "failover":
					rep.Failovers += d
				case "fence":
					rep.Fence += d
				case "demote":
					rep.Demotions += d
				}
			}
		}
		// The fencer and the fence watchdog act outside the loop's
		// actions: their log lines count too.
		if lg := n.Log(); len(lg) >= logAt[n.Name] {
			for _, l := range strings.Split(lg[logAt[n.Name]:], "\n") {
				if strings.Contains(l, "fencing: lease deadline reached") || strings.Contains(l, "fence watchdog: the agent did not renew") {
					rep.Fence++
				}
			}
		}
		bs, err := loopBuckets(ctx, n)
		if err != nil {
			return rep, fmt.Errorf("%s metrics: %w", n.Name, err)
		}
		rep.Loop[n.Name] = latency(bs, loopBefore[n.Name])
	}
	if q, err := primaryOf(ctx, c); err != nil || q != p {
		rep.PrimaryChanged = true
	}
	return rep, nil
}

// rssKiB is a process's resident set size.
func rssKiB(pid int) (int64, error) {
	if pid <= 0 {
		return 0, fmt.Errorf("no process")
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			return strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		}
	}
	return 0, fmt.Errorf("no VmRSS")
}

// metricFamily reads one metric family from the agent's /metrics, parsed
// with Prometheus's own text parser.
func metricFamily(ctx context.Context, n *cluster.Node, name string) (*dto.MetricFamily, error) {
	code, body, err := n.API(ctx, "/metrics")
	if err != nil {
		return nil, err
	}
	if code != 200 {
		return nil, fmt.Errorf("/metrics: %d", code)
	}
	return parseFamily(body, name)
}

// parseFamily returns metric family name from a text exposition.
func parseFamily(body []byte, name string) (*dto.MetricFamily, error) {
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(string(body)))
	if err != nil {
		return nil, fmt.Errorf("/metrics: %w", err)
	}
	f := fams[name]
	if f == nil {
		return nil, fmt.Errorf("/metrics has no %s", name)
	}
	return f, nil
}

// actions reads cifha_actions_total by action.
func actions(ctx context.Context, n *cluster.Node) (map[string]float64, error) {
	f, err := metricFamily(ctx, n, "cifha_actions_total")
	if err != nil {
		return nil, err
	}
	return actionCounts(f), nil
}

// actionCounts sums a counter family by its action label.
func actionCounts(f *dto.MetricFamily) map[string]float64 {
	out := map[string]float64{}
	for _, m := range f.GetMetric() {
		for _, l := range m.GetLabel() {
			if l.GetName() == "action" {
				out[l.GetValue()] += m.GetCounter().GetValue()
			}
		}
	}
	return out
}

type bucket struct{ le, n float64 }

// loopBuckets reads the loop histogram's cumulative buckets, in order
// (+Inf last).
func loopBuckets(ctx context.Context, n *cluster.Node) ([]bucket, error) {
	f, err := metricFamily(ctx, n, "cifha_loop_duration_seconds")
	if err != nil {
		return nil, err
	}
	return histBuckets(f)
}

// histBuckets returns a one-series histogram's cumulative buckets.
func histBuckets(f *dto.MetricFamily) ([]bucket, error) {
	if len(f.GetMetric()) != 1 {
		return nil, fmt.Errorf("cifha_loop_duration_seconds: %d series, want 1", len(f.GetMetric()))
	}
	h := f.GetMetric()[0].GetHistogram()
	var bs []bucket
	for _, b := range h.GetBucket() {
		bs = append(bs, bucket{b.GetUpperBound(), float64(b.GetCumulativeCount())})
	}
	if len(bs) == 0 || !math.IsInf(bs[len(bs)-1].le, 1) {
		bs = append(bs, bucket{math.Inf(1), float64(h.GetSampleCount())})
	}
	return bs, nil
}

// latency is the percentiles (bucket bounds) of the rounds counted in
// after but not in before (the soak's rounds only).
func latency(after, before []bucket) LoopLatency {
	bs := slices.Clone(after)
	if len(before) == len(bs) {
		for i := range bs {
			bs[i].n -= before[i].n
		}
	}
	var r LoopLatency
	if len(bs) == 0 {
		return r
	}
	r.Count = bs[len(bs)-1].n
	at := func(q float64) float64 {
		for _, b := range bs {
			if b.n >= q*r.Count {
				return b.le
			}
		}
		return math.Inf(1)
	}
	r.P50, r.P99 = at(0.5), at(0.99)
	for _, b := range bs {
		if b.n >= r.Count {
			r.Max = b.le
			break
		}
	}
	return r
}

// parsePgbench reads tps and failed transactions from pgbench's summary.
func parsePgbench(out string) (tps float64, failed int) {
	for _, l := range strings.Split(out, "\n") {
		l = strings.TrimSpace(l)
		if v, ok := strings.CutPrefix(l, "tps = "); ok {
			f := strings.Fields(v)
			if len(f) > 0 {
				tps, _ = strconv.ParseFloat(f[0], 64)
			}
		}
		if v, ok := strings.CutPrefix(l, "number of failed transactions: "); ok {
			f := strings.Fields(v)
			if len(f) > 0 {
				failed, _ = strconv.Atoi(f[0])
			}
		}
	}
	return tps, failed
}

func tailLines(s string, n int) string {
	ls := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(ls) > n {
		ls = ls[len(ls)-n:]
	}
	return strings.Join(ls, "\n")
}
