// Package agenttest holds in-memory fakes of the agent's boundaries
// (pkg/agent/port) for tests: a postgres with a call log, a one-member etcd
// whose world a test can change between reads, a clock. Each is checked
// against its interface at compile time.
package agenttest

import (
	"context"
	"errors"
	"github.com/cifha/cifha/pkg/agent/port"
	"maps"
	"sync"
	"time"

	"github.com/cifha/cifha/pkg/election"
	"github.com/cifha/cifha/pkg/pgctl"
	"github.com/cifha/cifha/pkg/state"
)

// Postgres is an in-memory postgres: a data dir state, standby files,
// a running flag and a call log.
type Postgres struct {
	mu         sync.Mutex
	Dir        pgctl.DataDirState
	Standby    pgctl.StandbyState
	Up         bool
	InRecovery bool
	exited     chan struct{}
	Calls      []string
	Slots      []pgctl.Slot
	// rewindErr is what Rewind returns.
	RewindErr error
	Recv      pgctl.LSN
	Dynamic   map[string]string
	// failStart makes Start fail.
	FailStart bool
	// CloneErr is what Clone returns (the data directory stays missing).
	CloneErr error
	// Replication is what a primary's pg_stat_replication shows.
	Replication []pgctl.Replica
	// SyncNames is synchronous_standby_names as written to the config
	// (SetSyncNames); SyncEffective as postgres applies it (Reload, Start).
	SyncNames, SyncEffective string
}

var _ port.Postgres = (*Postgres)(nil)

func (f *Postgres) call(s string)          { f.Calls = append(f.Calls, s) }
func (f *Postgres) Version() pgctl.Version { return 150018 }
func (f *Postgres) DataDirState() (pgctl.DataDirState, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.Dir, nil
}
func (f *Postgres) StandbyState() (pgctl.StandbyState, error) { return f.Standby, nil }
func (f *Postgres) Running() bool                             { return f.Up }
func (f *Postgres) PID() int {
	if f.Up {
		return 4242
	}
	return 0
}
func (f *Postgres) Exited() <-chan struct{}           { return f.exited }
func (f *Postgres) ForeignPID() int                   { return 0 }
func (f *Postgres) StopForeign(context.Context) error { f.call("stop-foreign"); return nil }
func (f *Postgres) Status(context.Context) (pgctl.Status, error) {
	if !f.Up {
		return pgctl.Status{}, pgctl.ErrNotRunning
	}
	st := pgctl.Status{InRecovery: f.InRecovery, Timeline: 1, CurrentLSN: 1000, Slots: f.Slots, SyncNames: f.SyncEffective}
	if !f.InRecovery {
		st.Replication = append([]pgctl.Replica{}, f.Replication...)
	}
	if f.InRecovery {
		st.CurrentLSN, st.ReceiveLSN, st.ReplayLSN, st.WalReceiver = 0, f.Recv, f.Recv, "streaming"
	}
	return st, nil
}
func (f *Postgres) InitDB(context.Context) error {
	f.call("initdb")
	f.Dir = pgctl.DataDirValid
	return nil
}
func (f *Postgres) Clone(_ context.Context, host string, _ int, _ string, sb pgctl.Standby) error {
	f.call("clone " + host)
	if f.CloneErr != nil {
		return f.CloneErr
	}
	f.Dir = pgctl.DataDirValid
	f.Standby = pgctl.StandbyState{Standby: true, Target: sb.Target()}
	return nil
}
func (f *Postgres) Configure() error { f.call("configure"); return nil }
func (f *Postgres) SetStandby(s pgctl.Standby) error {
	f.call("set-standby " + s.Leader)
	f.Standby = pgctl.StandbyState{Standby: true, Target: s.Target()}
	return nil
}
func (f *Postgres) SetPrimary() error {
	f.call("set-primary")
	f.Standby = pgctl.StandbyState{}
	return nil
}
func (f *Postgres) Start(context.Context, time.Duration) error {
	f.call("start")
	if f.FailStart {
		return errors.New("postgres exited during start")
	}
	f.Up, f.InRecovery, f.exited = true, f.Standby.Standby, make(chan struct{})
	return nil
}
func (f *Postgres) StopWithin(_ context.Context, m pgctl.StopMode, _ time.Duration) error {
	f.call("stop " + m.String())
	f.Crash()
	return nil
}

// Crash ends the postmaster as a crash would.
func (f *Postgres) Crash() {
	if f.Up {
		f.Up = false
		close(f.exited)
	}
}
func (f *Postgres) Reload() error {
	f.call("reload")
	f.SyncEffective = f.SyncNames
	return nil
}
func (f *Postgres) SetSyncNames(v string) {
	f.call("sync-names " + v)
	f.SyncNames = v
}
func (f *Postgres) Promote(context.Context) error {
	f.call("promote")
	f.InRecovery = false
	return nil
}
func (f *Postgres) EnsureRoles(context.Context, bool) error { return nil }

// MarkBootstrap implements port.Postgres.
func (f *Postgres) MarkBootstrap(bool) error { return nil }

// BootstrapMarked implements port.Postgres.
func (f *Postgres) BootstrapMarked() bool { return false }
func (f *Postgres) CreateSlot(_ context.Context, name string) error {
	f.call("create-slot " + name)
	f.Slots = append(f.Slots, pgctl.Slot{Name: name})
	return nil
}
func (f *Postgres) Rewind(_ context.Context, host string, _ int) error {
	f.call("rewind " + host)
	return f.RewindErr
}
func (f *Postgres) MoveAside(time.Time) (string, error) {
	f.call("move-aside")
	f.Dir = pgctl.DataDirMissing
	return "/old", nil
}
func (f *Postgres) Checkpoint(context.Context) error { f.call("checkpoint"); return nil }
func (f *Postgres) PromoteByTriggerFile(string) error {
	f.call("trigger-file")
	return nil
}
func (f *Postgres) RemoveTriggerFile(string) {}
func (f *Postgres) ReadSettings(context.Context) (map[string]pgctl.Setting, error) {
	return Settings, nil
}
func (f *Postgres) SetDynamicParams(p map[string]string) {
	f.call("dynamic-params")
	f.Dynamic = p
}
func (f *Postgres) DropSlot(_ context.Context, name string) error {
	f.call("drop-slot " + name)
	return nil
}
func (f *Postgres) ControlData(context.Context) (pgctl.ControlData, error) {
	f.call("controldata")
	return pgctl.ControlData{State: "shut down", Checkpoint: 1000, Timeline: 1}, nil
}
func (f *Postgres) StandbyFor(leader, host string, port int) pgctl.Standby {
	return pgctl.Standby{Leader: leader, Host: host, Port: port}
}

// DCS is an in-memory etcd for one member: the lease is whatever the
// test sets.
type DCS struct {
	Self     string
	LeaseNow election.LeaseState
	Cluster  election.Cluster
	Err      error
	Rev      int64
	Puts     int
	History  []election.HistoryRecord
	// onRead, when set, runs before each Read (a test's way to make the
	// world change while an action polls).
	OnRead func(d *DCS)
	// afterRead, when set, runs once after a Read has returned its copy
	// (a change that lands between a read and the next write).
	AfterRead func(d *DCS)
	HandedOff bool
	// SyncWrites records each PutSync (its members) and DeleteSync (nil).
	SyncWrites [][]string
	// FreshReads counts ReadFresh calls.
	FreshReads int
	// StaleView, when set, is what Read returns (a watch-fed view that
	// lags); ReadFresh still returns Cluster.
	StaleView *election.Cluster
}

var _ port.DCS = (*DCS)(nil)

func NewDCS(self string, lease election.LeaseState) *DCS {
	return &DCS{Self: self, LeaseNow: lease, Cluster: election.Cluster{Members: map[string]election.Member{}, Invalid: map[string]string{}}}
}
func (d *DCS) Read(context.Context) (election.Cluster, error) {
	if d.OnRead != nil {
		d.OnRead(d)
	}
	if d.Err != nil {
		return election.Cluster{}, d.Err
	}
	c := d.Cluster
	if d.StaleView != nil {
		c = *d.StaleView
	}
	c.Members = map[string]election.Member{}
	for k, v := range d.Cluster.Members {
		c.Members[k] = v
	}
	if f := d.AfterRead; f != nil {
		d.AfterRead = nil
		f(d)
	}
	return c, nil
}
func (d *DCS) Lease() election.LeaseState { return d.LeaseNow }
func (d *DCS) Holds(c election.Cluster) bool {
	return c.Leader != nil && c.Leader.Name == d.Self && c.Leader.Lease == int64(d.LeaseNow.ID) && d.LeaseNow.ID != 0
}
func (d *DCS) OwnsKey(c election.Cluster) bool { return d.Holds(c) }

// Term is the held key's create revision (the fake hands no key over).
func (d *DCS) Term() int64 {
	if !d.Holds(d.Cluster) {
		return 0
	}
	return d.Cluster.Leader.CreateRev
}
func (d *DCS) ClaimInitialize(context.Context) (bool, error) {
	if d.Cluster.Initialize != "" {
		return false, nil
	}
	d.Cluster.Initialize = d.Self
	return true, nil
}
func (d *DCS) ReleaseInitialize(context.Context) error { d.Cluster.Initialize = ""; return nil }
func (d *DCS) Acquire(_ context.Context, rec election.LastLeader, failsafeRev int64) (bool, error) {
	if d.Cluster.Leader != nil || d.Cluster.FailsafeRev != failsafeRev {
		return false, nil
	}
	d.Rev++
	d.Cluster.Leader = &election.Leader{Name: d.Self, Valid: true, CreateRev: d.Rev, ModRev: d.Rev, Lease: int64(d.LeaseNow.ID)}
	rec.Name = d.Self
	d.Cluster.LastLeader = &rec
	return true, nil
}
func (d *DCS) Repair(context.Context) error                     { return nil }
func (d *DCS) ClearStale(context.Context, int64) error          { d.Cluster.Leader = nil; return nil }
func (d *DCS) ClearUnbound(context.Context, int64, int64) error { d.Cluster.Leader = nil; return nil }
func (d *DCS) Resign(context.Context) error                     { d.Cluster.Leader = nil; return nil }
func (d *DCS) PutMember(_ context.Context, m election.Member) error {
	d.Puts++
	d.Cluster.Members[m.Name] = m
	return nil
}
func (d *DCS) AppendHistory(_ context.Context, rec election.HistoryRecord) error {
	d.History = append(d.History, rec)
	return nil
}
func (d *DCS) PutLastLeader(_ context.Context, rec election.LastLeader) error {
	rec.Name = d.Self
	rec.Term = d.Term()
	d.Cluster.LastLeader = &rec
	return nil
}

func (d *DCS) PutSync(_ context.Context, members []string, strict bool) error {
	if !d.Holds(d.Cluster) {
		return election.ErrNotLeader
	}
	d.Rev++
	d.Cluster.Sync = &election.SyncState{Leader: d.Self, Term: d.Term(), Members: append([]string{}, members...), Strict: strict, ModRev: d.Rev}
	d.SyncWrites = append(d.SyncWrites, append([]string{}, members...))
	return nil
}

func (d *DCS) PutFailsafe(_ context.Context, members map[string]string) error {
	if !d.Holds(d.Cluster) {
		return election.ErrNotLeader
	}
	d.Rev++
	d.Cluster.Failsafe = &state.FailsafeState{Leader: d.Self, Members: maps.Clone(members), ModRev: d.Rev}
	d.Cluster.FailsafeRev = d.Rev
	return nil
}

func (d *DCS) DeleteFailsafe(_ context.Context) error {
	if !d.Holds(d.Cluster) {
		return election.ErrNotLeader
	}
	d.Cluster.Failsafe, d.Cluster.FailsafeRev = nil, 0
	return nil
}

func (d *DCS) DeleteSync(_ context.Context) error {
	if !d.Holds(d.Cluster) {
		return election.ErrNotLeader
	}
	d.Cluster.Sync = nil
	d.SyncWrites = append(d.SyncWrites, nil)
	return nil
}

func (d *DCS) Handoff(_ context.Context, to string, toLease int64, rec election.LastLeader, _ int64) error {
	if !d.Holds(d.Cluster) {
		return election.ErrNotLeader
	}
	d.Rev++
	d.Cluster.Leader = &election.Leader{Name: to, Valid: true, CreateRev: d.Cluster.Leader.CreateRev, ModRev: d.Rev, Lease: toLease}
	rec.Name = to
	d.Cluster.LastLeader = &rec
	d.Cluster.Switchover = nil
	d.HandedOff = true
	return nil
}
func (d *DCS) ClearSwitchover(context.Context, int64) error {
	d.Cluster.Switchover = nil
	return nil
}
func (d *DCS) ClearFailover(context.Context, int64) error { d.Cluster.Failover = nil; return nil }

func (d *DCS) ClaimPromotion(_ context.Context, id string) error {
	if !d.Holds(d.Cluster) {
		return election.ErrNotLeader
	}
	d.Cluster.Promotion, d.Cluster.PromotionRev = &election.PromotionClaim{Name: d.Self, Switchover: id}, d.Cluster.PromotionRev+1
	return nil
}

func (d *DCS) TakeBack(_ context.Context, id string, rec election.LastLeader, rev, llRev int64) error {
	if d.Cluster.Leader != nil || d.Cluster.PromotionRev != rev || d.Cluster.LastLeaderRev != llRev {
		return election.ErrRefused
	}
	d.Cluster.Leader = &election.Leader{Name: d.Self, Valid: true, Lease: d.LeaseNow.ID, CreateRev: 100, ModRev: 100}
	rec.Name = d.Self
	d.Cluster.LastLeader = &rec
	d.Cluster.Promotion, d.Cluster.PromotionRev = &election.PromotionClaim{Name: d.Self, Switchover: id, TakenBack: true}, rev+1
	return nil
}

func (d *DCS) DeleteUnboundMember(context.Context, string) error { return nil }

// Clock is a settable clock, safe for use by several goroutines (the
// loop, the API and the systemd notifier read it while a test advances it).
type Clock struct {
	mu sync.Mutex
	t  time.Time
}

// NewClock returns a clock at t.
func NewClock(t time.Time) *Clock { return &Clock{t: t} }

// Now returns the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

// Advance moves the clock forward.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// Settings is a small pg_settings for ReadSettings and validation tests.
var Settings = map[string]pgctl.Setting{
	"work_mem":                   {Name: "work_mem", Vartype: "integer", Context: "user", Unit: "kB", Min: fp(64), Max: fp(2147483647)},
	"shared_buffers":             {Name: "shared_buffers", Vartype: "integer", Context: "postmaster", Unit: "8kB", Min: fp(16), Max: fp(1073741823)},
	"log_min_duration_statement": {Name: "log_min_duration_statement", Vartype: "integer", Context: "superuser", Unit: "ms", Min: fp(-1), Max: fp(2147483647)},
	"synchronous_commit":         {Name: "synchronous_commit", Vartype: "enum", Context: "user", EnumVals: []string{"local", "remote_write", "remote_apply", "on", "off"}},
	"log_connections":            {Name: "log_connections", Vartype: "bool", Context: "superuser-backend"},
	"random_page_cost":           {Name: "random_page_cost", Vartype: "real", Context: "user", Min: fp(0), Max: fp(1.79769e+308)},
	"listen_addresses":           {Name: "listen_addresses", Vartype: "string", Context: "postmaster"},
}

func fp(v float64) *float64 { return &v }

// ReadFresh is Read (the fake has no view).
func (d *DCS) ReadFresh(ctx context.Context) (election.Cluster, error) {
	d.FreshReads++
	stale := d.StaleView
	d.StaleView = nil
	defer func() { d.StaleView = stale }()
	return d.Read(ctx)
}
