package ha

import (
	"errors"
	"fmt"
	"time"

	"github.com/cifha/cifha/pkg/state"
)

// Timing is the set of durations the safety argument depends on. It is
// validated in one place (Validate), whether the values come from the
// file configuration, from the cluster-wide settings in etcd or from the
// ttl read at start (docs/fencing.md).
type Timing struct {
	// TTL is the leader lease's time to live (whole seconds, etcd counts
	// seconds).
	TTL time.Duration
	// LoopInterval is how often the agent observes when nothing wakes it.
	LoopInterval time.Duration
	// FenceMargin: a primary begins to stop accepting writes this long
	// before its lease can expire.
	FenceMargin time.Duration
	// DialTimeout bounds connecting to etcd.
	DialTimeout time.Duration
}

// Limits of the timing rule.
const (
	MinTTL          = 2 * time.Second
	MinLoopInterval = 50 * time.Millisecond
	MinFenceMargin  = 300 * time.Millisecond
)

// TimingError names the setting that breaks the rule.
type TimingError struct {
	Key     string // "ttl", "loop_interval", "fence_margin", "dial_timeout"
	Value   time.Duration
	Problem string
}

func (e *TimingError) Error() string { return fmt.Sprintf("%s = %s: %s", e.Key, e.Value, e.Problem) }

// With returns t with the ttl replaced (a cluster-wide ttl checked against
// this member's other settings).
func (t Timing) With(ttl time.Duration) Timing { t.TTL = ttl; return t }

// MaxWritableRenewInterval caps the renewal period of a member whose
// postgres is writable.
const MaxWritableRenewInterval = 500 * time.Millisecond

// RenewInterval is how often the lease is renewed after a success: ttl/4.
// The timing rule (Validate) is checked with it, the longer of the two
// periods.
func (t Timing) RenewInterval() time.Duration { return t.TTL / 4 }

// WritableRenewInterval is the renewal period while this member's postgres
// is writable: ttl/4, at most MaxWritableRenewInterval.
//
// Why more often: the primary fences at its last successful renewal plus
// ttl - margin, so whatever etcd cannot renew through (an etcd leader
// election takes up to two election timeouts, 2 s at etcd's defaults,
// measured up to 3.9 s here under load) must fit in ttl - margin - the
// period. At ttl/4 a 7 s ttl leaves 3.25 s, at 500 ms 4.5 s. Only the
// primary pays for it (two small requests twice a second): a standby's
// lease fences nothing, and renewing every agent at that rate cost
// every idle agent four times the CPU (docs/benchmarks.md).
func (t Timing) WritableRenewInterval() time.Duration {
	return min(t.RenewInterval(), MaxWritableRenewInterval)
}

// RenewAttemptTimeout bounds one renewal (keepalive) request.
func (t Timing) RenewAttemptTimeout() time.Duration { return t.TTL / 8 }

// RequestTimeout bounds one etcd request of the loop (reads, writes,
// transactions): at most a renewal interval, and 2 s.
func (t Timing) RequestTimeout() time.Duration { return min(t.RenewInterval(), 2*time.Second) }

// WritableBudget bounds a step that makes postgres writable (the
// leader-key transaction and a start or promotion) for the fence rule
// (MayBecomeWritable): ttl/6. A step that overruns it is still safe (the
// fencer stops postgres at FenceAt); the budget only keeps a doomed step
// from starting. It never blocks a healthy member: after a renewal cycle,
// even with one failed attempt, more than ttl/2 >= margin + budget of the
// lease is left.
func (t Timing) WritableBudget() time.Duration { return t.TTL / 6 }

// RenewRetryDelay is the pause after a failed renewal before the next try.
func (t Timing) RenewRetryDelay() time.Duration { return t.TTL / 20 }

// SyncReplyTimeout is how old a synchronous standby's last reply to the
// primary (pg_stat_replication.reply_time; standbys reply every second,
// wal_receiver_status_interval) may be before the leader stops counting it
// healthy: half the ttl, at least 2 s. A standby cut from the primary's
// postgres while it still reaches etcd keeps its member key and shows as
// streaming until wal_sender_timeout ends the connection; the fault lab
// measured every commit stalled for 60 s that way. With this, commits
// stall at most about this long plus a loop before the leader moves to
// another standby (or, non-strict, to asynchronous replication).
func (t Timing) SyncReplyTimeout() time.Duration { return max(2*time.Second, t.TTL/2) }

// Validate checks the one timing rule:
//
//   - ttl is at least MinTTL and whole seconds;
//   - the loop runs at least three times per ttl (it is what notices
//     trouble) and not more often than MinLoopInterval;
//   - the fence margin is at least MinFenceMargin (a fast stop escalated to
//     immediate and SIGKILL needs room) and at most ttl/3;
//   - between the last successful renewal and the fence, at least two full
//     renewal attempts fit, each bounded by RenewAttemptTimeout, so that one
//     slow or lost request can never demote a healthy primary:
//     RenewInterval + 2*RenewAttemptTimeout + RenewRetryDelay <= ttl - margin;
//   - dialling etcd takes less than ttl/2 (a member must be able to reach
//     etcd again while its lease still runs).
//
// All problems are returned, joined; each is a *TimingError.
func (t Timing) Validate() error {
	var errs []error
	bad := func(key string, v time.Duration, format string, args ...any) {
		errs = append(errs, &TimingError{Key: key, Value: v, Problem: fmt.Sprintf(format, args...)})
	}
	ttl := t.TTL
	switch {
	case ttl < MinTTL:
		bad("ttl", ttl, "below the minimum %s", MinTTL)
		return errors.Join(errs...) // the other rules are relative to ttl
	case ttl%time.Second != 0:
		bad("ttl", ttl, "must be whole seconds (etcd leases count seconds)")
	}
	switch li := t.LoopInterval; {
	case li < MinLoopInterval:
		bad("loop_interval", li, "below the minimum %s", MinLoopInterval)
	case li > ttl/3:
		bad("loop_interval", li, "must be at most ttl/3 (%s)", ttl/3)
	}
	switch m := t.FenceMargin; {
	case m < MinFenceMargin:
		bad("fence_margin", m, "below the minimum %s (a fast stop escalated to immediate needs room)", MinFenceMargin)
	case m > ttl/3:
		bad("fence_margin", m, "must be at most ttl/3 (%s): one missed renewal must not demote", ttl/3)
	case t.RenewInterval()+2*t.RenewAttemptTimeout()+t.RenewRetryDelay() > ttl-m:
		bad("fence_margin", m, "leaves room for fewer than two lease renewals before the fence")
	}
	if dt := t.DialTimeout; dt <= 0 || dt >= ttl/2 {
		bad("dial_timeout", dt, "must be positive and less than ttl/2 (%s)", ttl/2)
	}
	return errors.Join(errs...)
}

// FenceAt is the one fence rule: the moment a primary under lease must
// have begun to stop accepting writes, the lease's lower-bound expiry minus
// the margin. The zero time (no lease) means "already".
//
// Invariant: no other member can take the leader key before
// lease.ValidUntil (docs/fencing.md); a primary that starts to stop at
// FenceAt, with the stop bounded by the margin, has stopped before then.
func FenceAt(lease state.LeaseState, margin time.Duration) time.Time {
	if lease.ID == 0 || lease.ValidUntil.IsZero() {
		return time.Time{}
	}
	return lease.ValidUntil.Add(-margin)
}

// MayStayWritable reports whether a primary under lease may still accept
// writes at now: before FenceAt.
func MayStayWritable(now time.Time, lease state.LeaseState, margin time.Duration) bool {
	at := FenceAt(lease, margin)
	return !at.IsZero() && now.Before(at)
}

// MayBecomeWritable reports whether a step that makes postgres writable
// (start as primary, promote, resume after a switchover or restart) may
// begin at now under lease: the step, bounded by budget, must end before
// FenceAt. Otherwise it says why, for the plan's reason.
func MayBecomeWritable(now time.Time, lease state.LeaseState, margin, budget time.Duration) (bool, string) {
	at := FenceAt(lease, margin)
	switch {
	case lease.ID == 0:
		return false, "this member holds no lease"
	case !now.Before(lease.ValidUntil):
		return false, "this member's lease has expired"
	case !now.Add(budget).Before(at):
		return false, fmt.Sprintf("the lease has %s left, less than the fence margin (%s) plus this step's budget (%s)",
			lease.ValidUntil.Sub(now).Round(time.Millisecond), margin, budget)
	}
	return true, ""
}
