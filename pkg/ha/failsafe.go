package ha

import (
	"fmt"
	"time"

	"github.com/cifha/cifha/pkg/state"
)

// DCS failsafe mode (docs/fencing.md, "DCS failsafe mode").
//
// Without it a primary stays writable only while its etcd lease runs: when
// etcd is unreachable for every member, the primary fences although nobody
// could replace it. With it, a leader whose renewals fail asks every other
// member on the failsafe list (the failsafe key, written by the leader
// while etcd works) for a promise: "I am a standby following you, and I
// will not take the leader key for D". If every listed member promises,
// the leader may stay writable until the start of that round of requests
// plus the shortest D (its cover); the fence rule, the fencer and the
// fence watchdog all use the later of the lease's deadline and the cover's.
//
// Why this cannot make two primaries: another member becomes writable only
// by taking the leader key (gate). A member on the list that promised
// refuses to take it until its promise ends, which is after the cover ends
// (the promise is counted from when it was received, the cover from when
// it was asked, both on clocks that count real time). A member not on the
// list never takes the key while the list exists (the list's revision is
// part of the key's transaction). The leader stops extending the moment
// one member does not answer, and fences at the end of its current cover
// like at the end of its lease. A restarted agent, which may have promised
// before it restarted, keeps the promise as "any leader" for one ttl.

// FailsafeCover is a leader's writable extension from its peers' promises.
type FailsafeCover struct {
	// Lease is the lease postgres was made writable under when the
	// promises were given (the cover extends that term only).
	Lease int64
	// Until is the start of the round of requests plus the shortest
	// promised duration.
	Until time.Time
}

// AnyLeader is Promise.Leader for the hold after an agent starts: it may
// have promised some leader before it restarted.
const AnyLeader = "*"

// Promise is what a member promised a leader: not to take the leader key
// before Until.
type Promise struct {
	Leader string
	Until  time.Time
	// LSN is the highest WAL position the leader said it had written
	// when it asked (0: unknown). It stands in for the last-leader
	// record, which a leader cut off from etcd cannot update: a failover
	// after the outage measures the candidates against it.
	LSN state.LSN
}

// EffectiveLease is the lease a primary made writable under lease writable
// is fenced by: the session's lease, with its deadline extended to the
// cover's when the cover is for the same term. If the session has lost
// that lease (etcd expired it while unreachable, or granted a new one),
// the cover alone carries the term until the key is taken again.
func EffectiveLease(l state.LeaseState, writable int64, c FailsafeCover) state.LeaseState {
	if c.Lease == 0 || c.Lease != writable || c.Until.IsZero() {
		return l
	}
	if l.ID != c.Lease {
		return state.LeaseState{ID: c.Lease, ValidUntil: c.Until}
	}
	if c.Until.After(l.ValidUntil) {
		l.ValidUntil = c.Until
	}
	return l
}

// covered reports whether this primary is writable under its failsafe
// cover beyond its lease right now (within the fence margin).
func (o Observation) covered() bool {
	c := o.Cover
	return c.Lease != 0 && c.Lease == o.WritableLease && o.Now.Before(c.Until.Add(-o.FenceMargin))
}

// mayTakeKey says why this member must not take the leader key now ("":
// it may): a failsafe promise it gave, or the failsafe member list.
func (o Observation) mayTakeKey() string {
	listed := o.Cluster.FailsafeRev != 0
	if pr := o.Promise; o.Now.Before(pr.Until) && pr.Leader != o.Self {
		switch {
		case pr.Leader != AnyLeader:
			return fmt.Sprintf("this member promised leader %s (DCS failsafe) not to take the leader key for another %s",
				pr.Leader, pr.Until.Sub(o.Now).Round(time.Millisecond))
		case listed:
			return fmt.Sprintf("this agent started less than a ttl ago and may have promised a leader (DCS failsafe) not to take the key: %s left",
				pr.Until.Sub(o.Now).Round(time.Millisecond))
		}
	}
	if !listed {
		return ""
	}
	f := o.Cluster.Failsafe
	switch {
	case f == nil:
		return "the failsafe member list cannot be read: a leader cut off from etcd may be writable under promises this member cannot check"
	case !f.Has(o.Self):
		return fmt.Sprintf("this member is not on the failsafe member list written by %s: that leader, cut off from etcd, may be writable without having asked it", f.Leader)
	}
	return ""
}

// decideReacquire: postgres stayed writable through an etcd outage under
// its failsafe cover and etcd answers again, but the leader key is gone
// (the old lease expired while etcd could not be reached). Nobody else can
// have taken it (see above): take it again under the session's lease,
// keeping postgres running, before the cover ends.
func decideReacquire(o Observation) Plan {
	if o.Lease.ID == 0 {
		return plan(Wait, "etcd answers again; waiting for a new lease to take the leader key back (writable under failsafe promises for %s)",
			o.Cover.Until.Add(-o.FenceMargin).Sub(o.Now).Round(time.Millisecond))
	}
	return gate(o, plan(Reacquire, "etcd answers again and the leader key expired during the outage: taking it again under a new lease while writable under failsafe promises"))
}
