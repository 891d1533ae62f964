package agent

import (
	"context"
	"errors"
	"github.com/cifha/cifha/pkg/ha"
	"strings"
	"testing"
	"time"

	"github.com/cifha/cifha/pkg/election"
	"github.com/cifha/cifha/pkg/pgctl"
)

// caughtUp is a candidate that has replayed past the fake's shutdown
// checkpoint (1000).
type caughtUp struct{ replay pgctl.LSN }

func (c caughtUp) Candidate(context.Context, string) (ha.Candidate, error) {
	return ha.Candidate{Running: true, InRecovery: true, ReceiveLSN: c.replay, ReplayLSN: c.replay}, nil
}

// switchingLeader is db1 leading a running primary, with db2 a streaming
// standby on lease 22 and a switchover to it requested.
func switchingLeader(t *testing.T, peers Peers) (*Agent, *fakePostgres, *fakeDCS) {
	t.Helper()
	ctx := context.Background()
	clk := &fakeClock{t: t0}
	pg := &fakePostgres{dir: pgctl.DataDirValid}
	dcs := newFakeDCS("db1", election.LeaseState{ID: 7, ValidUntil: t0.Add(time.Hour)})
	a := New(Options{Name: "db1", PG: pg, DCS: dcs, Now: clk.Now, LoopInterval: time.Second, StartTimeout: time.Second,
		FenceMargin: time.Second, MaxLag: 1 << 20, RecentWindow: 6 * time.Second, Peers: peers, SwitchoverTimeout: time.Hour})
	if err := a.Iterate(ctx); err != nil { // acquire and start
		t.Fatal(err)
	}
	dcs.cluster.Members["db2"] = election.Member{Name: "db2", Role: "replica", State: "streaming", ConnAddress: "10.0.1.2:5432", APIURL: "http://db2"}
	dcs.cluster.MemberLease = map[string]int64{"db2": 22}
	dcs.cluster.Switchover = &election.SwitchoverRequest{ID: "r1", From: "db1", To: "db2"}
	pg.calls = nil
	return a, pg, dcs
}

// TestLoopSwitchover: the old leader stops, checks the shutdown checkpoint,
// hands the key to the candidate's lease, waits for it to run as primary on
// a newer timeline, then follows it (no rewind).
func TestLoopSwitchover(t *testing.T) {
	a, pg, dcs := switchingLeader(t, caughtUp{2000})
	wait := a.switchW.add("r1")
	dcs.onRead = func(d *fakeDCS) {
		if d.handedOff {
			d.cluster.Members["db2"] = election.Member{Name: "db2", Role: "primary", State: "running", Timeline: 2, ConnAddress: "10.0.1.2:5432"}
		}
	}
	if err := a.Iterate(context.Background()); err != nil {
		t.Fatal(err)
	}
	if a.lastPlan.Action != ha.Switchover {
		t.Fatalf("plan %v", a.lastPlan)
	}
	if !has(pg.calls, "stop fast", "controldata", "configure", "set-standby db2", "start") || has(pg.calls, "rewind 10.0.1.2") {
		t.Fatalf("calls %v", pg.calls)
	}
	l := dcs.cluster.Leader
	if l.Name != "db2" || l.Lease != 22 || dcs.cluster.LastLeader.From != "db1" || dcs.cluster.Switchover != nil {
		t.Fatalf("leader %+v last %+v", l, dcs.cluster.LastLeader)
	}
	if r := <-wait; !r.OK || !strings.Contains(r.Message, "switched over to db2") {
		t.Fatalf("result %+v", r)
	}
	if !pg.inRec {
		t.Fatal("old leader did not restart as a standby")
	}
}

// TestLoopSwitchoverCandidateLostBeforePromoting: the candidate's key
// vanishes (its lease expired) and it never announced "promoting": the old
// leader takes the key back and resumes as primary.
func TestLoopSwitchoverCandidateLostBeforePromoting(t *testing.T) {
	a, pg, dcs := switchingLeader(t, caughtUp{2000})
	wait := a.switchW.add("r1")
	dcs.onRead = func(d *fakeDCS) {
		if d.handedOff && d.cluster.Leader != nil && d.cluster.Leader.Name == "db2" {
			d.cluster.Leader = nil
			delete(d.cluster.Members, "db2")
		}
	}
	a.Iterate(context.Background())
	if l := dcs.cluster.Leader; l == nil || l.Name != "db1" {
		t.Fatalf("leader %+v", l)
	}
	if !has(pg.calls, "stop fast", "controldata", "configure", "start") || pg.inRec || !pg.running {
		t.Fatalf("calls %v inRec %v", pg.calls, pg.inRec)
	}
	if r := <-wait; r.OK || !strings.Contains(r.Message, "db1 resumed as primary") {
		t.Fatalf("result %+v", r)
	}
	if a.writableLease != 7 {
		t.Fatalf("writable lease %d: the fencer must guard the resumed primary", a.writableLease)
	}
}

// TestLoopSwitchoverCandidateLostWhilePromoting: the candidate announced
// "promoting" and then lost its key: it may have accepted writes, so the old
// leader must not take over by itself; it stays stopped and the normal rules
// decide.
func TestLoopSwitchoverCandidateLostWhilePromoting(t *testing.T) {
	a, pg, dcs := switchingLeader(t, caughtUp{2000})
	reads := 0
	dcs.onRead = func(d *fakeDCS) {
		if !d.handedOff {
			return
		}
		reads++
		if reads == 1 {
			d.cluster.Members["db2"] = election.Member{Name: "db2", Role: "replica", State: "promoting"}
		} else {
			d.cluster.Leader = nil
		}
	}
	a.Iterate(context.Background())
	if dcs.cluster.Leader != nil || pg.running {
		t.Fatalf("leader %+v running %v calls %v", dcs.cluster.Leader, pg.running, pg.calls)
	}
}

// TestLoopSwitchoverCandidateBehind: the candidate never replays the
// shutdown checkpoint: the key never leaves, postgres restarts as primary.
func TestLoopSwitchoverCandidateBehind(t *testing.T) {
	a, pg, dcs := switchingLeader(t, caughtUp{500})
	clk := &fakeClock{t: t0}
	a.now = func() time.Time { clk.Advance(100 * time.Millisecond); return clk.Now() }
	a.opt.SwitchoverTimeout = time.Second
	wait := a.switchW.add("r1")
	a.Iterate(context.Background())
	if l := dcs.cluster.Leader; l == nil || l.Name != "db1" || dcs.handedOff {
		t.Fatalf("leader %+v handed off %v plan %v calls %v", l, dcs.handedOff, a.lastPlan, pg.calls)
	}
	if !has(pg.calls, "stop fast", "controldata", "configure", "start") || pg.inRec {
		t.Fatalf("calls %v", pg.calls)
	}
	if r := <-wait; r.OK || !strings.Contains(r.Message, "did not replay") {
		t.Fatalf("result %+v", r)
	}
}

// TestLoopSwitchoverUncertainNoTakeBack: a poll of etcd failed while the
// old leader waited for the promotion, so it cannot know the candidate
// never announced "promoting": when the key vanishes it must not take it
// back by itself.
func TestLoopSwitchoverUncertainNoTakeBack(t *testing.T) {
	a, pg, dcs := switchingLeader(t, caughtUp{2000})
	a.opt.TTL = 3 * time.Second
	reads := 0
	dcs.onRead = func(d *fakeDCS) {
		d.err = nil
		if !d.handedOff {
			return
		}
		reads++
		switch reads {
		case 1:
			d.err = errors.New("etcd unreachable")
		default:
			d.cluster.Leader = nil
			delete(d.cluster.Members, "db2")
		}
	}
	a.Iterate(context.Background())
	if dcs.cluster.Leader != nil || pg.running {
		t.Fatalf("took the key back on incomplete information: leader %+v running %v", dcs.cluster.Leader, pg.running)
	}
}

// TestLoopSwitchoverRollbackNeedsTheKey: the candidate never catches up,
// and meanwhile this member's lease was replaced (etcd cut off): it must
// not restart as a writable primary.
func TestLoopSwitchoverRollbackNeedsTheKey(t *testing.T) {
	a, pg, dcs := switchingLeader(t, nil)
	clk := &fakeClock{t: t0}
	a.now = func() time.Time { clk.Advance(100 * time.Millisecond); return clk.Now() }
	a.opt.SwitchoverTimeout = time.Second
	calls := 0
	a.opt.Peers = peerFunc(func() (ha.Candidate, error) {
		calls++
		if calls > 1 { // after the candidate check: the lease is replaced, the key is on the old one
			dcs.lease.ID = 99
		}
		return caughtUp{500}.Candidate(context.Background(), "")
	})
	wait := a.switchW.add("r1")
	a.Iterate(context.Background())
	if pg.running {
		t.Fatalf("restarted writable without the key: %v", pg.calls)
	}
	if r := <-wait; r.OK || !strings.Contains(r.Message, "no longer provably holds") {
		t.Fatalf("result %+v", r)
	}
}

type peerFunc func() (ha.Candidate, error)

func (f peerFunc) Candidate(context.Context, string) (ha.Candidate, error) { return f() }
