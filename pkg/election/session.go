package election

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// LeaseState is the agent's lease as the agent itself knows it.
type LeaseState struct {
	ID clientv3.LeaseID
	// ValidUntil is a lower bound on when etcd can expire the lease: the
	// monotonic send time of the last successful grant or renewal plus the
	// TTL. etcd starts the TTL no earlier than it receives the request, and
	// only ever extends lease timers across its own leader changes, so the
	// lease cannot expire before ValidUntil. Zero when there is no lease.
	ValidUntil time.Time
}

// Held reports whether the lease is known to be alive at now.
func (l LeaseState) Held(now time.Time) bool { return l.ID != 0 && now.Before(l.ValidUntil) }

// Session owns one etcd lease: it grants it, renews it every TTL/3 from its
// own goroutine (so a busy agent loop does not let it lapse), and records
// the deadline. It does not fence: the agent compares ValidUntil with its
// clock and acts.
type Session struct {
	cli *clientv3.Client
	ttl time.Duration
	log hclog.Logger
	now func() time.Time

	mu        sync.Mutex
	state     LeaseState
	abandoned bool
	// changed is signalled when a lease is granted or lost.
	changed chan struct{}
}

// NewSession returns a session with no lease yet; call Run.
func NewSession(cli *clientv3.Client, ttl time.Duration, log hclog.Logger) *Session {
	return &Session{cli: cli, ttl: ttl, log: log, now: time.Now, changed: make(chan struct{}, 1)}
}

// State returns the current lease and its deadline.
func (s *Session) State() LeaseState {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.state
}

// Changed is signalled (coalesced) when a lease is granted or lost.
func (s *Session) Changed() <-chan struct{} { return s.changed }

func (s *Session) notify() {
	select {
	case s.changed <- struct{}{}:
	default:
	}
}

// Interval is the renewal period, TTL/3: one missed renewal still leaves a
// third of the TTL before the deadline.
func (s *Session) Interval() time.Duration { return s.ttl / 3 }

// Run grants and renews the lease until ctx ends, then revokes it (unless
// Abandon was called).
//
// Renewals are scheduled from the send time of the last successful one,
// every TTL/3, and each call is bounded by TTL/6; a failed call is retried
// after TTL/12. So one hung or lost renewal costs at most TTL/6 and is
// retried well before the deadline, and a primary is fenced only after
// renewals have failed for about 2/3 of the TTL minus the fence margin.
func (s *Session) Run(ctx context.Context) {
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			s.revoke()
			return
		case <-t.C:
		}
		sent := s.now()
		wait := s.Interval()
		if !s.tick(ctx, sent) {
			wait = s.ttl / 12
		} else if d := sent.Add(s.Interval()).Sub(s.now()); d < wait {
			wait = d
		}
		if wait < 0 {
			wait = 0
		}
		t.Reset(wait)
	}
}

// Abandon makes Run exit without revoking the lease: used when postgres
// could not be stopped, so the lease must run out on its own (and the
// fencing deadline apply) rather than free the leader key at once.
func (s *Session) Abandon() {
	s.mu.Lock()
	s.abandoned = true
	s.mu.Unlock()
}

// tick grants or renews once; it reports success.
func (s *Session) tick(ctx context.Context, sent time.Time) bool {
	cur := s.State()
	rctx, cancel := context.WithTimeout(ctx, s.ttl/6)
	defer cancel()
	if cur.ID == 0 {
		resp, err := s.cli.Grant(rctx, int64(s.ttl/time.Second))
		if err != nil {
			s.log.Warn("lease grant failed", "error", err)
			return false
		}
		s.mu.Lock()
		s.state = LeaseState{ID: resp.ID, ValidUntil: sent.Add(minDur(s.ttl, time.Duration(resp.TTL)*time.Second))}
		s.mu.Unlock()
		s.log.Debug("lease granted", "lease", fmt.Sprintf("%x", int64(resp.ID)), "ttl", resp.TTL)
		s.notify()
		return true
	}
	resp, err := s.cli.KeepAliveOnce(rctx, cur.ID)
	if err != nil {
		if errors.Is(err, rpctypes.ErrLeaseNotFound) {
			s.log.Warn("lease expired", "lease", fmt.Sprintf("%x", int64(cur.ID)))
			s.mu.Lock()
			s.state = LeaseState{}
			s.mu.Unlock()
			s.notify()
			return false
		}
		s.log.Warn("lease renewal failed", "error", err, "valid_for", cur.ValidUntil.Sub(s.now()).Round(time.Millisecond))
		return false
	}
	s.mu.Lock()
	if s.state.ID == cur.ID {
		s.state.ValidUntil = sent.Add(minDur(s.ttl, time.Duration(resp.TTL)*time.Second))
	}
	s.mu.Unlock()
	return true
}

func (s *Session) revoke() {
	s.mu.Lock()
	abandoned := s.abandoned
	s.mu.Unlock()
	cur := s.State()
	if cur.ID == 0 || abandoned {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if _, err := s.cli.Revoke(ctx, cur.ID); err != nil {
		s.log.Debug("lease revoke failed", "error", err)
	}
	s.mu.Lock()
	s.state = LeaseState{}
	s.mu.Unlock()
}

func minDur(a, b time.Duration) time.Duration {
	if a < b {
		return a
	}
	return b
}
