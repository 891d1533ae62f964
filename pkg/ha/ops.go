package ha

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/cifha/cifha/pkg/state"
)

// decideOp answers an operator's request: every request gets a plan or a
// refusal.
func decideOp(o Observation, leader string) Plan {
	switch o.Op {
	case OpRestart:
		if !o.Running {
			return plan(Refuse, "postgres is not running on %s", o.Self)
		}
		if !o.Standby.Standby && !o.HoldsLeader {
			return plan(Refuse, "%s runs a primary without the leader key", o.Self)
		}
		p := plan(Restart, "restart requested by the operator")
		if !o.Standby.Standby {
			// The leader's postgres is writable again after the restart:
			// the same fence rule as every other such step.
			if g := gate(o, p); g.Action != Restart {
				return plan(Refuse, "restart of the leader refused: %s", g.Reason)
			}
		}
		return p
	case OpReload:
		if o.DataDir != state.DataDirValid {
			// Writing postgresql.conf into an empty directory would make
			// it look foreign and block the clone for good.
			return plan(Refuse, "%s has no valid data directory (%s); nothing to reload", o.Self, o.DataDir)
		}
		return plan(Reload, "reload requested by the operator")
	case OpReinit:
		if o.DataDir == state.DataDirForeign {
			return plan(Refuse, "the data directory of %s is not a PostgreSQL data directory; cifha does not touch it", o.Self)
		}
		if o.HoldsLeader || leader == o.Self {
			return plan(Refuse, "%s is the leader: reinit would destroy the primary; switch over first", o.Self)
		}
		if leader == "" {
			return plan(Refuse, "no leader to clone from")
		}
		addr, serving := o.upstream(leader)
		if !serving {
			return plan(Refuse, "leader %s is not serving; cannot clone from it", leader)
		}
		return Plan{Action: Reinit, Target: leader, TargetAddr: addr, Reason: fmt.Sprintf("reinit requested: re-cloning from %s", leader)}
	case OpDropSlot:
		if !o.HoldsLeader || o.PG == nil || o.PG.InRecovery {
			return plan(Refuse, "%s is not the leader", o.Self)
		}
		if !state.ValidName(o.OpArg) && !o.ignoredMember(o.OpArg) {
			return plan(Refuse, "%q is not a member name", o.OpArg)
		}
		if _, alive := o.Cluster.Members[o.OpArg]; alive {
			return plan(Refuse, "member %s is alive (its agent holds a lease); stop it first", o.OpArg)
		}
		for _, k := range slices.Sorted(maps.Keys(o.Cluster.Invalid)) {
			if strings.HasSuffix(k, "/members/"+o.OpArg) {
				return plan(Refuse, "member %s's key exists but cannot be read: it may be alive", o.OpArg)
			}
		}
		return Plan{Action: DropSlot, Target: o.OpArg, Reason: fmt.Sprintf("removing member %s: dropping its replication slot", o.OpArg)}
	}
	return plan(Refuse, "unknown request %v", o.Op)
}

// ignoredMember reports whether a member key for name is among the keys
// ignored as hand-written.
func (o Observation) ignoredMember(name string) bool {
	for k := range o.Cluster.Ignored {
		if strings.HasSuffix(k, "/members/"+name) {
			return true
		}
	}
	return false
}
