// Package checker is cifha's fault checker: it drives a local cluster
// (internal/cluster: real cifha and PostgreSQL processes, and optionally a
// multi-member etcd of processes) through rounds of injected faults chosen
// from a seeded random sequence, with clients writing all along, and checks
// after every round that
//
//   - every acknowledged row is on the final primary (and, once they caught
//     up, on every member);
//   - no two members acknowledged writes in overlapping intervals (one
//     writer pinned to each member records the interval of each of its
//     acknowledged writes);
//   - the cluster is healthy again (one primary, every other member
//     streaming) within a bound.
//
// cmd/cifha-check runs it (`make soak`); integration's TestCheckerShort runs
// a few rounds of every fault in CI. A failing run prints its seed, so it can
// be replayed.
package checker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/cifha/cifha/internal/cluster"
	"github.com/cifha/cifha/internal/etcdcluster"
	"github.com/cifha/cifha/pkg/state"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Fault is one kind of injected failure.
type Fault string

// The faults.
const (
	// HostLoss: SIGKILL to the primary's agent and postmaster; restarted later.
	HostLoss Fault = "host-loss"
	// AgentKill: SIGKILL to the primary's agent only (postgres dies with it).
	AgentKill Fault = "agent-kill"
	// AgentStop: the primary's agent frozen with SIGSTOP until another
	// member accepts writes (longer than the ttl), then resumed.
	AgentStop Fault = "agent-stop"
	// PostgresCrash: SIGKILL to the primary's postmaster; the agent restarts it.
	PostgresCrash Fault = "postgres-crash"
	// EtcdPartition: the primary's agent cut off from etcd (needs
	// cluster.Options.EtcdProxies) until another member accepts writes.
	EtcdPartition Fault = "etcd-partition"
	// EtcdMemberLoss: the etcd leader member killed (needs a multi-member
	// etcd) for a while, then restarted: nothing may change.
	EtcdMemberLoss Fault = "etcd-member-loss"
	// Switchover: `cifhactl switchover` to a standby.
	Switchover Fault = "switchover"
	// EtcdOutage: every etcd member killed for Options.OutageHold, then
	// restarted. Without failsafe mode the primary fences and writes
	// return with etcd; with it, writes never stop.
	EtcdOutage Fault = "etcd-outage"
	// AgentRestart: the operator restarts the primary's agent (SIGTERM,
	// a clean stop that stops postgres and releases the key, then a
	// start), as `systemctl restart cifha` does.
	AgentRestart Fault = "agent-restart"
	// MemberPartition: the primary cut off from the other members (its
	// replication port and API become black holes for them; needs
	// cluster.Options.PeerProxies) while everyone still reaches etcd and
	// clients still reach it, held past the ttl, then healed. The leader
	// keeps its key: no failover; in synchronous mode writes resume once
	// the leader drops the unreachable synchronous standbys (not in
	// strict mode), and nothing acknowledged may be lost when the
	// standbys return.
	MemberPartition Fault = "member-partition"
)

// AllFaults lists every fault.
var AllFaults = []Fault{HostLoss, AgentKill, AgentStop, PostgresCrash, EtcdPartition, EtcdMemberLoss, Switchover, EtcdOutage, AgentRestart, MemberPartition}

// Options configures a run.
type Options struct {
	Seed   uint64
	Rounds int
	// Faults are drawn from uniformly (EachInTurn: in this order, round
	// after round).
	Faults     []Fault
	EachInTurn bool
	// Bound: the cluster must accept writes again, and be healthy again,
	// within it after a fault.
	Bound time.Duration
	// Etcd is the multi-member etcd (EtcdMemberLoss needs it).
	Etcd *etcdcluster.Cluster
	// Switch runs `cifhactl switchover --force --to name`.
	Switch func(ctx context.Context, to string) error
	// Logf reports progress (nil: silent).
	Logf func(format string, args ...any)
	// Async: the cluster replicates asynchronously; acknowledged rows a
	// failover loses (up to maximum_lag_on_failover) are reported, not a
	// failure. Overlaps and not recovering still are. Otherwise a round
	// starts only once the leader has a recorded synchronous standby (with
	// none, losing the primary stops writes by design).
	Async bool
	// Failsafe: the cluster runs in DCS failsafe mode. A primary cut off
	// from etcd alone then keeps serving on its standbys' promises (no
	// failover), so etcd-partition is held like etcd-member-loss.
	Failsafe bool
	// OutageHold is how long etcd-outage keeps every etcd member down
	// (default 30 s).
	OutageHold time.Duration
	// MaxLag is the cluster's maximum_lag_on_failover in bytes: in
	// asynchronous mode a round that loses more fails (0: not checked).
	MaxLag int64
	// ClientDial is where the multi-host writer connects from (the lab's
	// client host; nil: this machine's network).
	ClientDial func(ctx context.Context, network, addr string) (net.Conn, error)
	// Lab: the cluster runs on the lab's namespace hosts, and its faults
	// (LabFaults) are available.
	Lab *Lab
	// BeforeRound is called before each round; an error stops the run
	// (the lab's disk bound).
	BeforeRound func() error
	// CIF is the CIF node, checked after every round (nil: none).
	CIF *CIFNode
}

// Stats are one fault's figures.
type Stats struct {
	Rounds, Acked, Lost, Overlaps int
	// FalseFailovers counts rounds of a fault that must change nothing
	// in which the primary changed or refused a write.
	FalseFailovers int
	// Gaps are each round's longest write gap (the median is printed).
	Gaps []time.Duration
	// MaxLostBytes is the most WAL past the new timeline's fork that one
	// round's lost rows were written at (asynchronous mode).
	MaxLostBytes   int64
	MaxUnavailable time.Duration
	// CIFLag is the longest time from a new primary's first acknowledged
	// write to ~/.cif naming it; CIFCommit the longest from a change of
	// ~/.cif to the CIF client's first commit on the new host.
	CIFLag, CIFCommit time.Duration
	Failures          []string
}

// Report is a run's result.
type Report struct {
	Seed    uint64
	ByFault map[Fault]*Stats
	// Async: lost rows are reported, not failures.
	Async bool
}

// OK reports whether no round lost a row (in synchronous mode), overlapped
// or failed.
func (r Report) OK() bool {
	for _, s := range r.ByFault {
		if (s.Lost > 0 && !r.Async) || s.Overlaps > 0 || s.FalseFailovers > 0 || len(s.Failures) > 0 {
			return false
		}
	}
	return true
}

// Merge adds o's figures to r (the lanes of one run, each a cluster of its
// own on its own seed). r.Seed stays the run's seed.
func (r *Report) Merge(o Report) {
	if r.ByFault == nil {
		r.ByFault = map[Fault]*Stats{}
	}
	for f, s := range o.ByFault {
		t := r.ByFault[f]
		if t == nil {
			t = &Stats{}
			r.ByFault[f] = t
		}
		t.Rounds += s.Rounds
		t.Acked += s.Acked
		t.Lost += s.Lost
		t.Overlaps += s.Overlaps
		t.FalseFailovers += s.FalseFailovers
		t.Gaps = append(t.Gaps, s.Gaps...)
		t.MaxLostBytes = max(t.MaxLostBytes, s.MaxLostBytes)
		t.MaxUnavailable = max(t.MaxUnavailable, s.MaxUnavailable)
		t.CIFLag, t.CIFCommit = max(t.CIFLag, s.CIFLag), max(t.CIFCommit, s.CIFCommit)
		t.Failures = append(t.Failures, s.Failures...)
	}
	r.Async = r.Async || o.Async
}

// Table prints the per-fault table and the seed.
func (r Report) Table(w io.Writer) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	cif := false
	for _, s := range r.ByFault {
		cif = cif || s.CIFLag > 0 || s.CIFCommit > 0
	}
	head := "fault\trounds\trows acknowledged\trows lost\tmax bytes lost\toverlaps\tfalse failovers\tmedian unavailability\tmax unavailability\t"
	if cif {
		head += "max ~/.cif lag\tmax CIF commit after rewrite\t"
	}
	fmt.Fprintln(tw, head+"failures\t")
	for _, f := range slices.Sorted(func(yield func(Fault) bool) {
		for f := range r.ByFault {
			if !yield(f) {
				return
			}
		}
	}) {
		s := r.ByFault[f]
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%d\t%d\t%s\t%s\t", f, s.Rounds, s.Acked, s.Lost, s.MaxLostBytes, s.Overlaps, s.FalseFailovers,
			Median(s.Gaps).Round(time.Millisecond), s.MaxUnavailable.Round(time.Millisecond))
		if cif {
			fmt.Fprintf(tw, "%s\t%s\t", s.CIFLag.Round(time.Millisecond), s.CIFCommit.Round(time.Millisecond))
		}
		fmt.Fprintf(tw, "%d\t\n", len(s.Failures))
	}
	tw.Flush()
	fmt.Fprintf(w, "seed %d\n", r.Seed)
	for _, f := range slices.Sorted(func(yield func(Fault) bool) {
		for f := range r.ByFault {
			if !yield(f) {
				return
			}
		}
	}) {
		for _, msg := range r.ByFault[f].Failures {
			fmt.Fprintf(w, "FAIL %s: %s\n", f, msg)
		}
	}
}

// Median is the median of ds (0 for none; the mean of the middle two for
// an even count).
func Median(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// Run runs the rounds against c (started, healthy) and returns the report;
// an error means the run itself could not go on (the report so far is
// still returned).
func Run(ctx context.Context, c *cluster.Cluster, opt Options) (Report, error) {
	rep := Report{Seed: opt.Seed, ByFault: map[Fault]*Stats{}, Async: opt.Async}
	if opt.Bound == 0 {
		opt.Bound = 60 * time.Second
	}
	logf := opt.Logf
	if logf == nil {
		logf = func(string, ...any) {}
	}
	faults := opt.Faults
	if len(faults) == 0 {
		faults = AllFaults
	}
	rng := rand.New(rand.NewPCG(opt.Seed, opt.Seed^0x9e3779b97f4a7c15))
	p, err := waitHealthy(ctx, c, opt.Bound, !opt.Async)
	if err != nil {
		return rep, err
	}
	if err := setup(ctx, p); err != nil {
		return rep, err
	}
	for round := 0; round < opt.Rounds; round++ {
		if opt.BeforeRound != nil {
			if err := opt.BeforeRound(); err != nil {
				return rep, fmt.Errorf("before round %d: %w", round+1, err)
			}
		}
		f := faults[rng.IntN(len(faults))]
		if opt.EachInTurn {
			f = faults[round%len(faults)]
		}
		st := rep.ByFault[f]
		if st == nil {
			st = &Stats{}
			rep.ByFault[f] = st
		}
		st.Rounds++
		logf("round %d: %s (primary %s)", round+1, f, p.Name)
		next, res, err := runRound(ctx, c, p, f, opt, rng)
		st.Acked += res.acked
		st.Lost += res.lost
		st.MaxLostBytes = max(st.MaxLostBytes, res.lostBytes)
		st.Overlaps += res.overlaps
		st.MaxUnavailable = max(st.MaxUnavailable, res.unavailable)
		st.Gaps = append(st.Gaps, res.unavailable)
		st.CIFLag, st.CIFCommit = max(st.CIFLag, res.cifLag), max(st.CIFCommit, res.cifCommit)
		if res.falseFailover {
			st.FalseFailovers++
		}
		if res.failure != "" {
			st.Failures = append(st.Failures, fmt.Sprintf("round %d: %s", round+1, res.failure))
			logf("round %d: %s FAILED: %s", round+1, f, res.failure)
		}
		if err != nil {
			return rep, fmt.Errorf("round %d (%s): %w", round+1, f, err)
		}
		p = next
	}
	return rep, nil
}

type roundResult struct {
	acked, lost, overlaps int
	falseFailover         bool
	lostBytes             int64
	unavailable           time.Duration
	cifLag, cifCommit     time.Duration
	failure               string
}

func setup(ctx context.Context, p *cluster.Node) error {
	conn, err := p.Connect(ctx)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, `CREATE TABLE IF NOT EXISTS checker_rows (id bigint PRIMARY KEY);
CREATE TABLE IF NOT EXISTS checker_probe (node text, at timestamptz DEFAULT clock_timestamp());
CREATE TABLE IF NOT EXISTS cif_client (seq bigint PRIMARY KEY, at timestamptz DEFAULT clock_timestamp());
CREATE TABLE IF NOT EXISTS checker_bulk (id bigint, pad text)`)
	return err
}

// lateGrace is how much longer a round waits for a cluster that missed the
// health bound before the run stops.
const lateGrace = 5 * time.Minute

// runRound injects f and checks the round; it returns the primary after it.
func runRound(ctx context.Context, c *cluster.Cluster, p *cluster.Node, f Fault, opt Options, rng *rand.Rand) (*cluster.Node, roundResult, error) {
	var res roundResult
	w, err := startWriter(ctx, c, p, opt.ClientDial)
	if err != nil {
		return p, res, err
	}
	pinned := startPinned(c)
	var refused map[string]int
	stopAll := func() (time.Duration, map[string][]span) {
		gap := w.finish()
		spans, ref := pinned()
		refused = ref
		return gap, spans
	}
	if err := waitFor(ctx, opt.Bound, func() bool { return w.count() >= 10 }); err != nil {
		stopAll()
		return p, res, fmt.Errorf("no writes before the fault: %w (the writer's last error: %v)", err, w.lastError())
	}
	injected := time.Now()
	var restore func() error
	var hold time.Duration
	switch f {
	case HostLoss:
		p.KillHost()
		restore = p.Start
	case AgentKill:
		p.Kill()
		restore = p.Start
	case AgentStop:
		if err := p.SignalAgent(syscall.SIGSTOP); err != nil {
			stopAll()
			return p, res, err
		}
		restore = func() error { return p.SignalAgent(syscall.SIGCONT) }
	case PostgresCrash:
		if pid := p.PostmasterPID(); pid != 0 {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	case EtcdPartition:
		if len(p.EtcdProxies) == 0 {
			stopAll()
			return p, res, errors.New("etcd-partition needs cluster.Options.EtcdProxies")
		}
		p.CutEtcd()
		restore = func() error { p.RestoreEtcd(); return nil }
	case AgentRestart:
		if err := p.Stop(opt.Bound); err != nil {
			stopAll()
			return p, res, fmt.Errorf("stop the agent: %w", err)
		}
		if err := p.Start(); err != nil {
			stopAll()
			return p, res, fmt.Errorf("start the agent: %w", err)
		}
	case MemberPartition:
		if len(p.PeerProxies) == 0 {
			stopAll()
			return p, res, errors.New("member-partition needs cluster.Options.PeerProxies")
		}
		p.CutPeers()
		restore = func() error { p.RestorePeers(); return nil }
	case EtcdOutage:
		if opt.Lab != nil {
			hold := opt.OutageHold
			if hold <= 0 {
				hold = 30 * time.Second
			}
			if err := labEtcdOutage(ctx, opt.Lab, hold, opt.Bound); err != nil {
				stopAll()
				return p, res, fmt.Errorf("etcd outage: %w", err)
			}
			injected = time.Now()
			break
		}
		if opt.Etcd == nil {
			stopAll()
			return p, res, errors.New("etcd-outage needs Options.Etcd")
		}
		for _, m := range opt.Etcd.Members {
			m.Kill()
		}
		hold := opt.OutageHold
		if hold <= 0 {
			hold = 30 * time.Second
		}
		// Held for the outage whatever happens to the writes (they stop
		// without failsafe mode): a fixed hold, not a condition.
		select {
		case <-ctx.Done():
		case <-time.After(hold):
		}
		for _, m := range opt.Etcd.Members {
			if err := opt.Etcd.Restart(m); err != nil {
				stopAll()
				return p, res, fmt.Errorf("restart etcd: %w", err)
			}
		}
		if err := opt.Etcd.WaitHealthy(opt.Bound); err != nil {
			stopAll()
			return p, res, err
		}
		injected = time.Now() // writes must be back within the bound of etcd's return
	case EtcdMemberLoss:
		if opt.Etcd == nil || len(opt.Etcd.Members) < 3 {
			stopAll()
			return p, res, errors.New("etcd-member-loss needs a multi-member etcd")
		}
		m, err := opt.Etcd.Leader(ctx)
		if err != nil {
			stopAll()
			return p, res, err
		}
		m.Kill()
		restore = func() error {
			if err := opt.Etcd.Restart(m); err != nil {
				return err
			}
			return opt.Etcd.WaitHealthy(opt.Bound)
		}
	case Switchover:
		if opt.Switch == nil {
			stopAll()
			return p, res, errors.New("switchover needs Options.Switch")
		}
		if err := switchAway(ctx, c, p, opt.Switch, rng); err != nil {
			res.failure = err.Error()
		}
	default:
		var err error
		restore, hold, err = injectLab(ctx, c, p, f, opt, rng)
		if err != nil {
			if restore != nil {
				_ = restore()
			}
			stopAll()
			return p, res, err
		}
	}
	held := heldUntilMoved(f, opt.Failsafe)
	switch {
	case held:
		// Held until another member accepts writes (the old primary must
		// have fenced itself first: the overlap check says whether it did).
		var moved time.Time
		if err := waitFor(ctx, opt.Bound, func() bool {
			if q, err := primaryOf(ctx, c); err == nil && q != p {
				if moved.IsZero() {
					moved = time.Now()
				}
				return w.ackedAfter(moved)
			}
			return false
		}); err != nil {
			res.failure = fmt.Sprintf("no other member accepted writes within %s of the fault (the writer's last error: %v)", opt.Bound, w.lastError())
		} else if opt.CIF != nil {
			// The old primary stays black-holed until ~/.cif has named
			// another member and the CIF client has had its bound to
			// commit there: healing at once would let the old primary's
			// resets through and free a client that was stuck on it.
			_ = waitFor(ctx, opt.Bound, func() bool { return opt.CIF.Host() != p.Addr })
			sleepCtx(ctx, CIFCommitBound+500*time.Millisecond)
		}
	default:
		// Writes must resume within the bound (for a fault that changes
		// nothing, they never stopped).
		if err := waitFor(ctx, opt.Bound, func() bool { return w.ackedAfter(injected.Add(100 * time.Millisecond)) }); err != nil {
			res.failure = fmt.Sprintf("no acknowledged write within %s of the fault (the writer's last error: %v)", opt.Bound, w.lastError())
		}
	}
	if hold > 0 {
		sleepCtx(ctx, hold)
	} else if f == EtcdMemberLoss || f == MemberPartition || (f == EtcdPartition && opt.Failsafe) {
		// Held for a while under writes (the partitions past the ttl:
		// 100 rows at one per 50 ms or slower).
		n := w.count() + 100
		if f == EtcdPartition || f == MemberPartition {
			n += int(3 * c.Opt.TTL / (50 * time.Millisecond))
		}
		_ = waitFor(ctx, opt.Bound, func() bool { return w.count() >= n })
	}
	if restore != nil {
		if err := restore(); err != nil {
			stopAll()
			return p, res, fmt.Errorf("restore after %s: %w", f, err)
		}
	}
	next, err := waitHealthy(ctx, c, opt.Bound, !opt.Async)
	if err != nil {
		if res.failure == "" {
			res.failure = fmt.Sprintf("not healthy within %s: %v", opt.Bound, err)
		}
		// Late is a failure, counted as one; but the round's rows can
		// still be checked, and the run go on, once the cluster recovers
		// (a 50 s pg_rewind on an overloaded machine stopped a lane of a
		// 1,000-round soak at round 167).
		late := time.Now()
		if next, err = waitHealthy(ctx, c, lateGrace, !opt.Async); err != nil {
			stopAll()
			return p, res, err
		}
		res.failure += fmt.Sprintf(" (healthy after %s; the run went on)", time.Since(late).Round(time.Second)+opt.Bound)
	}
	// A few writes on the healthy cluster, so the round ends acknowledged.
	n := w.count() + 5
	_ = waitFor(ctx, opt.Bound, func() bool { return w.count() >= n })
	gap, spans := stopAll()
	res.unavailable = gap
	res.acked = w.count()
	res.overlaps = overlaps(spans)
	if res.overlaps > 0 && res.failure == "" {
		res.failure = "two members acknowledged writes in overlapping intervals: " + describe(spans)
	}
	if benign(f, opt.Failsafe) && (next != p || refused[p.Name] > 0) {
		res.falseFailover = true
		if res.failure == "" {
			res.failure = fmt.Sprintf("a fault that must change nothing moved or demoted the primary: %s before, %s after, %d writes refused by %s", p.Name, next.Name, refused[p.Name], p.Name)
		}
	}
	if f == WalDiskFull {
		truncateBulk(ctx, next)
	}
	var cifSeqs []int64
	if opt.CIF != nil {
		cr, err := opt.CIF.check(ctx, next, spans, opt.Bound)
		res.cifLag, res.cifCommit, cifSeqs = cr.lag, cr.commit, cr.seqs
		res.acked += cr.acked
		if err != nil && res.failure == "" {
			res.failure = "CIF node: " + err.Error()
		}
	}
	lost, lostBytes, err := w.missing(ctx, next)
	if err != nil {
		return next, res, fmt.Errorf("count rows on %s: %w", next.Name, err)
	}
	if opt.CIF != nil {
		// The CIF client's acknowledged rows count like the writer's.
		k, err := opt.CIF.missing(ctx, next, cifSeqs)
		if err != nil {
			return next, res, fmt.Errorf("count the CIF client's rows on %s: %w", next.Name, err)
		}
		lost += k
	}
	res.lost, res.lostBytes = lost, lostBytes
	switch {
	case lost > 0 && res.failure == "" && !opt.Async:
		res.failure = fmt.Sprintf("%d acknowledged rows missing on the primary %s", lost, next.Name)
	case lost > 0 && res.failure == "" && opt.MaxLag > 0 && lostBytes > opt.MaxLag:
		// No fault here cuts the primary off from its standbys (the
		// documented case in which it may acknowledge more until its
		// fence), so every loss must stay within the lag gate.
		res.failure = fmt.Sprintf("%d acknowledged rows (%d bytes of WAL past the fork) lost, more than maximum_lag_on_failover (%d)", lost, lostBytes, opt.MaxLag)
	}
	return next, res, nil
}

// switchAway switches over from p to another member, trying each in a
// random order: a candidate may be refused (in synchronous mode only a
// recorded synchronous standby qualifies).
func switchAway(ctx context.Context, c *cluster.Cluster, p *cluster.Node, sw func(ctx context.Context, to string) error, rng *rand.Rand) error {
	var to []*cluster.Node
	for _, n := range c.Nodes {
		if n != p {
			to = append(to, n)
		}
	}
	rng.Shuffle(len(to), func(i, j int) { to[i], to[j] = to[j], to[i] })
	var errs []string
	for _, target := range to {
		err := sw(ctx, target.Name)
		if err == nil {
			return nil
		}
		errs = append(errs, err.Error())
	}
	return errors.New("every switchover was refused: " + strings.Join(errs, "; "))
}

// WaitHealthy waits for one primary and every other member streaming
// (with sync, a recorded synchronous standby too) and returns the primary.
func WaitHealthy(ctx context.Context, c *cluster.Cluster, bound time.Duration, sync bool) (*cluster.Node, error) {
	return waitHealthy(ctx, c, bound, sync)
}

// waitHealthy waits for one primary and every other member streaming (and,
// with sync, a synchronous standby recorded by that primary).
func waitHealthy(ctx context.Context, c *cluster.Cluster, bound time.Duration, sync bool) (*cluster.Node, error) {
	var p *cluster.Node
	var last error
	// Healthy for a settle time, not at one instant: right after a fault the
	// agents' answers can be a loop old (a restarted primary's leader still
	// shows the synchronous standby it drops in its next round). Soak seed
	// 2030 round 136 started on such an instant and lost the primary with
	// no synchronous standby recorded: no failover, by design.
	settle := c.Opt.LoopInterval + 250*time.Millisecond
	var since time.Time
	var sinceP *cluster.Node
	err := waitFor(ctx, bound, func() bool {
		ok, q := healthyNow(ctx, c, sync, &last)
		if !ok || q != sinceP {
			since, sinceP = time.Time{}, q
			if !ok {
				return false
			}
		}
		if since.IsZero() {
			since = time.Now()
		}
		if time.Since(since) < settle {
			last = fmt.Errorf("healthy for %s, settling", time.Since(since).Round(time.Millisecond))
			return false
		}
		p = q
		return true
	})
	if err != nil {
		return nil, fmt.Errorf("%w (last: %v)", err, last)
	}
	return p, nil
}

// healthyNow: one member is primary, every other streams, and in
// synchronous mode the primary has a recorded synchronous standby.
func healthyNow(ctx context.Context, c *cluster.Cluster, sync bool, last *error) (bool, *cluster.Node) {
	q, err := primaryOf(ctx, c)
	if err != nil {
		*last = err
		return false, nil
	}
	for _, n := range c.Nodes {
		if n == q {
			continue
		}
		rctx, cancel := context.WithTimeout(ctx, time.Second)
		code, _, err := n.API(rctx, "/replica")
		cancel()
		if err != nil || code != 200 {
			*last = fmt.Errorf("%s is not streaming (%d %v)", n.Name, code, err)
			return false, nil
		}
	}
	if sync {
		rctx, cancel := context.WithTimeout(ctx, time.Second)
		_, body, err := q.API(rctx, "/status")
		cancel()
		var st struct {
			Sync *struct {
				Leader  string   `json:"leader"`
				Members []string `json:"members"`
			} `json:"sync"`
		}
		if err == nil {
			err = json.Unmarshal(body, &st)
		}
		if err != nil || st.Sync == nil || st.Sync.Leader != q.Name || len(st.Sync.Members) == 0 {
			*last = fmt.Errorf("%s has no recorded synchronous standby yet (%v)", q.Name, err)
			return false, nil
		}
	}
	return true, q
}

// primaryOf asks every member's /primary at once, each bounded on its own
// (a frozen agent must not make the others' answers time out), and returns
// the one member that answers 200.
func primaryOf(ctx context.Context, c *cluster.Cluster) (*cluster.Node, error) {
	codes := make([]int, len(c.Nodes))
	var wg sync.WaitGroup
	for i, n := range c.Nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rctx, cancel := context.WithTimeout(ctx, time.Second)
			defer cancel()
			codes[i], _, _ = n.API(rctx, "/primary")
		}()
	}
	wg.Wait()
	var found []*cluster.Node
	for i, n := range c.Nodes {
		if codes[i] == 200 {
			found = append(found, n)
		}
	}
	switch len(found) {
	case 1:
		return found[0], nil
	case 0:
		return nil, errors.New("no member answers /primary")
	}
	return nil, fmt.Errorf("%d members answer /primary", len(found))
}

// waitFor polls ok until it holds or bound passes.
func waitFor(ctx context.Context, bound time.Duration, ok func() bool) error {
	deadline := time.Now().Add(bound)
	for !ok() {
		if time.Now().After(deadline) {
			return fmt.Errorf("not within %s", bound)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond): // poll interval within the bound
		}
	}
	return nil
}

// writer is a client writing unique, increasing ids through a libpq
// multi-host connection string (target_session_attrs=read-write).
type writer struct {
	dsn  string
	dial func(ctx context.Context, network, addr string) (net.Conn, error)
	stop chan struct{}
	done chan struct{}

	mu    sync.Mutex
	acked []int64
	ackAt []time.Time
	// ackLSN is the WAL insert position each acknowledged row was
	// written at (just before its commit record).
	ackLSN  []uint64
	next    int64
	lastErr error
}

func startWriter(ctx context.Context, c *cluster.Cluster, p *cluster.Node, dial func(ctx context.Context, network, addr string) (net.Conn, error)) (*writer, error) {
	conn, err := p.Connect(ctx)
	if err != nil {
		return nil, err
	}
	var first int64
	err = conn.QueryRow(ctx, "SELECT coalesce(max(id), 0) FROM checker_rows").Scan(&first)
	conn.Close(ctx)
	if err != nil {
		return nil, err
	}
	var hosts []string
	for _, n := range c.Nodes {
		hosts = append(hosts, n.Addr)
	}
	w := &writer{stop: make(chan struct{}), done: make(chan struct{}), next: first, dial: dial,
		dsn: fmt.Sprintf("host=%s port=5432 user=postgres password=%s dbname=postgres sslmode=disable connect_timeout=1 target_session_attrs=read-write",
			strings.Join(hosts, ","), c.Opt.SuperuserPassword)}
	go w.run()
	return w, nil
}

func (w *writer) run() {
	defer close(w.done)
	var conn *pgx.Conn
	defer func() {
		if conn != nil {
			conn.Close(context.Background())
		}
	}()
	for {
		select {
		case <-w.stop:
			return
		case <-time.After(50 * time.Millisecond): // write pacing
		}
		if conn == nil {
			// Connecting gets its own budget: finding the primary through
			// the multi-host string may try every host, each with a
			// password exchange, which on a loaded machine took longer
			// than the one second an insert is given (a soak lane once
			// saw no acknowledgement for a minute while the primary
			// committed its pinned probes).
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			c, err := w.connect(ctx)
			cancel()
			if err != nil {
				w.setErr(fmt.Errorf("connect: %w", err))
				continue
			}
			conn = c
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		w.next++
		id := w.next
		var at string
		err := conn.QueryRow(ctx, "INSERT INTO checker_rows VALUES ($1) RETURNING pg_current_wal_insert_lsn()::text", id).Scan(&at)
		cancel()
		if err != nil {
			w.setErr(fmt.Errorf("insert: %w", err))
			conn.Close(context.Background())
			conn = nil
			continue
		}
		lsn, _ := state.ParseLSN(at)
		w.mu.Lock()
		w.acked, w.ackAt, w.ackLSN = append(w.acked, id), append(w.ackAt, time.Now()), append(w.ackLSN, uint64(lsn))
		w.mu.Unlock()
	}
}

// connect opens the writer's session (from the client host in the lab).
func (w *writer) connect(ctx context.Context) (*pgx.Conn, error) {
	cfg, err := pgx.ParseConfig(w.dsn)
	if err != nil {
		return nil, err
	}
	if w.dial != nil {
		cfg.DialFunc = w.dial
	}
	return pgx.ConnectConfig(ctx, cfg)
}

// setErr records the writer's latest failure, for the message when no
// write is acknowledged within the bound.
func (w *writer) setErr(err error) {
	w.mu.Lock()
	w.lastErr = err
	w.mu.Unlock()
}

// lastError is the writer's latest failure, or nil.
func (w *writer) lastError() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.lastErr
}

func (w *writer) count() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.acked)
}

func (w *writer) ackedAfter(t time.Time) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.ackAt) > 0 && w.ackAt[len(w.ackAt)-1].After(t)
}

// finish stops writing; it returns the longest gap between two
// acknowledgements.
func (w *writer) finish() time.Duration {
	close(w.stop)
	<-w.done
	w.mu.Lock()
	defer w.mu.Unlock()
	var gap time.Duration
	for i := 1; i < len(w.ackAt); i++ {
		gap = max(gap, w.ackAt[i].Sub(w.ackAt[i-1]))
	}
	return gap
}

// missing counts this round's acknowledged ids that n does not have, and
// how many bytes of WAL past n's timeline switch point the last of them
// was written at (0 when none is missing or n did not switch timelines):
// what the failover discarded, measured like maximum_lag_on_failover.
func (w *writer) missing(ctx context.Context, n *cluster.Node) (int, int64, error) {
	w.mu.Lock()
	ids := slices.Clone(w.acked)
	lsns := slices.Clone(w.ackLSN)
	w.mu.Unlock()
	if len(ids) == 0 {
		return 0, 0, nil
	}
	conn, err := n.Connect(ctx)
	if err != nil {
		return 0, 0, err
	}
	defer conn.Close(ctx)
	rows, err := conn.Query(ctx, "SELECT id FROM checker_rows WHERE id = ANY($1)", ids)
	if err != nil {
		return 0, 0, err
	}
	have := map[int64]bool{}
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return 0, 0, err
		}
		have[id] = true
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, 0, err
	}
	var last uint64
	lost := 0
	for i, id := range ids {
		if !have[id] {
			lost++
			last = max(last, lsns[i])
		}
	}
	if lost == 0 {
		return 0, 0, nil
	}
	// The switch point of n's current timeline: where its history forked
	// from the old primary's.
	var hist string
	err = conn.QueryRow(ctx, `SELECT coalesce(pg_read_file('pg_wal/' || lpad(upper(to_hex(timeline_id)), 8, '0') || '.history', true), '')
		FROM pg_control_checkpoint()`).Scan(&hist)
	if err != nil || hist == "" {
		return lost, 0, err
	}
	fork := forkPoint(hist)
	if fork == 0 || last <= fork {
		return lost, 0, nil
	}
	return lost, int64(last - fork), nil
}

// forkPoint is the switch point of the last line of a timeline history
// file ("<parent tli>\t<switch lsn>\t<reason>"), 0 if unreadable.
func forkPoint(hist string) uint64 {
	var fork uint64
	for _, l := range strings.Split(hist, "\n") {
		f := strings.Fields(l)
		if len(f) >= 2 {
			if v, err := state.ParseLSN(f[1]); err == nil {
				fork = uint64(v)
			}
		}
	}
	return fork
}

type span struct{ start, end time.Time }

// startPinned pins one writer to each member: every 20 ms it inserts a row
// there and records the interval of each acknowledged write.
func startPinned(c *cluster.Cluster) func() (map[string][]span, map[string]int) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	var mu sync.Mutex
	acks := map[string][]span{}
	refused := map[string]int{}
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
					conn, _ = c.ConnectDSN(ctx, n.DSN()+" connect_timeout=1")
				}
				if conn != nil {
					start := time.Now()
					_, err := conn.Exec(ctx, "INSERT INTO checker_probe(node) VALUES ($1)", n.Name)
					var pgErr *pgconn.PgError
					switch {
					case err == nil:
						mu.Lock()
						acks[n.Name] = append(acks[n.Name], span{start, time.Now()})
						mu.Unlock()
					case errors.As(err, &pgErr) && pgErr.Code == "25006":
						mu.Lock()
						refused[n.Name]++
						mu.Unlock()
						// A standby refused (read-only transaction): the
						// session stays usable, and writes in it once the
						// member is promoted. Reconnecting after every
						// refusal (50 new backends a second per standby)
						// kept a four-lane soak's 2 vCPUs saturated.
					default:
						conn.Close(context.Background())
						conn = nil
					}
				}
				cancel()
			}
		}(n)
	}
	return func() (map[string][]span, map[string]int) {
		close(done)
		wg.Wait()
		mu.Lock()
		defer mu.Unlock()
		return acks, refused
	}
}

// overlaps counts pairs of acknowledged writes on two different members
// whose intervals overlap: both members were writable at the same time.
func overlaps(acks map[string][]span) int {
	type ev struct {
		name string
		span
	}
	var all []ev
	for name, ss := range acks {
		for _, s := range ss {
			all = append(all, ev{name, s})
		}
	}
	sort.Slice(all, func(i, j int) bool { return all[i].start.Before(all[j].start) })
	n := 0
	for i := range all {
		for j := i + 1; j < len(all) && all[j].start.Before(all[i].end); j++ {
			if all[j].name != all[i].name {
				n++
			}
		}
	}
	return n
}

func describe(acks map[string][]span) string {
	var parts []string
	for _, name := range slices.Sorted(func(yield func(string) bool) {
		for k := range acks {
			if !yield(k) {
				return
			}
		}
	}) {
		ss := acks[name]
		if len(ss) == 0 {
			continue
		}
		parts = append(parts, fmt.Sprintf("%s %s-%s (%d)", name, ss[0].start.Format("15:04:05.000"), ss[len(ss)-1].end.Format("15:04:05.000"), len(ss)))
	}
	return strings.Join(parts, "; ")
}
