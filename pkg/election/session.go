package election

import (
	"context"
	"errors"
	"fmt"
	"github.com/cifha/cifha/pkg/ha"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

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
	// changed is signalled when a lease is granted or lost; renewed on
	// every successful renewal.
	changed chan struct{}
	renewed chan struct{}
}

// NewSession returns a session with no lease yet; call Run. now is the
// clock deadlines are measured on (BootClock in the daemon; the agent must
// use the same one); nil means BootClock.
func NewSession(cli *clientv3.Client, ttl time.Duration, log hclog.Logger, now func() time.Time) *Session {
	if now == nil {
		now = BootClock()
	}
	return &Session{cli: cli, ttl: ttl, log: log, now: now, changed: make(chan struct{}, 1), renewed: make(chan struct{}, 1)}
}

// TTL is the lease's time to live.
func (s *Session) TTL() time.Duration { return s.ttl }

// State returns the current lease and its deadline.
func (s *Session) State() LeaseState {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.state
}

// Changed is signalled (coalesced) when a lease is granted or lost.
func (s *Session) Changed() <-chan struct{} { return s.changed }

// Renewed is signalled (coalesced) after every successful renewal: the
// fencer passes the new deadline to the fence watchdog at once.
func (s *Session) Renewed() <-chan struct{} { return s.renewed }

func (s *Session) notify() {
	select {
	case s.changed <- struct{}{}:
	default:
	}
}

// timing is the one timing rule's view of this session's ttl (renewal
// interval, attempt timeout, retry delay: ha.Timing).
func (s *Session) timing() ha.Timing { return ha.Timing{TTL: s.ttl} }

// Interval is the renewal period (ha.Timing.RenewInterval, ttl/4).
func (s *Session) Interval() time.Duration { return s.timing().RenewInterval() }

// Run grants and renews the lease until ctx ends, then revokes it (unless
// Abandon was called).
//
// Renewals are scheduled from the send time of the last successful one,
// every RenewInterval (ttl/4); each call is bounded by RenewAttemptTimeout
// (ttl/8) and carries WithRequireLeader, so a member that lost its quorum
// leader fails it at once instead of hanging; a failed call is retried
// after RenewRetryDelay (ttl/20). ha.Timing.Validate guarantees that at
// least two full attempts fit between the last success and the fence for
// every allowed ttl and margin: one slow request never demotes a healthy
// primary.
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
			wait = s.timing().RenewRetryDelay()
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
	rctx, cancel := context.WithTimeout(clientv3.WithRequireLeader(ctx), s.timing().RenewAttemptTimeout())
	defer cancel()
	if cur.ID == 0 {
		resp, err := s.cli.Grant(rctx, int64(s.ttl/time.Second))
		if err != nil {
			s.log.Warn("lease grant failed", "error", err)
			return false
		}
		s.mu.Lock()
		s.state = LeaseState{ID: int64(resp.ID), ValidUntil: sent.Add(minDur(s.ttl, time.Duration(resp.TTL)*time.Second))}
		s.mu.Unlock()
		s.log.Debug("lease granted", "lease", fmt.Sprintf("%x", int64(resp.ID)), "ttl", resp.TTL)
		s.notify()
		return true
	}
	resp, err := s.cli.KeepAliveOnce(rctx, clientv3.LeaseID(cur.ID))
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
	select {
	case s.renewed <- struct{}{}:
	default:
	}
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
	if _, err := s.cli.Revoke(ctx, clientv3.LeaseID(cur.ID)); err != nil {
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
