package election

import (
	"context"
	"errors"
	"fmt"
	"github.com/cifha/cifha/pkg/ha"
	"sync"
	"sync/atomic"
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
	// maxTerm is the highest etcd raft term a renewal was accepted in;
	// lastFailed is set while renewals fail (see renew).
	maxTerm    uint64
	lastFailed bool
	// checkKey is read to confirm a renewal (a key the agent may read
	// under etcd authentication: its cluster's leader key).
	checkKey string
	// changed is signalled when a lease is granted or lost; renewed on
	// every successful renewal.
	changed chan struct{}
	renewed chan struct{}
	// writable selects the shorter renewal period (SetWritable); kick
	// makes Run reschedule when it changes.
	writable atomic.Bool
	kick     chan struct{}
	// ka carries the steady-state renewals (keepalive.go).
	ka *keepAliveStream
}

// NewSession returns a session with no lease yet; call Run. now is the
// clock deadlines are measured on (BootClock in the daemon; the agent must
// use the same one); nil means BootClock.
func NewSession(cli *clientv3.Client, ttl time.Duration, log hclog.Logger, now func() time.Time) *Session {
	if now == nil {
		now = BootClock()
	}
	return &Session{cli: cli, ttl: ttl, log: log, now: now, changed: make(chan struct{}, 1), renewed: make(chan struct{}, 1), kick: make(chan struct{}, 1), checkKey: "/cifha/",
		ka: &keepAliveStream{cli: cli}}
}

// SetCheckKey names the key read to confirm renewals (see renew); call
// before Run. Default: "/cifha/".
func (s *Session) SetCheckKey(k string) { s.checkKey = k }

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

// Interval is the renewal period: ha.Timing.WritableRenewInterval while
// SetWritable(true), else ha.Timing.RenewInterval (ttl/4).
func (s *Session) Interval() time.Duration {
	if s.writable.Load() {
		return s.timing().WritableRenewInterval()
	}
	return s.timing().RenewInterval()
}

// SetWritable tells the session whether this member's postgres is
// writable: its fence then depends on renewals, which come more often
// (ha.Timing.WritableRenewInterval). A change takes effect at once.
func (s *Session) SetWritable(on bool) {
	if s.writable.Swap(on) != on {
		select {
		case s.kick <- struct{}{}:
		default:
		}
	}
}

// Run grants and renews the lease until ctx ends, then revokes it (unless
// Abandon was called).
//
// Renewals are scheduled from the send time of the last successful one,
// every Interval (ttl/4; at most 500 ms while postgres is writable). A
// call unanswered after RenewAttemptTimeout (ttl/8) gets a hedged attempt
// beside it (renew); the renewal is bounded by the lease's lower-bound
// expiry and carries WithRequireLeader, so a member that lost its quorum
// leader fails it at once instead of hanging; a failed renewal is retried
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
		case <-s.kick:
			// The period changed: renew now (cheap, and the new period
			// counts from a fresh renewal).
			if !t.Stop() {
				select {
				case <-t.C:
				default:
				}
			}
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
	// A renewal may take until the lease's own lower-bound expiry (a late
	// answer still counts from sent: renew hedges a slow attempt instead
	// of dropping it), at least two attempt timeouts; a grant, two.
	until := sent.Add(2 * s.timing().RenewAttemptTimeout())
	if cur.ID != 0 && cur.ValidUntil.After(until) {
		until = cur.ValidUntil
	}
	rctx, cancel := context.WithDeadline(clientv3.WithRequireLeader(ctx), until)
	defer cancel()
	if cur.ID == 0 {
		resp, err := s.cli.Grant(rctx, int64(s.ttl/time.Second))
		if err != nil {
			s.log.Warn("lease grant failed", "error", err)
			return false
		}
		s.mu.Lock()
		s.state = LeaseState{ID: int64(resp.ID), ValidUntil: sent.Add(minDur(s.ttl, time.Duration(resp.TTL)*time.Second))}
		s.maxTerm = 0 // a new lease: its first renewal confirms the term afresh
		s.mu.Unlock()
		s.log.Debug("lease granted", "lease", fmt.Sprintf("%x", int64(resp.ID)), "ttl", resp.TTL)
		s.notify()
		return true
	}
	resp, err := s.renew(rctx, clientv3.LeaseID(cur.ID))
	s.mu.Lock()
	s.lastFailed = err != nil
	s.mu.Unlock()
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

// errStaleRenewal: a renewal was answered in an older raft term than one
// already seen, or than the current one.
var errStaleRenewal = errors.New("renewal answered by a stale etcd leader")

// renew renews the lease once and accepts the answer only if it comes from
// the current etcd leader's term.
//
// Why: etcd renews leases on the leader alone, without raft. Its fix for a
// stuck leader (etcd #15247) skips the leadership check while the member
// has ticked recently, and a leader process that was paused (SIGSTOP, a VM
// or GC stall) ticks again at once when it resumes: it can answer a renewal
// from its own stale lessor while the real leader, elected meanwhile,
// counts the lease from an older renewal and expires it first. The agent
// would then hold a deadline etcd no longer honours, and another member
// could take the key while this one is still writable.
// TestOneEtcdMemberLostNoFailover found this with a frozen etcd leader.
//
// The rule: a renewal counts only if a linearizable read (which a leader
// without its quorum cannot serve), sent with it or before it, shows it was
// answered in the current term. In the steady state the read goes out
// together with the renewal; after a failed attempt or a term change the
// term is confirmed first and only an answer in it is taken. Such a renewal
// was handled by the leader of a term that was current after the attempt
// began; a leader elected later counts the lease from its own election
// plus the full ttl, which ends after sent + ttl.
//
// A paused etcd member keeps its connections open, so a request sent to it
// hangs until its timeout; after a failed attempt, or one unanswered for
// RenewAttemptTimeout, the read and the renewal are therefore sent to
// every endpoint at once and the first acceptable answer wins (the client
// balances concurrent calls over its endpoints), the first attempt still
// running beside them. In the steady state it is one renewal and one read. A read in a lower
// term than seen before is still authoritative (etcd restored from a
// snapshot restarts its terms).
func (s *Session) renew(ctx context.Context, id clientv3.LeaseID) (*clientv3.LeaseKeepAliveResponse, error) {
	s.mu.Lock()
	maxTerm, lastFailed := s.maxTerm, s.lastFailed
	s.mu.Unlock()
	type result struct {
		resp *clientv3.LeaseKeepAliveResponse
		k    *keepAliveStream // the stream that renewed (nil: s.ka)
		err  error
	}
	ctx, cancel := context.WithCancel(ctx)
	ch := make(chan result, 2)
	pending, hedged := 0, false
	hedge := func() {
		hedged = true
		pending++
		go func() {
			r, k, err := s.renewConfirmed(ctx, id)
			ch <- result{r, k, err}
		}()
	}
	if !lastFailed && maxTerm != 0 {
		pending++
		k := s.ka
		go func() {
			r, err := s.renewSteady(ctx, k, id, maxTerm)
			ch <- result{r, nil, err}
		}()
	} else {
		hedge()
	}
	// A hedge in time: an attempt still unanswered after
	// RenewAttemptTimeout is not abandoned (on a slow link its answer is
	// as good as a fast one, and cancelling it only to send the same
	// request again never finishes when every round trip is slower than
	// the timeout: the lab's 200 ms delay did that at ttl 3 s); the
	// hedged attempt, over every endpoint, runs beside it, and the first
	// acceptable answer wins. The whole renewal is bounded by ctx (tick:
	// the lease's own lower-bound expiry).
	timer := time.NewTimer(s.timing().RenewAttemptTimeout())
	defer timer.Stop()
	var (
		win  result
		last error
		won  bool
	)
	for pending > 0 && !won {
		select {
		case <-timer.C:
			if !hedged {
				hedge()
			}
		case r := <-ch:
			pending--
			if r.err == nil {
				win, won = r, true
				break
			}
			last = r.err
			if !hedged && !errors.Is(r.err, rpctypes.ErrLeaseNotFound) && ctx.Err() == nil {
				hedge() // a new term, or a failure: confirm afresh at once
			}
		}
	}
	cancel()
	for ; pending > 0; pending-- {
		// The losers end promptly once cancelled; a late success on a
		// stream of its own is closed.
		if r := <-ch; r.err == nil && r.k != nil {
			r.k.close()
		}
	}
	if !won {
		return nil, last
	}
	if win.k != nil {
		// The hedged attempt's stream carries the renewals that follow
		// (with a username, every new stream is a login, a bcrypt hash on
		// the server).
		s.ka.close()
		s.ka = win.k
	}
	return win.resp, nil
}

// renewSteady is the steady state's renewal: on the long-lived stream k,
// with a linearizable read sent together with it. A request buffered on a
// paused leader can be answered, in the old term, once it resumes; the
// read, sent after `sent` and confirmed by a quorum, shows the term that is
// current, and the renewal counts only if it was answered in it.
func (s *Session) renewSteady(ctx context.Context, k *keepAliveStream, id clientv3.LeaseID, maxTerm uint64) (*clientv3.LeaseKeepAliveResponse, error) {
	var (
		wg   sync.WaitGroup
		g    *clientv3.GetResponse
		gerr error
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		g, gerr = s.cli.Get(ctx, s.checkKey, clientv3.WithCountOnly())
	}()
	resp, err := k.renew(ctx, id)
	wg.Wait()
	if err != nil {
		return nil, err
	}
	if gerr != nil {
		return nil, fmt.Errorf("confirm the etcd leader's term: %w", gerr)
	}
	term, cur := resp.ResponseHeader.RaftTerm, g.Header.RaftTerm
	if term == cur && term == maxTerm {
		return resp, nil
	}
	if term < cur {
		return nil, fmt.Errorf("%w (raft term %d, current %d)", errStaleRenewal, term, cur)
	}
	return nil, fmt.Errorf("a new etcd term (%d, renewed in %d): confirm it first", cur, term)
}

// renewConfirmed renews after a failure or a term change: the current
// term confirmed first by a quorum read, then fresh streams, both hedged
// over the endpoints (the long-lived stream may be on a member that lost
// etcd's leader, or a paused one), and only an answer in that term is
// taken. It returns the stream that renewed.
func (s *Session) renewConfirmed(ctx context.Context, id clientv3.LeaseID) (*clientv3.LeaseKeepAliveResponse, *keepAliveStream, error) {
	hedge := max(len(s.cli.Endpoints()), 1)
	cur, err := firstOf(ctx, hedge, func(ctx context.Context) (uint64, error) {
		g, err := s.cli.Get(ctx, s.checkKey, clientv3.WithCountOnly()) // linearizable: needs a leader with a quorum
		if err != nil {
			return 0, err
		}
		return g.Header.RaftTerm, nil
	})
	if err != nil {
		return nil, nil, fmt.Errorf("confirm the etcd leader's term: %w", err)
	}
	// The quorum-confirmed read is authoritative, also when its term is
	// lower than one seen before: etcd restored from a snapshot or
	// replaced restarts its terms, and refusing them would fence every
	// agent for good.
	// Each hedged attempt on a stream of its own; the winner's stream is
	// returned, the others are closed.
	type won struct {
		r *clientv3.LeaseKeepAliveResponse
		k *keepAliveStream
	}
	var (
		pick  sync.Mutex
		taken bool
	)
	w, err := firstOf(ctx, hedge, func(ctx context.Context) (won, error) {
		k := &keepAliveStream{cli: s.cli}
		r, err := k.renew(ctx, id)
		if err != nil {
			return won{}, err // renew closed its stream
		}
		if t := r.ResponseHeader.RaftTerm; t != cur {
			k.close()
			return won{}, fmt.Errorf("%w (raft term %d, current %d)", errStaleRenewal, t, cur)
		}
		pick.Lock()
		defer pick.Unlock()
		if taken || ctx.Err() != nil {
			k.close()
			return won{}, errors.New("another attempt renewed first")
		}
		taken = true
		return won{r, k}, nil
	})
	if err != nil {
		return nil, nil, err
	}
	s.mu.Lock()
	s.maxTerm = cur
	s.mu.Unlock()
	return w.r, w.k, nil
}

// firstOf runs f n times concurrently and returns the first success, or
// the last error once all failed; the others are cancelled.
func firstOf[T any](ctx context.Context, n int, f func(context.Context) (T, error)) (T, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type result struct {
		v   T
		err error
	}
	ch := make(chan result, n)
	for range n {
		go func() {
			v, err := f(ctx)
			ch <- result{v, err}
		}()
	}
	var last error
	for range n {
		r := <-ch
		if r.err == nil {
			return r.v, nil
		}
		last = r.err
	}
	var zero T
	return zero, last
}

func (s *Session) revoke() {
	s.ka.close()
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
