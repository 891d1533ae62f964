package ha

import (
	"maps"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/cifha/cifha/pkg/state"
)

// The lease in obs() is valid until t0+3s and the margin is 1s, so the
// fence is at t0+2s. With a budget of 500ms a writable step may begin
// before t0+1.5s.
const budget = 500 * time.Millisecond

func withBudget(o *Observation) { o.WritableBudget = budget }
func expired(o *Observation)    { o.Now = t0.Add(3 * time.Second) }
func inMargin(o *Observation)   { o.Now = t0.Add(1600 * time.Millisecond) }
func paused(o *Observation)     { o.Cluster.Paused = true }

// Hole 1: every path that makes postgres writable passes the fence rule.
func TestWritablePathsAreGated(t *testing.T) {
	paths := []struct {
		name string
		o    []func(*Observation)
		want Action
	}{
		{"start as primary holding the key", []func(*Observation){holds}, StartPrimary},
		{"acquire and start", []func(*Observation){lastLeader("db1", 1)}, AcquireAndStart},
		{"bootstrap", []func(*Observation){emptyDir}, Bootstrap},
		{"promote a standby holding the key", []func(*Observation){standbyFiles("db9 10.0.1.9:5432"), runningStandby, holds}, Promote},
		{"failover take-over", nil, TakeOver},
		{"paused: restart a fenced leader in place", []func(*Observation){holds, paused, func(o *Observation) { o.FencedUnder = 7 }}, StartPrimary},
		{"operator restart of the leader", []func(*Observation){holds, runningPrimary, writable, func(o *Observation) { o.Op = OpRestart }}, Restart},
	}
	for _, p := range paths {
		mk := func(extra ...func(*Observation)) Observation {
			opts := append(append([]func(*Observation){withBudget}, p.o...), extra...)
			if p.want == TakeOver {
				return failover(0x1000, opts...)
			}
			return obs(opts...)
		}
		t.Run(p.name+": plenty of lease left", func(t *testing.T) {
			if got := Decide(mk()); got.Action != p.want {
				t.Fatalf("Decide = %v (%s); want %v", got.Action, got.Reason, p.want)
			}
		})
		for _, lim := range []struct {
			name string
			f    func(*Observation)
		}{{"inside the margin plus budget", inMargin}, {"lease expired", expired}, {"no lease", func(o *Observation) { o.Lease = state.LeaseState{} }}} {
			t.Run(p.name+": "+lim.name, func(t *testing.T) {
				got := Decide(mk(lim.f))
				if got.Action.MakesWritable() {
					t.Fatalf("Decide = %v (%s): made writable %s", got.Action, got.Reason, lim.name)
				}
			})
		}
	}
}

// Hole 5: a primary that cannot start gives up its lease.
func TestPrimaryStartTimeout(t *testing.T) {
	failing := func(since time.Duration) func(*Observation) {
		return func(o *Observation) {
			o.StartFailingSince, o.PrimaryStartTimeout, o.RecentWindow = t0.Add(-since), time.Minute, 6*time.Second
		}
	}
	cases := []struct {
		name string
		o    Observation
		want Action
	}{
		{"failing for less than primary_start_timeout -> keep trying", obs(holds, failing(30*time.Second)), StartPrimary},
		{"failing for primary_start_timeout -> release the key", obs(holds, failing(time.Minute)), Resign},
		{"timeout 0 -> never release", obs(holds, func(o *Observation) { o.StartFailingSince = t0.Add(-time.Hour) }), StartPrimary},
		{"released, no leader yet, inside the standbys' window -> wait", obs(lastLeader("db1", 1), failing(time.Minute+time.Second), func(o *Observation) { o.ResignedAt = t0.Add(-time.Second) }), Wait},
		{"released, nobody took over after the window -> try again", obs(lastLeader("db1", 1), failing(time.Minute+7*time.Second), func(o *Observation) { o.ResignedAt = t0.Add(-7 * time.Second) }), AcquireAndStart},
	}
	for _, tc := range cases {
		if got := Decide(tc.o); got.Action != tc.want {
			t.Errorf("%s: Decide = %v (%s); want %v", tc.name, got.Action, got.Reason, tc.want)
		}
	}
	if p := Decide(obs(holds, failing(30*time.Second))); !p.WakeAt.Equal(t0.Add(30 * time.Second)) {
		t.Errorf("WakeAt = %v; want the timeout", p.WakeAt)
	}
}

// Hole 7: pause never turns a blip into an outage.
func TestPausedFencedLeaderRestarts(t *testing.T) {
	cases := []struct {
		name string
		o    Observation
		want Action
	}{
		{"fenced under the current lease, key still ours -> start in place", obs(holds, paused, func(o *Observation) { o.FencedUnder = 7 }), StartPrimary},
		{"fenced under an older lease -> wait", obs(holds, paused, func(o *Observation) { o.FencedUnder = 6 }), Wait},
		{"crashed (not fenced) -> wait, as Patroni's pause", obs(holds, paused), Wait},
		{"fenced, but the key is not ours -> wait", obs(leaderKey("db2"), db2, paused, func(o *Observation) { o.FencedUnder = 7 }), Wait},
	}
	for _, tc := range cases {
		if got := Decide(tc.o); got.Action != tc.want {
			t.Errorf("%s: Decide = %v (%s); want %v", tc.name, got.Action, got.Reason, tc.want)
		}
	}
}

// Hole 8: hand-written, lease-less leader keys.
func TestUnboundLeaderKey(t *testing.T) {
	unbound := func(name string) func(*Observation) {
		return func(o *Observation) {
			leaderKey(name)(o)
			o.Cluster.Leader.Lease = 0
		}
	}
	cases := []struct {
		name string
		o    Observation
		want Action
	}{
		{"lease-less key naming a stopped member, no primary runs -> clear it", obs(standbyFiles("db2 10.0.1.2:5432"), runningStandby, unbound("db2")), ClearLeaderKey},
		{"lease-less key naming this standby -> never promote on it", obs(standbyFiles("db2 10.0.1.2:5432"), runningStandby, unbound("db1")), ClearLeaderKey},
		{"lease-less key while a primary runs -> wait for it", obs(standbyFiles("db2 10.0.1.2:5432"), runningStandby, unbound("db3"), db2), Wait},
		{"lease-less key while a member's state is unknown -> wait (unknown is not stopped)", obs(standbyFiles("db2 10.0.1.2:5432"), runningStandby, unbound("db3"), member("db3", "primary", "unknown", "10.0.1.3:5432")), Wait},
		{"lease-less key while a foreign postmaster runs -> wait", obs(standbyFiles("db2 10.0.1.2:5432"), runningStandby, unbound("db3"), member("db3", "primary", "foreign postmaster", "10.0.1.3:5432")), Wait},
		{"lease-less key while a member promotes -> wait", obs(standbyFiles("db2 10.0.1.2:5432"), runningStandby, unbound("db3"), member("db4", "replica", "promoting", "10.0.1.4:5432")), Wait},
		{"lease-less key while a member key is unreadable -> wait", obs(standbyFiles("db2 10.0.1.2:5432"), runningStandby, unbound("db3"), func(o *Observation) { o.Cluster.Invalid["/cifha/c/members/db5"] = "bad" }), Wait},
		{"lease-less key, the named primary stopped -> clear", obs(standbyFiles("db2 10.0.1.2:5432"), runningStandby, unbound("db3"), member("db3", "primary", "stopped", "10.0.1.3:5432")), ClearLeaderKey},
		{"our key overwritten without a lease -> repair", obs(runningPrimary, writable, unbound("db1"), func(o *Observation) { o.OwnsLeaderKey = true }), RepairLeaderKey},
		{"garbage key on a lease -> wait for it to expire, never clear", obs(standbyFiles("db2 10.0.1.2:5432"), runningStandby, leaderKey("{x")), None},
		{"empty member with a lease-less key -> clear, never clone from it", obs(emptyDir, initialized("db2"), unbound("db2")), ClearLeaderKey},
		{"key naming db3 on db2's lease -> nobody's term: clear it", obs(standbyFiles("db2 10.0.1.2:5432"), runningStandby, leaderKey("db3"), func(o *Observation) {
			o.Cluster.Leader.Lease = 22
			o.Cluster.MemberLease = map[string]int64{"db2": 22, "db3": 33}
		}), ClearLeaderKey},
		{"key naming db3 on db3's own lease -> a real leader", obs(standbyFiles("db3 10.0.1.3:5432"), runningStandby, leaderKey("db3"), member("db3", "primary", "running", "10.0.1.3:5432"), func(o *Observation) {
			o.Cluster.Leader.Lease = 33
			o.Cluster.MemberLease = map[string]int64{"db3": 33}
		}), None},
	}
	for _, tc := range cases {
		got := Decide(tc.o)
		if got.Action != tc.want {
			t.Errorf("%s: Decide = %v (%s); want %v", tc.name, got.Action, got.Reason, tc.want)
		}
		if got.Action == Promote || got.Action == TakeOver {
			t.Errorf("%s: promoted on a hand-written key", tc.name)
		}
	}
}

// Hole 2 (second half): a standby that cannot follow the leader's timeline
// (its history diverged) is rewound instead of sitting "in recovery"
// forever; a failed rewind is said plainly, or re-clones when allowed.
func TestDivergedStandbyIsReported(t *testing.T) {
	o := obs(standbyFiles("db2 10.0.1.2:5432"), runningStandby, leaderKey("db2"), db2, func(o *Observation) {
		o.PG.WalReceiver = ""
		o.RecentWindow = 6 * time.Second
		m := o.Cluster.Members["db2"]
		m.Timeline = 3
		o.Cluster.Members["db2"] = m
	})
	// Just started (after a rewind, say): given time to connect first.
	o.RunningSince = o.Now.Add(-2 * time.Second)
	if got := Decide(o); got.Action != None {
		t.Fatalf("Decide = %v (%s); a standby started 2 s ago must get time to follow", got.Action, got.Reason)
	}
	o.RunningSince = o.Now.Add(-7 * time.Second)
	got := Decide(o)
	if got.Action != Rewind || got.Target != "db2" || !strings.Contains(got.Reason, "diverged") {
		t.Fatalf("Decide = %v (%s); want a rewind from db2", got.Action, got.Reason)
	}
	o.RewindFailed = "no common ancestor"
	if got := Decide(o); got.Action != Wait || !strings.Contains(got.Reason, "pg_rewind failed") {
		t.Fatalf("Decide = %v (%s); want a wait after a failed rewind", got.Action, got.Reason)
	}
	o.RemoveOnRewindFailure = true
	if got := Decide(o); got.Action != Reclone {
		t.Fatalf("Decide = %v (%s); want a re-clone", got.Action, got.Reason)
	}
}

// Hole 13: the same observation gives the same plan, and Decide never
// changes its input.
func TestDecideIsDeterministic(t *testing.T) {
	inputs := []Observation{
		failover(0x900, peer("db2", 0x1000, 0), peer("db3", 0x1000, 0), peer("db4", 0x1000, 3), peer("db5", 0x800, 0)),
		failover(0x1000, func(o *Observation) {
			o.Cluster.Invalid["/cifha/c/members/db7"] = "bad"
			o.Cluster.Invalid["/cifha/c/members/db3"] = "worse"
		}),
		obs(standbyFiles("db2 10.0.1.2:5432"), runningStandby, func(o *Observation) {
			leaderKey("db9")(o)
			o.Cluster.Leader.Lease = 0
			for _, n := range []string{"db2", "db3", "db4", "db5"} {
				member(n, "primary", "running", "10.0.1.9:5432")(o)
			}
		}),
	}
	for i, in := range inputs {
		want := Decide(in)
		snapshot := deepCopy(in)
		for range 100 {
			if got := Decide(in); got != want {
				t.Fatalf("input %d: Decide = %+v, earlier %+v", i, got, want)
			}
		}
		if !reflect.DeepEqual(snapshot, in) {
			t.Fatalf("input %d: Decide changed its input", i)
		}
	}
	// The best candidate is named, by the total order: db4 (priority 3).
	if got := Decide(inputs[0]); !strings.Contains(got.Reason, "db4 is a better candidate") {
		t.Fatalf("reason %q; want db4 named", got.Reason)
	}
}

func deepCopy(o Observation) Observation {
	c := o
	c.Cluster.Members = maps.Clone(o.Cluster.Members)
	c.Cluster.Invalid = maps.Clone(o.Cluster.Invalid)
	c.Cluster.MemberLease = maps.Clone(o.Cluster.MemberLease)
	c.Candidates = maps.Clone(o.Candidates)
	if o.PG != nil {
		pg := *o.PG
		c.PG = &pg
	}
	if o.Cluster.Leader != nil {
		l := *o.Cluster.Leader
		c.Cluster.Leader = &l
	}
	if o.Cluster.LastLeader != nil {
		l := *o.Cluster.LastLeader
		c.Cluster.LastLeader = &l
	}
	return c
}

func TestRankIsATotalOrder(t *testing.T) {
	rs := []Rank{
		{Name: "c", Timeline: 1, Received: 10},
		{Name: "a", Timeline: 1, Received: 10},
		{Name: "b", Timeline: 2, Received: 1},
		{Name: "d", Timeline: 1, Received: 10, Priority: 1},
		{Name: "e", Timeline: 1, Received: 10, Replayed: 5},
	}
	Sort(rs)
	var got []string
	for _, r := range rs {
		got = append(got, r.Name)
	}
	if want := "b e d a c"; strings.Join(got, " ") != want {
		t.Fatalf("order %v; want %s", got, want)
	}
	for _, a := range rs {
		for _, b := range rs {
			if a.Name != b.Name && Less(a, b) == Less(b, a) {
				t.Fatalf("Less not strict between %s and %s", a.Name, b.Name)
			}
		}
	}
}

func TestTimingRule(t *testing.T) {
	ok := Timing{TTL: 10 * time.Second, LoopInterval: time.Second, FenceMargin: 2 * time.Second, DialTimeout: 2 * time.Second}
	if err := ok.Validate(); err != nil {
		t.Fatalf("defaults refused: %v", err)
	}
	bad := []struct {
		name string
		f    func(*Timing)
		key  string
	}{
		{"ttl below minimum", func(t *Timing) { t.TTL = time.Second }, "ttl"},
		{"ttl fractional", func(t *Timing) { t.TTL = 2500 * time.Millisecond }, "ttl"},
		{"loop above ttl/3", func(t *Timing) { t.LoopInterval = 4 * time.Second }, "loop_interval"},
		{"loop too fast", func(t *Timing) { t.LoopInterval = time.Millisecond }, "loop_interval"},
		{"margin above ttl/3", func(t *Timing) { t.FenceMargin = 4 * time.Second }, "fence_margin"},
		{"margin too small", func(t *Timing) { t.FenceMargin = 100 * time.Millisecond }, "fence_margin"},
		{"dial too slow", func(t *Timing) { t.DialTimeout = 5 * time.Second }, "dial_timeout"},
	}
	for _, b := range bad {
		tm := ok
		b.f(&tm)
		err := tm.Validate()
		if err == nil || !strings.Contains(err.Error(), b.key) {
			t.Errorf("%s: Validate = %v; want an error naming %s", b.name, err, b.key)
		}
	}
	// The writable budget never blocks a healthy member: after one renewal
	// interval and one failed attempt, more than margin + budget is left.
	for ttl := MinTTL; ttl <= 120*time.Second; ttl += time.Second {
		tm := Timing{TTL: ttl, FenceMargin: ttl / 3}
		left := ttl - tm.RenewInterval() - tm.RenewAttemptTimeout() - tm.RenewRetryDelay()
		if left <= tm.FenceMargin+tm.WritableBudget() {
			t.Fatalf("ttl %s: %s left, margin+budget %s", ttl, left, tm.FenceMargin+tm.WritableBudget())
		}
	}
	// An etcd leader change (measured up to 3.9 s under load) fits
	// between a primary's last renewal and its fence at every ttl from the
	// default (7 s) with the default margin (min(2 s, ttl/3)): a writable
	// member renews at most MaxWritableRenewInterval apart.
	for ttl := 7 * time.Second; ttl <= 120*time.Second; ttl += time.Second {
		tm := Timing{TTL: ttl, FenceMargin: min(2*time.Second, ttl/3)}
		if left := ttl - tm.FenceMargin - tm.WritableRenewInterval(); left < 4500*time.Millisecond {
			t.Fatalf("ttl %s: %s between the last renewal and the fence, want >= 4.5 s", ttl, left)
		}
		if tm.WritableRenewInterval() > tm.RenewInterval() {
			t.Fatalf("ttl %s: the writable period is the longer one", ttl)
		}
	}
	// Hole 9: for every allowed ttl and margin, two full renewal attempts
	// fit between the last success and the fence.
	for ttl := MinTTL; ttl <= 120*time.Second; ttl += time.Second {
		for _, m := range []time.Duration{MinFenceMargin, ttl / 4, ttl / 3} {
			tm := Timing{TTL: ttl, LoopInterval: MinLoopInterval, FenceMargin: m, DialTimeout: time.Millisecond}
			if tm.Validate() != nil {
				continue
			}
			if need := tm.RenewInterval() + 2*tm.RenewAttemptTimeout() + tm.RenewRetryDelay(); need > ttl-m {
				t.Fatalf("ttl %s margin %s: renewals need %s, fence leaves %s", ttl, m, need, ttl-m)
			}
		}
	}
}

func TestFenceRule(t *testing.T) {
	l := state.LeaseState{ID: 7, ValidUntil: t0.Add(3 * time.Second)}
	if at := FenceAt(l, time.Second); !at.Equal(t0.Add(2 * time.Second)) {
		t.Fatalf("FenceAt = %v", at)
	}
	if !FenceAt(state.LeaseState{}, time.Second).IsZero() {
		t.Fatal("no lease must fence at once")
	}
	if MayStayWritable(t0.Add(2*time.Second), l, time.Second) || !MayStayWritable(t0.Add(1999*time.Millisecond), l, time.Second) {
		t.Fatal("MayStayWritable disagrees with FenceAt")
	}
	if ok, _ := MayBecomeWritable(t0.Add(1500*time.Millisecond), l, time.Second, budget); ok {
		t.Fatal("a step ending exactly at the fence was allowed")
	}
	if ok, why := MayBecomeWritable(t0, l, time.Second, budget); !ok {
		t.Fatalf("plenty of lease refused: %s", why)
	}
	_ = maps.Clone[map[string]int]
}

// db2 is a serving leader db2 at 10.0.1.2:5432.
var db2 = member("db2", "primary", "running", "10.0.1.2:5432")
