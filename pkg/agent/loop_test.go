package agent

import (
	"context"
	"errors"
	"github.com/cifha/cifha/pkg/agent/agenttest"
	"github.com/cifha/cifha/pkg/ha"
	"strings"
	"testing"
	"time"

	"github.com/cifha/cifha/pkg/election"
	"github.com/cifha/cifha/pkg/pgctl"
)

var t0 = time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)

func newTestAgent(pg *agenttest.Postgres, dcs *agenttest.DCS, clk *agenttest.Clock) *Agent {
	return New(Options{Name: dcs.Self, PG: pg, DCS: dcs, Now: clk.Now, LoopInterval: time.Second,
		StartTimeout: time.Second, FenceMargin: time.Second, ConnAddress: "10.0.1.1:5432", APIURL: "http://10.0.1.1:8008"})
}

func has(calls []string, want ...string) bool {
	i := 0
	for _, c := range calls {
		if i < len(want) && c == want[i] {
			i++
		}
	}
	return i == len(want)
}

// TestLoopBootstrapCrashAndFence drives the real loop with fakes and a fake
// clock: bootstrap, slot for a new member, in-place restart after a crash,
// and fencing when the lease is not renewed.
func TestLoopBootstrapCrashAndFence(t *testing.T) {
	ctx := context.Background()
	clk := agenttest.NewClock(t0)
	pg := &agenttest.Postgres{Dir: pgctl.DataDirMissing}
	dcs := agenttest.NewDCS("db1", election.LeaseState{ID: 7, ValidUntil: t0.Add(3 * time.Second)})
	a := newTestAgent(pg, dcs, clk)

	if err := a.Iterate(ctx); err != nil {
		t.Fatal(err)
	}
	if !has(pg.Calls, "initdb", "configure", "set-primary", "configure", "start") || dcs.Cluster.Leader == nil {
		t.Fatalf("bootstrap calls %v, leader %+v", pg.Calls, dcs.Cluster.Leader)
	}
	a.Iterate(ctx)
	if s := a.Snapshot(); !s.IsLeader || s.Member.State != "running" || s.Member.Role != "primary" {
		t.Fatalf("snapshot %+v", s.Member)
	}

	// A new member registers: the leader makes its slot at once.
	dcs.Cluster.Members["db2"] = election.Member{Name: "db2", State: "uninitialized"}
	a.Iterate(ctx)
	if !has(pg.Calls, "create-slot db2") {
		t.Fatalf("no slot for db2: %v", pg.Calls)
	}

	// The postmaster crashes; the agent restarts it in place.
	pg.Crash()
	pg.Calls = nil
	a.Iterate(ctx)
	if !has(pg.Calls, "configure", "start") || !pg.Up {
		t.Fatalf("not restarted in place: %v", pg.Calls)
	}
	if a.lastPlan.Action != ha.StartPrimary {
		t.Fatalf("plan %v", a.lastPlan)
	}

	// etcd goes away and the lease is not renewed: at deadline - margin the
	// primary is stopped, before the lease can expire.
	dcs.Err = errors.New("etcd: connection refused")
	clk.Advance(1500 * time.Millisecond)
	pg.Calls = nil
	a.Iterate(ctx)
	if pg.Calls != nil || !pg.Up {
		t.Fatalf("fenced too early: %v", pg.Calls)
	}
	clk.Advance(600 * time.Millisecond) // 2.1 s: past 3 s - 1 s margin
	a.Iterate(ctx)
	if !has(pg.Calls, "stop fast") || pg.Up {
		t.Fatalf("not fenced at the margin: %v", pg.Calls)
	}
	if a.lastPlan.Action != ha.Fence || !strings.Contains(a.lastPlan.Reason, "lease") {
		t.Fatalf("plan %v", a.lastPlan)
	}
}

// TestLoopClonesAndFollows: a member with no data clones the serving leader,
// starts as its standby, and publishes itself as a streaming replica.
func TestLoopClonesAndFollows(t *testing.T) {
	ctx := context.Background()
	clk := agenttest.NewClock(t0)
	pg := &agenttest.Postgres{Dir: pgctl.DataDirMissing}
	dcs := agenttest.NewDCS("db2", election.LeaseState{ID: 8, ValidUntil: t0.Add(3 * time.Second)})
	dcs.Cluster.Initialize = "db1"
	dcs.Cluster.Leader = &election.Leader{Name: "db1", Valid: true, CreateRev: 1, Lease: 7}
	dcs.Cluster.Members["db1"] = election.Member{Name: "db1", Role: "primary", State: "running", ConnAddress: "10.0.1.1:5432"}
	a := newTestAgent(pg, dcs, clk)
	if err := a.Iterate(ctx); err != nil {
		t.Fatal(err)
	}
	if !has(pg.Calls, "clone 10.0.1.1", "configure", "start") || !pg.Standby.Standby {
		t.Fatalf("calls %v", pg.Calls)
	}
	a.Iterate(ctx)
	if m := dcs.Cluster.Members["db2"]; m.Role != "replica" {
		t.Fatalf("published %+v", m)
	}
	// The leader moves: the standby re-points (reload on 13+).
	dcs.Cluster.Leader = &election.Leader{Name: "db3", Valid: true, CreateRev: 2, Lease: 9}
	dcs.Cluster.Members["db3"] = election.Member{Name: "db3", Role: "primary", State: "running", ConnAddress: "10.0.1.3:5432"}
	pg.Calls = nil
	a.Iterate(ctx)
	if !has(pg.Calls, "set-standby db3", "reload") {
		t.Fatalf("calls %v", pg.Calls)
	}
}

// TestPublishIsRateLimited: unchanged state is published once per loop
// interval, not on every iteration (each put wakes every other agent).
func TestPublishIsRateLimited(t *testing.T) {
	ctx := context.Background()
	clk := agenttest.NewClock(t0)
	pg := &agenttest.Postgres{Dir: pgctl.DataDirMissing}
	dcs := agenttest.NewDCS("db1", election.LeaseState{ID: 7, ValidUntil: t0.Add(time.Hour)})
	a := newTestAgent(pg, dcs, clk)
	a.Iterate(ctx)
	a.Iterate(ctx)
	n := dcs.Puts
	for i := 0; i < 10; i++ {
		clk.Advance(10 * time.Millisecond)
		a.Iterate(ctx)
	}
	if dcs.Puts != n {
		t.Fatalf("%d puts in 100 ms of unchanged state", dcs.Puts-n)
	}
	clk.Advance(time.Second)
	a.Iterate(ctx)
	if dcs.Puts != n {
		t.Fatalf("positions republished after a second: an idle cluster should write rarely")
	}
	clk.Advance(publishEvery(time.Second))
	a.Iterate(ctx)
	if dcs.Puts != n+1 {
		t.Fatalf("no periodic publish")
	}
}

// TestLoopTakeOverAndRejoin: with fakes, a streaming standby whose leader
// key vanished takes the key, promotes, checkpoints and records history; a
// stopped former primary rewinds from the new leader, and when rewinding
// fails it re-clones only if allowed, moving its data aside.
func TestLoopTakeOverAndRejoin(t *testing.T) {
	ctx := context.Background()
	clk := agenttest.NewClock(t0)
	pg := &agenttest.Postgres{Dir: pgctl.DataDirValid, Standby: pgctl.StandbyState{Standby: true, Target: "db1 10.0.1.1:5432"}, Recv: 0x5000}
	pg.Start(ctx, 0)
	dcs := agenttest.NewDCS("db2", election.LeaseState{ID: 8, ValidUntil: t0.Add(3 * time.Second)})
	dcs.Cluster.LastLeader = &election.LastLeader{Name: "db1", Timeline: 1, LSN: "0/5000"}
	a := New(Options{Name: "db2", PG: pg, DCS: dcs, Now: clk.Now, LoopInterval: time.Second, StartTimeout: time.Second,
		FenceMargin: time.Second, MaxLag: 1 << 20, RecentWindow: 6 * time.Second, Peers: noPeers{}, LastLeaderEvery: time.Second})
	pg.Calls = nil
	a.Iterate(ctx) // sees itself streaming: lastStreamed is set
	if a.lastPlan.Action != ha.TakeOver {
		t.Fatalf("plan %v", a.lastPlan)
	}
	if !has(pg.Calls, "promote") || dcs.Cluster.Leader == nil || dcs.Cluster.Leader.Name != "db2" {
		t.Fatalf("calls %v leader %+v", pg.Calls, dcs.Cluster.Leader)
	}
	a.Iterate(ctx)
	if !has(pg.Calls, "promote", "checkpoint") || len(dcs.History) != 1 || dcs.History[0].OldLeader != "db1" || dcs.History[0].NewLeader != "db2" {
		t.Fatalf("calls %v history %+v", pg.Calls, dcs.History)
	}

	// The former primary db1, stopped, rewinds from db2.
	old := &agenttest.Postgres{Dir: pgctl.DataDirValid}
	d1 := agenttest.NewDCS("db1", election.LeaseState{ID: 9, ValidUntil: t0.Add(3 * time.Second)})
	d1.Cluster.Leader = &election.Leader{Name: "db2", Valid: true, CreateRev: 3, Lease: 8}
	d1.Cluster.Members["db2"] = election.Member{Name: "db2", Role: "primary", State: "running", ConnAddress: "10.0.1.2:5432"}
	b := New(Options{Name: "db1", PG: old, DCS: d1, Now: clk.Now, LoopInterval: time.Second, StartTimeout: time.Second, FenceMargin: time.Second})
	b.Iterate(ctx)
	if !has(old.Calls, "configure", "rewind 10.0.1.2", "configure", "set-standby db2", "start") {
		t.Fatalf("rejoin calls %v", old.Calls)
	}

	// A failed rewind without permission to re-clone: wait, say why, keep the data.
	old2 := &agenttest.Postgres{Dir: pgctl.DataDirValid, RewindErr: errors.New("pg_rewind failed: no common ancestor")}
	c := New(Options{Name: "db1", PG: old2, DCS: d1, Now: clk.Now, LoopInterval: time.Second, StartTimeout: time.Second, FenceMargin: time.Second})
	c.Iterate(ctx)
	c.Iterate(ctx)
	if c.lastPlan.Action != ha.Wait || !strings.Contains(c.lastPlan.Reason, "remove_data_directory_on_rewind_failure") || has(old2.Calls, "move-aside") {
		t.Fatalf("plan %v calls %v", c.lastPlan, old2.Calls)
	}
	// Allowed: the directory is moved aside (never deleted) and re-cloned.
	c.opt.RemoveOnRewindFailure = true
	c.Iterate(ctx)
	if !has(old2.Calls, "move-aside", "clone 10.0.1.2", "configure", "start") {
		t.Fatalf("reclone calls %v", old2.Calls)
	}
}

type noPeers struct{}

func (noPeers) Candidate(context.Context, string) (ha.Candidate, error) {
	return ha.Candidate{}, errors.New("no peers in this test")
}

func (noPeers) Failsafe(context.Context, string, string, string, string) (time.Duration, error) {
	return 0, errors.New("no peers in this test")
}

// TestLastLeaderCarriesTheTerm: the acquiring transaction cannot stamp
// last-leader with its own revision, so the leader republishes it with its
// term at once (a failover trusts the sync record only of that term).
func TestLastLeaderCarriesTheTerm(t *testing.T) {
	ctx := context.Background()
	clk := agenttest.NewClock(t0)
	pg := &agenttest.Postgres{Dir: pgctl.DataDirMissing}
	dcs := agenttest.NewDCS("db1", election.LeaseState{ID: 7, ValidUntil: t0.Add(3 * time.Second)})
	a := newTestAgent(pg, dcs, clk)
	for i := 0; i < 3; i++ {
		if err := a.Iterate(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if dcs.Cluster.Leader == nil || dcs.Cluster.LastLeader == nil {
		t.Fatalf("no leader: %+v", dcs.Cluster)
	}
	if got, want := dcs.Cluster.LastLeader.Term, dcs.Term(); got == 0 || got != want {
		t.Fatalf("last-leader term %d, the leader's term %d", got, want)
	}
}
