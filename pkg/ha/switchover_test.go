package ha

import (
	"errors"
	"testing"
	"time"

	"github.com/cifha/cifha/pkg/state"
)

// stopped is db1, the old leader of a switchover to db2 (lease 22), its
// postgres stopped cleanly at checkpoint 0x1000 on timeline 1, still
// holding the key on lease 7.
func stopped(opts ...func(*Observation)) Observation {
	base := []func(*Observation){holds, db2lease, func(o *Observation) {
		o.Switchover = &SwitchoverProgress{ID: "r1", To: "db2", ToLease: 22, FromLease: 7, ReqModRev: 40,
			Phase: PhaseStopped, Checkpoint: 0x1000, Timeline: 1, Deadline: t0.Add(30 * time.Second)}
		o.SwitchoverTarget = &Candidate{Running: true, InRecovery: true, ReceiveLSN: 0x900, ReplayLSN: 0x900, StreamedAgo: time.Second}
	}}
	return obs(append(base, opts...)...)
}

// handedOff: the key is db2's (lease 22); db2 is still a standby.
func handedOff(opts ...func(*Observation)) Observation {
	base := []func(*Observation){func(o *Observation) {
		o.Switchover.Phase = PhaseHandedOff
		o.Cluster.LastLeader = &state.LastLeader{Name: "db2", Timeline: 1, LSN: "0/1000", From: "db1", SwitchoverID: "r1"}
		o.Cluster.LastLeaderRev = 41
		leaderKey("db2")(o)
		o.Cluster.Leader.Lease = 22
		o.HoldsLeader, o.OwnsLeaderKey = false, false
	}}
	return stopped(append(base, opts...)...)
}

func replayed(lsn state.LSN) func(*Observation) {
	return func(o *Observation) { o.SwitchoverTarget.ReplayLSN = lsn }
}

// The switchover scenarios of the former loop tests, as Decide rows.
func TestDecideSwitchoverPhases(t *testing.T) {
	cases := []struct {
		name string
		o    Observation
		want Action
	}{
		// Requested.
		{"due, candidate caught up -> stop at a checkpoint", obs(holds, runningPrimary, writable, db2lease, switchover("db1", "db2", time.Time{})), Switchover},
		{"due, candidate's API unreadable -> refuse and clear", obs(holds, runningPrimary, writable, db2lease, switchover("db1", "db2", time.Time{}), func(o *Observation) {
			o.SwitchoverTarget, o.SwitchoverTargetErr = nil, errors.New("connection refused")
		}), ClearRequest},
		{"due, candidate more than maximum_lag_on_failover behind -> refuse", obs(holds, runningPrimary, writable, db2lease, switchover("db1", "db2", time.Time{}), func(o *Observation) {
			o.PG.CurrentLSN = 0x10000000
		}), ClearRequest},
		{"due, candidate replay paused -> refuse", obs(holds, runningPrimary, writable, db2lease, switchover("db1", "db2", time.Time{}), func(o *Observation) {
			o.SwitchoverTarget.ReplayPaused = true
		}), ClearRequest},

		// Stopped at the checkpoint, awaiting replay.
		{"candidate behind the checkpoint -> wait (woken soon)", stopped(), Wait},
		{"candidate replayed exactly to the checkpoint's start -> still wait", stopped(replayed(0x1000)), Wait},
		{"candidate replayed past the checkpoint -> hand off", stopped(replayed(0x1001)), Handoff},
		{"candidate never catches up (deadline) -> roll back", stopped(at(31*time.Second), func(o *Observation) {
			o.Lease.ValidUntil = t0.Add(time.Hour)
		}), SwitchoverRollback},
		{"stop was not clean -> roll back", stopped(func(o *Observation) { o.Switchover.Failed = "state in production" }), SwitchoverRollback},
		{"roll back, but the lease is inside the margin -> not writable", stopped(func(o *Observation) { o.Switchover.Failed = "x" }, at(2500*time.Millisecond)), Wait},
		{"roll back needs the key: lease replaced -> abandon, never writable", stopped(func(o *Observation) {
			o.Switchover.Failed = "x"
			o.HoldsLeader = false
		}), SwitchoverAbandon},
		{"handoff's answer lost but it committed -> handed off", stopped(func(o *Observation) {
			leaderKey("db2")(o)
			o.Cluster.Leader.Lease = 22
			o.HoldsLeader = false
		}), SwitchoverHandedOff},
		{"candidate's API unreadable while awaiting replay -> wait", stopped(func(o *Observation) {
			o.SwitchoverTarget, o.SwitchoverTargetErr = nil, errors.New("timeout")
		}), Wait},

		// Handed off.
		{"candidate runs as primary on a newer timeline -> follow it (no rewind)", handedOff(func(o *Observation) {
			o.Cluster.Members["db2"] = state.Member{Name: "db2", Role: "primary", State: "running", Timeline: 2, ConnAddress: "10.0.1.2:5432"}
		}), SwitchoverFollow},
		{"candidate still promoting -> wait", handedOff(), Wait},
		{"candidate lost the key before claiming its promotion -> take it back", handedOff(func(o *Observation) {
			o.Cluster.Leader = nil
			delete(o.Cluster.Members, "db2")
		}), TakeBack},
		{"candidate claimed its promotion, then lost the key -> never take back", handedOff(func(o *Observation) {
			o.Cluster.Leader = nil
			o.Cluster.Promotion, o.Cluster.PromotionRev = &state.PromotionClaim{Name: "db2", Switchover: "r1"}, 50
		}), SwitchoverAbandon},
		{"an older switchover's claim does not block the take-back", handedOff(func(o *Observation) {
			o.Cluster.Leader = nil
			o.Cluster.Promotion, o.Cluster.PromotionRev = &state.PromotionClaim{Name: "db3", Switchover: "r0"}, 12
		}), TakeBack},
		{"candidate died, another member took over (and lost the key) since -> never take back", handedOff(func(o *Observation) {
			o.Cluster.Leader = nil
			o.Cluster.LastLeader = &state.LastLeader{Name: "db3", Timeline: 2, LSN: "0/2000"}
		}), SwitchoverAbandon},
		{"key free past the deadline -> abandon, never wait forever", handedOff(at(31*time.Second), func(o *Observation) {
			o.Cluster.Leader = nil
			o.Lease.ValidUntil = t0.Add(time.Hour)
		}), SwitchoverAbandon},
		{"unreadable claim -> no take-back on a guess", handedOff(func(o *Observation) {
			o.Cluster.Leader = nil
			o.Cluster.Promotion = &state.PromotionClaim{Name: "?", Switchover: "?"}
		}), SwitchoverAbandon},
		{"take-back with the lease expired -> not writable", handedOff(func(o *Observation) {
			o.Cluster.Leader = nil
		}, at(5*time.Second)), Wait},
		{"another member took the key -> abandon, normal rules", handedOff(func(o *Observation) {
			leaderKey("db3")(o)
		}), SwitchoverAbandon},
		{"candidate holds the key but never finishes -> abandon at the deadline", handedOff(at(31*time.Second), func(o *Observation) {
			o.Lease.ValidUntil = t0.Add(time.Hour)
		}), SwitchoverAbandon},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := Decide(tc.o)
			if got.Action != tc.want {
				t.Fatalf("Decide = %v (%s); want %v", got.Action, got.Reason, tc.want)
			}
			if got.Action == Wait && tc.o.Switchover != nil && tc.o.Switchover.Phase == PhaseStopped && tc.o.Switchover.Failed == "" && got.WakeAt.IsZero() {
				t.Error("awaiting replay without a wake-up time")
			}
		})
	}
}
