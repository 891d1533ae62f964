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

	mu    sync.Mutex
	state LeaseState
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

// Run grants and renews the lease until ctx ends, then revokes it.
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
		s.tick(ctx)
		t.Reset(s.Interval())
	}
}

func (s *Session) tick(ctx context.Context) {
	cur := s.State()
	rctx, cancel := context.WithTimeout(ctx, s.Interval())
	defer cancel()
	sent := s.now()
	if cur.ID == 0 {
		resp, err := s.cli.Grant(rctx, int64(s.ttl/time.Second))
		if err != nil {
			s.log.Warn("lease grant failed", "error", err)
			return
		}
		s.mu.Lock()
		s.state = LeaseState{ID: resp.ID, ValidUntil: sent.Add(minDur(s.ttl, time.Duration(resp.TTL)*time.Second))}
		s.mu.Unlock()
		s.log.Debug("lease granted", "lease", fmt.Sprintf("%x", int64(resp.ID)), "ttl", resp.TTL)
		s.notify()
		return
	}
	resp, err := s.cli.KeepAliveOnce(rctx, cur.ID)
	if err != nil {
		if errors.Is(err, rpctypes.ErrLeaseNotFound) {
			s.log.Warn("lease expired", "lease", fmt.Sprintf("%x", int64(cur.ID)))
			s.mu.Lock()
			s.state = LeaseState{}
			s.mu.Unlock()
			s.notify()
			return
		}
		s.log.Warn("lease renewal failed", "error", err, "valid_for", cur.ValidUntil.Sub(s.now()).Round(time.Millisecond))
		return
	}
	s.mu.Lock()
	if s.state.ID == cur.ID {
		s.state.ValidUntil = sent.Add(minDur(s.ttl, time.Duration(resp.TTL)*time.Second))
	}
	s.mu.Unlock()
}

func (s *Session) revoke() {
	cur := s.State()
	if cur.ID == 0 {
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
