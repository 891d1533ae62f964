package agent

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cifha/cifha/pkg/agent/agenttest"
	"github.com/cifha/cifha/pkg/election"
	"github.com/cifha/cifha/pkg/ha"
	"github.com/cifha/cifha/pkg/pgctl"
)

// syncLeader is a running leader db1 in synchronous mode with standby db2
// streaming.
func syncLeader(t *testing.T, strict bool) (*Agent, *agenttest.Postgres, *agenttest.DCS) {
	t.Helper()
	clk := agenttest.NewClock(t0)
	pg := &agenttest.Postgres{Dir: pgctl.DataDirValid}
	dcs := agenttest.NewDCS("db1", election.LeaseState{ID: 7, ValidUntil: t0.Add(time.Hour)})
	a := New(Options{Name: "db1", PG: pg, DCS: dcs, Now: clk.Now, LoopInterval: time.Second, StartTimeout: time.Second,
		FenceMargin: time.Second, Sync: ha.SyncConfig{On: true, Strict: strict, Count: 1}})
	if err := a.Iterate(context.Background()); err != nil { // acquire and start
		t.Fatal(err)
	}
	dcs.Cluster.Members["db2"] = election.Member{Name: "db2", Role: "replica", State: "streaming"}
	pg.Replication = []pgctl.Replica{{Name: "db2", State: "streaming", FlushLSN: 1000, SyncState: "async"}}
	return a, pg, dcs
}

func rounds(a *Agent, n int) {
	for range n {
		_ = a.Iterate(context.Background())
	}
}

// TestLoopSyncRecordsAfterSetting: the leader writes its term's empty
// record, names the standby in synchronous_standby_names and reloads, and
// records it only once postgres applies the setting and the standby shows
// as synchronous having flushed past the mark.
func TestLoopSyncRecordsAfterSetting(t *testing.T) {
	a, pg, dcs := syncLeader(t, false)
	rounds(a, 4)
	if sy := dcs.Cluster.Sync; sy == nil || sy.Leader != "db1" || len(sy.Members) != 0 {
		t.Fatalf("record %+v: db2 is not synchronous yet (pg_stat_replication says async)", sy)
	}
	if pg.SyncEffective != `FIRST 1 ("db2")` || !has(pg.Calls, "sync-names FIRST 1 (\"db2\")", "configure", "reload") {
		t.Fatalf("setting %q, calls %v", pg.SyncEffective, pg.Calls)
	}
	pg.Replication[0].SyncState = "sync"
	rounds(a, 2)
	if sy := dcs.Cluster.Sync; !sy.Has("db2") {
		t.Fatalf("record %+v: db2 is synchronous and flushed past the mark", sy)
	}
	if !has(pg.Calls, "reload", "checkpoint") {
		t.Fatalf("no CHECKPOINT between applying the setting and taking the mark: %v", pg.Calls)
	}
	if s := a.Snapshot(); s.Cluster.Sync == nil || !strings.Contains(s.Plan.Reason, "healthy primary") {
		t.Fatalf("snapshot %+v", s.Plan)
	}

	// db2 goes away: out of the record first, then out of the setting.
	delete(dcs.Cluster.Members, "db2")
	pg.Replication = nil
	writes := len(dcs.SyncWrites)
	rounds(a, 1)
	if sy := dcs.Cluster.Sync; sy.Has("db2") || pg.SyncEffective != `FIRST 1 ("db2")` {
		t.Fatalf("after one round: record %+v, setting %q (the record must change first)", sy, pg.SyncEffective)
	}
	rounds(a, 1)
	if pg.SyncEffective != "" || len(dcs.SyncWrites) != writes+1 {
		t.Fatalf("setting %q, sync writes %v", pg.SyncEffective, dcs.SyncWrites)
	}
}

// TestLoopSyncStrict: strict mode blocks commits with the placeholder while
// no standby is synchronous, and keeps the recorded standby named when it
// goes away with nobody to replace it.
func TestLoopSyncStrict(t *testing.T) {
	a, pg, dcs := syncLeader(t, true)
	pg.Replication = nil
	delete(dcs.Cluster.Members, "db2")
	rounds(a, 3)
	if pg.SyncEffective != `FIRST 1 ("cifha: no synchronous standby")` {
		t.Fatalf("strict with no standby: setting %q", pg.SyncEffective)
	}
	dcs.Cluster.Members["db2"] = election.Member{Name: "db2", Role: "replica", State: "streaming"}
	pg.Replication = []pgctl.Replica{{Name: "db2", State: "streaming", FlushLSN: 1000, SyncState: "sync"}}
	rounds(a, 3)
	if !dcs.Cluster.Sync.Has("db2") || pg.SyncEffective != `FIRST 1 ("db2")` {
		t.Fatalf("record %+v setting %q", dcs.Cluster.Sync, pg.SyncEffective)
	}
	delete(dcs.Cluster.Members, "db2")
	pg.Replication = nil
	rounds(a, 3)
	if !dcs.Cluster.Sync.Has("db2") || pg.SyncEffective != `FIRST 1 ("db2")` {
		t.Fatalf("strict, standby gone, none other: record %+v setting %q (commits must keep waiting for it)", dcs.Cluster.Sync, pg.SyncEffective)
	}
}

// TestLoopSyncRestartPrimed: a crashed primary restarts with the recorded
// standbys already named, never with an empty (asynchronous) setting.
func TestLoopSyncRestartPrimed(t *testing.T) {
	a, pg, dcs := syncLeader(t, false)
	pg.Replication[0].SyncState = "sync"
	rounds(a, 6)
	if !dcs.Cluster.Sync.Has("db2") {
		t.Fatalf("record %+v", dcs.Cluster.Sync)
	}
	pg.SetSyncNames("") // what a fresh agent process starts with
	pg.Up = false       // postgres crashed
	pg.Calls = nil
	rounds(a, 1)
	i := slices.Index(pg.Calls, "start")
	if i < 0 || !slices.Contains(pg.Calls[:i], `sync-names FIRST 1 ("db2")`) {
		t.Fatalf("restart calls %v: the recorded standby must be named before postgres starts", pg.Calls)
	}
}

// TestLoopSyncStandbyStrictPlaceholder: a standby in strict mode keeps the
// placeholder configured, so that the moment it is promoted commits wait.
func TestLoopSyncStandbyStrictPlaceholder(t *testing.T) {
	clk := agenttest.NewClock(t0)
	pg := &agenttest.Postgres{Dir: pgctl.DataDirValid, Up: true, InRecovery: true, Recv: 1000,
		Standby: pgctl.StandbyState{Standby: true, Target: "db9 10.0.1.9:5432"}}
	dcs := agenttest.NewDCS("db2", election.LeaseState{ID: 8, ValidUntil: t0.Add(time.Hour)})
	dcs.Cluster.Leader = &election.Leader{Name: "db9", Valid: true, CreateRev: 3, ModRev: 3, Lease: 9}
	dcs.Cluster.Members["db9"] = election.Member{Name: "db9", Role: "primary", State: "running", ConnAddress: "10.0.1.9:5432", Timeline: 1}
	a := New(Options{Name: "db2", PG: pg, DCS: dcs, Now: clk.Now, LoopInterval: time.Second, StartTimeout: time.Second,
		FenceMargin: time.Second, Sync: ha.SyncConfig{On: true, Strict: true, Count: 1}})
	rounds(a, 2)
	if pg.SyncEffective != `FIRST 1 ("cifha: no synchronous standby")` {
		t.Fatalf("standby in strict mode: setting %q, calls %v", pg.SyncEffective, pg.Calls)
	}
}

// TestLoopSyncClusterWideSwitch: `cifhactl set synchronous_mode true` turns
// it on for a leader whose file says off; turning it off again empties the
// setting first, then deletes the record.
func TestLoopSyncClusterWideSwitch(t *testing.T) {
	a, pg, dcs := syncLeader(t, false)
	a.opt.Sync, a.syncCfg = ha.SyncConfig{Count: 1}, ha.SyncConfig{Count: 1}
	rounds(a, 3)
	if dcs.Cluster.Sync != nil || pg.SyncEffective != "" {
		t.Fatalf("file says off: record %+v setting %q", dcs.Cluster.Sync, pg.SyncEffective)
	}
	on, off := true, false
	dcs.Cluster.Config.SynchronousMode, dcs.Cluster.ConfigRev = &on, 40
	pg.Replication[0].SyncState = "sync"
	rounds(a, 5)
	if !dcs.Cluster.Sync.Has("db2") || pg.SyncEffective != `FIRST 1 ("db2")` {
		t.Fatalf("cluster-wide on: record %+v setting %q", dcs.Cluster.Sync, pg.SyncEffective)
	}
	dcs.Cluster.Config.SynchronousMode, dcs.Cluster.ConfigRev = &off, 41
	rounds(a, 1)
	if dcs.Cluster.Sync == nil || pg.SyncEffective != "" {
		t.Fatalf("turning off: the setting goes first (record %+v setting %q)", dcs.Cluster.Sync, pg.SyncEffective)
	}
	rounds(a, 1)
	if dcs.Cluster.Sync != nil {
		t.Fatalf("record %+v left after synchronous mode was turned off", dcs.Cluster.Sync)
	}
}

// TestLoopLeaderKeyVanishedFences: the leader's key disappears while its
// lease still looks valid (etcd revoked the lease early, or someone deleted
// the key): after confirming with a fresh read, the leader stops accepting
// writes at once instead of trying to take the key back while writable.
func TestLoopLeaderKeyVanishedFences(t *testing.T) {
	a, pg, dcs := syncLeader(t, false)
	a.opt.Sync, a.syncCfg = ha.SyncConfig{Count: 1}, ha.SyncConfig{Count: 1}
	rounds(a, 2)
	if !pg.Up || dcs.FreshReads != 0 {
		t.Fatalf("healthy leader: up %v, fresh reads %d", pg.Up, dcs.FreshReads)
	}
	dcs.Cluster.Leader = nil
	pg.Calls = nil
	rounds(a, 1)
	if pg.Up || dcs.FreshReads == 0 || !slices.ContainsFunc(pg.Calls, func(c string) bool { return strings.HasPrefix(c, "stop") }) {
		t.Fatalf("key gone: up %v, fresh reads %d, calls %v", pg.Up, dcs.FreshReads, pg.Calls)
	}
}

// TestLoopLaggingViewDoesNotFence: the watch-fed view lags (it does not show
// the leader key yet) but etcd has it: the fresh read finds it and the
// leader stays writable.
func TestLoopLaggingViewDoesNotFence(t *testing.T) {
	a, pg, dcs := syncLeader(t, false)
	a.opt.Sync, a.syncCfg = ha.SyncConfig{Count: 1}, ha.SyncConfig{Count: 1}
	rounds(a, 2)
	stale := dcs.Cluster
	stale.Leader = nil
	dcs.StaleView = &stale
	pg.Calls = nil
	rounds(a, 2)
	if !pg.Up || dcs.FreshReads == 0 || slices.ContainsFunc(pg.Calls, func(c string) bool { return strings.HasPrefix(c, "stop") }) {
		t.Fatalf("lagging view: up %v, fresh reads %d, calls %v", pg.Up, dcs.FreshReads, pg.Calls)
	}
}
