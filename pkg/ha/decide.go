package ha

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/cifha/cifha/pkg/state"
)

// Decide maps one observation to one plan. It is pure and deterministic:
// no I/O, no clock (time is o.Now), no randomness, no map order; it never
// changes its input.
func Decide(o Observation) Plan {
	// Safety first: a postgres that may accept writes must be within its
	// lease. This comes before everything else, including etcd errors.
	if o.primaryLike() {
		// The lease, or the failsafe cover of the term it was made
		// writable in (failsafe.go): one rule either way.
		eff := EffectiveLease(o.Lease, o.WritableLease, o.Cover)
		if !MayStayWritable(o.Now, eff, o.FenceMargin) {
			if eff != o.Lease {
				return plan(Fence, "failsafe promises end within the fence margin (%s) and etcd cannot renew the lease: stop accepting writes", o.FenceMargin)
			}
			return plan(Fence, "lease expires within the fence margin (%s) and was not renewed: stop accepting writes", o.FenceMargin)
		}
		if o.WritableLease != 0 && eff.ID != o.WritableLease {
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
	if o.primaryLike() && o.WritableLease != 0 && o.Cluster.Leader == nil && o.covered() {
		return decideReacquire(o)
	}
	if o.primaryLike() && o.WritableLease != 0 && o.HoldsLeader && o.Lease.ID != o.WritableLease && o.covered() {
		// Taken again, but the term was not moved to the new lease yet
		// (the step after the transaction failed): move it now, before
		// the cover ends.
		return gate(o, plan(Reacquire, "this member holds the leader key under its new lease while writable under failsafe promises: continuing the term under the new lease"))
	}
	if o.primaryLike() && o.WritableLease != 0 && o.Cluster.Leader == nil {
		// Before operator requests and maintenance mode: made writable
		// under this member's lease, yet the key is gone (the agent
		// confirmed it with a fresh read): deleted, or its lease revoked by
		// etcd earlier than this member's deadline. Anyone may take the key
		// now, so writes stop first; it is taken again from a stopped
		// postgres.
		return plan(Fence, "the leader key is gone while this member was writable under it (deleted, or its lease revoked by etcd): stop accepting writes before taking it again")
	}
	if o.Op != OpNone {
		// An operator's explicit request, honoured in maintenance mode too
		// (after fencing, which nothing overrides).
		return decideOp(o, leader)
	}
	if o.Switchover != nil {
		return decideSwitchoverProgress(o)
	}
	if o.Cluster.Paused {
		return decidePaused(o)
	}
	if p, ok := decideUnboundKey(o); ok {
		return p
	}
	switch o.DataDir {
	case state.DataDirForeign:
		return plan(Wait, "data directory is not empty and not a PostgreSQL data directory (%v); refusing to touch it", o.DataDirErr)
	case state.DataDirMissing:
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

// gate is the fence rule applied to a plan that makes postgres writable:
// the plan stands only if its step can finish before the fence.
func gate(o Observation, p Plan) Plan {
	if !o.HoldsLeader {
		// The plan takes the free key first (failsafe.go).
		if why := o.mayTakeKey(); why != "" {
			w := Plan{Action: Wait, Target: p.Target, Reason: fmt.Sprintf("not taking the leader key (%s): %s", p.Action, why)}
			if o.Now.Before(o.Promise.Until) {
				// Look again the moment the promise ends, not a loop later
				// (the lab measured the loop's second in every failover
				// held by a promise).
				w.WakeAt = o.Promise.Until
			}
			return w
		}
	}
	if ok, why := MayBecomeWritable(o.Now, o.Lease, o.FenceMargin, o.WritableBudget); !ok {
		return Plan{Action: Wait, Target: p.Target, Reason: fmt.Sprintf("not making postgres writable (%s): %s", p.Action, why)}
	}
	return p
}

// decidePaused: maintenance mode. Report, but take no automatic action (no
// failover, no rejoin, no restart of a postgres that crashed or that the
// operator stopped). Fencing (above) still applies. Two exceptions keep a
// blip from becoming an outage: a standby holding the key completes its
// promotion (a switchover handed it over), and a leader whose postgres
// this agent fenced because its lease ran low, and whose lease was renewed
// in time with the key still its own, restarts postgres in place.
func decidePaused(o Observation) Plan {
	if o.HoldsLeader && o.DataDir == state.DataDirValid && o.DataDirErr == nil {
		switch {
		case o.Running && o.PG != nil && o.PG.InRecovery:
			return gate(o, plan(Promote, "this member holds the leader key but postgres is a standby (completing a handover while paused)"))
		case !o.Running && !o.Standby.Standby && o.ForeignPID == 0 && o.FencedUnder != 0 && o.FencedUnder == o.Lease.ID:
			return gate(o, plan(StartPrimary, "cluster paused, but this member's primary was fenced while its lease ran low and the lease was renewed with the key still its own: starting it in place"))
		}
	}
	return plan(Wait, "cluster paused (maintenance mode): no automatic action")
}

// decideUnboundKey handles a leader key that is nobody's term: bound to no
// lease (written by hand: it would never expire), or naming a member while
// bound to another lease than that member's own (its member key's). Its
// creator restores it; anyone else deletes it (guarded by its revision and
// lease), but only while no member runs a primary, since a live primary
// repairs or demotes itself first. So a hand-written key never makes two
// primaries and never blocks the cluster for longer than a loop or two.
// (Garbage on a lease expires with that lease.)
func decideUnboundKey(o Observation) (Plan, bool) {
	l := o.Cluster.Leader
	if l == nil {
		return Plan{}, false
	}
	unbound := l.Lease == 0
	if ml := o.Cluster.MemberLease[l.Name]; l.Valid && l.Lease != 0 && ml != 0 && ml != l.Lease && l.Name != o.Self {
		unbound = true // names a live member, on someone else's lease
	}
	if !unbound {
		return Plan{}, false
	}
	if o.OwnsLeaderKey && o.primaryLike() {
		return plan(RepairLeaderKey, "leader key was overwritten (%s); restoring it", garbage(l)), true
	}
	if o.primaryLike() {
		// A primary that does not own the key: the normal rules (demote)
		// apply below.
		return Plan{}, false
	}
	for _, k := range slices.Sorted(maps.Keys(o.Cluster.Invalid)) {
		if strings.Contains(k, "/members/") {
			return plan(Wait, "leader key %s is nobody's term, but member key %s cannot be read: not removing it", garbage(l), k), true
		}
	}
	for _, name := range slices.Sorted(maps.Keys(o.Cluster.Members)) {
		if m := o.Cluster.Members[name]; mayBeWritable(m) {
			return plan(Wait, "leader key %s is nobody's term; waiting for %s (%s %s) to settle it", garbage(l), name, m.Role, m.State), true
		}
	}
	return plan(ClearLeaderKey, "leader key %s is bound to no lease of the member it names (written by hand) and no primary runs: removing it", garbage(l)), true
}

// mayBeWritable reports whether a member, by what it published, may be
// running a writable postgres: a primary that is not stopped (running,
// unknown, a foreign postmaster, ...) or a member that is promoting.
// Unknown is never safe.
func mayBeWritable(m state.Member) bool {
	switch {
	case m.State == "promoting" || m.State == "unknown" || m.State == "foreign postmaster":
		return true
	case m.Role == "primary":
		return m.State != "stopped" && m.State != "uninitialized" && m.State != "switching over"
	}
	return false
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

func decideEmpty(o Observation, leader string) Plan {
	c := o.Cluster
	switch {
	case c.LastLeader != nil && (leader == "" || leader == o.Self):
		// The cluster has had a leader: its data exists somewhere. An empty
		// member never initialises a second, empty cluster over it.
		return plan(Wait, "no data directory; the cluster had leader %s: waiting for a leader to clone from", c.LastLeader.Name)
	case c.Initialize == "" && c.LastLeader == nil:
		return gate(o, plan(Bootstrap, "new cluster: no member has initialised it"))
	case c.Initialize == o.Self && c.Leader == nil:
		return gate(o, plan(Bootstrap, "this member claimed initialisation but has no data directory yet"))
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
			if s := o.StartFailingSince; !s.IsZero() && o.PrimaryStartTimeout > 0 {
				if !o.Now.Before(s.Add(o.PrimaryStartTimeout)) {
					return plan(Resign, "postgres has failed to start as the primary since %s (primary_start_timeout %s): releasing the leader key so a standby can take over",
						s.UTC().Format(time.RFC3339), o.PrimaryStartTimeout)
				}
				p := gate(o, plan(StartPrimary, "this member holds the leader key and postgres is not running: starting it in place (failing since %s)", s.UTC().Format(time.RFC3339)))
				p.WakeAt = s.Add(o.PrimaryStartTimeout)
				return p
			}
			return gate(o, plan(StartPrimary, "this member holds the leader key and postgres is not running: starting it in place"))
		case o.Cluster.Leader == nil:
			if r := o.ResignedAt; !r.IsZero() && o.Now.Before(r.Add(max(o.RecentWindow, time.Second))) {
				// It released the key because postgres would not start:
				// give the standbys a window to take over first.
				return plan(Wait, "no leader; this member's postgres failed to start as primary, leaving the standbys time to take over")
			}
			if ok, why := o.eligible(); ok {
				return gate(o, plan(AcquireAndStart, "no leader and this member's data is a primary (%s)", why))
			} else {
				return plan(Wait, "no leader, but not taking over: %s", why)
			}
		case leader == o.Self:
			return plan(ClearStaleLeader, "the leader key names this member but belongs to a previous lease")
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
		if sw := o.Cluster.Switchover; sw != nil {
			return decideSwitchover(o, sw)
		}
		return plan(None, "leader; postgres is a healthy primary")
	case o.WritableLease == 0:
		// A primary this agent did not make writable (it promoted itself,
		// e.g. from a leftover trigger file) and without the key: stop it
		// now, whatever the key says.
		return plan(Fence, "postgres is a primary that this agent did not make writable, without the leader key: stop accepting writes")
	case l == nil:
		// Made writable under this member's lease, yet the key is gone
		// (the agent confirmed it with a fresh read): it was deleted, or
		// etcd revoked the lease earlier than this member's deadline. Any
		// member may take the key now, so writes stop first; the key is
		// taken again from a stopped postgres.
		return plan(Fence, "the leader key is gone while this member was writable under it (deleted, or its lease revoked by etcd): stop accepting writes before taking it again")
	case leader == o.Self:
		return plan(ClearStaleLeader, "the leader key names this member but belongs to a previous lease")
	}
	if !l.Valid || l.Lease == 0 {
		if o.OwnsLeaderKey {
			return plan(RepairLeaderKey, "leader key was overwritten (%s); restoring it", garbage(l))
		}
		// Garbage this member did not create: nobody else can hold a key
		// occupied by it; keep serving within the lease until it is
		// cleared or expires.
		return plan(Wait, "leader key holds garbage that this member did not create (%s); keeping current role", garbage(l))
	}
	return Plan{Action: Demote, Target: leader, Reason: fmt.Sprintf("%s holds the leader key: this primary must stop accepting writes", leader)}
}

func decideStandby(o Observation, leader string) Plan {
	if o.HoldsLeader {
		return gate(o, plan(Promote, "this member holds the leader key but postgres is a standby"))
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
	// Not streaming for a while: since it last streamed and since postgres
	// started (a standby just rewound needs a moment to connect and read
	// the leader's history; a benchmark saw it rewound twice when only
	// LastStreamed counted, zero after an agent restart).
	quiet := o.LastStreamed
	if o.RunningSince.After(quiet) {
		quiet = o.RunningSince
	}
	if lm, ok := o.Cluster.Members[leader]; ok && o.PG.WalReceiver != "streaming" && lm.Timeline > max(o.PG.Timeline, o.StreamedTimeline) &&
		(quiet.IsZero() || o.Now.Sub(quiet) > o.RecentWindow) {
		// It cannot follow the leader's timeline switch: its WAL went past
		// the leader's fork point (an asynchronous standby that had
		// received more than the standby promoted, the synchronous one in
		// synchronous mode). Never promoted (the timeline gate); rewound
		// like a former primary: stopped (it is read-only), pg_rewind from
		// the leader, started as its standby. The data directory is kept.
		tl := max(o.PG.Timeline, o.StreamedTimeline)
		if o.RewindFailed != "" {
			if o.RemoveOnRewindFailure {
				return Plan{Action: Reclone, Target: leader, TargetAddr: addr, Reason: fmt.Sprintf("standby's history diverged from leader %s and pg_rewind failed (%s): moving the data directory aside and cloning", leader, o.RewindFailed)}
			}
			return Plan{Action: Wait, Target: leader, Reason: fmt.Sprintf("standby on timeline %d cannot stream from leader %s on timeline %d: its history diverged and pg_rewind failed (%s); set remove_data_directory_on_rewind_failure or cifhactl reinit %s",
				tl, leader, lm.Timeline, o.RewindFailed, o.Self)}
		}
		return Plan{Action: Rewind, Target: leader, TargetAddr: addr, Reason: fmt.Sprintf("standby on timeline %d cannot stream from leader %s on timeline %d: its history diverged (its WAL went past the fork point); stopping it to rewind with pg_rewind",
			tl, leader, lm.Timeline)}
	}
	return plan(None, "standby of %s (%s)", leader, o.PG.WalReceiver)
}

// decideFailover: the leader key is gone and this member is a running
// standby. It takes over only if it qualifies and no healthy candidate
// ranks before it; otherwise it says why and stays a standby.
func decideFailover(o Observation) Plan {
	if f := o.Cluster.Failover; f != nil {
		// The operator's explicit choice (cifhactl failover --to) replaces
		// the ranking and the lag gate: they accepted possible data loss.
		if f.To == o.Self {
			return gate(o, plan(TakeOver, "manual failover to this member requested by the operator"))
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
	last, err := state.ParseLSN(ll.LSN)
	if err != nil {
		return plan(Wait, "no leader; last leader's LSN %q is unreadable", ll.LSN)
	}
	if pr := o.Promise; pr.Leader == ll.Name && pr.LSN > last {
		// The last leader told this member, asking for a failsafe
		// promise, that it had written more than etcd records.
		last = pr.LSN
		ll = &state.LastLeader{Name: ll.Name, Timeline: ll.Timeline, LSN: last.String(), TTL: ll.TTL, At: ll.At}
	}
	// The window must cover the time the old leader's key took to expire:
	// with a ttl changing across the cluster, the leader's may be longer
	// than this member's.
	window := o.RecentWindow
	if ll.TTL > 0 {
		window = max(window, 2*time.Duration(ll.TTL)*time.Second)
	}
	me := Rank{Name: o.Self, Timeline: max(o.PG.Timeline, o.StreamedTimeline), Received: Position(o.PG.ReceiveLSN, o.PG.ReplayLSN), Replayed: o.PG.ReplayLSN, Priority: o.FailoverPriority}
	var streamedAgo time.Duration = -1
	if !o.LastStreamed.IsZero() {
		streamedAgo = o.Now.Sub(o.LastStreamed)
	}
	for _, k := range slices.Sorted(maps.Keys(o.Cluster.Invalid)) {
		if strings.HasSuffix(k, "/sync") {
			return plan(Wait, "no leader; the sync record %s cannot be read (%s): refusing to promote without knowing who has every acknowledged commit", k, o.Cluster.Invalid[k])
		}
	}
	// Synchronous mode: only a standby recorded under the last leader's
	// term has every commit it acknowledged (sync.go); the lag gate does
	// not apply to it (it lacks nothing acknowledged), the timeline gate
	// still does.
	sy := o.Cluster.Sync
	if sy != nil {
		switch {
		case sy.Leader != ll.Name:
			return plan(Wait, "no leader; synchronous mode: the sync record is %s's, not the last leader %s's: no standby provably has every acknowledged commit", sy.Leader, ll.Name)
		case ll.Term != 0 && !sy.Of(ll.Name, ll.Term):
			// Same leader, another tenure: the record was written before
			// the leader lost its key and took it again. What it lists
			// had that tenure's commits, not provably the latest one's.
			// A last-leader without a term (written by the acquiring
			// transaction, which cannot know its own revision, and not
			// yet republished) falls back to the name: refusing there
			// left a failsafe-mode lab cluster without a primary for
			// over a minute when the leader's republish did not come.
			return plan(Wait, "no leader; synchronous mode: the sync record is from %s's term %d, not its last term %d: no standby provably has every acknowledged commit", sy.Leader, sy.Term, ll.Term)
		case !sy.Has(o.Self):
			recorded := "none"
			if len(sy.Members) > 0 {
				recorded = strings.Join(sy.Members, ", ")
			}
			return plan(Wait, "no leader; synchronous mode: this member is not a recorded synchronous standby of %s (recorded: %s)", ll.Name, recorded)
		}
	}
	if ok, why := qualifies(me, streamedAgo, ll, last, o.MaxLag, window, sy != nil); !ok {
		return plan(Wait, "no leader; this member is not a candidate: %s", why)
	}
	for _, k := range slices.Sorted(maps.Keys(o.Cluster.Invalid)) {
		if strings.Contains(k, "/members/") {
			return plan(Wait, "no leader; member key %s cannot be read (%s): refusing to promote on incomplete data", k, o.Cluster.Invalid[k])
		}
	}
	ranks := []Rank{me}
	for _, name := range slices.Sorted(maps.Keys(o.Cluster.Members)) {
		m := o.Cluster.Members[name]
		if name == o.Self || name == ll.Name || m.Role != "replica" || (sy != nil && !sy.Has(name)) {
			continue
		}
		c, ok := o.Candidates[name]
		if !ok || c.Err != "" {
			return plan(Wait, "no leader; cannot read member %s's WAL position (%s): refusing to promote on incomplete data", name, c.Err)
		}
		r := Rank{Name: name, Timeline: c.Timeline, Received: Position(c.ReceiveLSN, c.ReplayLSN), Replayed: c.ReplayLSN, Priority: c.FailoverPriority}
		if !c.Running || !c.InRecovery || c.NoFailover {
			continue // not a candidate itself, so it must not block the ones that are
		}
		if ok, _ := qualifies(r, c.StreamedAgo, ll, last, o.MaxLag, window, sy != nil); !ok {
			continue
		}
		ranks = append(ranks, r)
	}
	Sort(ranks)
	if best := ranks[0]; best.Name != o.Self {
		return plan(Wait, "no leader; %s is a better candidate (timeline %d, received %s; this member: timeline %d, received %s)",
			best.Name, best.Timeline, best.Received, me.Timeline, me.Received)
	}
	return gate(o, plan(TakeOver, "leader %s is gone; this member is the most advanced candidate (timeline %d, received %s, last leader at %s on timeline %d)",
		ll.Name, me.Timeline, me.Received, ll.LSN, ll.Timeline))
}

// qualifies is the one candidate rule, applied to this member and to every
// peer alike:
//   - its timeline is not older than the last leader's (an older timeline
//     lacks the leader's history, whatever its LSN);
//   - it is within maximum_lag_on_failover of the last leader's published
//     position;
//   - it streamed recently, unless it already has every byte the last
//     leader published (then how recently it streamed does not matter: an
//     agent restart or a rejoin just before the leader died loses nothing).
//
// A recorded synchronous standby (sync) passes the last two: it has every
// acknowledged commit whatever its lag.
func qualifies(r Rank, streamedAgo time.Duration, ll *state.LastLeader, last state.LSN, maxLag int64, window time.Duration, sync bool) (bool, string) {
	switch {
	case r.Timeline < ll.Timeline:
		return false, fmt.Sprintf("it is on timeline %d, older than the last leader %s's timeline %d", r.Timeline, ll.Name, ll.Timeline)
	case sync:
		return true, ""
	case last.Sub(r.Received) > maxLag:
		return false, fmt.Sprintf("it is %d bytes behind the last leader's %s, more than maximum_lag_on_failover (%d)", last.Sub(r.Received), ll.LSN, maxLag)
	case r.Received >= last:
		return true, ""
	case streamedAgo < 0 || streamedAgo > window:
		return false, "it has not streamed from a primary recently and lacks some of the last leader's WAL"
	}
	return true, ""
}

func garbage(l *state.Leader) string {
	if l == nil {
		return ""
	}
	v := l.Name
	if len(v) > 40 {
		v = v[:40] + "..."
	}
	if l.Lease == 0 && l.Valid {
		return fmt.Sprintf("%q, no lease", v)
	}
	return fmt.Sprintf("%q", v)
}
