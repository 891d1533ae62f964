package ha

import (
	"fmt"
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
	return Plan{Action: Switchover, Target: sw.To, TargetAddr: m.ConnAddress, Reason: fmt.Sprintf("planned switchover to %s", sw.To)}
}

// CandidateCheck is what the switchover candidate check looks at: the
// cluster as read, the leader's position and the candidate's live state.
type CandidateCheck struct {
	Cluster   state.Cluster
	Self      string
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
