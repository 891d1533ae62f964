package ha

import (
	"strings"
	"testing"
	"time"

	"github.com/cifha/cifha/pkg/state"
)

// failsafeList writes a failsafe member list naming leader and members.
func failsafeList(leader string, names ...string) func(*Observation) {
	return func(o *Observation) {
		m := map[string]string{leader: "http://" + leader + ":8008"}
		for _, n := range names {
			m[n] = "http://" + n + ":8008"
		}
		o.Cluster.Failsafe = &state.FailsafeState{Leader: leader, Members: m, ModRev: 40}
		o.Cluster.FailsafeRev = 40
	}
}

func cover(lease int64, until time.Duration) func(*Observation) {
	return func(o *Observation) { o.Cover = FailsafeCover{Lease: lease, Until: t0.Add(until)} }
}

func promised(leader string, until time.Duration) func(*Observation) {
	return func(o *Observation) { o.Promise = Promise{Leader: leader, Until: t0.Add(until)} }
}

func etcdDown(o *Observation) { o.DCSErr = errString("etcd unreachable") }

type errString string

func (e errString) Error() string { return string(e) }

func TestDecideFailsafe(t *testing.T) {
	// The lease (7) ran out 5 s ago on the session's clock: without a
	// cover the primary fences.
	expired := func(o *Observation) { o.Lease.ValidUntil = t0.Add(-5 * time.Second) }
	newLease := func(o *Observation) { o.Lease = state.LeaseState{ID: 8, ValidUntil: t0.Add(3 * time.Second)} }
	noLease := func(o *Observation) { o.Lease = state.LeaseState{} }
	cases := []struct {
		name string
		o    Observation
		want Action
		in   string // substring of the reason
	}{
		// The leader's side.
		{"etcd down, lease expired, no cover: fence", obs(runningPrimary, writable, expired, etcdDown), Fence, "lease expires"},
		{"etcd down, lease expired, cover for this term: keep writing", obs(runningPrimary, writable, expired, etcdDown, cover(7, 4*time.Second)), Wait, "etcd unreachable"},
		{"cover ends within the margin: fence", obs(runningPrimary, writable, expired, etcdDown, cover(7, 900*time.Millisecond)), Fence, "failsafe promises end"},
		{"cover for another term does not count", obs(runningPrimary, writable, expired, etcdDown, cover(6, 4*time.Second)), Fence, "lease expires"},
		{"cover for a primary this agent did not make writable does not count", obs(runningPrimary, expired, etcdDown, cover(7, 4*time.Second)), Fence, ""},
		{"etcd back, lease lost, no new one yet: wait under the cover", obs(runningPrimary, writable, noLease, cover(7, 4*time.Second)), Wait, "waiting for a new lease"},
		{"etcd back, new lease, key expired: take it again", obs(runningPrimary, writable, newLease, cover(7, 4*time.Second), failsafeList("db1", "db2")), Reacquire, ""},
		{"etcd back, new lease, key taken by another: demote", obs(runningPrimary, writable, newLease, cover(7, 4*time.Second), leaderKey("db2")), Demote, ""},
		{"etcd back, new lease, cover over: fence", obs(runningPrimary, writable, newLease, cover(7, 500*time.Millisecond)), Fence, ""},
		{"key deleted while the lease runs, no cover: fence", obs(runningPrimary, writable), Fence, "leader key is gone"},
		{"new lease too short for the step: wait", obs(runningPrimary, writable, cover(7, 4*time.Second), func(o *Observation) {
			o.Lease = state.LeaseState{ID: 8, ValidUntil: t0.Add(1100 * time.Millisecond)}
			o.WritableBudget = 500 * time.Millisecond
		}), Wait, "not making postgres writable"},

		// The standbys' side.
		{"promised the old leader: no failover", failover(0x1000, promised("db9", 2*time.Second)), Wait, "promised leader db9"},
		{"promise over: failover", failover(0x1000, promised("db9", -time.Millisecond), failsafeList("db9", "db1")), TakeOver, ""},
		{"not on the failsafe list: no failover", failover(0x1000, failsafeList("db9", "db2")), Wait, "not on the failsafe member list"},
		{"failsafe list unreadable: no failover", failover(0x1000, func(o *Observation) { o.Cluster.FailsafeRev = 3 }), Wait, "cannot be read"},
		{"just started, list exists: hold", failover(0x1000, promised(AnyLeader, time.Second), failsafeList("db9", "db1")), Wait, "started less than a ttl ago"},
		{"just started, no list: no hold", failover(0x1000, promised(AnyLeader, time.Second)), TakeOver, ""},
		{"promise to itself does not hold it back", failover(0x1000, promised("db1", time.Second)), TakeOver, ""},
		{"stopped primary not on the list does not take the key", obs(lastLeader("db1", 1), failsafeList("db9", "db2")), Wait, "not on the failsafe member list"},
		{"holder starts its primary whatever the list", obs(holds, failsafeList("db9", "db2"), promised("db9", time.Second)), StartPrimary, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := Decide(c.o)
			if p.Action != c.want || !strings.Contains(p.Reason, c.in) {
				t.Fatalf("got %s (%s), want %s containing %q", p.Action, p.Reason, c.want, c.in)
			}
		})
	}
}

func TestEffectiveLease(t *testing.T) {
	l := state.LeaseState{ID: 7, ValidUntil: t0.Add(time.Second)}
	for _, c := range []struct {
		name     string
		l        state.LeaseState
		writable int64
		c        FailsafeCover
		want     state.LeaseState
	}{
		{"no cover", l, 7, FailsafeCover{}, l},
		{"later cover extends", l, 7, FailsafeCover{7, t0.Add(3 * time.Second)}, state.LeaseState{ID: 7, ValidUntil: t0.Add(3 * time.Second)}},
		{"earlier cover changes nothing", l, 7, FailsafeCover{7, t0}, l},
		{"cover of another term ignored", l, 7, FailsafeCover{6, t0.Add(3 * time.Second)}, l},
		{"cover of a term not writable ignored", l, 0, FailsafeCover{7, t0.Add(3 * time.Second)}, l},
		{"lease lost: the cover carries the term", state.LeaseState{}, 7, FailsafeCover{7, t0.Add(3 * time.Second)}, state.LeaseState{ID: 7, ValidUntil: t0.Add(3 * time.Second)}},
		{"new lease: the cover carries the old term", state.LeaseState{ID: 8, ValidUntil: t0.Add(9 * time.Second)}, 7, FailsafeCover{7, t0.Add(3 * time.Second)}, state.LeaseState{ID: 7, ValidUntil: t0.Add(3 * time.Second)}},
	} {
		if got := EffectiveLease(c.l, c.writable, c.c); got != c.want {
			t.Errorf("%s: got %+v, want %+v", c.name, got, c.want)
		}
	}
}

// TestDecideFailsafeRearm: the key taken again under the new lease, the
// term not yet moved to it: move it (no acquire), gated by the new lease.
func TestDecideFailsafeRearm(t *testing.T) {
	o := obs(runningPrimary, writable, holds, cover(7, 4*time.Second), func(o *Observation) {
		o.Lease = state.LeaseState{ID: 8, ValidUntil: t0.Add(3 * time.Second)}
		o.Cluster.Leader.Lease = 8
	})
	if p := Decide(o); p.Action != Reacquire {
		t.Fatalf("got %s (%s), want reacquire", p.Action, p.Reason)
	}
}

// TestDecideFailsafePromiseLSN: a leader cut off from etcd could not
// update its last-leader record; the position it reported when asking for
// a promise is what a later failover measures this member against.
func TestDecideFailsafePromiseLSN(t *testing.T) {
	ahead := func(o *Observation) {
		o.Promise = Promise{Leader: "db9", Until: t0.Add(-time.Second), LSN: 0x1000 + 2<<20}
	}
	if p := Decide(failover(0x1000, ahead)); p.Action != Wait || !strings.Contains(p.Reason, "maximum_lag_on_failover") {
		t.Fatalf("got %s (%s), want wait on the lag gate", p.Action, p.Reason)
	}
	other := func(o *Observation) {
		o.Promise = Promise{Leader: "db7", Until: t0.Add(-time.Second), LSN: 0x1000 + 2<<20}
	}
	if p := Decide(failover(0x1000, other)); p.Action != TakeOver {
		t.Fatalf("a position reported by another leader counted: %s (%s)", p.Action, p.Reason)
	}
}

// TestPromiseWaitWakesAtItsEnd: a failover held by a failsafe promise
// looks again when the promise ends, not a loop interval later.
func TestPromiseWaitWakesAtItsEnd(t *testing.T) {
	p := Decide(failover(0x1000, promised("db9", 400*time.Millisecond)))
	if p.Action != Wait || !p.WakeAt.Equal(t0.Add(400*time.Millisecond)) {
		t.Fatalf("got %s wake %v (%s), want a wait waking at the promise's end", p.Action, p.WakeAt, p.Reason)
	}
}
