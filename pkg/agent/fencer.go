package agent

import (
	"context"
	"github.com/cifha/cifha/pkg/ha"
	"sync"
	"time"

	"github.com/cifha/cifha/pkg/election"
	"github.com/cifha/cifha/pkg/pgctl"
)

// fencer enforces the lease deadline outside the acting loop.
//
// The loop's Decide fences a primary at ValidUntil - FenceMargin, but only
// when the loop runs: a slow etcd read, a long start or any other blocking
// action would delay it past the deadline. The fencer is a second, tiny
// goroutine that does one thing: while armed (postgres was made writable by
// this agent under lease L), it stops postgres as soon as the session's
// lease is no longer L or the deadline minus the margin has passed. This is
// a deliberate exception to "one goroutine acts": it can only ever stop
// postgres, never start or promote, so it cannot conflict with a decision
// in a way that makes two primaries. See docs/fencing.md.
type fencer struct {
	a *Agent

	mu    sync.Mutex
	lease int64 // 0 = disarmed
	// armedCh wakes the fencer when it is armed.
	armedCh chan struct{}
}

func (f *fencer) arm(lease int64) {
	f.mu.Lock()
	f.lease = lease
	f.mu.Unlock()
	if lease != 0 {
		select {
		case f.armedCh <- struct{}{}:
		default:
		}
	}
}

func (f *fencer) disarm() { f.arm(0) }

// poke makes the fencer look again now (a failsafe cover moved the
// deadline).
func (f *fencer) poke() {
	select {
	case f.armedCh <- struct{}{}:
	default:
	}
}

// lease is the lease the fencer enforces for a postgres made writable
// under armed: the session's, extended by a failsafe cover of that term.
func (a *Agent) fenceLease(armed int64) election.LeaseState {
	return ha.EffectiveLease(a.opt.DCS.Lease(), armed, a.fs.coverNow())
}

// disarmIf disarms only if still armed for lease: the loop may have armed a
// newer term while the fencer was stopping the old one.
func (f *fencer) disarmIf(lease int64) {
	f.mu.Lock()
	if f.lease == lease {
		f.lease = 0
	}
	f.mu.Unlock()
}

func (f *fencer) armed() int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.lease
}

// idleCheck is how often a disarmed fencer looks again without being woken.
// Arming wakes it at once (armedCh), and so does every lease renewal: this
// is a fallback only, long enough not to cost an idle standby a wake-up a
// second.
const idleCheck = 30 * time.Second

// lag is how long after FenceAt the fencer acts: the loop's Decide fences
// at FenceAt itself and the fencer is its backup, so it gives the loop the
// first moment (and the log its "action=fence"). It is at most a tenth of
// the margin (and 100 ms): a fast stop escalated to immediate (margin/3
// each) still ends well before the lease can expire. The fence watchdog,
// the backup of both, fires at FenceAt + margin/4 and escalates to
// SIGKILL after margin/2: it too ends before ValidUntil.
func (f *fencer) lag() time.Duration {
	return min(f.a.opt.FenceMargin/10, 100*time.Millisecond)
}

// feedEvery is how often the fencer looks at the lease when no renewal
// signal woke it (a session without one, the tests' fakes): ttl/8. A
// renewal normally wakes it at once (Options.LeaseRenewed), long before
// the deadline it replaces (at least 5/12 ttl after the renewal was sent:
// renewals every ttl/4, margin at most ttl/3).
func (f *fencer) feedEvery() time.Duration {
	if f.a.opt.LeaseRenewed != nil && f.a.opt.TTL > 0 {
		return f.a.opt.TTL / 3 // a fallback only
	}
	if f.a.opt.TTL <= 0 {
		return 250 * time.Millisecond
	}
	return max(f.a.opt.TTL/8, 50*time.Millisecond)
}

func (f *fencer) run(ctx context.Context) {
	t := time.NewTimer(0)
	defer t.Stop()
	wdArmed := false
	var wdDeadline time.Time // what the watchdog holds
	wdPID := 0
	writable := false
	setWritable := func(on bool) {
		if on != writable && f.a.opt.Writable != nil {
			f.a.opt.Writable(on)
		}
		writable = on
	}
	defer setWritable(false)
	disarmWatchdog := func() {
		if wdArmed && f.a.opt.Watchdog != nil {
			f.a.opt.Watchdog.Disarm()
		}
		wdArmed = false
	}
	defer disarmWatchdog()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-f.armedCh:
		case <-f.a.opt.LeaseRenewed:
		}
		armed := f.armed()
		setWritable(armed != 0)
		if armed == 0 || !f.a.opt.PG.Running() {
			disarmWatchdog()
			wdDeadline = time.Time{}
			if armed != 0 {
				// Armed for a postgres that is starting: look again soon,
				// so the watchdog covers it from its first moments.
				t.Reset(10 * time.Millisecond)
			} else {
				t.Reset(idleCheck)
			}
			continue
		}
		lease := f.a.fenceLease(armed)
		now := f.a.now()
		if lease.ID == armed && ha.MayStayWritable(now.Add(-f.lag()), lease, f.a.opt.FenceMargin) {
			until := ha.FenceAt(lease, f.a.opt.FenceMargin).Add(f.lag()).Sub(now)
			if wd := f.a.opt.Watchdog; wd != nil {
				// Feed the external watchdog the absolute fence time when it
				// moved (a renewal wakes the fencer at once); it fires if
				// this process stops feeding it (hung, SIGSTOP).
				at := ha.FenceAt(lease, f.a.opt.FenceMargin)
				wdAt := at.Add(f.a.opt.FenceMargin / 4)
				var err error
				// Re-armed when the deadline moved or postgres was restarted
				// (a new postmaster PID). Not coalesced: a watchdog holding
				// an older deadline would fence before the fencer, and take
				// from the primary the time an etcd leader change needs.
				if pid := f.a.opt.PG.PID(); !wdArmed || !wdAt.Equal(wdDeadline) || pid != wdPID {
					err = wd.Arm(pid, wdAt, f.a.opt.FenceMargin/2)
					wdDeadline, wdPID = wdAt, pid
				}
				if err != nil {
					// The deadline is not enforced outside this process:
					// a primary must not run on the fencer alone.
					f.a.log.Error("fencing: the fence watchdog does not work; stopping postgres", "error", err)
					f.stop(ctx, armed)
					t.Reset(10 * time.Millisecond)
					continue
				}
				wdArmed = true
				until = min(until, f.feedEvery())
			}
			// Sleep until this lease's fence time (or the next feed); a
			// renewal moves it later and the fencer looks again then.
			t.Reset(until)
			continue
		}
		f.a.log.Warn("fencing: lease deadline reached without renewal; stopping postgres",
			"lease_changed", lease.ID != armed)
		if !f.stop(ctx, armed) {
			t.Reset(10 * time.Millisecond)
			continue
		}
		t.Reset(idleCheck)
	}
}

// stop stops postgres within the margin (fast, escalating) and disarms.
func (f *fencer) stop(ctx context.Context, armed int64) bool {
	step := f.a.opt.FenceMargin / 3
	if step <= 0 {
		step = 100 * time.Millisecond
	}
	if err := f.a.opt.PG.StopWithin(ctx, pgctl.Fast, step); err != nil {
		f.a.log.Error("fencing: stop postgres", "error", err)
		return false
	}
	f.a.fencedUnder.Store(armed)
	f.disarmIf(armed)
	return true
}

// fenceDue returns a channel that fires at this primary's fence time, so the
// loop itself wakes at the deadline rather than at its next tick.
func (a *Agent) fenceDue() <-chan time.Time {
	if a.writableLease == 0 {
		return nil
	}
	d := ha.FenceAt(a.fenceLease(a.writableLease), a.opt.FenceMargin).Sub(a.now())
	if d < 0 {
		d = 0
	}
	return time.After(d)
}
