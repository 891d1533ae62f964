package agent

import (
	"context"
	"errors"
	"fmt"
	"github.com/cifha/cifha/pkg/agent/agenttest"
	"strings"
	"testing"
	"time"

	"github.com/cifha/cifha/pkg/election"
	"github.com/cifha/cifha/pkg/ha"
	"github.com/cifha/cifha/pkg/pgctl"
)

// The switchover's decisions are table rows in pkg/ha (switchover_test.go);
// these loop tests drive the real steps with fakes and a fake clock.

// caughtUp is a candidate that has replayed up to replay (the fake's
// shutdown checkpoint is at 1000).
type caughtUp struct{ replay pgctl.LSN }

func (c caughtUp) Candidate(context.Context, string) (ha.Candidate, error) {
	return ha.Candidate{Running: true, InRecovery: true, ReceiveLSN: c.replay, ReplayLSN: c.replay, StreamedAgo: time.Second}, nil
}

// switchingLeader is db1 leading a running primary, with db2 a streaming
// standby on lease 22 and a switchover to it requested.
func switchingLeader(t *testing.T, peers Peers) (*Agent, *agenttest.Postgres, *agenttest.DCS, *agenttest.Clock) {
	t.Helper()
	ctx := context.Background()
	clk := agenttest.NewClock(t0)
	pg := &agenttest.Postgres{Dir: pgctl.DataDirValid}
	dcs := agenttest.NewDCS("db1", election.LeaseState{ID: 7, ValidUntil: t0.Add(time.Hour)})
	a := New(Options{Name: "db1", PG: pg, DCS: dcs, Now: clk.Now, LoopInterval: time.Second, StartTimeout: time.Second,
		FenceMargin: time.Second, MaxLag: 1 << 20, RecentWindow: 6 * time.Second, Peers: peers, SwitchoverTimeout: time.Second})
	if err := a.Iterate(ctx); err != nil { // acquire and start
		t.Fatal(err)
	}
	dcs.Cluster.Members["db2"] = election.Member{Name: "db2", Role: "replica", State: "streaming", ConnAddress: "10.0.1.2:5432", APIURL: "http://db2"}
	dcs.Cluster.MemberLease = map[string]int64{"db2": 22}
	dcs.Cluster.Switchover = &election.SwitchoverRequest{ID: "r1", From: "db1", To: "db2"}
	pg.Calls = nil
	return a, pg, dcs, clk
}

// step runs loop rounds 20 ms apart until done or n rounds.
func step(a *Agent, clk *agenttest.Clock, n int, done func() bool) {
	for i := 0; i < n && !done(); i++ {
		_ = a.Iterate(context.Background())
		clk.Advance(ha.SwitchoverPoll)
	}
}

func result(t *testing.T, ch chan switchResult) switchResult {
	t.Helper()
	select {
	case r := <-ch:
		return r
	default:
		t.Fatal("no switchover result reported")
	}
	return switchResult{}
}

// TestLoopSwitchover: the old leader stops, checks the shutdown checkpoint,
// hands the key to the candidate's lease, waits for it to run as primary on
// a newer timeline, then follows it (no rewind), one bounded step a round.
func TestLoopSwitchover(t *testing.T) {
	a, pg, dcs, clk := switchingLeader(t, caughtUp{2000})
	wait := a.switchW.add("r1")
	dcs.OnRead = func(d *agenttest.DCS) {
		if d.HandedOff {
			d.Cluster.Members["db2"] = election.Member{Name: "db2", Role: "primary", State: "running", Timeline: 2, ConnAddress: "10.0.1.2:5432"}
		}
	}
	step(a, clk, 10, func() bool { return len(wait) > 0 })
	if !has(pg.Calls, "stop fast", "controldata", "configure", "set-standby db2", "start") || has(pg.Calls, "rewind 10.0.1.2") {
		t.Fatalf("calls %v", pg.Calls)
	}
	l := dcs.Cluster.Leader
	if l.Name != "db2" || l.Lease != 22 || dcs.Cluster.LastLeader.From != "db1" || dcs.Cluster.LastLeader.SwitchoverID != "r1" || dcs.Cluster.Switchover != nil {
		t.Fatalf("leader %+v last %+v", l, dcs.Cluster.LastLeader)
	}
	if r := result(t, wait); !r.OK || !strings.Contains(r.Message, "switched over to db2") {
		t.Fatalf("result %+v", r)
	}
	if a.sw != nil {
		t.Fatal("switchover still in progress after it finished")
	}
}

// TestLoopSwitchoverCandidateLostBeforePromoting: the candidate's key
// vanishes (its lease expired) and it never claimed its promotion: the old
// leader takes the key back by the proving transaction and resumes.
func TestLoopSwitchoverCandidateLostBeforePromoting(t *testing.T) {
	a, pg, dcs, clk := switchingLeader(t, caughtUp{2000})
	wait := a.switchW.add("r1")
	early := ""
	dcs.OnRead = func(d *agenttest.DCS) {
		if d.HandedOff && d.Cluster.Leader != nil && d.Cluster.Leader.Name == "db2" {
			d.Cluster.Leader = nil
			delete(d.Cluster.Members, "db2")
		}
		// The operator is told "resumed" only once /primary says so: a
		// reply sent before the round's snapshot is a round of 503s for
		// the one primary the operator was just told about.
		if s := a.Snapshot(); len(wait) > 0 && early == "" && (s == nil || !s.IsLeader || !s.Running || s.InRecovery || s.Member.State != "running") {
			early = fmt.Sprintf("result sent while the snapshot says %+v", s.Member)
		}
	}
	step(a, clk, 10, func() bool { return len(wait) > 0 })
	if early != "" {
		t.Fatal(early)
	}
	if l := dcs.Cluster.Leader; l == nil || l.Name != "db1" {
		t.Fatalf("leader %+v", l)
	}
	if !has(pg.Calls, "stop fast", "controldata", "configure", "start") || pg.InRecovery || !pg.Up {
		t.Fatalf("calls %v inRec %v", pg.Calls, pg.InRecovery)
	}
	if c := dcs.Cluster.Promotion; c == nil || !c.TakenBack {
		t.Fatalf("take-back not recorded in the claim key: %+v", c)
	}
	if r := result(t, wait); r.OK || !strings.Contains(r.Message, "db1 resumed as primary") {
		t.Fatalf("result %+v", r)
	}
	if a.writableLease != 7 {
		t.Fatalf("writable lease %d: the fencer must guard the resumed primary", a.writableLease)
	}
}

// TestLoopSwitchoverCandidateClaimedThenLost: the candidate claimed its
// promotion and then lost its key: it may have accepted writes, so the old
// leader never takes the key back by itself.
func TestLoopSwitchoverCandidateClaimedThenLost(t *testing.T) {
	a, pg, dcs, clk := switchingLeader(t, caughtUp{2000})
	wait := a.switchW.add("r1")
	reads := 0
	dcs.OnRead = func(d *agenttest.DCS) {
		if !d.HandedOff {
			return
		}
		reads++
		if reads == 1 {
			d.Cluster.Promotion, d.Cluster.PromotionRev = &election.PromotionClaim{Name: "db2", Switchover: "r1"}, 50
			d.Cluster.Members["db2"] = election.Member{Name: "db2", Role: "replica", State: "promoting"}
		} else {
			d.Cluster.Leader = nil
		}
	}
	step(a, clk, 10, func() bool { return len(wait) > 0 })
	if dcs.Cluster.Leader != nil || pg.Up {
		t.Fatalf("leader %+v running %v calls %v", dcs.Cluster.Leader, pg.Up, pg.Calls)
	}
	if r := result(t, wait); r.OK || !strings.Contains(r.Message, "claimed its promotion") {
		t.Fatalf("result %+v", r)
	}
}

// TestLoopSwitchoverTakeBackLosesRace: the read showed no claim, but the
// candidate claimed before the take-back committed: the transaction is
// refused and postgres stays stopped.
func TestLoopSwitchoverTakeBackLosesRace(t *testing.T) {
	a, pg, dcs, clk := switchingLeader(t, caughtUp{2000})
	wait := a.switchW.add("r1")
	dcs.OnRead = func(d *agenttest.DCS) {
		if d.HandedOff && d.Cluster.Leader != nil && d.Cluster.Leader.Name == "db2" {
			d.Cluster.Leader = nil
			d.AfterRead = func(d *agenttest.DCS) { d.Cluster.PromotionRev = 77 } // the claim lands after the read
		}
	}
	step(a, clk, 10, func() bool { return len(wait) > 0 })
	if dcs.Cluster.Leader != nil || pg.Up {
		t.Fatalf("took the key back although the candidate claimed: leader %+v running %v", dcs.Cluster.Leader, pg.Up)
	}
	if r := result(t, wait); r.OK || !strings.Contains(r.Message, "taking it back failed") {
		t.Fatalf("result %+v", r)
	}
}

// TestLoopSwitchoverCandidateBehind: the candidate never replays the
// shutdown checkpoint: the key never leaves, postgres restarts as primary.
func TestLoopSwitchoverCandidateBehind(t *testing.T) {
	a, pg, dcs, clk := switchingLeader(t, caughtUp{500})
	wait := a.switchW.add("r1")
	step(a, clk, 100, func() bool { return len(wait) > 0 })
	if l := dcs.Cluster.Leader; l == nil || l.Name != "db1" || dcs.HandedOff {
		t.Fatalf("leader %+v handed off %v plan %v calls %v", l, dcs.HandedOff, a.lastPlan, pg.Calls)
	}
	if !has(pg.Calls, "stop fast", "controldata", "configure", "start") || pg.InRecovery {
		t.Fatalf("calls %v", pg.Calls)
	}
	if r := result(t, wait); r.OK || !strings.Contains(r.Message, "did not replay") {
		t.Fatalf("result %+v", r)
	}
	if dcs.Cluster.Switchover != nil {
		t.Fatal("request not cleared before resuming")
	}
}

// TestLoopSwitchoverRollbackNeedsTheKey: the candidate never catches up,
// and meanwhile this member's lease was replaced (etcd cut off): it must
// not restart as a writable primary.
func TestLoopSwitchoverRollbackNeedsTheKey(t *testing.T) {
	a, pg, dcs, clk := switchingLeader(t, nil)
	calls := 0
	a.opt.Peers = peerFunc(func() (ha.Candidate, error) {
		calls++
		if calls > 1 { // after the candidate check: the lease is replaced, the key is on the old one
			dcs.LeaseNow.ID = 99
		}
		return caughtUp{500}.Candidate(context.Background(), "")
	})
	wait := a.switchW.add("r1")
	step(a, clk, 100, func() bool { return len(wait) > 0 })
	if pg.Up && !pg.InRecovery {
		t.Fatalf("restarted writable without the key: %v", pg.Calls)
	}
	if r := result(t, wait); r.OK || !strings.Contains(r.Message, "no longer") {
		t.Fatalf("result %+v", r)
	}
}

// TestLoopSwitchoverCandidateClaimsBeforePromoting: on the candidate's
// side, a promotion after a handoff is claimed in etcd first; without the
// claim it does not promote.
func TestLoopSwitchoverCandidateClaimsBeforePromoting(t *testing.T) {
	clk := agenttest.NewClock(t0)
	pg := &agenttest.Postgres{Dir: pgctl.DataDirValid, Standby: pgctl.StandbyState{Standby: true, Target: "db1 10.0.1.1:5432"}}
	dcs := agenttest.NewDCS("db2", election.LeaseState{ID: 22, ValidUntil: t0.Add(time.Hour)})
	a := newTestAgent(pg, dcs, clk)
	_ = a.Iterate(context.Background()) // start as standby
	dcs.Cluster.Leader = &election.Leader{Name: "db2", Valid: true, Lease: 22, CreateRev: 5, ModRev: 9}
	dcs.Cluster.LastLeader = &election.LastLeader{Name: "db2", From: "db1", SwitchoverID: "r9", Timeline: 1, LSN: "0/1000"}
	if err := a.Iterate(context.Background()); err != nil {
		t.Fatal(err)
	}
	if c := dcs.Cluster.Promotion; c == nil || c.Name != "db2" || c.Switchover != "r9" || !has(pg.Calls, "promote") {
		t.Fatalf("claim %+v calls %v", c, pg.Calls)
	}
}

type peerFunc func() (ha.Candidate, error)

func (f peerFunc) Candidate(context.Context, string) (ha.Candidate, error) { return f() }

func (f peerFunc) Failsafe(context.Context, string, string, string, string) (time.Duration, error) {
	return 0, errors.New("no failsafe in this test")
}

func (caughtUp) Failsafe(context.Context, string, string, string, string) (time.Duration, error) {
	return 0, errors.New("no failsafe in this test")
}
