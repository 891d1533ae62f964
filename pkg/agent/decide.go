package agent

import (
	"fmt"
	"strings"
	"time"

	"github.com/cifha/cifha/pkg/election"
	"github.com/cifha/cifha/pkg/pgctl"
)

// Observation is everything Decide may look at. It is filled by the loop
// and never changed by Decide.
type Observation struct {
	Now  time.Time
	Self string
	// FenceMargin: a primary stops accepting writes once Now passes
	// Lease.ValidUntil - FenceMargin (see docs/fencing.md).
	FenceMargin time.Duration

	// Local postgres.
	DataDir    pgctl.DataDirState
	DataDirErr error
	Standby    pgctl.StandbyState // what the files say: standby or primary, and whom it follows
	Running    bool               // the postmaster cifha started is alive
	ForeignPID int                // a postmaster cifha did not start holds the data dir
	PG         *pgctl.Status      // nil when not running or unreadable
	PGErr      error              // why PG is nil while Running

	// etcd.
	DCSErr  error
	Cluster election.Cluster
	Lease   election.LeaseState
	// HoldsLeader: the leader key names Self and is bound to Self's current lease.
	HoldsLeader bool
	// OwnsLeaderKey: the leader key was created by Self's Acquire (even if its
	// value was since overwritten by hand).
	OwnsLeaderKey bool
	// WritableLease is the lease under which this agent made postgres
	// writable (0 if unknown). If the session's lease is a different one, the
	// old lease may have expired while postgres kept accepting writes, and a
	// new grant must not hide that.
	WritableLease int64

	// Failover inputs.
	NoFailover       bool
	FailoverPriority int
	// MaxLag is maximum_lag_on_failover in bytes.
	MaxLag int64
	// LastStreamed is when this standby was last seen streaming from a
	// primary (zero if never); a candidate must have streamed recently.
	LastStreamed time.Time
	// RecentWindow is how recent LastStreamed must be.
	RecentWindow time.Duration
	// StreamedTimeline is the newest timeline this standby was seen
	// streaming on (the walreceiver's view is gone once the leader dies).
	StreamedTimeline int
	// Candidates are the other members' live WAL positions, read from their
	// APIs only when there is no leader.
	Candidates map[string]Candidate
	// RewindFailed is the last pg_rewind error for the current leader, if any.
	RewindFailed string
	// RemoveOnRewindFailure allows re-cloning (the old data moved aside).
	RemoveOnRewindFailure bool
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
	ReceiveLSN       pgctl.LSN
	ReplayLSN        pgctl.LSN
	ReplayPaused     bool
	NoFailover       bool
	FailoverPriority int
}

// position is the furthest WAL a standby has: received or replayed.
func position(recv, replay pgctl.LSN) pgctl.LSN {
	if recv > replay {
		return recv
	}
	return replay
}

// ahead reports whether candidate a ranks before b in the one explicit
// failover order: timeline, received LSN, replay LSN, failover_priority,
// name. The timeline comes first: a standby still on an older timeline may
// hold WAL past the fork point of the newer one (a dead branch) and must not
// win by LSN.
func ahead(a, b rank) bool {
	switch {
	case a.tl != b.tl:
		return a.tl > b.tl
	case a.recv != b.recv:
		return a.recv > b.recv
	case a.replay != b.replay:
		return a.replay > b.replay
	case a.prio != b.prio:
		return a.prio > b.prio
	}
	return a.name < b.name
}

type rank struct {
	name         string
	tl           int
	recv, replay pgctl.LSN
	prio         int
}

// Action is what the agent does in one iteration.
type Action int

// Actions, in the order the loop may take them.
const (
	None Action = iota
	Wait
	Bootstrap
	Clone
	StartPrimary
	AcquireAndStart
	Acquire
	StartStandby
	Follow
	Promote
	RepairLeaderKey
	ClearStaleLeader
	Demote
	Fence
	StopForeign
	TakeOver
	Rewind
	Reclone
	// Switchover hands the leader role to Plan.Target (planned, no loss).
	Switchover
	// ClearRequest removes a switchover or failover request that can no
	// longer be carried out (Plan.Reason says why).
	ClearRequest
	// Operator requests (cifhactl restart, reload, reinit, remove).
	Restart
	Reload
	Reinit
	DropSlot
	// Refuse answers an operator request with Plan.Reason and does nothing.
	Refuse
)

var actionNames = [...]string{"none", "wait", "bootstrap", "clone", "start-primary", "acquire-and-start",
	"acquire", "start-standby", "follow", "promote", "repair-leader-key", "clear-stale-leader", "demote",
	"fence", "stop-foreign", "take-over", "rewind", "reclone", "switchover", "clear-request", "restart", "reload", "reinit", "drop-slot", "refuse"}

func (a Action) String() string {
	if int(a) < len(actionNames) {
		return actionNames[a]
	}
	return fmt.Sprintf("action(%d)", int(a))
}

// Plan is Decide's answer.
type Plan struct {
	Action Action
	// Target is the member acted towards (the leader to clone or follow).
	Target string
	// TargetAddr is the target's postgres host:port.
	TargetAddr string
	// Reason is why, for people: logged on change and shown by cifhactl.
	Reason string
}

func plan(a Action, format string, args ...any) Plan {
	return Plan{Action: a, Reason: fmt.Sprintf(format, args...)}
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

// leader returns the valid leader key's holder, or "" (none or garbage).
func (o Observation) leader() string {
	if l := o.Cluster.Leader; l != nil && l.Valid {
		return l.Name
	}
	return ""
}

// upstream returns the leader member's postgres address if it is serving
// as a primary.
func (o Observation) upstream(name string) (string, bool) {
	m, ok := o.Cluster.Members[name]
	if !ok || m.ConnAddress == "" {
		return "", false
	}
	return m.ConnAddress, m.Role == "primary" && m.State == "running"
}

// eligible reports whether a primary data directory may take a free leader
// key: it was the last leader, or no leader was ever recorded, or it is on a
// newer timeline than the last leader. Anything else is a stale primary.
func (o Observation) eligible() (bool, string) {
	ll := o.Cluster.LastLeader
	switch {
	case ll == nil:
		return true, "no previous leader recorded"
	case ll.Name == o.Self:
		return true, "this member was the last leader"
	case o.PG != nil && o.PG.Timeline > ll.Timeline:
		return true, fmt.Sprintf("timeline %d is newer than last leader %s's %d", o.PG.Timeline, ll.Name, ll.Timeline)
	}
	return false, fmt.Sprintf("last leader was %s (timeline %d); this primary may be stale", ll.Name, ll.Timeline)
}

// Decide maps one observation to one plan. It is pure: no I/O, no clock
// (time is o.Now), no randomness.
func Decide(o Observation) Plan {
	// Safety first: a postgres that may accept writes must be within its
	// lease. This comes before everything else, including etcd errors.
	if o.primaryLike() {
		if !o.Lease.Held(o.Now.Add(o.FenceMargin)) {
			return plan(Fence, "lease expires within the fence margin (%s) and was not renewed: stop accepting writes", o.FenceMargin)
		}
		if o.WritableLease != 0 && int64(o.Lease.ID) != o.WritableLease {
			return plan(Fence, "postgres became writable under a lease that is gone: stop accepting writes")
		}
	}
	// A postmaster cifha did not start may be a writable primary without any
	// lease: it is stopped before anything else, etcd or not.
	if o.ForeignPID != 0 {
		return plan(StopForeign, "postmaster %d was not started by cifha; stopping it to take control", o.ForeignPID)
	}
	if o.DCSErr != nil {
		if o.primaryLike() {
			return plan(Wait, "etcd unreachable (%v); primary keeps running until the fence margin before its lease deadline", o.DCSErr)
		}
		return plan(Wait, "etcd unreachable: %v", o.DCSErr)
	}
	leader := o.leader()
	if o.Op != OpNone {
		// An operator's explicit request, honoured in maintenance mode too
		// (after fencing, which nothing overrides).
		return decideOp(o, leader)
	}
	if o.DCSErr == nil && o.Cluster.Paused && !(o.HoldsLeader && o.Running && o.PG != nil && o.PG.InRecovery) {
		// (A standby holding the key completes a promotion even when
		// paused: a switchover handed the key over, and not promoting
		// would leave the cluster without a primary.)
		// Maintenance mode: report, but take no automatic action (no
		// failover, no restart, no rejoin). Fencing above still applies:
		// a primary that lost its lease must stop accepting writes.
		return plan(Wait, "cluster paused (maintenance mode): no automatic action")
	}
	switch o.DataDir {
	case pgctl.DataDirForeign:
		return plan(Wait, "data directory is not empty and not a PostgreSQL data directory (%v); refusing to touch it", o.DataDirErr)
	case pgctl.DataDirMissing:
		return decideEmpty(o, leader)
	}
	if o.DataDirErr != nil {
		// Cannot tell a standby's files from a primary's: do nothing rather
		// than start a standby's data as a primary.
		return plan(Wait, "cannot read the data directory's role: %v", o.DataDirErr)
	}

	if !o.Running {
		return decideStopped(o, leader)
	}
	if o.PG == nil {
		return plan(Wait, "postgres is running but its state is unknown: %v", o.PGErr)
	}
	if !o.PG.InRecovery {
		return decidePrimary(o, leader)
	}
	return decideStandby(o, leader)
}

func decideEmpty(o Observation, leader string) Plan {
	c := o.Cluster
	switch {
	case c.LastLeader != nil && (leader == "" || leader == o.Self):
		// The cluster has had a leader: its data exists somewhere. An empty
		// member never initialises a second, empty cluster over it.
		return plan(Wait, "no data directory; the cluster had leader %s: waiting for a leader to clone from", c.LastLeader.Name)
	case c.Initialize == "" && c.LastLeader == nil:
		return plan(Bootstrap, "new cluster: no member has initialised it")
	case c.Initialize == o.Self && c.Leader == nil:
		return plan(Bootstrap, "this member claimed initialisation but has no data directory yet")
	case leader == "" || leader == o.Self:
		return plan(Wait, "no data directory; waiting for a leader to clone from")
	}
	addr, ready := o.upstream(leader)
	if !ready {
		return plan(Wait, "no data directory; waiting for leader %s to serve", leader)
	}
	return Plan{Action: Clone, Target: leader, TargetAddr: addr, Reason: fmt.Sprintf("no data directory: cloning leader %s", leader)}
}

func decideStopped(o Observation, leader string) Plan {
	if !o.Standby.Standby {
		switch {
		case o.HoldsLeader:
			return plan(StartPrimary, "this member holds the leader key and postgres is not running: starting it in place")
		case o.Cluster.Leader == nil:
			if ok, why := o.eligible(); ok {
				return plan(AcquireAndStart, "no leader and this member's data is a primary (%s)", why)
			} else {
				return plan(Wait, "no leader, but not taking over: %s", why)
			}
		case leader == o.Self:
			return plan(ClearStaleLeader, "the leader key names this member but belongs to a previous lease")
		case leader == "":
			return plan(Wait, "leader key holds garbage (%s); not starting a primary", garbage(o.Cluster.Leader))
		}
		addr, serving := o.upstream(leader)
		if !serving {
			return Plan{Action: Wait, Target: leader, Reason: fmt.Sprintf("former primary waits for leader %s to serve before rejoining", leader)}
		}
		if o.RewindFailed != "" {
			if o.RemoveOnRewindFailure {
				return Plan{Action: Reclone, Target: leader, TargetAddr: addr, Reason: fmt.Sprintf("pg_rewind failed (%s): moving the data directory aside and cloning %s", o.RewindFailed, leader)}
			}
			return Plan{Action: Wait, Target: leader, Reason: fmt.Sprintf("pg_rewind from %s failed (%s); set remove_data_directory_on_rewind_failure or reinit this member", leader, o.RewindFailed)}
		}
		return Plan{Action: Rewind, Target: leader, TargetAddr: addr, Reason: fmt.Sprintf("former primary rejoins leader %s: pg_rewind, then stream", leader)}
	}
	if leader != "" && leader != o.Self {
		if addr, _ := o.upstream(leader); addr != "" {
			return Plan{Action: StartStandby, Target: leader, TargetAddr: addr, Reason: fmt.Sprintf("starting standby of leader %s", leader)}
		}
	}
	// No usable leader: a standby is read-only, so starting it is safe and
	// keeps its state observable.
	return Plan{Action: StartStandby, Reason: "starting standby (no leader known; keeping the previous upstream)"}
}

func decidePrimary(o Observation, leader string) Plan {
	l := o.Cluster.Leader
	switch {
	case o.HoldsLeader:
		if l.Valid && l.Name == o.Self {
			if sw := o.Cluster.Switchover; sw != nil {
				return decideSwitchover(o, sw)
			}
			return plan(None, "leader; postgres is a healthy primary")
		}
	case o.WritableLease == 0:
		// A primary this agent did not make writable (it promoted itself,
		// e.g. from a leftover trigger file) and without the key: stop it
		// now, whatever the key says.
		return plan(Fence, "postgres is a primary that this agent did not make writable, without the leader key: stop accepting writes")
	case l == nil:
		if ok, why := o.eligible(); ok {
			return plan(Acquire, "running primary and no leader (%s)", why)
		} else {
			return plan(Demote, "running primary without the leader key and not eligible: %s", why)
		}
	case leader == o.Self:
		return plan(ClearStaleLeader, "the leader key names this member but belongs to a previous lease")
	}
	if !l.Valid {
		if o.OwnsLeaderKey {
			return plan(RepairLeaderKey, "leader key was overwritten (%s); restoring it", garbage(l))
		}
		// Nobody else can hold a key occupied by garbage; keep serving within
		// the lease until an operator removes it.
		return plan(Wait, "leader key holds garbage that this member did not create (%s); keeping current role", garbage(l))
	}
	return Plan{Action: Demote, Target: leader, Reason: fmt.Sprintf("%s holds the leader key: this primary must stop accepting writes", leader)}
}

func decideStandby(o Observation, leader string) Plan {
	if o.HoldsLeader {
		return plan(Promote, "this member holds the leader key but postgres is a standby")
	}
	if o.Cluster.Leader == nil {
		return decideFailover(o)
	}
	if leader == "" || leader == o.Self {
		return plan(None, "standby; leader key unusable (%s)", garbage(o.Cluster.Leader))
	}
	addr, _ := o.upstream(leader)
	if addr == "" {
		return plan(None, "standby; leader %s has not published an address", leader)
	}
	want := leader + " " + addr
	if o.Standby.Target != want {
		return Plan{Action: Follow, Target: leader, TargetAddr: addr, Reason: fmt.Sprintf("standby follows %q, leader is %s at %s", o.Standby.Target, leader, addr)}
	}
	return plan(None, "standby of %s (%s)", leader, o.PG.WalReceiver)
}

// decideFailover: the leader key is gone and this member is a running
// standby. It takes over only if it qualifies and no healthy candidate is
// ahead of it; otherwise it says why and stays a standby.
func decideFailover(o Observation) Plan {
	if f := o.Cluster.Failover; f != nil {
		// The operator's explicit choice (cifhactl failover --to) replaces
		// the ranking and the lag gate: they accepted possible data loss.
		if f.To == o.Self {
			return plan(TakeOver, "manual failover to this member requested by the operator")
		}
		return plan(Wait, "no leader; manual failover to %s requested", f.To)
	}
	if o.NoFailover {
		return plan(Wait, "no leader; this member is tagged nofailover")
	}
	ll := o.Cluster.LastLeader
	if ll == nil || ll.LSN == "" {
		return plan(Wait, "no leader, and the last leader's WAL position is unknown: refusing to promote on incomplete data")
	}
	last, err := pgctl.ParseLSN(ll.LSN)
	if err != nil {
		return plan(Wait, "no leader; last leader's LSN %q is unreadable", ll.LSN)
	}
	me := rank{name: o.Self, tl: max(o.PG.Timeline, o.StreamedTimeline), recv: position(o.PG.ReceiveLSN, o.PG.ReplayLSN), replay: o.PG.ReplayLSN, prio: o.FailoverPriority}
	if behind := last.Sub(me.recv); behind > o.MaxLag {
		return plan(Wait, "no leader; this standby is %d bytes behind the last leader's %s, more than maximum_lag_on_failover (%d)", behind, ll.LSN, o.MaxLag)
	}
	// The window must cover the time the old leader's key took to expire:
	// with a ttl changing across the cluster, the leader's may be longer
	// than this member's.
	window := o.RecentWindow
	if ll.TTL > 0 {
		window = max(window, 2*time.Duration(ll.TTL)*time.Second)
	}
	if o.LastStreamed.IsZero() || o.Now.Sub(o.LastStreamed) > window {
		return plan(Wait, "no leader; this standby has not streamed from a primary recently, so it is not a safe candidate")
	}
	for k, why := range o.Cluster.Invalid {
		if strings.Contains(k, "/members/") {
			return plan(Wait, "no leader; member key %s cannot be read (%s): refusing to promote on incomplete data", k, why)
		}
	}
	for name, m := range o.Cluster.Members {
		if name == o.Self || name == ll.Name || m.Role != "replica" {
			continue
		}
		c, ok := o.Candidates[name]
		if !ok || c.Err != "" {
			return plan(Wait, "no leader; cannot read member %s's WAL position (%s): refusing to promote on incomplete data", name, c.Err)
		}
		if !c.Running || !c.InRecovery || c.NoFailover || last.Sub(position(c.ReceiveLSN, c.ReplayLSN)) > o.MaxLag ||
			c.StreamedAgo < 0 || c.StreamedAgo > window {
			// Not a candidate itself (by the same rules this member applies
			// to itself), so it must not block the ones that are.
			continue
		}
		other := rank{name: name, tl: c.Timeline, recv: position(c.ReceiveLSN, c.ReplayLSN), replay: c.ReplayLSN, prio: c.FailoverPriority}
		if ahead(other, me) {
			return plan(Wait, "no leader; %s is a better candidate (received %s, this member %s)", name, other.recv, me.recv)
		}
	}
	return plan(TakeOver, "leader %s is gone; this member is the most advanced candidate (received %s, last leader at %s)", ll.Name, me.recv, ll.LSN)
}

// decideSwitchover: this member leads a healthy primary and a switchover
// is requested. What can be checked from etcd is checked here; the
// candidate's live position is checked by the action.
func decideSwitchover(o Observation, sw *election.SwitchoverRequest) Plan {
	clear := func(format string, args ...any) Plan {
		return Plan{Action: ClearRequest, Target: sw.To, Reason: "switchover cancelled: " + fmt.Sprintf(format, args...)}
	}
	if sw.From != o.Self {
		return clear("it was requested from %s, which no longer leads", sw.From)
	}
	if sw.To == o.Self {
		return clear("%s is already the leader", sw.To)
	}
	m, ok := o.Cluster.Members[sw.To]
	if !ok {
		return clear("%s is not a member", sw.To)
	}
	if m.NoFailover {
		return clear("%s is tagged nofailover", sw.To)
	}
	if o.Cluster.MemberLease[sw.To] == 0 {
		return clear("%s has no live lease", sw.To)
	}
	if !sw.At.IsZero() && o.Now.Before(sw.At) {
		return plan(None, "leader; switchover to %s scheduled at %s", sw.To, sw.At.UTC().Format(time.RFC3339))
	}
	return Plan{Action: Switchover, Target: sw.To, TargetAddr: m.ConnAddress, Reason: fmt.Sprintf("planned switchover to %s", sw.To)}
}

func garbage(l *election.Leader) string {
	if l == nil {
		return ""
	}
	v := l.Name
	if len(v) > 40 {
		v = v[:40] + "..."
	}
	return fmt.Sprintf("%q", v)
}
