package election

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/cifha/cifha/pkg/state"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Switchover is the planned-switchover request key.
func (k Keys) Switchover() string { return k.Prefix + "switchover" }

// Failover is the manual-failover request key.
func (k Keys) Failover() string { return k.Prefix + "failover" }

// Config is the cluster-wide settings key (`cifhactl set`, `edit-config`).
func (k Keys) Config() string { return k.Prefix + "config" }

// RequestSwitchover stores a switchover request unless one is pending.
func (s *Store) RequestSwitchover(ctx context.Context, r SwitchoverRequest) (bool, error) {
	return putIfAbsent(ctx, s.cli, s.rpcTO, s.keys.Switchover(), r, 0)
}

// RequestFailover stores a manual failover request unless one is pending.
// It is bound to a lease of ttl so that a request nobody could act on does
// not linger.
func (s *Store) RequestFailover(ctx context.Context, r FailoverRequest, ttl time.Duration) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, s.rpcTO)
	defer cancel()
	g, err := s.cli.Grant(ctx, int64(ttl/time.Second))
	if err != nil {
		return false, fmt.Errorf("failover request lease: %w", err)
	}
	return putIfAbsent(ctx, s.cli, s.rpcTO, s.keys.Failover(), r, g.ID)
}

func putIfAbsent(ctx context.Context, cli *clientv3.Client, to time.Duration, key string, v any, lease clientv3.LeaseID) (bool, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return false, err
	}
	ctx, cancel := context.WithTimeout(ctx, to)
	defer cancel()
	var opts []clientv3.OpOption
	if lease != 0 {
		opts = append(opts, clientv3.WithLease(lease))
	}
	resp, err := cli.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
		Then(clientv3.OpPut(key, string(b), opts...)).Commit()
	if err != nil {
		return false, fmt.Errorf("write %s: %w", key, err)
	}
	return resp.Succeeded, nil
}

// ClearRequest deletes a request key if it is still the one read (modRev).
// Once it returns nil, no transaction guarded by that modRev can commit.
func (s *Store) ClearRequest(ctx context.Context, key string, modRev int64) error {
	ctx, cancel := s.rpc(ctx)
	defer cancel()
	if _, err := s.cli.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(key), "=", modRev)).
		Then(clientv3.OpDelete(key)).Commit(); err != nil {
		return fmt.Errorf("clear %s: %w", key, err)
	}
	return nil
}

// Handoff gives the leader key to member to, bound to that member's lease
// (toLease, the lease its member key was published on), in one transaction
// that also records to as the last leader at rec's position and removes the
// switchover request. It succeeds only while this agent holds the key on its
// current lease, to's member key is still on toLease (so to is alive), the
// switchover request is still the one read at swModRev (not cancelled, and
// not cleared by a roll back: a transaction that reaches etcd late can then
// never commit after the old leader resumed), and the cluster is not paused
// (a paused candidate would not promote). After it, this agent holds
// nothing.
func (s *Store) Handoff(ctx context.Context, to string, toLease int64, rec LastLeader, swModRev int64) error {
	lease := s.sess.State()
	if lease.ID == 0 {
		return ErrNoLease
	}
	rec.Name = to
	b, _ := json.Marshal(rec)
	ctx, cancel := s.rpc(ctx)
	defer cancel()
	k := s.keys.Leader()
	resp, err := s.cli.Txn(ctx).If(
		clientv3.Compare(clientv3.Value(k), "=", s.name),
		clientv3.Compare(clientv3.LeaseValue(k), "=", lease.ID),
		clientv3.Compare(clientv3.LeaseValue(s.keys.Member(to)), "=", toLease),
		clientv3.Compare(clientv3.ModRevision(s.keys.Switchover()), "=", swModRev),
		clientv3.Compare(clientv3.CreateRevision(s.keys.Pause()), "=", 0),
	).Then(
		clientv3.OpPut(k, to, clientv3.WithLease(clientv3.LeaseID(toLease))),
		clientv3.OpPut(s.keys.LastLeader(), string(b)),
		clientv3.OpDelete(s.keys.Switchover()),
	).Commit()
	if err != nil {
		// The outcome is unknown (the transaction may have committed): hold
		// no leader-only rights until a read shows the key is still ours
		// (Holds adopts it again).
		s.leaderRev, s.termRev = 0, 0
		return fmt.Errorf("hand the leader key to %s: %w", to, err)
	}
	if !resp.Succeeded {
		return fmt.Errorf("hand the leader key to %s: %w (this member no longer holds the key, %s's lease changed, the request was cancelled, or the cluster was paused)", to, ErrRefused, to)
	}
	s.leaderRev, s.termRev = 0, 0
	return nil
}

// ClaimPromotion records, before a member handed the key by a switchover
// promotes, that it is about to: the transaction succeeds only while this
// member holds the leader key on its own lease, and the claim (lease-less)
// outlives it. An old leader takes its key back only by a transaction that
// sees no claim for the switchover (TakeBack): the two cannot both succeed.
func (s *Store) ClaimPromotion(ctx context.Context, switchoverID string) error {
	lease := s.sess.State()
	if lease.ID == 0 {
		return ErrNoLease
	}
	b, _ := json.Marshal(state.PromotionClaim{Name: s.name, Switchover: switchoverID, At: time.Now().UTC()})
	ctx, cancel := s.rpc(ctx)
	defer cancel()
	k := s.keys.Leader()
	resp, err := s.cli.Txn(ctx).If(
		clientv3.Compare(clientv3.Value(k), "=", s.name),
		clientv3.Compare(clientv3.LeaseValue(k), "=", lease.ID),
	).Then(clientv3.OpPut(s.keys.Promotion(), string(b))).Commit()
	if err != nil {
		return fmt.Errorf("claim promotion: %w", err)
	}
	if !resp.Succeeded {
		return fmt.Errorf("claim promotion: %w", ErrNotLeader)
	}
	return nil
}

// TakeBack is a switchover's take-back by the old leader: it takes the
// free leader key on its own lease only if the promotion claim is
// unchanged since it was read at promotionRev (0: absent), a read that
// showed no claim by the candidate for this switchover. So the candidate
// never promoted and can no longer (it does not hold the key), and the
// last-leader record is unchanged since that read (no other member took
// over meanwhile). It records
// the take-back as the claim, and rec as last-leader.
func (s *Store) TakeBack(ctx context.Context, switchoverID string, rec LastLeader, promotionRev, lastLeaderRev int64) error {
	lease := s.sess.State()
	if lease.ID == 0 {
		return ErrNoLease
	}
	rec.Name = s.name
	rec.TTL = int(s.sess.ttl / time.Second)
	lb, _ := json.Marshal(rec)
	cb, _ := json.Marshal(state.PromotionClaim{Name: s.name, Switchover: switchoverID, At: time.Now().UTC(), TakenBack: true})
	ctx, cancel := s.rpc(ctx)
	defer cancel()
	k := s.keys.Leader()
	resp, err := s.cli.Txn(ctx).If(
		clientv3.Compare(clientv3.CreateRevision(k), "=", 0),
		clientv3.Compare(clientv3.ModRevision(s.keys.Promotion()), "=", promotionRev),
		// Nobody else led since the read that showed the handoff as the
		// last leadership (every Acquire and Handoff writes last-leader).
		clientv3.Compare(clientv3.ModRevision(s.keys.LastLeader()), "=", lastLeaderRev),
	).Then(
		clientv3.OpPut(k, s.name, clientv3.WithLease(clientv3.LeaseID(lease.ID))),
		clientv3.OpPut(s.keys.LastLeader(), string(lb)),
		clientv3.OpPut(s.keys.Promotion(), string(cb)),
	).Commit()
	if err != nil {
		return fmt.Errorf("take the leader key back: %w", err)
	}
	if !resp.Succeeded {
		return errors.New("take the leader key back: refused by etcd (the key was taken, or the candidate claimed its promotion)")
	}
	s.leaderRev, s.termRev = resp.Header.Revision, resp.Header.Revision
	return nil
}

// PutConfig stores the cluster-wide settings if the key is unchanged since
// it was read at modRev (0: absent), so two concurrent edits cannot lose
// one another.
func (s *Store) PutConfig(ctx context.Context, c DynamicConfig, modRev int64) error {
	b, err := json.Marshal(c)
	if err != nil {
		return err
	}
	ctx, cancel := s.rpc(ctx)
	defer cancel()
	k := s.keys.Config()
	resp, err := s.cli.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(k), "=", modRev)).
		Then(clientv3.OpPut(k, string(b))).Commit()
	if err != nil {
		return fmt.Errorf("write cluster config: %w", err)
	}
	if !resp.Succeeded {
		return errors.New("cluster config changed concurrently; read it again and retry")
	}
	return nil
}

// CancelSwitchover deletes a pending switchover request, whatever it is.
func (s *Store) CancelSwitchover(ctx context.Context) (bool, error) {
	ctx, cancel := s.rpc(ctx)
	defer cancel()
	resp, err := s.cli.Delete(ctx, s.keys.Switchover())
	if err != nil {
		return false, fmt.Errorf("cancel switchover: %w", err)
	}
	return resp.Deleted > 0, nil
}

// ClearSwitchover deletes the switchover request read at modRev.
func (s *Store) ClearSwitchover(ctx context.Context, modRev int64) error {
	return s.ClearRequest(ctx, s.keys.Switchover(), modRev)
}

// ClearFailover deletes the failover request read at modRev.
func (s *Store) ClearFailover(ctx context.Context, modRev int64) error {
	return s.ClearRequest(ctx, s.keys.Failover(), modRev)
}
