package agent

import (
	"context"
	"fmt"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
)

// systemd integration (Type=notify, WatchdogSec=; deploy/systemd/cifha.service):
//
//   - READY=1 once the agent holds its etcd lease session and has observed
//     postgres (Agent.observedUp): before that `systemctl start` waits,
//     and the unit's dependents with it. A long first clone comes after
//     READY, so TimeoutStartSec needs no room for it.
//   - STATUS= the role and plan, on every change (systemctl status shows
//     it).
//   - WATCHDOG=1 every third of WatchdogSec while Alive says the HA loop
//     runs (the rule of GET /liveness: an observation at most ttl old on
//     the leader, 2 ttl elsewhere, or a long action under way). A hung
//     loop stops the pings and systemd restarts the agent (SIGABRT, then
//     the unit's stop). That does not fence: the leader's postgres is
//     stopped by its own fence deadline, enforced by the separate fence
//     watchdog process before the lease can expire, which comes earlier
//     than any WatchdogSec worth setting (docs/fencing.md).
//
// Outside systemd (no NOTIFY_SOCKET) every call is a no-op.
type sdNotifier struct {
	a        *Agent
	notify   func(state string) error
	watchdog time.Duration // 0: no watchdog
}

func newSDNotifier(a *Agent) *sdNotifier {
	wd, _ := daemon.SdWatchdogEnabled(false)
	return &sdNotifier{a: a, watchdog: wd, notify: func(state string) error {
		_, err := daemon.SdNotify(false, state)
		return err
	}}
}

func (n *sdNotifier) run(ctx context.Context) {
	every := time.Second
	if n.watchdog > 0 {
		every = min(every, n.watchdog/3)
	}
	t := time.NewTicker(every)
	defer t.Stop()
	ready, status := false, ""
	for {
		if !ready && n.a.observedUp.Load() {
			ready = true
			if err := n.notify(daemon.SdNotifyReady); err != nil {
				n.a.log.Warn("systemd notify", "error", err)
			}
		}
		if ready {
			if s := n.a.sdStatus(); s != status {
				status = s
				_ = n.notify("STATUS=" + s)
			}
			if n.watchdog > 0 && n.a.Alive(n.a.now()) {
				_ = n.notify(daemon.SdNotifyWatchdog)
			}
		}
		select {
		case <-ctx.Done():
			_ = n.notify(daemon.SdNotifyStopping)
			return
		case <-t.C:
		}
	}
}

// sdStatus is the one-line status for systemd.
func (a *Agent) sdStatus() string {
	s := a.Snapshot()
	if s == nil {
		return "starting"
	}
	role := s.Member.Role
	if role == "" {
		role = "no role"
	}
	if s.IsLeader {
		role = "leader, " + role
	}
	return fmt.Sprintf("%s, postgres %s; %s: %s", role, s.Member.State, s.Plan.Action, s.Plan.Reason)
}

// Alive reports whether the HA loop runs (GET /liveness, the systemd
// watchdog): its last observation is at most ttl old on the leader, 2 ttl
// on the others, or it is busy in a long action that has its own timeout.
func (a *Agent) Alive(now time.Time) bool {
	if act := a.acting.Load(); act != nil && longAction(act.action) {
		return true
	}
	s := a.Snapshot()
	if s == nil {
		return false
	}
	limit := 2 * a.opt.TTL
	if s.IsLeader {
		limit = a.opt.TTL
	}
	return limit > 0 && now.Sub(s.ObservedAt) <= limit
}
