package ha

import (
	"fmt"
	"strings"
	"time"

	"github.com/cifha/cifha/pkg/state"
)

// decideSwitchover: this member leads a healthy primary and a switchover
// is requested. What can be checked from etcd is checked here; the
// candidate's live position is checked by CheckCandidate when the action
// begins.
func decideSwitchover(o Observation, sw *state.SwitchoverRequest) Plan {
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
		p := plan(None, "leader; switchover to %s scheduled at %s", sw.To, sw.At.UTC().Format(time.RFC3339))
		p.WakeAt = sw.At
		return p
	}
	// The candidate's live position, read for this round: the same rule
	// the control API applied when the request arrived.
	chk := CandidateCheck{Cluster: o.Cluster, Self: o.Self, Term: o.Term, Candidate: sw.To, LeaderLSN: o.PG.CurrentLSN,
		MaxLag: o.MaxLag, RecentWindow: o.RecentWindow, LiveErr: o.SwitchoverTargetErr}
	if o.SwitchoverTarget != nil {
		chk.Live = *o.SwitchoverTarget
	} else if chk.LiveErr == nil {
		chk.LiveErr = fmt.Errorf("not read")
	}
	if err := CheckCandidate(chk); err != nil {
		return clear("refused: %v", err)
	}
	return Plan{Action: Switchover, Target: sw.To, TargetAddr: m.ConnAddress, Reason: fmt.Sprintf("planned switchover to %s", sw.To)}
}

// CandidateCheck is what the switchover candidate check looks at: the
// cluster as read, the leader's position and the candidate's live state.
type CandidateCheck struct {
	Cluster state.Cluster
	Self    string
	// Term is the leader's tenure (Observation.Term): only a sync record
	// of this term lists standbys that have every acknowledged commit.
	Term      int64
	Candidate string
	LeaderLSN state.LSN
	MaxLag    int64
	// RecentWindow is how recently the candidate must have streamed.
	RecentWindow time.Duration
	// Live is the candidate's state from its API; LiveErr why it could
	// not be read.
	Live    Candidate
	LiveErr error
}

// CheckCandidate is the one switchover candidate rule, used by the control
// API when a request arrives and by the leader before it stops postgres.
// It returns nil or a refusal to show as is.
func CheckCandidate(c CandidateCheck) error {
	name := c.Candidate
	if c.Cluster.Paused {
		return fmt.Errorf("the cluster is paused (maintenance mode): resume it first")
	}
	if name == c.Self {
		return fmt.Errorf("%s is already the leader", name)
	}
	m, ok := c.Cluster.Members[name]
	if !ok {
		return fmt.Errorf("%s is not a member of the cluster", name)
	}
	if m.NoFailover {
		return fmt.Errorf("%s is tagged nofailover", name)
	}
	if sy := c.Cluster.Sync; sy != nil && (!sy.Of(c.Self, c.Term) || !sy.Has(name)) {
		recorded := "none yet"
		if sy.Of(c.Self, c.Term) && len(sy.Members) > 0 {
			recorded = strings.Join(sy.Members, ", ")
		}
		return fmt.Errorf("%s is not a recorded synchronous standby (synchronous mode; recorded: %s)", name, recorded)
	}
	if c.LiveErr != nil {
		return fmt.Errorf("cannot read %s's state: %v", name, c.LiveErr)
	}
	cand := c.Live
	switch {
	case !cand.Running || !cand.InRecovery:
		return fmt.Errorf("%s is not a running standby", name)
	case cand.StreamedAgo < 0 || cand.StreamedAgo > c.RecentWindow:
		return fmt.Errorf("%s is not streaming from the leader", name)
	}
	lag := c.LeaderLSN.Sub(cand.ReplayLSN)
	if cand.ReplayPaused {
		return fmt.Errorf("%s has WAL replay paused (%d bytes behind); resume replay first", name, max(lag, 0))
	}
	if lag > c.MaxLag {
		return fmt.Errorf("%s is %d bytes behind the leader, more than maximum_lag_on_failover (%d)", name, lag, c.MaxLag)
	}
	return nil
}

// A planned switchover, as the old leader carries it out, is a sequence of
// phases that Decide steps through one bounded action at a time (the loop
// observes between them; nothing polls or sleeps):
//
//  1. requested: the request is due and the candidate passes
//     CheckCandidate with its live position -> action Switchover: a
//     checkpoint, a fast stop (clients disconnected, a shutdown checkpoint
//     written, the walsenders send everything before they exit) and
//     pg_controldata, which must say "shut down". Phase Stopped.
//  2. stopped at the checkpoint, awaiting replay: the candidate's live
//     replay position (an input) passes the checkpoint -> Handoff: one
//     transaction moves the key to the candidate's lease. Phase HandedOff.
//     Past the deadline, or if the stop was not clean -> SwitchoverRollback:
//     the request is cleared first (so a late handoff can no longer
//     commit), then postgres resumes as primary if the key is provably
//     still this member's (the fence rule gates it).
//  3. handed off: the candidate runs as primary on a newer timeline ->
//     SwitchoverFollow: restart as its standby (no pg_rewind: this WAL ends
//     at the checkpoint the candidate replayed). If the key is gone and the
//     candidate never claimed its promotion -> TakeBack, a transaction that
//     proves it (Store.TakeBack); if it claimed, or the key went to another
//     member, or the candidate did not finish in time -> SwitchoverAbandon:
//     the normal rules apply from a stopped old primary. Never two
//     primaries.

// SwitchoverPhase is where an old leader's switchover stands.
type SwitchoverPhase int

// Switchover phases after the request (see above).
const (
	// PhaseStopped: postgres stopped cleanly at Checkpoint; the key is
	// still this member's; waiting for the candidate to replay it.
	PhaseStopped SwitchoverPhase = iota + 1
	// PhaseHandedOff: the key is the candidate's; waiting for it to promote.
	PhaseHandedOff
)

func (p SwitchoverPhase) String() string {
	switch p {
	case PhaseStopped:
		return "stopped at the shutdown checkpoint"
	case PhaseHandedOff:
		return "handed off"
	}
	return "none"
}

// SwitchoverProgress is what the old leader remembers of a switchover in
// progress (an Observation input; nil when none).
type SwitchoverProgress struct {
	ID string
	To string
	// ToLease is the candidate's lease (its member key's) the key goes to.
	ToLease int64
	// FromLease is this member's lease when the switchover began: it
	// resumes as primary only on that lease.
	FromLease int64
	// ReqModRev is the request key's revision (the handoff and the
	// roll-back are guarded by it).
	ReqModRev  int64
	Phase      SwitchoverPhase
	Checkpoint state.LSN
	Timeline   int
	// Deadline ends the current phase.
	Deadline time.Time
	// Failed is set when the stop was not clean or etcd refused the
	// handoff: roll back.
	Failed string
}

// decideSwitchoverProgress steps a switchover in progress (this member is
// the old leader and its postgres is stopped).
func decideSwitchoverProgress(o Observation) Plan {
	sw := o.Switchover
	abandon := func(format string, args ...any) Plan {
		return Plan{Action: SwitchoverAbandon, Target: sw.To, Reason: fmt.Sprintf("switchover to %s: ", sw.To) + fmt.Sprintf(format, args...)}
	}
	if o.Running {
		return abandon("postgres is running again; the normal rules apply")
	}
	l := o.Cluster.Leader
	toHolds := l != nil && l.Valid && l.Name == sw.To && l.Lease == sw.ToLease
	switch sw.Phase {
	case PhaseStopped:
		if toHolds {
			// The handoff committed (its answer was lost).
			return Plan{Action: SwitchoverHandedOff, Target: sw.To, Reason: fmt.Sprintf("switchover to %s: the leader key is %s's", sw.To, sw.To)}
		}
		if !o.HoldsLeader {
			return abandon("the leader key is no longer this member's (%s); the normal rules apply", garbage(l))
		}
		if sw.Failed != "" {
			return gate(o, Plan{Action: SwitchoverRollback, Target: sw.To, Reason: fmt.Sprintf("switchover to %s failed (%s): resuming as primary", sw.To, sw.Failed)})
		}
		if t := o.SwitchoverTarget; o.SwitchoverTargetErr == nil && t != nil && t.InRecovery && t.ReplayLSN > sw.Checkpoint {
			// The replay position is the end of the last record replayed:
			// past the checkpoint's start means the checkpoint was replayed,
			// and with it every committed transaction.
			return Plan{Action: Handoff, Target: sw.To, Reason: fmt.Sprintf("switchover to %s: it replayed the shutdown checkpoint %s; handing it the leader key", sw.To, sw.Checkpoint)}
		}
		if _, alive := o.Cluster.Members[sw.To]; !alive {
			return gate(o, Plan{Action: SwitchoverRollback, Target: sw.To, Reason: fmt.Sprintf("switchover to %s failed (its member key is gone: its agent died): resuming as primary", sw.To)})
		}
		if !o.Now.Before(sw.Deadline) {
			why := fmt.Sprintf("it did not replay up to %s in time", sw.Checkpoint)
			if o.SwitchoverTargetErr != nil {
				why += fmt.Sprintf(" (last error: %v)", o.SwitchoverTargetErr)
			}
			return gate(o, Plan{Action: SwitchoverRollback, Target: sw.To, Reason: fmt.Sprintf("switchover to %s failed (%s): resuming as primary", sw.To, why)})
		}
		p := Plan{Action: Wait, Target: sw.To, Reason: fmt.Sprintf("switchover to %s: stopped at %s, waiting for it to replay", sw.To, sw.Checkpoint)}
		p.WakeAt = minTime(o.Now.Add(SwitchoverPoll), sw.Deadline)
		return p
	case PhaseHandedOff:
		m, ok := o.Cluster.Members[sw.To]
		switch {
		case toHolds && ok && m.Role == "primary" && m.State == "running" && m.Timeline > sw.Timeline:
			return Plan{Action: SwitchoverFollow, Target: sw.To, TargetAddr: m.ConnAddress,
				Reason: fmt.Sprintf("switched over to %s (timeline %d); following it as a standby", sw.To, m.Timeline)}
		case l == nil && !o.Now.Before(sw.Deadline):
			return abandon("the leader key is free and the switchover's time is up; the normal rules apply")
		case l == nil:
			if ll := o.Cluster.LastLeader; ll == nil || ll.Name != sw.To || ll.SwitchoverID != sw.ID {
				// Someone else led since the handoff: its writes must not
				// be undone by a take-back.
				return abandon("another leadership was recorded since the handoff; the normal rules apply")
			}
			if c := o.Cluster.Promotion; c != nil && c.Switchover == sw.ID && !c.TakenBack {
				return abandon("it claimed its promotion and then lost the leader key; it may have accepted writes, so the normal rules apply")
			}
			if c := o.Cluster.Promotion; c != nil && (c.Name == "?" || c.Switchover == "?") {
				return abandon("the promotion claim cannot be read; not taking the key back on a guess")
			}
			return gate(o, Plan{Action: TakeBack, Target: sw.To, Reason: fmt.Sprintf("switchover to %s failed: it lost the leader key without claiming its promotion; taking the key back", sw.To)})
		case !toHolds:
			return abandon("the leader key changed (%s); the normal rules apply", garbage(l))
		case !o.Now.Before(sw.Deadline):
			return abandon("it holds the leader key but did not finish promoting in time")
		}
		p := Plan{Action: Wait, Target: sw.To, Reason: fmt.Sprintf("switchover to %s: key handed over, waiting for it to promote", sw.To)}
		p.WakeAt = sw.Deadline
		return p
	}
	return abandon("unknown phase %d", sw.Phase)
}

// SwitchoverPoll is how often a stopped old leader looks at the
// candidate's replay position (the loop wakes; nothing sleeps).
const SwitchoverPoll = 20 * time.Millisecond

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}
