package ha

import (
	"errors"
	"testing"
	"time"

	"github.com/cifha/cifha/pkg/state"
)

var t0 = time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)

// obs builds an observation of member "db1" with a healthy lease and a
// readable, empty cluster; options adjust it.
func obs(opts ...func(*Observation)) Observation {
	o := Observation{
		Now: t0, Self: "db1", FenceMargin: time.Second,
		DataDir: state.DataDirValid,
		Lease:   state.LeaseState{ID: 7, ValidUntil: t0.Add(3 * time.Second)},
		Cluster: state.Cluster{Members: map[string]state.Member{}, Invalid: map[string]string{}},
	}
	for _, f := range opts {
		f(&o)
	}
	return o
}

func emptyDir(o *Observation) { o.DataDir = state.DataDirMissing }
func writable(o *Observation) { o.WritableLease = 7 }
func standbyFiles(target string) func(*Observation) {
	return func(o *Observation) { o.Standby = state.StandbyState{Standby: true, Target: target} }
}
func runningPrimary(o *Observation) {
	o.Running = true
	o.PG = &state.Status{Timeline: 1, CurrentLSN: 100}
}
func runningStandby(o *Observation) {
	o.Running = true
	o.PG = &state.Status{InRecovery: true, Timeline: 1, WalReceiver: "streaming"}
}
func leaderKey(name string) func(*Observation) {
	return func(o *Observation) {
		o.Cluster.Leader = &state.Leader{Name: name, Valid: state.ValidName(name), CreateRev: 5, ModRev: 5, Lease: 9}
	}
}
func holds(o *Observation) {
	leaderKey("db1")(o)
	o.Cluster.Leader.Lease = 7
	o.HoldsLeader, o.OwnsLeaderKey = true, true
}
func member(name, role, st, addr string) func(*Observation) {
	return func(o *Observation) {
		o.Cluster.Members[name] = state.Member{Name: name, Role: role, State: st, ConnAddress: addr}
	}
}
func initialized(by string) func(*Observation) {
	return func(o *Observation) { o.Cluster.Initialize = by }
}
func lastLeader(name string, tl int) func(*Observation) {
	return func(o *Observation) { o.Cluster.LastLeader = &state.LastLeader{Name: name, Timeline: tl} }
}
func at(d time.Duration) func(*Observation) { return func(o *Observation) { o.Now = t0.Add(d) } }

// failover builds a running standby of db1 whose leader key is gone: it
// streamed 1 s ago and has received recv; the last leader published 0/1000.
func failover(recv state.LSN, opts ...func(*Observation)) Observation {
	base := []func(*Observation){standbyFiles("db9 10.0.1.9:5432"), runningStandby, lastLeader("db9", 1), func(o *Observation) {
		o.Cluster.LastLeader.LSN = "0/1000"
		o.PG.ReceiveLSN, o.PG.ReplayLSN = recv, recv
		o.LastStreamed, o.RecentWindow, o.MaxLag = t0.Add(-time.Second), 6*time.Second, 1<<20
		o.Candidates = map[string]Candidate{}
	}}
	return obs(append(base, opts...)...)
}

// peer adds another replica with a live position.
func peer(name string, recv state.LSN, prio int, tags ...string) func(*Observation) {
	return func(o *Observation) {
		o.Cluster.Members[name] = state.Member{Name: name, Role: "replica", State: "streaming"}
		c := Candidate{Running: true, InRecovery: true, Timeline: 1, ReceiveLSN: recv, ReplayLSN: recv, FailoverPriority: prio, StreamedAgo: time.Second}
		for _, t := range tags {
			switch t {
			case "nofailover":
				c.NoFailover = true
			case "unreachable":
				c = Candidate{Err: "connection refused"}
			case "down":
				c = Candidate{}
			case "stale":
				c.StreamedAgo = time.Minute
			}
		}
		o.Candidates[name] = c
	}
}

func switchover(from, to string, at time.Time) func(*Observation) {
	return func(o *Observation) {
		o.Cluster.Switchover = &state.SwitchoverRequest{ID: "x", From: from, To: to, At: at}
	}
}

// db2lease adds a streaming standby db2 whose member key is on a live lease.
func db2lease(o *Observation) {
	member("db2", "replica", "streaming", "10.0.1.2:5432")(o)
	o.Cluster.MemberLease = map[string]int64{"db2": 22}
	// Its live position, as the agent reads it when a switchover is due.
	o.SwitchoverTarget = &Candidate{Running: true, InRecovery: true, ReceiveLSN: 100, ReplayLSN: 100, StreamedAgo: time.Second}
	o.RecentWindow, o.MaxLag = 6*time.Second, 1<<20
}

func TestDecideFailover(t *testing.T) {
	cases := []struct {
		name string
		o    Observation
		want Action
	}{
		{"leader gone, only candidate, caught up -> take over", failover(0x1000), TakeOver},
		{"manual failover to this member overrides the lag gate", failover(0x1000, func(o *Observation) {
			o.Cluster.LastLeader.LSN = "1/0"
			o.Cluster.Failover = &state.FailoverRequest{To: "db1"}
		}), TakeOver},
		{"manual failover to this member overrides a better peer", failover(0x900, peer("db2", 0x1000, 0), func(o *Observation) { o.Cluster.Failover = &state.FailoverRequest{To: "db1"} }), TakeOver},
		{"manual failover to another member -> wait, even when best", failover(0x1000, func(o *Observation) { o.Cluster.Failover = &state.FailoverRequest{To: "db2"} }), Wait},
		{"leader gone, ahead of the other standby -> take over", failover(0x1000, peer("db2", 0x900, 0)), TakeOver},
		{"leader gone, another standby received more -> wait for it", failover(0x900, peer("db2", 0x1000, 0)), Wait},
		{"equal received, replay decides", failover(0x1000, peer("db2", 0x1000, 0), func(o *Observation) { o.PG.ReplayLSN = 0x800 }), Wait},
		{"equal positions, higher failover_priority wins", failover(0x1000, peer("db2", 0x1000, 5)), Wait},
		{"equal positions and priority, name breaks the tie (db1 < db2)", failover(0x1000, peer("db2", 0x1000, 0)), TakeOver},
		{"better peer is tagged nofailover -> it does not count", failover(0x900, peer("db2", 0x1000, 0, "nofailover")), TakeOver},
		{"better peer's postgres is down -> it does not count", failover(0x900, peer("db2", 0x1000, 0, "down")), TakeOver},
		{"better peer has not streamed recently and lacks WAL -> not a candidate, no blocker", failover(0x900, peer("db2", 0xF00, 0, "stale")), TakeOver},
		{"hole 6: peer that has all of the last leader's WAL is a candidate though it has not streamed recently", failover(0x900, peer("db2", 0x1000, 0, "stale")), Wait},
		{"a peer cannot be read -> refuse on incomplete data", failover(0x1000, peer("db2", 0, 0, "unreachable")), Wait},
		{"this member is tagged nofailover -> wait", failover(0x1000, func(o *Observation) { o.NoFailover = true }), Wait},
		{"lag beyond maximum_lag_on_failover -> wait", failover(0x1000, func(o *Observation) { o.Cluster.LastLeader.LSN = "0/2000000" }), Wait},
		{"lag exactly at the limit -> take over", failover(0x1000, func(o *Observation) { o.Cluster.LastLeader.LSN = "0/101000" }), TakeOver},
		{"every standby lags -> nobody promotes", failover(0x1000, peer("db2", 0x1000, 0), func(o *Observation) { o.Cluster.LastLeader.LSN = "1/0" }), Wait},
		{"peer beyond the lag limit is not a better candidate", failover(0x1000, peer("db2", 0x5000000, 0), func(o *Observation) { o.Cluster.LastLeader.LSN = "0/5000000"; o.MaxLag = 0x5000000 - 0x1000 }), Wait},
		{"not streamed recently and lacking WAL -> not a safe candidate", failover(0xF00, func(o *Observation) { o.LastStreamed = t0.Add(-time.Minute) }), Wait},
		{"never streamed and lacking WAL -> not a safe candidate", failover(0xF00, func(o *Observation) { o.LastStreamed = time.Time{} }), Wait},
		{"hole 6: agent restarted (never saw itself stream) but has all of the last leader's WAL -> take over", failover(0x1000, func(o *Observation) { o.LastStreamed = time.Time{} }), TakeOver},
		{"hole 6: rejoined a minute ago, has all of the last leader's WAL -> take over", failover(0x1200, func(o *Observation) { o.LastStreamed = t0.Add(-time.Minute) }), TakeOver},
		{"hole 2: this standby is on an older timeline than the last leader -> never takes over, whatever its LSN", failover(0x9000, func(o *Observation) { o.Cluster.LastLeader.Timeline = 2 }), Wait},
		{"hole 2: a peer on an older timeline than the last leader is no candidate and no blocker", failover(0x1000, peer("db2", 0x9000, 0), func(o *Observation) {
			o.Cluster.LastLeader.Timeline, o.PG.Timeline = 2, 2
		}), TakeOver},
		{"leader ran a longer ttl (30 s) than this member (window 6 s): streamed 40 s ago still counts", failover(0xF00, func(o *Observation) {
			o.LastStreamed, o.Cluster.LastLeader.TTL = t0.Add(-40*time.Second), 30
		}), TakeOver},
		{"leader's ttl 30 s: streamed 70 s ago is stale", failover(0xF00, func(o *Observation) {
			o.LastStreamed, o.Cluster.LastLeader.TTL = t0.Add(-70*time.Second), 30
		}), Wait},
		{"leader's LSN unknown -> refuse", failover(0x1000, func(o *Observation) { o.Cluster.LastLeader.LSN = "" }), Wait},
		{"no last leader record -> refuse", failover(0x1000, func(o *Observation) { o.Cluster.LastLeader = nil }), Wait},
		{"old leader's own member entry is ignored", failover(0x1000, peer("db9", 0, 0, "unreachable")), TakeOver},
		{"a cloning member is no candidate and no blocker", failover(0x1000, func(o *Observation) {
			o.Cluster.Members["db3"] = state.Member{Name: "db3", Role: "", State: "cloning"}
		}), TakeOver},
		{"peer on a newer timeline wins over more WAL on an older one", failover(0x2000, peer("db2", 0x1000, 0), func(o *Observation) {
			c := o.Candidates["db2"]
			c.Timeline = 3
			o.Candidates["db2"] = c
			o.PG.Timeline = 2
		}), Wait},
		{"this member on the newest timeline wins", failover(0x1000, peer("db2", 0x2000, 0), func(o *Observation) {
			o.StreamedTimeline = 3
			c := o.Candidates["db2"]
			c.Timeline = 2
			o.Candidates["db2"] = c
		}), TakeOver},
		{"a member key holds garbage -> refuse on incomplete data", failover(0x1000, func(o *Observation) {
			o.Cluster.Invalid["/cifha/c/members/db3"] = "invalid JSON"
		}), Wait},
		{"leader key present -> no failover", failover(0x1000, leaderKey("db9"), member("db9", "primary", "running", "10.0.1.9:5432")), None},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := Decide(tc.o)
			if got.Action != tc.want {
				t.Fatalf("Decide = %v (%s); want %v", got.Action, got.Reason, tc.want)
			}
			if got.Reason == "" {
				t.Error("no reason")
			}
		})
	}
}

func TestDecide(t *testing.T) {
	db2 := member("db2", "primary", "running", "10.0.1.2:5432")
	cases := []struct {
		name   string
		o      Observation
		want   Action
		target string
	}{
		// Bootstrap and clone.
		{"empty etcd, empty data dir -> bootstrap", obs(emptyDir), Bootstrap, ""},
		{"claimed initialize, no data, no leader -> bootstrap again", obs(emptyDir, initialized("db1")), Bootstrap, ""},
		{"another member initialises, no leader yet -> wait", obs(emptyDir, initialized("db2")), Wait, ""},
		{"empty data dir, leader serving -> clone it", obs(emptyDir, initialized("db2"), leaderKey("db2"), db2), Clone, "db2"},
		{"empty data dir, leader not yet running -> wait", obs(emptyDir, initialized("db2"), leaderKey("db2"), member("db2", "primary", "bootstrapping", "10.0.1.2:5432")), Wait, ""},
		{"empty data dir, leader published no address -> wait", obs(emptyDir, initialized("db2"), leaderKey("db2"), member("db2", "primary", "running", "")), Wait, ""},
		{"initialize key holds garbage, no leader -> wait, never initdb twice", obs(emptyDir, initialized("?")), Wait, ""},
		{"initialiser lost its data after the cluster had a leader -> wait, never re-initdb", obs(emptyDir, initialized("db1"), lastLeader("db1", 1)), Wait, ""},
		{"initialize key deleted by hand but cluster had a leader -> wait", obs(emptyDir, lastLeader("db2", 1)), Wait, ""},
		{"standby files unreadable -> wait, never guess primary", obs(func(o *Observation) { o.DataDirErr = errors.New("permission denied") }), Wait, ""},
		{"foreign postmaster while etcd is down -> stop it", obs(func(o *Observation) { o.ForeignPID, o.DCSErr = 4242, errors.New("down") }), StopForeign, ""},
		{"primary writable under an older lease than the current one -> fence", obs(holds, runningPrimary, func(o *Observation) { o.WritableLease = 6 }), Fence, ""},
		{"primary writable under the current lease -> nothing", obs(holds, runningPrimary, func(o *Observation) { o.WritableLease = 7 }), None, ""},
		{"foreign data dir -> wait, never touch", obs(func(o *Observation) { o.DataDir = state.DataDirForeign }), Wait, ""},

		// Stopped postgres.
		{"stopped primary holding the key -> restart in place", obs(holds), StartPrimary, ""},
		{"stopped primary, no leader, was last leader -> acquire then start", obs(lastLeader("db1", 1)), AcquireAndStart, ""},
		{"stopped primary, no leader, nothing recorded -> acquire then start", obs(), AcquireAndStart, ""},
		{"stopped primary, no leader, another was last leader -> wait (stale)", obs(lastLeader("db2", 2)), Wait, ""},
		{"stopped primary, key names self on an old lease -> clear it", obs(leaderKey("db1")), ClearStaleLeader, ""},
		{"stopped primary, another leads and serves -> rewind from it", obs(leaderKey("db2"), db2), Rewind, "db2"},
		{"stopped primary, new leader not serving yet -> wait", obs(leaderKey("db2"), member("db2", "replica", "in recovery", "10.0.1.2:5432")), Wait, "db2"},
		{"stopped primary, rewind failed, re-clone not allowed -> wait and say why", obs(leaderKey("db2"), db2, func(o *Observation) { o.RewindFailed = "boom" }), Wait, "db2"},
		{"stopped primary, rewind failed, re-clone allowed -> reclone", obs(leaderKey("db2"), db2, func(o *Observation) { o.RewindFailed, o.RemoveOnRewindFailure = "boom", true }), Reclone, "db2"},
		{"stopped primary, garbage leader key -> wait", obs(leaderKey("{x")), Wait, ""},
		{"stopped standby, leader known -> start following it", obs(standbyFiles(""), leaderKey("db2"), db2), StartStandby, "db2"},
		{"stopped standby, no leader -> start as standby anyway (read-only)", obs(standbyFiles("db2 10.0.1.2:5432")), StartStandby, ""},
		{"foreign postmaster -> stop it", obs(func(o *Observation) { o.ForeignPID = 4242 }), StopForeign, ""},

		// Running primary.
		{"healthy leader -> nothing", obs(holds, runningPrimary), None, ""},
		{"switchover requested to a streaming standby -> switchover", obs(holds, runningPrimary, writable, db2lease, switchover("db1", "db2", time.Time{})), Switchover, "db2"},
		{"switchover scheduled later -> nothing yet", obs(holds, runningPrimary, writable, db2lease, switchover("db1", "db2", t0.Add(time.Hour))), None, ""},
		{"switchover scheduled time reached -> switchover", obs(holds, runningPrimary, writable, db2lease, switchover("db1", "db2", t0.Add(-time.Second))), Switchover, "db2"},
		{"switchover requested from another leader -> clear it", obs(holds, runningPrimary, writable, db2lease, switchover("db3", "db2", time.Time{})), ClearRequest, "db2"},
		{"switchover to an unknown member -> clear it", obs(holds, runningPrimary, writable, switchover("db1", "db7", time.Time{})), ClearRequest, "db7"},
		{"switchover to self -> clear it", obs(holds, runningPrimary, writable, switchover("db1", "db1", time.Time{})), ClearRequest, "db1"},
		{"switchover to a nofailover member -> clear it", obs(holds, runningPrimary, writable, db2lease, switchover("db1", "db2", time.Time{}), func(o *Observation) {
			m := o.Cluster.Members["db2"]
			m.NoFailover = true
			o.Cluster.Members["db2"] = m
		}), ClearRequest, "db2"},
		{"switchover to a member without a live lease -> clear it", obs(holds, runningPrimary, writable, member("db2", "replica", "streaming", "10.0.1.2:5432"), switchover("db1", "db2", time.Time{})), ClearRequest, "db2"},
		{"switchover while paused -> wait", obs(holds, runningPrimary, writable, db2lease, switchover("db1", "db2", time.Time{}), func(o *Observation) { o.Cluster.Paused = true }), Wait, ""},
		{"switchover requested but leader past its fence margin -> fence first", obs(holds, runningPrimary, writable, db2lease, switchover("db1", "db2", time.Time{}), at(2500*time.Millisecond)), Fence, ""},
		{"standby handed the key by a switchover -> promote", obs(standbyFiles("db9 10.0.1.9:5432"), runningStandby, holds), Promote, ""},
		{"paused, but a standby holds the key -> promote (else no primary)", obs(standbyFiles("db9 10.0.1.9:5432"), runningStandby, holds, func(o *Observation) { o.Cluster.Paused = true }), Promote, ""},
		{"paused, stopped primary holding the key -> wait (no automatic restart)", obs(holds, func(o *Observation) { o.Cluster.Paused = true }), Wait, ""},
		{"leader past its fence margin -> fence", obs(holds, runningPrimary, at(2500*time.Millisecond)), Fence, ""},
		{"leader exactly at deadline minus margin -> fence", obs(holds, runningPrimary, at(2*time.Second)), Fence, ""},
		{"leader just inside the margin -> nothing", obs(holds, runningPrimary, at(1999*time.Millisecond)), None, ""},
		{"primary with no lease at all -> fence", obs(runningPrimary, func(o *Observation) { o.Lease = state.LeaseState{} }), Fence, ""},
		{"etcd unreachable, lease valid -> keep running", obs(holds, runningPrimary, func(o *Observation) { o.DCSErr = errors.New("timeout") }), Wait, ""},
		{"etcd unreachable past the margin -> fence", obs(holds, runningPrimary, at(2500*time.Millisecond), func(o *Observation) { o.DCSErr = errors.New("timeout") }), Fence, ""},
		// The key vanished while this member was writable under it (deleted,
		// or etcd revoked its lease early): writes stop first, whoever was
		// last leader; the key is taken again from a stopped postgres.
		{"running primary, key gone, was last leader -> fence", obs(runningPrimary, writable, lastLeader("db1", 1)), Fence, ""},
		{"running primary, key gone, newer timeline than last leader -> fence", obs(runningPrimary, writable, lastLeader("db2", 0)), Fence, ""},
		{"running primary, key gone, stale -> fence", obs(runningPrimary, writable, lastLeader("db2", 2)), Fence, ""},
		{"primary this agent never made writable, no key -> fence", obs(runningPrimary, lastLeader("db1", 1)), Fence, ""},
		{"self-promoted primary while another leads -> fence", obs(runningPrimary, leaderKey("db2"), db2), Fence, ""},
		{"running primary, another holds the key -> demote", obs(runningPrimary, writable, leaderKey("db2"), db2), Demote, "db2"},
		{"running primary, key overwritten with garbage by hand -> repair", obs(holds, runningPrimary, writable, func(o *Observation) {
			o.Cluster.Leader.Name, o.Cluster.Leader.Valid, o.HoldsLeader = "{garbage", false, false
		}), RepairLeaderKey, ""},
		{"running primary, garbage key not ours -> keep role", obs(runningPrimary, writable, leaderKey("{garbage")), Wait, ""},
		{"running primary, key names self on an old lease -> clear it", obs(runningPrimary, writable, leaderKey("db1")), ClearStaleLeader, ""},
		{"running, state unknown, files say primary -> fence when lease is gone", obs(func(o *Observation) {
			o.Running, o.PGErr, o.Lease = true, errors.New("timeout"), state.LeaseState{}
		}), Fence, ""},
		{"running, state unknown, lease valid -> wait, not healthy", obs(holds, func(o *Observation) { o.Running, o.PGErr = true, errors.New("timeout") }), Wait, ""},

		// Maintenance mode.
		{"paused: crashed leader is not restarted", obs(holds, func(o *Observation) { o.Cluster.Paused = true }), Wait, ""},
		{"paused: no failover", obs(standbyFiles("db2 10.0.1.2:5432"), runningStandby, lastLeader("db2", 1), func(o *Observation) { o.Cluster.Paused = true }), Wait, ""},
		{"paused: a leader past its lease is still fenced", obs(holds, runningPrimary, at(2500*time.Millisecond), func(o *Observation) { o.Cluster.Paused = true }), Fence, ""},

		// Running standby.
		{"streaming standby of the leader -> nothing", obs(standbyFiles("db2 10.0.1.2:5432"), runningStandby, leaderKey("db2"), db2), None, ""},
		{"standby following an old address -> follow the leader", obs(standbyFiles("db3 10.0.1.3:5432"), runningStandby, leaderKey("db2"), db2), Follow, "db2"},

		{"standby holding the key -> promote", obs(standbyFiles(""), runningStandby, holds), Promote, ""},
		{"standby is never fenced: it cannot write", obs(standbyFiles("db2 10.0.1.2:5432"), runningStandby, leaderKey("db2"), db2, func(o *Observation) { o.Lease = state.LeaseState{} }), None, ""},
		{"standby, etcd unreachable -> wait", obs(standbyFiles(""), runningStandby, func(o *Observation) { o.DCSErr = errors.New("x") }), Wait, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := tc.o
			got := Decide(tc.o)
			if got.Action != tc.want || got.Target != tc.target {
				t.Fatalf("Decide = %v %q (%s); want %v %q", got.Action, got.Target, got.Reason, tc.want, tc.target)
			}
			if got.Reason == "" {
				t.Error("plan without a reason")
			}
			if again := Decide(tc.o); again != got {
				t.Errorf("not deterministic: %+v then %+v", got, again)
			}
			if before.Now != tc.o.Now || before.HoldsLeader != tc.o.HoldsLeader {
				t.Error("Decide changed its input")
			}
		})
	}
}
