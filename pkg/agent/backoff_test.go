package agent

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/cifha/cifha/pkg/agent/agenttest"
	"github.com/cifha/cifha/pkg/election"
	"github.com/cifha/cifha/pkg/ha"
	"github.com/cifha/cifha/pkg/pgctl"
)

func TestBackoff(t *testing.T) {
	t0 := time.Unix(1000, 0)
	clone := ha.Plan{Action: ha.Clone, Target: "db1"}
	boom := errors.New("no pg_hba.conf entry")
	var b backoff
	if _, w := b.wait(t0, clone); w {
		t.Fatal("a first try must not wait")
	}
	// Delays double from the loop interval up to the cap.
	now := t0
	var delays []time.Duration
	for i := 0; i < 8; i++ {
		b.record(now, clone, boom, time.Second)
		until, w := b.wait(now, clone)
		if !w {
			t.Fatalf("failure %d: no wait", i+1)
		}
		delays = append(delays, until.Sub(now))
		if _, w := b.wait(until, clone); w {
			t.Fatalf("failure %d: still waiting at the deadline", i+1)
		}
		now = until
	}
	want := []time.Duration{1, 2, 4, 8, 16, 30, 30, 30}
	for i := range want {
		if delays[i] != want[i]*time.Second {
			t.Fatalf("delays %v, want %v s", delays, want)
		}
	}
	// Another target, another action, or a success starts over.
	if _, w := b.wait(now, ha.Plan{Action: ha.Clone, Target: "db2"}); w {
		t.Fatal("another target must not wait")
	}
	b.record(now, ha.Plan{Action: ha.Clone, Target: "db2"}, boom, time.Second)
	if until, _ := b.wait(now, ha.Plan{Action: ha.Clone, Target: "db2"}); until.Sub(now) != time.Second {
		t.Fatalf("a new target starts at the loop interval, got %s", until.Sub(now))
	}
	b.record(now, clone, nil, time.Second)
	if _, w := b.wait(now, clone); w || b.failures != 0 {
		t.Fatal("a success must reset")
	}
	// Safety actions never wait.
	fence := ha.Plan{Action: ha.Fence}
	for i := 0; i < 5; i++ {
		b.record(now, fence, boom, time.Second)
		if _, w := b.wait(now, fence); w {
			t.Fatal("fence must never back off")
		}
	}
	for _, a := range []ha.Action{ha.Fence, ha.Demote, ha.Promote, ha.AcquireAndStart, ha.StartPrimary, ha.Handoff, ha.Follow, ha.TakeOver} {
		if backsOff(a) {
			t.Errorf("%s must not back off", a)
		}
	}
}

// The loop backs off a failing clone (1, 2, 4, ... s up to the cap), keeps
// the error in the member's state meanwhile, and an operator's request
// makes it retry at once.
func TestLoopBacksOffFailingClone(t *testing.T) {
	ctx := context.Background()
	clk := agenttest.NewClock(t0)
	pg := &agenttest.Postgres{Dir: pgctl.DataDirMissing, CloneErr: errors.New(`FATAL: no pg_hba.conf entry for replication connection`)}
	dcs := agenttest.NewDCS("db2", election.LeaseState{ID: 8, ValidUntil: t0.Add(time.Hour)})
	dcs.Cluster.Leader = &election.Leader{Name: "db1", Valid: true, CreateRev: 3, ModRev: 3, Lease: 5}
	dcs.Cluster.Members["db1"] = election.Member{Name: "db1", Role: "primary", State: "running", ConnAddress: "10.0.1.1:5432", APIURL: "http://10.0.1.1:8008"}
	dcs.Cluster.LastLeader = &election.LastLeader{Name: "db1", Timeline: 1, LSN: "0/5000"}
	a := New(Options{Name: "db2", PG: pg, DCS: dcs, Now: clk.Now, LoopInterval: time.Second, StartTimeout: time.Second,
		FenceMargin: time.Second, MaxLag: 1 << 20, TTL: 3 * time.Second})
	clones := func() int {
		n := 0
		for _, c := range pg.Calls {
			if strings.HasPrefix(c, "clone ") {
				n++
			}
		}
		return n
	}
	var at []time.Duration
	for i := 0; i < 90; i++ {
		before := clones()
		a.Iterate(ctx)
		if clones() > before {
			at = append(at, clk.Now().Sub(t0))
		}
		if i == 0 && a.lastPlan.Action != ha.Clone {
			t.Fatalf("plan %v", a.lastPlan)
		}
		clk.Advance(time.Second)
	}
	// Tries at 0, 1, 3, 7, 15, 31, 61 s: 7 in 90 s instead of 90.
	want := []time.Duration{0, 1, 3, 7, 15, 31, 61}
	if len(at) != len(want) {
		t.Fatalf("clone tried at %v, want %v (s)", at, want)
	}
	for i := range want {
		if at[i] != want[i]*time.Second {
			t.Fatalf("clone tried at %v, want %v (s)", at, want)
		}
	}
	if m := a.Snapshot().Member; !strings.Contains(m.Reason, "pg_hba") {
		t.Fatalf("the member's state must keep the error while backing off: %+v", m)
	}
	// The fix arrives with an operator's request: retried at once.
	pg.CloneErr = nil
	go func() { _ = a.ApplyConfig(ctx, func() error { return nil }) }()
	r := <-a.ops
	a.pending = r
	a.retry = backoff{}
	before := clones()
	a.Iterate(ctx) // the reload
	a.Iterate(ctx) // the clone, at the same instant: no wait left
	if clones() != before+1 || pg.Dir != pgctl.DataDirValid {
		t.Fatalf("not retried after the operator's request: %v", pg.Calls)
	}
}
