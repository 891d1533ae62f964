package ha

import (
	"time"

	"github.com/cifha/cifha/pkg/state"
)

// Observation is everything Decide may look at: what the agent saw this
// round and what it remembers between rounds. It is filled by the agent
// and never changed by Decide.
type Observation struct {
	Now  time.Time
	Self string
	// FenceMargin: a primary stops accepting writes at FenceAt(Lease,
	// FenceMargin).
	FenceMargin time.Duration
	// WritableBudget bounds a step that makes postgres writable (an etcd
	// transaction plus a start or a promotion): such a step begins only if
	// it ends before the fence (MayBecomeWritable).
	WritableBudget time.Duration

	// Local postgres.
	DataDir    state.DataDirState
	DataDirErr error
	Standby    state.StandbyState // what the files say: standby or primary, and whom it follows
	Running    bool               // the postmaster cifha started is alive
	ForeignPID int                // a postmaster cifha did not start holds the data dir
	PG         *state.Status      // nil when not running or unreadable
	PGErr      error              // why PG is nil while Running

	// etcd.
	DCSErr  error
	Cluster state.Cluster
	Lease   state.LeaseState
	// HoldsLeader: the leader key names Self and is bound to Self's current lease.
	HoldsLeader bool
	// Term identifies this agent's tenure of the leader key (the
	// revision at which it became the holder, DCS.Term); 0 when it holds
	// none. The sync record is trusted only in the term it was written in.
	Term int64
	// OwnsLeaderKey: the leader key was created by Self's Acquire (even if its
	// value was since overwritten by hand).
	OwnsLeaderKey bool

	// Memory: what the agent remembers between rounds.

	// WritableLease is the lease under which this agent made postgres
	// writable (0 if unknown). If the session's lease is a different one, the
	// old lease may have expired while postgres kept accepting writes, and a
	// new grant must not hide that.
	WritableLease int64
	// LastStreamed is when this standby was last seen streaming from a
	// primary (zero if never).
	LastStreamed time.Time
	// RunningSince is when this agent first saw postgres running since it
	// was last seen stopped (or since the agent started): a standby just
	// started (after a rewind, say) is given time to connect and follow
	// a timeline switch before it is called diverged.
	RunningSince time.Time
	// StreamedTimeline is the newest timeline this standby was seen
	// streaming on (the walreceiver's view is gone once the leader dies).
	StreamedTimeline int
	// RewindFailed is the last pg_rewind error for the current leader, if any.
	RewindFailed string
	// FencedUnder is the lease under which this agent last fenced its
	// primary (0: it did not, or postgres was started since).
	FencedUnder int64
	// Switchover is the switchover this member is carrying out as the old
	// leader (nil: none).
	Switchover *SwitchoverProgress
	// SwitchoverTarget is the switchover candidate's live state, read from
	// its API when a request is due or the switchover awaits its replay
	// (nil, with SwitchoverTargetErr, when it could not be read).
	SwitchoverTarget    *Candidate
	SwitchoverTargetErr error
	// ResignedAt is when this member last released the key because its
	// postgres would not start (zero: never).
	ResignedAt time.Time
	// StartFailingSince is when starting postgres as the leader's primary
	// began to fail (zero: not failing).
	StartFailingSince time.Time
	// Cover is what this member's peers promised it as leader while etcd
	// was unreachable (DCS failsafe mode, failsafe.go).
	Cover FailsafeCover
	// Promise is what this member promised a leader (DCS failsafe mode).
	Promise Promise

	// Settings.
	NoFailover       bool
	FailoverPriority int
	// MaxLag is maximum_lag_on_failover in bytes.
	MaxLag int64
	// RecentWindow is how recent LastStreamed must be for a candidate.
	RecentWindow time.Duration
	// RemoveOnRewindFailure allows re-cloning (the old data moved aside).
	RemoveOnRewindFailure bool
	// PrimaryStartTimeout: a leader whose postgres has failed to start for
	// this long releases the key so a standby can take over (0: never).
	PrimaryStartTimeout time.Duration

	// Candidates are the other members' live WAL positions, read from their
	// APIs only when there is no leader.
	Candidates map[string]Candidate
	// Op is an operator's pending request (restart, reinit, ...), OpArg
	// its argument.
	Op    Op
	OpArg string
}

// Candidate is another member's state as its API reported it just now.
type Candidate struct {
	Err      string // non-empty: could not be read
	Timeline int    // the newest timeline it has streamed on
	// StreamedAgo is how long ago it last streamed (negative: never).
	StreamedAgo      time.Duration
	Running          bool
	InRecovery       bool
	ReceiveLSN       state.LSN
	ReplayLSN        state.LSN
	ReplayPaused     bool
	NoFailover       bool
	FailoverPriority int
}

// Op is an operator's request carried out by the loop.
type Op int

// Operator requests.
const (
	OpNone Op = iota
	OpRestart
	OpReload
	OpReinit
	OpDropSlot
)

var opNames = [...]string{"none", "restart", "reload", "reinit", "drop-slot"}

func (o Op) String() string {
	if int(o) >= 0 && int(o) < len(opNames) {
		return opNames[o]
	}
	return "op(?)"
}

// primaryLike reports whether postgres may be accepting writes. Unknown is
// never safe: a running postgres whose state cannot be read counts as a
// primary unless its files say it is a standby.
func (o Observation) primaryLike() bool {
	if !o.Running {
		return false
	}
	if o.PG != nil {
		return !o.PG.InRecovery
	}
	return !o.Standby.Standby
}

// leader returns the usable leader key's holder, or "" (none, garbage, or
// a key bound to no lease or to another lease than the named member's:
// hand-written, so nobody's term).
func (o Observation) leader() string {
	l := o.Cluster.Leader
	if l == nil || !l.Valid || l.Lease == 0 {
		return ""
	}
	if ml := o.Cluster.MemberLease[l.Name]; ml != 0 && ml != l.Lease && l.Name != o.Self {
		return ""
	}
	return l.Name
}

// upstream returns the member's postgres address and whether it is serving
// as a primary.
func (o Observation) upstream(name string) (string, bool) {
	m, ok := o.Cluster.Members[name]
	if !ok || m.ConnAddress == "" {
		return "", false
	}
	return m.ConnAddress, m.Role == "primary" && m.State == "running"
}
