package election

import (
	"context"
	"encoding/json"
	"fmt"
	"github.com/cifha/cifha/pkg/ha"
	"github.com/cifha/cifha/pkg/state"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/metadata"
)

// Keys builds the etcd keys of one cluster.
type Keys struct{ Prefix string }

// KeysFor returns the keys of cluster.
func KeysFor(cluster string) Keys { return Keys{Prefix: "/cifha/" + cluster + "/"} }

// Leader is the leader key.
func (k Keys) Leader() string { return k.Prefix + "leader" }

// Initialize is the key naming the member that bootstraps the cluster.
func (k Keys) Initialize() string { return k.Prefix + "initialize" }

// Pause is the maintenance-mode key; present means paused.
func (k Keys) Pause() string { return k.Prefix + "pause" }

// LastLeader is the record of the latest leadership.
func (k Keys) LastLeader() string { return k.Prefix + "last-leader" }

// Promotion is the promotion-claim key (lease-less; see state.PromotionClaim).
func (k Keys) Promotion() string { return k.Prefix + "promotion" }

// Sync is the synchronous-replication record (state.SyncState).
func (k Keys) Sync() string { return k.Prefix + "sync" }

// Failsafe is the DCS failsafe member list (state.FailsafeState).
func (k Keys) Failsafe() string { return k.Prefix + "failsafe" }

// Member is member name's key.
func (k Keys) Member(name string) string { return k.Prefix + "members/" + name }

// Store is one member's access to the cluster's keys.
type Store struct {
	cli   *clientv3.Client
	keys  Keys
	name  string
	sess  *Session
	log   hclog.Logger
	rpcTO time.Duration

	// leaderRev is the create revision of the leader key this agent
	// acquired (or was handed by a switchover), 0 if none; leader-only
	// writes compare it.
	leaderRev int64
	// termRev is the revision at which this agent became the holder; it
	// names this term's history record.
	termRev int64

	// view is the cluster's keys as the watch keeps them (see Watch).
	view view
	// watchGen numbers the watches, so each gets a gRPC stream of its own.
	watchGen atomic.Int64
}

// view is a copy of the cluster's keys kept current by the watch: an
// idle loop round reads it instead of asking etcd, so an idle agent does
// no work the watch already did. It is used only while the watch runs and
// is caught up (synced); any watch error drops it and Read asks etcd again.
// A full read every resyncEvery guards against anything the watch missed.
type view struct {
	mu       sync.Mutex
	synced   bool
	kvs      map[string]*mvccpb.KeyValue
	rev      int64
	loadedAt time.Time
	// heardAt is when the watch last answered (an event or a progress
	// notification): a view not heard from for watchSilence is not used.
	heardAt time.Time
	// floor is the revision of the last full read that replaced the view:
	// events at or below it are already in it and are ignored (applying a
	// late one could bring back a key deleted since).
	floor int64
}

// resyncEvery bounds how long the watched view is trusted without a full read.
const resyncEvery = 30 * time.Second

// watchProgressEvery and watchSilence: the watch is asked for a progress
// notification every ttl/6, and a watch that has not answered for ttl/2 is
// dead to this agent: its view is not used and the watch is made again.
//
// Why: a watch stream on an etcd member that is black-holed or frozen is
// silent, not broken. The server's require-leader cancel never arrives,
// and after the guard takes the member out of the client's endpoints,
// gRPC closes that connection gracefully, which waits for its open
// streams. Until its keepalive ended the connection (10 s + 2 s) a standby
// kept seeing the isolated leader's key in its view, which etcd had
// deleted long before: the fault lab measured a host isolation's failover
// 10 s late for a standby whose watch ran through the isolated host's
// etcd member.
func (s *Store) watchProgressEvery() time.Duration { return s.sess.TTL() / 6 }
func (s *Store) watchSilence() time.Duration       { return s.sess.TTL() / 2 }

// NewStore returns the Store of member name in cluster, using sess's lease.
func NewStore(cli *clientv3.Client, cluster, name string, sess *Session, log hclog.Logger) *Store {
	return &Store{cli: cli, keys: KeysFor(cluster), name: name, sess: sess, log: log,
		rpcTO: ha.Timing{TTL: sess.TTL()}.RequestTimeout()}
}

// Keys returns the cluster's keys.
func (s *Store) Keys() Keys { return s.keys }

// Lease returns the session's lease state.
func (s *Store) Lease() LeaseState { return s.sess.State() }

func (s *Store) rpc(ctx context.Context) (context.Context, context.CancelFunc) {
	// WithRequireLeader: a member cut off from its quorum leader answers
	// at once with an error instead of letting the request hang.
	return context.WithTimeout(clientv3.WithRequireLeader(ctx), s.rpcTO)
}

// Read returns the cluster: from the watched view when the watch is caught
// up (no request), else by one request to etcd (ReadFresh).
func (s *Store) Read(ctx context.Context) (Cluster, error) {
	s.view.mu.Lock()
	if s.view.synced && time.Since(s.view.loadedAt) >= resyncEvery {
		s.view.mu.Unlock()
		return s.resync(ctx)
	}
	if s.view.synced && time.Since(s.view.heardAt) < s.watchSilence() {
		kvs := make([]*mvccpb.KeyValue, 0, len(s.view.kvs))
		for _, kv := range s.view.kvs {
			kvs = append(kvs, kv)
		}
		rev := s.view.rev
		s.view.mu.Unlock()
		return ParseCluster(s.keys, rev, kvs), nil
	}
	s.view.mu.Unlock()
	return s.ReadFresh(ctx)
}

// resync reads the cluster from etcd and replaces the watched view with it
// (key by key, never with an older version than the view holds).
func (s *Store) resync(ctx context.Context) (Cluster, error) {
	resp, err := s.getAll(ctx)
	if err != nil {
		return Cluster{}, err
	}
	s.view.mu.Lock()
	switch {
	case !s.view.synced:
	case s.view.rev > resp.Header.Revision:
		// The watch already applied newer events: the view is fresher
		// than this read; keep it.
		s.view.loadedAt = time.Now()
	default:
		// This read includes everything the view applied; events still on
		// their way are applied on top, key by key, only when newer.
		s.view.kvs, s.view.rev, s.view.loadedAt, s.view.floor = s.viewOf(resp.Kvs), resp.Header.Revision, time.Now(), resp.Header.Revision
	}
	s.view.mu.Unlock()
	return ParseCluster(s.keys, resp.Header.Revision, resp.Kvs), nil
}

// ReadFresh reads the whole cluster in one linearizable request (for a
// decision that must not rest on the watch's view, such as resuming as
// primary after a stop).
func (s *Store) ReadFresh(ctx context.Context) (Cluster, error) {
	resp, err := s.getAll(ctx)
	if err != nil {
		return Cluster{}, err
	}
	return ParseCluster(s.keys, resp.Header.Revision, resp.Kvs), nil
}

// getAll reads every key under the cluster prefix in one request.
func (s *Store) getAll(ctx context.Context) (*clientv3.GetResponse, error) {
	ctx, cancel := s.rpc(ctx)
	defer cancel()
	resp, err := s.cli.Get(ctx, s.keys.Prefix, clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("read cluster: %w", err)
	}
	return resp, nil
}

// viewOf keeps the keys of a full read that the view holds (all but the
// history records, which no decision reads).
func (s *Store) viewOf(kvs []*mvccpb.KeyValue) map[string]*mvccpb.KeyValue {
	out := make(map[string]*mvccpb.KeyValue, len(kvs))
	for _, kv := range kvs {
		if !strings.HasPrefix(string(kv.Key), s.keys.History()) {
			out[string(kv.Key)] = kv
		}
	}
	return out
}

// ParseCluster turns the keys under the prefix into a Cluster. Unparseable
// values are listed in Invalid and otherwise ignored.
func ParseCluster(keys Keys, rev int64, kvs []*mvccpb.KeyValue) Cluster {
	c := Cluster{Revision: rev, Members: map[string]Member{}, Invalid: map[string]string{}, MemberLease: map[string]int64{}, Ignored: map[string]string{}}
	for _, kv := range kvs {
		k := string(kv.Key)
		switch {
		case k == keys.Leader():
			v := string(kv.Value)
			c.Leader = &Leader{Name: v, Valid: ValidName(v), CreateRev: kv.CreateRevision, ModRev: kv.ModRevision, Lease: kv.Lease}
			if !c.Leader.Valid {
				c.Invalid[k] = fmt.Sprintf("leader key holds %q, not a member name", truncate(v))
			}
		case k == keys.Initialize():
			v := string(kv.Value)
			if ValidName(v) {
				c.Initialize = v
			} else {
				c.Invalid[k] = fmt.Sprintf("initialize key holds %q, not a member name", truncate(v))
				c.Initialize = "?" // claimed, but by nobody we know: do not initdb again
			}
		case k == keys.Pause():
			// Any value pauses: an unreadable pause key is not "not paused".
			c.Paused = true
		case k == keys.Switchover():
			r, err := state.ParseSwitchover(kv.Value)
			if err != nil {
				c.Invalid[k] = err.Error()
				continue
			}
			r.ModRev = kv.ModRevision
			c.Switchover = r
		case k == keys.Failover():
			r, err := state.ParseFailover(kv.Value)
			if err != nil {
				c.Invalid[k] = err.Error()
				continue
			}
			r.ModRev = kv.ModRevision
			c.Failover = r
		case k == keys.Config():
			// An unreadable config is reported and the files' values kept;
			// cifhactl refuses to store one, so only a hand edit gets here.
			cfg, err := ParseDynamicConfig(kv.Value)
			if err != nil {
				c.Invalid[k] = err.Error()
			} else {
				c.Config = cfg
			}
			c.ConfigRev = kv.ModRevision
		case k == keys.LastLeader():
			c.LastLeaderRev = kv.ModRevision
			var ll LastLeader
			if err := json.Unmarshal(kv.Value, &ll); err != nil || !ValidName(ll.Name) {
				c.Invalid[k] = "last-leader record is not valid JSON"
				continue
			}
			c.LastLeader = &ll
			c.LastLeaderRev = kv.ModRevision
		case k == keys.Sync():
			sy, err := state.ParseSync(kv.Value)
			if err != nil {
				// Unknown is not "asynchronous": Invalid blocks failovers.
				c.Invalid[k] = err.Error()
				continue
			}
			sy.ModRev = kv.ModRevision
			c.Sync = sy
		case k == keys.Failsafe():
			fs, err := state.ParseFailsafe(kv.Value)
			if err != nil {
				// Unknown is not "no list": Invalid blocks taking the key.
				c.Invalid[k] = err.Error()
				c.FailsafeRev = kv.ModRevision
				continue
			}
			fs.ModRev = kv.ModRevision
			c.Failsafe = fs
			c.FailsafeRev = kv.ModRevision
		case k == keys.Promotion():
			var pc state.PromotionClaim
			if err := state.DecodeStrict(kv.Value, &pc); err != nil || !ValidName(pc.Name) {
				c.Invalid[k] = "promotion claim is not valid"
				c.Promotion = &state.PromotionClaim{Name: "?", Switchover: "?"} // unknown: never "no claim"
			} else {
				c.Promotion = &pc
			}
			c.PromotionRev = kv.ModRevision
		case strings.HasPrefix(k, keys.Prefix+"members/"):
			name := strings.TrimPrefix(k, keys.Prefix+"members/")
			// Every agent's member key is on its session lease and under a
			// valid name: anything else was written by hand and cannot be a
			// live member. It is ignored (never a candidate, never a
			// blocker) and `cifhactl remove` deletes it.
			if !ValidName(name) {
				c.Ignored[k] = fmt.Sprintf("%q is not a member name", truncate(name))
				continue
			}
			if kv.Lease == 0 {
				c.Ignored[k] = "member key bound to no lease (written by hand?)"
				continue
			}
			m, err := ParseMember(name, kv.Value)
			if err != nil {
				c.Invalid[k] = err.Error()
				continue
			}
			c.Members[name] = m
			c.MemberLease[name] = kv.Lease
		}
	}
	// Two members whose names map to one replication slot ("db-1" and
	// "db_1") would share it: the second by name order is ignored.
	slots := map[string]string{}
	for _, name := range slices.Sorted(maps.Keys(c.Members)) {
		slot := state.SlotName(name)
		if other, dup := slots[slot]; dup {
			c.Ignored[keys.Member(name)] = fmt.Sprintf("its replication slot %q is also member %s's; rename one of them", slot, other)
			delete(c.Members, name)
			delete(c.MemberLease, name)
			continue
		}
		slots[slot] = name
	}
	return c
}

func truncate(s string) string {
	if len(s) > 40 {
		return s[:40] + "..."
	}
	return s
}

// ClaimInitialize claims the right to run initdb for a new cluster. Exactly
// one member wins; it returns whether this one did.
func (s *Store) ClaimInitialize(ctx context.Context) (bool, error) {
	ctx, cancel := s.rpc(ctx)
	defer cancel()
	k := s.keys.Initialize()
	resp, err := s.cli.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(k), "=", 0)).
		Then(clientv3.OpPut(k, s.name)).Commit()
	if err != nil {
		return false, fmt.Errorf("claim initialize: %w", err)
	}
	return resp.Succeeded, nil
}

// ReleaseInitialize gives up the initialize claim after a failed initdb, so
// another member (or a retry) can bootstrap.
func (s *Store) ReleaseInitialize(ctx context.Context) error {
	ctx, cancel := s.rpc(ctx)
	defer cancel()
	k := s.keys.Initialize()
	_, err := s.cli.Txn(ctx).If(clientv3.Compare(clientv3.Value(k), "=", s.name)).Then(clientv3.OpDelete(k)).Commit()
	if err != nil {
		return fmt.Errorf("release initialize: %w", err)
	}
	return nil
}

// Acquire takes the leader key if nobody holds it, binding it to this
// agent's lease and recording last-leader in the same transaction. The
// transaction also requires the failsafe member list to be as the caller
// read it (failsafeRev: its mod revision, 0 for absent): the decision to
// take the key was made against that list (a member missing from it never
// takes the key), and a list written since may exclude this member.
func (s *Store) Acquire(ctx context.Context, rec LastLeader, failsafeRev int64) (bool, error) {
	lease := s.sess.State()
	if lease.ID == 0 {
		return false, ErrNoLease
	}
	rec.Name = s.name
	rec.TTL = int(s.sess.ttl / time.Second)
	b, _ := json.Marshal(rec)
	ctx, cancel := s.rpc(ctx)
	defer cancel()
	k := s.keys.Leader()
	resp, err := s.cli.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(k), "=", 0),
		clientv3.Compare(clientv3.ModRevision(s.keys.Failsafe()), "=", failsafeRev)).
		Then(clientv3.OpPut(k, s.name, clientv3.WithLease(clientv3.LeaseID(lease.ID))), clientv3.OpPut(s.keys.LastLeader(), string(b))).
		Commit()
	if err != nil {
		return false, fmt.Errorf("acquire leader: %w", err)
	}
	if !resp.Succeeded {
		return false, nil
	}
	s.leaderRev = resp.Header.Revision
	s.termRev = resp.Header.Revision
	return true, nil
}

// Term is this agent's tenure of the leader key: the revision at which it
// acquired the key, or at which it adopted a key handed over by a
// switchover (that key keeps its create revision across holders, so the
// create revision alone does not tell one tenure from another). 0 when it
// holds no key.
func (s *Store) Term() int64 {
	if s.leaderRev == 0 {
		return 0
	}
	return s.termRev
}

// Holds reports whether the leader key read in c is this agent's: its name
// on this agent's current lease.
//
// A key handed over by a switchover (put by the old leader, bound to this
// agent's lease) is adopted here: its create revision becomes the guard of
// this agent's leader-only writes.
func (s *Store) Holds(c Cluster) bool {
	l := c.Leader
	lease := s.sess.State()
	held := l != nil && l.Valid && l.Name == s.name && lease.ID != 0 && l.Lease == int64(lease.ID)
	if held && s.leaderRev != l.CreateRev {
		s.leaderRev, s.termRev = l.CreateRev, l.ModRev
	}
	return held
}

// Repair rewrites the leader key this agent acquired when its value was
// overwritten by hand (garbage, or bound to no lease), guarded by the key's
// create revision so it can never take a key someone else created.
func (s *Store) Repair(ctx context.Context) error {
	lease := s.sess.State()
	if lease.ID == 0 {
		return ErrNoLease
	}
	if s.leaderRev == 0 {
		return ErrNotLeader
	}
	ctx, cancel := s.rpc(ctx)
	defer cancel()
	k := s.keys.Leader()
	resp, err := s.cli.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(k), "=", s.leaderRev)).
		Then(clientv3.OpPut(k, s.name, clientv3.WithLease(clientv3.LeaseID(lease.ID)))).Commit()
	if err != nil {
		return fmt.Errorf("repair leader key: %w", err)
	}
	if !resp.Succeeded {
		s.leaderRev = 0
		return ErrNotLeader
	}
	return nil
}

// OwnsKey reports whether the leader key was created by this agent's Acquire.
func (s *Store) OwnsKey(c Cluster) bool {
	return c.Leader != nil && s.leaderRev != 0 && c.Leader.CreateRev == s.leaderRev
}

// ClearStale deletes a leader key that names this member but is bound to
// another lease (left by this member's previous process), if it has not
// changed since it was read (modRev).
func (s *Store) ClearStale(ctx context.Context, modRev int64) error {
	ctx, cancel := s.rpc(ctx)
	defer cancel()
	k := s.keys.Leader()
	_, err := s.cli.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(k), "=", modRev), clientv3.Compare(clientv3.Value(k), "=", s.name)).
		Then(clientv3.OpDelete(k)).Commit()
	if err != nil {
		return fmt.Errorf("clear stale leader key: %w", err)
	}
	return nil
}

// ClearUnbound deletes a leader key that is nobody's term (bound to no
// lease, or to another lease than the member it names), if it is unchanged
// since it was read: same mod revision, same lease.
func (s *Store) ClearUnbound(ctx context.Context, modRev, lease int64) error {
	ctx, cancel := s.rpc(ctx)
	defer cancel()
	k := s.keys.Leader()
	_, err := s.cli.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(k), "=", modRev), clientv3.Compare(clientv3.LeaseValue(k), "=", lease)).
		Then(clientv3.OpDelete(k)).Commit()
	if err != nil {
		return fmt.Errorf("clear leader key: %w", err)
	}
	return nil
}

// DeleteUnboundMember deletes member name's key if it is bound to no lease
// (a live agent's key always is: it is never touched).
func (s *Store) DeleteUnboundMember(ctx context.Context, name string) error {
	ctx, cancel := s.rpc(ctx)
	defer cancel()
	k := s.keys.Member(name)
	_, err := s.cli.Txn(ctx).If(clientv3.Compare(clientv3.LeaseValue(k), "=", 0)).Then(clientv3.OpDelete(k)).Commit()
	if err != nil {
		return fmt.Errorf("delete member key %s: %w", name, err)
	}
	return nil
}

// Resign deletes the leader key if this agent holds it.
func (s *Store) Resign(ctx context.Context) error {
	lease := s.sess.State()
	s.leaderRev = 0
	if lease.ID == 0 {
		return nil
	}
	ctx, cancel := s.rpc(ctx)
	defer cancel()
	k := s.keys.Leader()
	_, err := s.cli.Txn(ctx).If(clientv3.Compare(clientv3.LeaseValue(k), "=", lease.ID), clientv3.Compare(clientv3.Value(k), "=", s.name)).
		Then(clientv3.OpDelete(k)).Commit()
	if err != nil {
		return fmt.Errorf("resign: %w", err)
	}
	return nil
}

// PutMember publishes this member's state on its lease.
func (s *Store) PutMember(ctx context.Context, m Member) error {
	lease := s.sess.State()
	if lease.ID == 0 {
		return ErrNoLease
	}
	m.Name = s.name
	b, err := json.Marshal(m)
	if err != nil {
		return err
	}
	ctx, cancel := s.rpc(ctx)
	defer cancel()
	if _, err := s.cli.Put(ctx, s.keys.Member(s.name), string(b), clientv3.WithLease(clientv3.LeaseID(lease.ID))); err != nil {
		return fmt.Errorf("publish member: %w", err)
	}
	return nil
}

// PutLastLeader updates last-leader, only while this agent holds the key it
// acquired (compared by create revision).
func (s *Store) PutLastLeader(ctx context.Context, rec LastLeader) error {
	if s.leaderRev == 0 {
		return ErrNotLeader
	}
	rec.Name = s.name
	rec.Term = s.termRev
	rec.TTL = int(s.sess.ttl / time.Second)
	b, _ := json.Marshal(rec)
	ctx, cancel := s.rpc(ctx)
	defer cancel()
	resp, err := s.cli.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(s.keys.Leader()), "=", s.leaderRev)).
		Then(clientv3.OpPut(s.keys.LastLeader(), string(b))).Commit()
	if err != nil {
		return fmt.Errorf("write last-leader: %w", err)
	}
	if !resp.Succeeded {
		return ErrNotLeader
	}
	return nil
}

// PutSync writes the synchronous-replication record naming this member as
// leader, only while it holds the key it acquired (compared by create
// revision, like PutLastLeader).
func (s *Store) PutSync(ctx context.Context, members []string, strict bool) error {
	if s.leaderRev == 0 {
		return ErrNotLeader
	}
	b, _ := json.Marshal(SyncState{Leader: s.name, Term: s.termRev, Members: append([]string{}, members...), Strict: strict})
	return s.leaderTxn(ctx, "write sync record", clientv3.OpPut(s.keys.Sync(), string(b)))
}

// PutFailsafe writes the failsafe member list naming this member as
// leader, only while it holds the key it acquired.
func (s *Store) PutFailsafe(ctx context.Context, members map[string]string) error {
	if s.leaderRev == 0 {
		return ErrNotLeader
	}
	b, _ := json.Marshal(state.FailsafeState{Leader: s.name, Members: members})
	return s.leaderTxn(ctx, "write failsafe member list", clientv3.OpPut(s.keys.Failsafe(), string(b)))
}

// DeleteFailsafe removes the failsafe member list (failsafe mode turned
// off), only while this member holds the leader key.
func (s *Store) DeleteFailsafe(ctx context.Context) error {
	if s.leaderRev == 0 {
		return ErrNotLeader
	}
	return s.leaderTxn(ctx, "delete failsafe member list", clientv3.OpDelete(s.keys.Failsafe()))
}

// DeleteSync removes the synchronous-replication record (synchronous mode
// turned off), only while this member holds the leader key.
func (s *Store) DeleteSync(ctx context.Context) error {
	if s.leaderRev == 0 {
		return ErrNotLeader
	}
	return s.leaderTxn(ctx, "delete sync record", clientv3.OpDelete(s.keys.Sync()))
}

// leaderTxn runs op if this agent still holds the leader key it acquired.
func (s *Store) leaderTxn(ctx context.Context, what string, op clientv3.Op) error {
	ctx, cancel := s.rpc(ctx)
	defer cancel()
	resp, err := s.cli.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(s.keys.Leader()), "=", s.leaderRev)).
		Then(op).Commit()
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if !resp.Succeeded {
		return ErrNotLeader
	}
	return nil
}

// Watch signals on the returned channel (coalesced) whenever something other
// members react to changes under the cluster prefix, until ctx ends: any
// change to the leader, initialize or last-leader keys, and a member key
// being created, deleted or changing its role or state. Position-only
// updates of member keys do not wake anyone (every agent publishes every
// loop; waking on those would make the agents wake each other forever).
// The watch is re-established after errors.
func (s *Store) Watch(ctx context.Context) <-chan struct{} {
	out := make(chan struct{}, 1)
	wake := func() {
		select {
		case out <- struct{}{}:
		default:
		}
	}
	go func() {
		defer s.dropView()
		for ctx.Err() == nil {
			s.watchOnce(ctx, wake)
			s.dropView()
			wake() // the view is gone: the loop reads etcd (and sees an error) now
			select {
			case <-ctx.Done():
			case <-time.After(200 * time.Millisecond): // back off before re-watching
			}
		}
	}()
	return out
}

// watchOnce loads the view with one read, then applies the watch's events
// from that revision on until the watch ends. Every change reaches the
// view; only relevant ones wake the loop.
func (s *Store) watchOnce(ctx context.Context, wake func()) {
	resp, err := s.getAll(ctx)
	if err != nil {
		s.log.Debug("watch: initial read failed", "error", err)
		return
	}
	kvs := s.viewOf(resp.Kvs)
	rev := resp.Header.Revision
	s.view.mu.Lock()
	s.view.kvs, s.view.rev, s.view.synced, s.view.loadedAt, s.view.floor = kvs, rev, true, time.Now(), rev
	s.view.heardAt = time.Now()
	s.view.mu.Unlock()
	wctx, stop := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer stop()
	// The client shares one gRPC stream among watches whose contexts carry
	// the same metadata: a watch made again must not join the silent one.
	wctx = metadata.AppendToOutgoingContext(wctx, "cifha-watch", strconv.FormatInt(s.watchGen.Add(1), 10))
	wch := s.cli.Watch(wctx, s.keys.Prefix, clientv3.WithPrefix(), clientv3.WithPrevKV(), clientv3.WithRev(rev+1))
	go func() {
		t := time.NewTicker(s.watchProgressEvery())
		defer t.Stop()
		for {
			select {
			case <-wctx.Done():
				return
			case <-t.C:
			}
			s.view.mu.Lock()
			silent := time.Since(s.view.heardAt)
			s.view.mu.Unlock()
			if silent >= s.watchSilence() {
				s.log.Warn("etcd watch silent; watching again", "silent_for", silent.Round(time.Millisecond))
				stop()
				return
			}
			_ = s.cli.RequestProgress(wctx) // answered on the watch itself
		}
	}()
	for wr := range wch {
		s.view.mu.Lock()
		s.view.heardAt = time.Now()
		s.view.mu.Unlock()
		if err := wr.Err(); err != nil {
			s.log.Debug("watch error", "error", err)
			return
		}
		if wr.Canceled || wr.CompactRevision != 0 {
			return
		}
		relevant := false
		s.view.mu.Lock()
		for _, ev := range wr.Events {
			k := string(ev.Kv.Key)
			if strings.HasPrefix(k, s.keys.History()) {
				continue
			}
			if ev.Kv.ModRevision <= s.view.floor {
				// Already in the view (a resync read it).
			} else if cur, ok := s.view.kvs[k]; ok && cur.ModRevision >= ev.Kv.ModRevision {
				// Already newer in the view.
			} else if ev.Type == clientv3.EventTypeDelete {
				delete(s.view.kvs, k)
			} else {
				s.view.kvs[k] = ev.Kv
			}
			if s.relevant(ev) {
				relevant = true
			}
		}
		if wr.Header.Revision > s.view.rev {
			s.view.rev = wr.Header.Revision
		}
		s.view.mu.Unlock()
		if relevant {
			wake()
		}
	}
}

func (s *Store) dropView() {
	s.view.mu.Lock()
	s.view.synced, s.view.kvs = false, nil
	s.view.mu.Unlock()
}

func (s *Store) relevant(ev *clientv3.Event) bool {
	k := string(ev.Kv.Key)
	if k == s.keys.LastLeader() && ev.Type != clientv3.EventTypeDelete && ev.PrevKv != nil {
		// The leader republishes its WAL position every loop: only a new
		// name or timeline is news (the lag gate reads the position when
		// it needs it, on its own round).
		var a, b struct {
			Name     string
			Timeline int
			From     string `json:"switchover_from"`
		}
		if json.Unmarshal(ev.Kv.Value, &a) == nil && json.Unmarshal(ev.PrevKv.Value, &b) == nil && a == b {
			return false
		}
		return true
	}
	if strings.HasPrefix(k, s.keys.History()) {
		return false // for people (cifhactl history), never for a decision
	}
	if !strings.HasPrefix(k, s.keys.Prefix+"members/") {
		return true
	}
	if ev.Type == clientv3.EventTypeDelete || ev.PrevKv == nil || ev.Kv.Version == 1 {
		return true
	}
	var a, b struct{ Role, State string }
	if json.Unmarshal(ev.Kv.Value, &a) != nil || json.Unmarshal(ev.PrevKv.Value, &b) != nil {
		return true
	}
	return a != b
}

// History is the prefix of the leader-change records.
func (k Keys) History() string { return k.Prefix + "history/" }

// AppendHistory records a leader change. It is written only while this agent
// holds the key it acquired; the key name sorts by etcd revision.
func (s *Store) AppendHistory(ctx context.Context, rec HistoryRecord) error {
	if s.leaderRev == 0 {
		return ErrNotLeader
	}
	b, _ := json.Marshal(rec)
	ctx, cancel := s.rpc(ctx)
	defer cancel()
	key := fmt.Sprintf("%s%020d", s.keys.History(), s.termRev)
	resp, err := s.cli.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(s.keys.Leader()), "=", s.leaderRev)).
		Then(clientv3.OpPut(key, string(b))).Commit()
	if err != nil {
		return fmt.Errorf("append history: %w", err)
	}
	if !resp.Succeeded {
		return ErrNotLeader
	}
	return nil
}

// ReadHistory returns the leader changes in order; records that do not
// parse are skipped and counted.
func ReadHistory(ctx context.Context, cli *clientv3.Client, keys Keys) ([]HistoryRecord, int, error) {
	resp, err := cli.Get(ctx, keys.History(), clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend))
	if err != nil {
		return nil, 0, fmt.Errorf("read history: %w", err)
	}
	var out []HistoryRecord
	bad := 0
	for _, kv := range resp.Kvs {
		var r HistoryRecord
		if err := json.Unmarshal(kv.Value, &r); err != nil {
			bad++
			continue
		}
		out = append(out, r)
	}
	return out, bad, nil
}

// SetPause turns maintenance mode on or off for the whole cluster.
func (s *Store) SetPause(ctx context.Context, on bool, by string) error {
	ctx, cancel := s.rpc(ctx)
	defer cancel()
	var err error
	if on {
		b, _ := json.Marshal(map[string]any{"by": by, "at": time.Now().UTC()})
		_, err = s.cli.Put(ctx, s.keys.Pause(), string(b))
	} else {
		_, err = s.cli.Delete(ctx, s.keys.Pause())
	}
	if err != nil {
		return fmt.Errorf("set pause=%v: %w", on, err)
	}
	return nil
}
