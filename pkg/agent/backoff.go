package agent

import (
	"time"

	"github.com/cifha/cifha/pkg/ha"
)

// Failing actions back off: a clone whose pg_basebackup is refused, a
// standby whose postgres cannot start, a bootstrap whose initdb fails or
// a rewind that errors are retried after loop_interval, then twice that,
// and so on up to backoffCap, instead of every round. The cause is usually
// something an operator must fix (a pg_hba line, a full disk, a port), and
// hammering it fills the logs and the peer's logs (each refused
// pg_basebackup is a FATAL line on the primary) without getting there
// sooner. Safety and failover actions (fence, demote, promote, acquire,
// the switchover phases, start-primary with its own primary_start_timeout)
// never back off: each round retries them.
//
// The state belongs to the loop goroutine. A change of plan (another
// action or target) or a success starts over; so does a reload (SIGHUP),
// since a changed configuration is the usual fix.
type backoff struct {
	action   ha.Action
	target   string
	failures int
	until    time.Time
	lastErr  error
}

const backoffCap = 30 * time.Second

// backsOff reports whether failures of a are retried with a growing delay.
func backsOff(a ha.Action) bool {
	switch a {
	case ha.Bootstrap, ha.Clone, ha.StartStandby, ha.Rewind, ha.Reclone:
		return true
	}
	return false
}

// wait reports whether p must not be tried yet at now, and until when.
func (b *backoff) wait(now time.Time, p ha.Plan) (time.Time, bool) {
	if !backsOff(p.Action) || p.Action != b.action || p.Target != b.target || b.failures == 0 {
		return time.Time{}, false
	}
	return b.until, now.Before(b.until)
}

// record notes the result of trying p at now; base is the loop interval.
func (b *backoff) record(now time.Time, p ha.Plan, err error, base time.Duration) {
	if err == nil || !backsOff(p.Action) {
		*b = backoff{}
		return
	}
	if p.Action != b.action || p.Target != b.target {
		*b = backoff{action: p.Action, target: p.Target}
	}
	b.failures++
	d := base
	for i := 1; i < b.failures && d < backoffCap; i++ {
		d *= 2
	}
	b.until = now.Add(min(d, backoffCap))
	b.lastErr = err
}
