package ha

import (
	"fmt"
	"time"
)

// Action is what the agent does in one round.
type Action int

// Actions.
const (
	None Action = iota
	Wait
	Bootstrap
	Clone
	StartPrimary
	AcquireAndStart
	StartStandby
	Follow
	Promote
	RepairLeaderKey
	ClearStaleLeader
	Demote
	Fence
	StopForeign
	TakeOver
	Rewind
	Reclone
	// Switchover hands the leader role to Plan.Target (planned, no loss).
	Switchover
	// ClearRequest removes a switchover or failover request that can no
	// longer be carried out (Plan.Reason says why).
	ClearRequest
	// Operator requests (cifhactl restart, reload, reinit, remove).
	Restart
	Reload
	Reinit
	DropSlot
	// Refuse answers an operator request with Plan.Reason and does nothing.
	Refuse
	// Resign releases the leader key (a primary that cannot start).
	Resign
	// ClearLeaderKey deletes a leader key bound to no lease (written by
	// hand), if unchanged since it was read.
	ClearLeaderKey
	// Switchover phases (switchover.go): hand the key over; record that
	// it was handed over; roll back before the handoff; follow the new
	// primary; take the key back; give up and let the normal rules apply.
	Handoff
	SwitchoverHandedOff
	SwitchoverRollback
	SwitchoverFollow
	TakeBack
	SwitchoverAbandon
	// Reacquire takes the free leader key again, under the session's new
	// lease, for a primary that stayed writable through an etcd outage
	// under its peers' failsafe promises (failsafe.go): postgres keeps
	// running.
	Reacquire
)

var actionNames = [...]string{"none", "wait", "bootstrap", "clone", "start-primary", "acquire-and-start",
	"start-standby", "follow", "promote", "repair-leader-key", "clear-stale-leader", "demote",
	"fence", "stop-foreign", "take-over", "rewind", "reclone", "switchover", "clear-request", "restart",
	"reload", "reinit", "drop-slot", "refuse", "resign", "clear-leader-key", "handoff", "handed-off",
	"switchover-rollback", "switchover-follow", "take-back", "switchover-abandon", "reacquire"}

func (a Action) String() string {
	if int(a) >= 0 && int(a) < len(actionNames) {
		return actionNames[a]
	}
	return fmt.Sprintf("action(%d)", int(a))
}

// MakesWritable reports whether the action can leave postgres accepting
// writes: each such plan is gated by MayBecomeWritable in Decide, and the
// agent re-checks the gate (with a fresh clock) right before the step.
func (a Action) MakesWritable() bool {
	switch a {
	case Bootstrap, StartPrimary, AcquireAndStart, Promote, TakeOver, Restart, SwitchoverRollback, TakeBack, Reacquire:
		return true
	}
	return false
}

// Plan is Decide's answer.
type Plan struct {
	Action Action
	// Target is the member acted towards (the leader to clone or follow).
	Target string
	// TargetAddr is the target's postgres host:port.
	TargetAddr string
	// Reason is why, for people: logged on change and shown by cifhactl.
	Reason string
	// WakeAt, when set, is when the agent should look again even if
	// nothing happens (a scheduled switchover, a start timeout).
	WakeAt time.Time
}

func plan(a Action, format string, args ...any) Plan {
	return Plan{Action: a, Reason: fmt.Sprintf(format, args...)}
}
