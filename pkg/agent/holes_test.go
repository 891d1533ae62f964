package agent

import (
	"context"
	"fmt"
	"github.com/cifha/cifha/pkg/agent/agenttest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/cifha/cifha/internal/testutil"
	"github.com/cifha/cifha/pkg/election"
	"github.com/cifha/cifha/pkg/pgctl"
	"github.com/hashicorp/go-hclog"
)

// runningLeader returns an agent whose postgres runs as the primary
// holding the key under lease 7 (valid until t0+3s, fence at t0+2s).
func runningLeader(t *testing.T) (*Agent, *agenttest.Postgres, *agenttest.DCS, *agenttest.Clock) {
	t.Helper()
	clk := agenttest.NewClock(t0)
	pg := &agenttest.Postgres{Dir: pgctl.DataDirMissing}
	dcs := agenttest.NewDCS("db1", election.LeaseState{ID: 7, ValidUntil: t0.Add(3 * time.Second)})
	a := newTestAgent(pg, dcs, clk)
	ctx := context.Background()
	if err := a.Iterate(ctx); err != nil {
		t.Fatal(err)
	}
	a.Iterate(ctx)
	if s := a.Snapshot(); !s.IsLeader || !pg.Up {
		t.Fatalf("not a running leader: %+v", s.Member)
	}
	return a, pg, dcs, clk
}

// Hole 11: an agent resumed after a pause longer than its ttl fences
// before doing anything else (its clock counts the suspended time).
func TestResumedAfterSuspendFencesFirst(t *testing.T) {
	a, pg, _, clk := runningLeader(t)
	pg.Calls = nil
	clk.Advance(30 * time.Second) // the VM was paused: the lease is long gone
	_ = a.Iterate(context.Background())
	if pg.Up || len(pg.Calls) == 0 || !strings.HasPrefix(pg.Calls[0], "stop") {
		t.Fatalf("after resume: running=%v calls=%v; want a stop first", pg.Up, pg.Calls)
	}
}

func TestBootClockCountsForward(t *testing.T) {
	now := election.BootClock()
	a := now()
	if d := a.Sub(time.Now()); d > time.Minute || d < -time.Minute {
		t.Fatalf("boot clock %v is far from the wall clock", a)
	}
	b := now()
	if b.Before(a) {
		t.Fatal("boot clock went backwards")
	}
	if n := election.BootNanos(b); n <= 0 || n > election.BootNow() {
		t.Fatalf("BootNanos %d, BootNow %d", n, election.BootNow())
	}
}

// Hole 7: a paused leader fenced while its lease ran low, whose lease is
// renewed with the key still its own, restarts postgres in place.
func TestPausedLeaderRestartsAfterFence(t *testing.T) {
	a, pg, dcs, clk := runningLeader(t)
	ctx := context.Background()
	dcs.Cluster.Paused = true
	clk.Advance(2500 * time.Millisecond) // inside the margin: fenced
	_ = a.Iterate(ctx)
	if pg.Up {
		t.Fatal("not fenced inside the margin")
	}
	dcs.LeaseNow.ValidUntil = clk.Now().Add(3 * time.Second) // renewed in time, same lease
	if err := a.Iterate(ctx); err != nil {
		t.Fatal(err)
	}
	if !pg.Up {
		t.Fatalf("paused leader with its lease renewed stays down: %s", a.Snapshot().Plan.Reason)
	}
}

// Hole 5: a primary that cannot start gives up the key.
func TestLeaderGivesUpKeyWhenPostgresCannotStart(t *testing.T) {
	a, pg, dcs, clk := runningLeader(t)
	a.opt.PrimaryStartTimeout, a.opt.RecentWindow = 10*time.Second, 6*time.Second
	ctx := context.Background()
	pg.FailStart = true
	pg.Up = false
	for i := 0; i < 30 && dcs.Cluster.Leader != nil; i++ {
		clk.Advance(500 * time.Millisecond)
		dcs.LeaseNow.ValidUntil = clk.Now().Add(3 * time.Second)
		_ = a.Iterate(ctx)
	}
	if dcs.Cluster.Leader != nil {
		t.Fatalf("leader key kept although postgres never started: %s", a.Snapshot().Plan.Reason)
	}
	// It does not take the key straight back.
	clk.Advance(time.Second)
	dcs.LeaseNow.ValidUntil = clk.Now().Add(3 * time.Second)
	_ = a.Iterate(ctx)
	if dcs.Cluster.Leader != nil {
		t.Fatal("took the key back at once")
	}
}

// Hole 4: a watchdog whose deadline cannot be enforced stops every
// writable step.
func TestBrokenWatchdogBlocksWritableSteps(t *testing.T) {
	clk := agenttest.NewClock(t0)
	pg := &agenttest.Postgres{Dir: pgctl.DataDirValid}
	dcs := agenttest.NewDCS("db1", election.LeaseState{ID: 7, ValidUntil: t0.Add(3 * time.Second)})
	a := newTestAgent(pg, dcs, clk)
	a.opt.Watchdog = brokenWatchdog{}
	if err := a.Iterate(context.Background()); err == nil || pg.Up {
		t.Fatalf("started a primary without a working watchdog (err %v)", err)
	}
}

type brokenWatchdog struct{}

func (brokenWatchdog) Arm(int, time.Time, time.Duration) error { return fmt.Errorf("gone") }
func (brokenWatchdog) Disarm()                                 {}
func (brokenWatchdog) Err() string                             { return "fence watchdog cannot be restarted: gone" }

// fakePostmaster starts a process whose name is "postgres" (the watchdog
// refuses to signal anything else).
func fakePostmaster(t *testing.T) (*exec.Cmd, <-chan struct{}) {
	t.Helper()
	dir := t.TempDir()
	bin := filepath.Join(dir, "postgres")
	src, err := os.ReadFile("/bin/sleep")
	if err != nil {
		t.Skip("no /bin/sleep")
	}
	if err := os.WriteFile(bin, src, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() { cmd.Process.Kill(); <-done })
	return cmd, done
}

// Hole 4: the watchdog takes an absolute deadline on the shared clock. A
// message that arrives late (the agent was paused after computing it) must
// not extend the deadline: it fires at the deadline, not "left" after
// arrival.
func TestWatchdogAbsoluteDeadline(t *testing.T) {
	pm, exited := fakePostmaster(t)
	var now atomic.Int64
	now.Store(1_000_000_000)
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { RunWatchdog(r, hclog.NewNullLogger(), now.Load); close(done) }()
	defer func() { w.Close(); <-done }()
	// The deadline was 1 s after "now" when the agent computed it; the
	// message arrives 5 s later (the agent was frozen).
	now.Store(6_000_000_000)
	fmt.Fprintf(w, "arm %d %d\n", pm.Process.Pid, int64(2_000_000_000))
	select {
	case <-exited:
	case <-time.After(5 * time.Second):
		t.Fatal("a deadline already past when it arrived did not fire")
	}
}

// Hole 4: a watchdog that stops reading can never block the fencer: each
// Arm returns promptly (a full pipe is a dead watchdog, restarted).
func TestStuckWatchdogNeverBlocks(t *testing.T) {
	dir := testutil.Dir(t, "wd-")
	script := filepath.Join(dir, "stuck")
	// Reads nothing, ever.
	if err := os.WriteFile(script, []byte("#!/bin/sh\nexec sleep 60\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	w := &ProcessWatchdog{exe: script, log: hclog.NewNullLogger()}
	if err := w.start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		w.Close()
		if w.cmd != nil && w.cmd.Process != nil {
			w.cmd.Process.Kill()
		}
	}()
	deadline := time.Now().Add(30 * time.Second)
	failed := 0
	for i := 0; i < 5000; i++ {
		start := time.Now()
		if w.Arm(1, time.Now(), time.Second) != nil {
			failed++
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Fatalf("Arm blocked for %s", d)
		}
		if time.Now().After(deadline) {
			t.Fatal("too slow")
		}
	}
	if failed > 0 {
		t.Fatalf("%d Arms failed although the watchdog could always be restarted (last: %s)", failed, w.Err())
	}
	// Make restarts impossible: Arm now fails and says why.
	os.Remove(script)
	w.mu.Lock()
	if w.cmd != nil && w.cmd.Process != nil {
		w.cmd.Process.Signal(syscall.SIGKILL)
	}
	w.in.Close()
	w.mu.Unlock()
	if err := w.Arm(1, time.Now(), time.Second); err == nil || w.Err() == "" {
		t.Fatalf("Arm with an unrestartable watchdog: %v, Err %q", err, w.Err())
	}
}

// Hole 14: a standby keeps a slot for every known member (including the
// leader, and the last leader whose key is gone), so after its promotion a
// returning member's slot already exists.
func TestStandbyKeepsSlotsForKnownMembers(t *testing.T) {
	clk := agenttest.NewClock(t0)
	pg := &agenttest.Postgres{Dir: pgctl.DataDirValid, Standby: pgctl.StandbyState{Standby: true, Target: "db1 10.0.1.1:5432"}}
	dcs := agenttest.NewDCS("db2", election.LeaseState{ID: 22, ValidUntil: t0.Add(time.Hour)})
	dcs.Cluster.Leader = &election.Leader{Name: "db1", Valid: true, Lease: 7, CreateRev: 5, ModRev: 5}
	dcs.Cluster.Members["db1"] = election.Member{Name: "db1", Role: "primary", State: "running", ConnAddress: "10.0.1.1:5432"}
	dcs.Cluster.Members["db3"] = election.Member{Name: "db3", Role: "replica", State: "streaming", ConnAddress: "10.0.1.3:5432"}
	dcs.Cluster.LastLeader = &election.LastLeader{Name: "db0", Timeline: 1}
	a := newTestAgent(pg, dcs, clk)
	for i := 0; i < 3; i++ {
		_ = a.Iterate(context.Background())
	}
	for _, want := range []string{"create-slot db1", "create-slot db3", "create-slot db0"} {
		if !has(pg.Calls, want) {
			t.Fatalf("no %q: %v", want, pg.Calls)
		}
	}
	if has(pg.Calls, "create-slot db2") {
		t.Fatal("a slot for itself")
	}
}

// An idle agent woken by an event goes back to its normal tick: it must
// never end up waiting on a stopped ticker (found in review: a standby
// stayed "in recovery" for a minute).
func TestIdleLoopWokenKeepsTicking(t *testing.T) {
	pg := &agenttest.Postgres{Dir: pgctl.DataDirValid, Standby: pgctl.StandbyState{Standby: true, Target: "db1 10.0.1.1:5432"}}
	dcs := agenttest.NewDCS("db2", election.LeaseState{ID: 22, ValidUntil: time.Now().Add(time.Hour)})
	dcs.Cluster.Leader = &election.Leader{Name: "db1", Valid: true, Lease: 7, CreateRev: 5, ModRev: 5}
	dcs.Cluster.Members["db1"] = election.Member{Name: "db1", Role: "primary", State: "running", ConnAddress: "10.0.1.1:5432"}
	var reads atomic.Int64
	dcs.OnRead = func(*agenttest.DCS) { reads.Add(1) }
	wake := make(chan struct{}, 1)
	a := New(Options{Name: "db2", PG: pg, DCS: dcs, Wake: wake, LoopInterval: 30 * time.Millisecond, TTL: 30 * time.Second,
		StartTimeout: time.Second, FenceMargin: time.Second, ConnAddress: "10.0.1.2:5432", APIURL: "http://10.0.1.2:8008"})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { a.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	// Idle after a few quiet rounds (idle interval: ttl/3 = 10 s).
	testutil.Eventually(t, 5*time.Second, "idle", func() error {
		if n := reads.Load(); n < 5 {
			return fmt.Errorf("%d rounds", n)
		}
		return nil
	})
	wake <- struct{}{}
	base := reads.Load()
	testutil.Eventually(t, 5*time.Second, "ticking again after the wake-up", func() error {
		if n := reads.Load() - base; n < 3 {
			return fmt.Errorf("%d rounds since the wake-up", n)
		}
		return nil
	})
}

// The session renews more often exactly while postgres is writable: the
// fencer tells it (Options.Writable) when it is armed and when not.
func TestWritableRenewalsFollowTheFencer(t *testing.T) {
	clk := agenttest.NewClock(t0)
	pg := &agenttest.Postgres{Dir: pgctl.DataDirValid}
	dcs := agenttest.NewDCS("db1", election.LeaseState{ID: 7, ValidUntil: t0.Add(3 * time.Second)})
	a := newTestAgent(pg, dcs, clk)
	got := make(chan bool, 8)
	a.opt.Writable = func(on bool) { got <- on }
	if err := a.Iterate(context.Background()); err != nil || !pg.Up || a.fence.armed() == 0 {
		t.Fatalf("not a writable primary: err %v, up %v", err, pg.Up)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { a.fence.run(ctx); close(done) }()
	want := func(on bool) {
		t.Helper()
		select {
		case v := <-got:
			if v != on {
				t.Fatalf("Writable(%v), want %v", v, on)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("Writable(%v) never called", on)
		}
	}
	want(true)
	a.fence.disarm()
	a.fence.poke()
	want(false)
	cancel()
	<-done
}
