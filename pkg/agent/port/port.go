// Package port holds the agent's boundaries: the narrow interfaces through
// which the loop touches the world (the local postgres, etcd, the other
// agents' APIs, the control writes, the fence watchdog). The real types
// (pgctl via agent.PG, election.Store, the HTTP peers, the watchdog
// process) are checked against them at compile time in pkg/agent; the
// in-memory fakes in pkg/agent/agenttest are checked the same way.
package port

import (
	"context"
	"time"

	"github.com/cifha/cifha/pkg/election"
	"github.com/cifha/cifha/pkg/ha"
	"github.com/cifha/cifha/pkg/pgctl"
)

// Postgres is the local instance as the agent uses it. *PG implements it
// over pgctl; agenttest.Postgres implements it in memory.
type Postgres interface {
	Version() pgctl.Version
	DataDirState() (pgctl.DataDirState, error)
	StandbyState() (pgctl.StandbyState, error)
	Running() bool
	// PID is the postmaster's PID (0 when not running).
	PID() int
	Exited() <-chan struct{}
	ForeignPID() int
	StopForeign(ctx context.Context) error
	Status(ctx context.Context) (pgctl.Status, error)

	InitDB(ctx context.Context) error
	// Clone copies the leader and makes the copy its standby before moving
	// it into place.
	Clone(ctx context.Context, host string, port int, slot string, standby pgctl.Standby) error
	// Configure writes postgresql.conf, pg_hba.conf, pg_ident.conf and the passfile.
	Configure() error
	SetStandby(s pgctl.Standby) error
	SetPrimary() error
	Start(ctx context.Context, wait time.Duration) error
	StopWithin(ctx context.Context, mode pgctl.StopMode, timeout time.Duration) error
	Reload() error
	Promote(ctx context.Context) error
	CreateSlot(ctx context.Context, name string) error
	// EnsureRoles makes sure of the replication role and the configured
	// application roles and databases (on the leader).
	// fresh: the new cluster's first primary (tablespaces are created then only).
	EnsureRoles(ctx context.Context, fresh bool) error
	// MarkBootstrap sets or clears the marker of a new cluster whose first
	// housekeeping (tablespaces, post_bootstrap) has not run yet;
	// BootstrapMarked reads it.
	MarkBootstrap(set bool) error
	BootstrapMarked() bool
	// StandbyFor returns the standby settings to follow leader at addr.
	StandbyFor(leader, host string, port int) pgctl.Standby
	// Rewind runs pg_rewind against the leader at host:port.
	Rewind(ctx context.Context, host string, port int) error
	// MoveAside renames the data directory out of the way (never deletes it).
	MoveAside(now time.Time) (string, error)
	Checkpoint(ctx context.Context) error
	// PromoteByTriggerFile creates the trigger file (the seed's method).
	PromoteByTriggerFile(path string) error
	// RemoveTriggerFile removes it (before a start, after a promotion).
	RemoveTriggerFile(path string)
	// ControlData reads pg_controldata (postgres stopped).
	ControlData(ctx context.Context) (pgctl.ControlData, error)
	// Settings reads pg_settings (postgres running).
	ReadSettings(ctx context.Context) (map[string]pgctl.Setting, error)
	// SetDynamicParams sets the cluster-wide parameters the next Configure
	// writes after the file's.
	SetDynamicParams(params map[string]string)
	// SetSyncNames sets the synchronous_standby_names the next Configure
	// writes (state.SyncStandbyNames; "" for none).
	SetSyncNames(value string)
	DropSlot(ctx context.Context, name string) error
}

// DCS is the cluster's state in etcd as the agent uses it. *election.Store
// implements it; agenttest.DCS implements it in memory.
type DCS interface {
	// Read may answer from the watch-fed view; ReadFresh always asks etcd.
	Read(ctx context.Context) (election.Cluster, error)
	ReadFresh(ctx context.Context) (election.Cluster, error)
	Lease() election.LeaseState
	Holds(c election.Cluster) bool
	// Term identifies the tenure of the leader key this agent holds (the
	// revision at which it became the holder; 0 when it holds none).
	// PutLastLeader and PutSync stamp their records with it.
	Term() int64
	OwnsKey(c election.Cluster) bool
	ClaimInitialize(ctx context.Context) (bool, error)
	ReleaseInitialize(ctx context.Context) error
	// Acquire takes the free leader key, if the failsafe member list's mod
	// revision is still failsafeRev (0: absent).
	Acquire(ctx context.Context, rec election.LastLeader, failsafeRev int64) (bool, error)
	Repair(ctx context.Context) error
	ClearStale(ctx context.Context, modRev int64) error
	// ClearUnbound deletes a leader key that is nobody's term (no lease, or
	// another lease than the named member's), if unchanged
	// since modRev.
	ClearUnbound(ctx context.Context, modRev, lease int64) error
	// DeleteUnboundMember deletes member name's key if it is bound to no
	// lease (written by hand).
	DeleteUnboundMember(ctx context.Context, name string) error
	Resign(ctx context.Context) error
	PutMember(ctx context.Context, m election.Member) error
	PutLastLeader(ctx context.Context, rec election.LastLeader) error
	// PutSync and DeleteSync write the synchronous-replication record
	// (leader only).
	PutSync(ctx context.Context, members []string, strict bool) error
	DeleteSync(ctx context.Context) error
	// PutFailsafe and DeleteFailsafe write the failsafe member list
	// (leader only).
	PutFailsafe(ctx context.Context, members map[string]string) error
	DeleteFailsafe(ctx context.Context) error
	AppendHistory(ctx context.Context, rec election.HistoryRecord) error
	// Handoff gives the leader key to member to (bound to toLease).
	Handoff(ctx context.Context, to string, toLease int64, rec election.LastLeader, swModRev int64) error
	// ClaimPromotion records (lease-less) that this member, holding the key
	// on its lease, is about to promote after switchover switchoverID.
	ClaimPromotion(ctx context.Context, switchoverID string) error
	// TakeBack takes the free key back after a failed switchover, only if
	// the promotion claim and the last-leader record are unchanged since
	// they were read.
	TakeBack(ctx context.Context, switchoverID string, rec election.LastLeader, promotionRev, lastLeaderRev int64) error
	ClearSwitchover(ctx context.Context, modRev int64) error
	ClearFailover(ctx context.Context, modRev int64) error
}

// Peers reads other members' live state from their APIs.
type Peers interface {
	// Candidate fetches GET <apiURL>/wal within ctx.
	Candidate(ctx context.Context, apiURL string) (ha.Candidate, error)
	// Failsafe asks member at apiURL (POST /failsafe) to promise
	// that it follows leader and will not take the leader key for the
	// duration it answers.
	Failsafe(ctx context.Context, apiURL, leader, member, lsn string) (time.Duration, error)
}

// Control is what the control API changes in etcd.
type Control interface {
	SetPause(ctx context.Context, on bool, by string) error
	RequestSwitchover(ctx context.Context, r election.SwitchoverRequest) (bool, error)
	CancelSwitchover(ctx context.Context) (bool, error)
	RequestFailover(ctx context.Context, r election.FailoverRequest, ttl time.Duration) (bool, error)
	PutConfig(ctx context.Context, c election.DynamicConfig, modRev int64) error
}

// Watchdog is the agent's side of the fence watchdog.
type Watchdog interface {
	// Arm sets the deadline at which the watchdog stops postmaster pid,
	// escalating to SIGKILL after grace. An error means the deadline is
	// not enforced outside this process.
	Arm(pid int, deadline time.Time, grace time.Duration) error
	Disarm()
	// Err is the last failure ("" while it works).
	Err() string
}
