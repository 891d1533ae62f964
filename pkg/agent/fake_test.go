package agent

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/cifha/cifha/pkg/election"
	"github.com/cifha/cifha/pkg/pgctl"
)

// fakePostgres is an in-memory postgres: a data dir state, standby files,
// a running flag and a call log.
type fakePostgres struct {
	mu      sync.Mutex
	dir     pgctl.DataDirState
	standby pgctl.StandbyState
	running bool
	inRec   bool
	exited  chan struct{}
	calls   []string
	slots   []pgctl.Slot
	// rewindErr is what Rewind returns.
	rewindErr error
	recv      pgctl.LSN
	dynamic   map[string]string
	// failStart makes Start fail.
	failStart bool
}

var _ Postgres = (*fakePostgres)(nil)

func (f *fakePostgres) call(s string)          { f.calls = append(f.calls, s) }
func (f *fakePostgres) Version() pgctl.Version { return 150018 }
func (f *fakePostgres) DataDirState() (pgctl.DataDirState, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.dir, nil
}
func (f *fakePostgres) StandbyState() (pgctl.StandbyState, error) { return f.standby, nil }
func (f *fakePostgres) Running() bool                             { return f.running }
func (f *fakePostgres) PID() int {
	if f.running {
		return 4242
	}
	return 0
}
func (f *fakePostgres) Exited() <-chan struct{}           { return f.exited }
func (f *fakePostgres) ForeignPID() int                   { return 0 }
func (f *fakePostgres) StopForeign(context.Context) error { f.call("stop-foreign"); return nil }
func (f *fakePostgres) Status(context.Context) (pgctl.Status, error) {
	if !f.running {
		return pgctl.Status{}, pgctl.ErrNotRunning
	}
	st := pgctl.Status{InRecovery: f.inRec, Timeline: 1, CurrentLSN: 1000, Slots: f.slots}
	if f.inRec {
		st.CurrentLSN, st.ReceiveLSN, st.ReplayLSN, st.WalReceiver = 0, f.recv, f.recv, "streaming"
	}
	return st, nil
}
func (f *fakePostgres) InitDB(context.Context) error {
	f.call("initdb")
	f.dir = pgctl.DataDirValid
	return nil
}
func (f *fakePostgres) Clone(_ context.Context, host string, _ int, _ string, sb pgctl.Standby) error {
	f.call("clone " + host)
	f.dir = pgctl.DataDirValid
	f.standby = pgctl.StandbyState{Standby: true, Target: sb.Target()}
	return nil
}
func (f *fakePostgres) Configure() error { f.call("configure"); return nil }
func (f *fakePostgres) SetStandby(s pgctl.Standby) error {
	f.call("set-standby " + s.Leader)
	f.standby = pgctl.StandbyState{Standby: true, Target: s.Target()}
	return nil
}
func (f *fakePostgres) SetPrimary() error {
	f.call("set-primary")
	f.standby = pgctl.StandbyState{}
	return nil
}
func (f *fakePostgres) Start(context.Context, time.Duration) error {
	f.call("start")
	if f.failStart {
		return errors.New("postgres exited during start")
	}
	f.running, f.inRec, f.exited = true, f.standby.Standby, make(chan struct{})
	return nil
}
func (f *fakePostgres) StopWithin(_ context.Context, m pgctl.StopMode, _ time.Duration) error {
	f.call("stop " + m.String())
	f.crash()
	return nil
}
func (f *fakePostgres) crash() {
	if f.running {
		f.running = false
		close(f.exited)
	}
}
func (f *fakePostgres) Reload() error                               { f.call("reload"); return nil }
func (f *fakePostgres) Promote(context.Context) error               { f.call("promote"); f.inRec = false; return nil }
func (f *fakePostgres) EnsureReplicationRole(context.Context) error { return nil }
func (f *fakePostgres) CreateSlot(_ context.Context, name string) error {
	f.call("create-slot " + name)
	f.slots = append(f.slots, pgctl.Slot{Name: name})
	return nil
}
func (f *fakePostgres) Rewind(_ context.Context, host string, _ int) error {
	f.call("rewind " + host)
	return f.rewindErr
}
func (f *fakePostgres) MoveAside(time.Time) (string, error) {
	f.call("move-aside")
	f.dir = pgctl.DataDirMissing
	return "/old", nil
}
func (f *fakePostgres) Checkpoint(context.Context) error { f.call("checkpoint"); return nil }
func (f *fakePostgres) PromoteByTriggerFile(string) error {
	f.call("trigger-file")
	return nil
}
func (f *fakePostgres) RemoveTriggerFile(string) {}
func (f *fakePostgres) ReadSettings(context.Context) (map[string]pgctl.Setting, error) {
	return testSettings, nil
}
func (f *fakePostgres) SetDynamicParams(p map[string]string) {
	f.call("dynamic-params")
	f.dynamic = p
}
func (f *fakePostgres) DropSlot(_ context.Context, name string) error {
	f.call("drop-slot " + name)
	return nil
}
func (f *fakePostgres) ControlData(context.Context) (pgctl.ControlData, error) {
	f.call("controldata")
	return pgctl.ControlData{State: "shut down", Checkpoint: 1000, Timeline: 1}, nil
}
func (f *fakePostgres) StandbyFor(leader, host string, port int) pgctl.Standby {
	return pgctl.Standby{Leader: leader, Host: host, Port: port}
}

// fakeDCS is an in-memory etcd for one member: the lease is whatever the
// test sets.
type fakeDCS struct {
	self    string
	lease   election.LeaseState
	cluster election.Cluster
	err     error
	rev     int64
	puts    int
	history []election.HistoryRecord
	// onRead, when set, runs before each Read (a test's way to make the
	// world change while an action polls).
	onRead func(d *fakeDCS)
	// afterRead, when set, runs once after a Read has returned its copy
	// (a change that lands between a read and the next write).
	afterRead func(d *fakeDCS)
	handedOff bool
}

var _ DCS = (*fakeDCS)(nil)

func newFakeDCS(self string, lease election.LeaseState) *fakeDCS {
	return &fakeDCS{self: self, lease: lease, cluster: election.Cluster{Members: map[string]election.Member{}, Invalid: map[string]string{}}}
}
func (d *fakeDCS) Read(context.Context) (election.Cluster, error) {
	if d.onRead != nil {
		d.onRead(d)
	}
	if d.err != nil {
		return election.Cluster{}, d.err
	}
	c := d.cluster
	c.Members = map[string]election.Member{}
	for k, v := range d.cluster.Members {
		c.Members[k] = v
	}
	if f := d.afterRead; f != nil {
		d.afterRead = nil
		f(d)
	}
	return c, nil
}
func (d *fakeDCS) Lease() election.LeaseState { return d.lease }
func (d *fakeDCS) Holds(c election.Cluster) bool {
	return c.Leader != nil && c.Leader.Name == d.self && c.Leader.Lease == int64(d.lease.ID) && d.lease.ID != 0
}
func (d *fakeDCS) OwnsKey(c election.Cluster) bool { return d.Holds(c) }
func (d *fakeDCS) ClaimInitialize(context.Context) (bool, error) {
	if d.cluster.Initialize != "" {
		return false, nil
	}
	d.cluster.Initialize = d.self
	return true, nil
}
func (d *fakeDCS) ReleaseInitialize(context.Context) error { d.cluster.Initialize = ""; return nil }
func (d *fakeDCS) Acquire(_ context.Context, rec election.LastLeader) (bool, error) {
	if d.cluster.Leader != nil {
		return false, nil
	}
	d.rev++
	d.cluster.Leader = &election.Leader{Name: d.self, Valid: true, CreateRev: d.rev, ModRev: d.rev, Lease: int64(d.lease.ID)}
	rec.Name = d.self
	d.cluster.LastLeader = &rec
	return true, nil
}
func (d *fakeDCS) Repair(context.Context) error              { return nil }
func (d *fakeDCS) ClearStale(context.Context, int64) error   { d.cluster.Leader = nil; return nil }
func (d *fakeDCS) ClearUnbound(context.Context, int64) error { d.cluster.Leader = nil; return nil }
func (d *fakeDCS) Resign(context.Context) error              { d.cluster.Leader = nil; return nil }
func (d *fakeDCS) PutMember(_ context.Context, m election.Member) error {
	d.puts++
	d.cluster.Members[m.Name] = m
	return nil
}
func (d *fakeDCS) AppendHistory(_ context.Context, rec election.HistoryRecord) error {
	d.history = append(d.history, rec)
	return nil
}
func (d *fakeDCS) PutLastLeader(_ context.Context, rec election.LastLeader) error {
	rec.Name = d.self
	d.cluster.LastLeader = &rec
	return nil
}

func (d *fakeDCS) Handoff(_ context.Context, to string, toLease int64, rec election.LastLeader, _ int64) error {
	if !d.Holds(d.cluster) {
		return election.ErrNotLeader
	}
	d.rev++
	d.cluster.Leader = &election.Leader{Name: to, Valid: true, CreateRev: d.cluster.Leader.CreateRev, ModRev: d.rev, Lease: toLease}
	rec.Name = to
	d.cluster.LastLeader = &rec
	d.cluster.Switchover = nil
	d.handedOff = true
	return nil
}
func (d *fakeDCS) ClearSwitchover(context.Context, int64) error {
	d.cluster.Switchover = nil
	return nil
}
func (d *fakeDCS) ClearFailover(context.Context, int64) error { d.cluster.Failover = nil; return nil }

var t0 = time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)

func (d *fakeDCS) ClaimPromotion(_ context.Context, id string) error {
	if !d.Holds(d.cluster) {
		return election.ErrNotLeader
	}
	d.cluster.Promotion, d.cluster.PromotionRev = &election.PromotionClaim{Name: d.self, Switchover: id}, d.cluster.PromotionRev+1
	return nil
}

func (d *fakeDCS) TakeBack(_ context.Context, id string, rec election.LastLeader, rev int64) error {
	if d.cluster.Leader != nil || d.cluster.PromotionRev != rev {
		return election.ErrRefused
	}
	d.cluster.Leader = &election.Leader{Name: d.self, Valid: true, Lease: d.lease.ID, CreateRev: 100, ModRev: 100}
	rec.Name = d.self
	d.cluster.LastLeader = &rec
	d.cluster.Promotion, d.cluster.PromotionRev = &election.PromotionClaim{Name: d.self, Switchover: id, TakenBack: true}, rev+1
	return nil
}

func (d *fakeDCS) DeleteUnboundMember(context.Context, string) error { return nil }
