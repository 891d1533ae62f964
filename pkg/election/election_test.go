package election

import (
	"context"
	"fmt"
	"github.com/cifha/cifha/internal/tcpproxy"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/cifha/cifha/internal/testutil"
	"github.com/hashicorp/go-hclog"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

type node struct {
	cli    *clientv3.Client
	sess   *Session
	store  *Store
	cancel context.CancelFunc
	done   chan struct{}
}

func newNode(t *testing.T, endpoint, name string, ttl time.Duration) *node {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{endpoint}, DialTimeout: 2 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	log := hclog.New(&hclog.LoggerOptions{Name: name, Level: hclog.Warn, Output: testWriter{t}})
	sess := NewSession(cli, ttl, log, nil)
	ctx, cancel := context.WithCancel(context.Background())
	n := &node{cli: cli, sess: sess, store: NewStore(cli, "test", name, sess, log), cancel: cancel, done: make(chan struct{})}
	go func() { sess.Run(ctx); close(n.done) }()
	t.Cleanup(n.stop)
	testutil.Eventually(t, 5*time.Second, name+" lease", func() error {
		if sess.State().ID == 0 {
			return fmt.Errorf("no lease")
		}
		return nil
	})
	return n
}

func (n *node) stop() {
	n.cancel()
	<-n.done
	n.cli.Close()
}

// crash stops renewing without revoking, like a killed process.
func (n *node) crash() {
	n.cli.Close()
	n.cancel()
	<-n.done
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) { w.t.Log(string(p)); return len(p), nil }

func TestOneInitializerOneLeader(t *testing.T) {
	ep := testutil.Etcd(t)
	ctx := context.Background()
	nodes := []*node{newNode(t, ep, "a", 3*time.Second), newNode(t, ep, "b", 3*time.Second), newNode(t, ep, "c", 3*time.Second)}
	var mu sync.Mutex
	initWins, leaderWins := 0, 0
	var wg sync.WaitGroup
	for _, n := range nodes {
		wg.Add(1)
		go func(n *node) {
			defer wg.Done()
			won, err := n.store.ClaimInitialize(ctx)
			if err != nil {
				t.Error(err)
			}
			led, err := n.store.Acquire(ctx, LastLeader{Timeline: 1}, 0)
			if err != nil {
				t.Error(err)
			}
			mu.Lock()
			if won {
				initWins++
			}
			if led {
				leaderWins++
			}
			mu.Unlock()
		}(n)
	}
	wg.Wait()
	if initWins != 1 || leaderWins != 1 {
		t.Fatalf("initialize winners %d, leader winners %d; want 1 and 1", initWins, leaderWins)
	}
	c, err := nodes[0].store.Read(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if c.Leader == nil || !c.Leader.Valid || c.Initialize == "" || c.LastLeader == nil || c.LastLeader.Name != c.Leader.Name {
		t.Fatalf("cluster %+v", c)
	}
	holders := 0
	for _, n := range nodes {
		if n.store.Holds(c) {
			holders++
		}
	}
	if holders != 1 {
		t.Fatalf("%d holders", holders)
	}
}

// TestLeaseDeadlineIsLowerBound: ValidUntil is measured from the send time
// of the last renewal, so it is never after the moment etcd could expire
// the lease; and a crashed holder's key is free within the ttl.
func TestLeaseDeadlineIsLowerBound(t *testing.T) {
	ep := testutil.Etcd(t)
	ctx := context.Background()
	ttl := 2 * time.Second
	before := time.Now()
	a := newNode(t, ep, "a", ttl)
	st := a.sess.State()
	if st.ValidUntil.Before(before.Add(ttl-10*time.Millisecond)) || st.ValidUntil.After(time.Now().Add(ttl)) {
		t.Fatalf("ValidUntil %v not within [grant send + ttl]", st.ValidUntil.Sub(before))
	}
	// Renewals move the deadline forward.
	testutil.Eventually(t, 3*time.Second, "renewal", func() error {
		if !a.sess.State().ValidUntil.After(st.ValidUntil) {
			return fmt.Errorf("deadline not extended")
		}
		return nil
	})
	if ok, err := a.store.Acquire(ctx, LastLeader{}, 0); !ok || err != nil {
		t.Fatalf("acquire: %v %v", ok, err)
	}
	b := newNode(t, ep, "b", ttl)
	deadline := a.sess.State().ValidUntil
	a.crash()
	testutil.Eventually(t, 4*ttl, "b acquires after a's lease expires", func() error {
		ok, err := b.store.Acquire(ctx, LastLeader{}, 0)
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("key still held")
		}
		if now := time.Now(); now.Before(deadline) {
			t.Errorf("b acquired %v before a's own deadline", deadline.Sub(now))
		}
		return nil
	})
}

func TestGarbageIsIgnoredAndRepaired(t *testing.T) {
	ep := testutil.Etcd(t)
	ctx := context.Background()
	a := newNode(t, ep, "a", 3*time.Second)
	if ok, _ := a.store.Acquire(ctx, LastLeader{}, 0); !ok {
		t.Fatal("acquire")
	}
	if err := a.store.PutMember(ctx, Member{Role: "primary", State: "running"}); err != nil {
		t.Fatal(err)
	}
	k := a.store.Keys()
	for key, val := range map[string]string{k.Member("zz"): `{"name": "zz", "role": `, k.Leader(): `{not json`, k.LastLeader(): `[]`} {
		if _, err := a.cli.Put(ctx, key, val); err != nil {
			t.Fatal(err)
		}
	}
	c, err := a.store.Read(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// The hand-written member key has no lease: ignored (it cannot be a
	// live member), not invalid (which would block a failover).
	if len(c.Invalid) != 2 || len(c.Ignored) != 1 || c.Leader.Valid || c.LastLeader != nil || len(c.Members) != 1 {
		t.Fatalf("garbage not isolated: %+v", c)
	}
	if a.store.Holds(c) || !a.store.OwnsKey(c) {
		t.Fatalf("holds %v owns %v", a.store.Holds(c), a.store.OwnsKey(c))
	}
	if err := a.store.Repair(ctx); err != nil {
		t.Fatal(err)
	}
	c, _ = a.store.Read(ctx)
	if !a.store.Holds(c) {
		t.Fatalf("not repaired: %+v", c.Leader)
	}
	// A key someone else created is never "repaired" away.
	if _, err := a.cli.Delete(ctx, k.Leader()); err != nil {
		t.Fatal(err)
	}
	if _, err := a.cli.Put(ctx, k.Leader(), "b"); err != nil {
		t.Fatal(err)
	}
	if err := a.store.Repair(ctx); err != ErrNotLeader {
		t.Fatalf("repair of a foreign key: %v", err)
	}
	if err := a.store.Resign(ctx); err != nil {
		t.Fatal(err)
	}
	c, _ = a.store.Read(ctx)
	if c.Leader == nil || c.Leader.Name != "b" {
		t.Fatal("resign deleted a key that was not ours")
	}
}

func TestWatchSignalsChanges(t *testing.T) {
	ep := testutil.Etcd(t)
	a := newNode(t, ep, "a", 3*time.Second)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch := a.store.Watch(ctx)
	// The watch registers asynchronously: keep changing the key until one
	// change is seen.
	states := []string{"streaming", "stopped"}
	i := 0
	testutil.Eventually(t, 5*time.Second, "watch event", func() error {
		i++
		if err := a.store.PutMember(ctx, Member{Role: "replica", State: states[i%2]}); err != nil {
			return err
		}
		select {
		case <-ch:
			return nil
		case <-time.After(100 * time.Millisecond):
			return fmt.Errorf("no event")
		}
	})
}

// TestWatchIgnoresPositionUpdates: a member republishing only its positions
// wakes nobody; a role or state change does.
func TestWatchIgnoresPositionUpdates(t *testing.T) {
	ep := testutil.Etcd(t)
	a := newNode(t, ep, "a", 3*time.Second)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch := a.store.Watch(ctx)
	testutil.Eventually(t, 5*time.Second, "watch registered", func() error {
		a.store.PutMember(ctx, Member{Role: "replica", State: fmt.Sprint(time.Now().UnixNano())})
		select {
		case <-ch:
			return nil
		case <-time.After(100 * time.Millisecond):
			return fmt.Errorf("no event")
		}
	})
	a.store.PutMember(ctx, Member{Role: "replica", State: "streaming"})
	// Drain until quiet: late events from the probing above must not be
	// mistaken for what is asserted next.
	for quiet := false; !quiet; {
		select {
		case <-ch:
		case <-time.After(300 * time.Millisecond):
			quiet = true
		}
	}
	for i := 0; i < 5; i++ {
		a.store.PutMember(ctx, Member{Role: "replica", State: "streaming", ReplayLSN: fmt.Sprintf("0/%X", i)})
	}
	select {
	case <-ch:
		t.Fatal("position-only updates woke the watcher")
	case <-time.After(300 * time.Millisecond):
	}
	a.store.PutMember(ctx, Member{Role: "primary", State: "running"})
	select {
	case <-ch:
	case <-time.After(5 * time.Second):
		t.Fatal("role change did not wake")
	}
}

// TestWatchedView: with the watch running, Read answers from the view the
// watch keeps (every change, deletions included, visible after its event),
// and a stale view is refreshed by one read without ever going back in time.
func TestWatchedView(t *testing.T) {
	ep := testutil.Etcd(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	a := newNode(t, ep, "a", 3*time.Second)
	b := newNode(t, ep, "b", 3*time.Second)
	wake := a.store.Watch(ctx)
	testutil.Eventually(t, 5*time.Second, "view synced", func() error {
		a.store.view.mu.Lock()
		defer a.store.view.mu.Unlock()
		if !a.store.view.synced {
			return fmt.Errorf("not yet")
		}
		return nil
	})
	if ok, err := b.store.Acquire(ctx, LastLeader{}, 0); !ok || err != nil {
		t.Fatalf("acquire: %v %v", ok, err)
	}
	<-wake
	testutil.Eventually(t, 5*time.Second, "leader in the view", func() error {
		c, err := a.store.Read(ctx)
		if err != nil || c.Leader == nil || c.Leader.Name != "b" {
			return fmt.Errorf("leader %+v (%v)", c.Leader, err)
		}
		return nil
	})
	if err := b.store.Resign(ctx); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 5*time.Second, "deletion in the view", func() error {
		c, err := a.store.Read(ctx)
		if err != nil || c.Leader != nil {
			return fmt.Errorf("leader %+v (%v)", c.Leader, err)
		}
		return nil
	})
	// A stale view is refreshed by a read, and keeps what it has newer.
	a.store.view.mu.Lock()
	a.store.view.loadedAt = time.Now().Add(-2 * resyncEvery)
	a.store.view.mu.Unlock()
	if c, err := a.store.Read(ctx); err != nil || c.Leader != nil {
		t.Fatalf("resync: leader %+v (%v)", c.Leader, err)
	}
	a.store.view.mu.Lock()
	fresh := time.Since(a.store.view.loadedAt) < resyncEvery
	a.store.view.mu.Unlock()
	if !fresh {
		t.Fatal("view not refreshed")
	}
	cancel()
	testutil.Eventually(t, 5*time.Second, "view dropped with the watch", func() error {
		a.store.view.mu.Lock()
		defer a.store.view.mu.Unlock()
		if a.store.view.synced {
			return fmt.Errorf("still synced")
		}
		return nil
	})
}

// A writable member renews at most every 500 ms; others every ttl/4.
func TestSessionIntervalWhileWritable(t *testing.T) {
	s := NewSession(nil, 7*time.Second, hclog.NewNullLogger(), nil)
	if got := s.Interval(); got != 1750*time.Millisecond {
		t.Fatalf("standby interval %s, want ttl/4", got)
	}
	s.SetWritable(true)
	if got := s.Interval(); got != 500*time.Millisecond {
		t.Fatalf("writable interval %s, want 500ms", got)
	}
	s.SetWritable(false)
	if got := s.Interval(); got != 1750*time.Millisecond {
		t.Fatalf("interval %s after SetWritable(false)", got)
	}
}

// TestRecordsCarryTheTerm: the sync record and last-leader are stamped with
// the writer's tenure of the leader key, and a member that resigns and
// takes the key again has a new term, so its earlier sync record no longer
// matches it (state.SyncState.Of).
func TestRecordsCarryTheTerm(t *testing.T) {
	ep := testutil.Etcd(t)
	ctx := context.Background()
	n := newNode(t, ep, "a", 3*time.Second)
	read := func() Cluster {
		t.Helper()
		c, err := n.store.Read(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if !n.store.Holds(c) {
			t.Fatalf("a does not hold the key: %+v", c.Leader)
		}
		return c
	}
	if ok, err := n.store.Acquire(ctx, LastLeader{Timeline: 1}, 0); err != nil || !ok {
		t.Fatalf("acquire: %v %v", ok, err)
	}
	c := read()
	first := n.store.Term()
	if first == 0 || first != c.Leader.CreateRev {
		t.Fatalf("term %d, leader key created at %d", first, c.Leader.CreateRev)
	}
	if err := n.store.PutSync(ctx, []string{"b"}, false); err != nil {
		t.Fatal(err)
	}
	if err := n.store.PutLastLeader(ctx, LastLeader{Timeline: 1, LSN: "0/100"}); err != nil {
		t.Fatal(err)
	}
	c = read()
	if !c.Sync.Of("a", first) || c.LastLeader.Term != first {
		t.Fatalf("records not stamped with term %d: sync %+v, last-leader %+v", first, c.Sync, c.LastLeader)
	}
	if err := n.store.Resign(ctx); err != nil {
		t.Fatal(err)
	}
	if n.store.Term() != 0 {
		t.Fatalf("term %d after resigning, want 0", n.store.Term())
	}
	if ok, err := n.store.Acquire(ctx, LastLeader{Timeline: 1}, 0); err != nil || !ok {
		t.Fatalf("acquire again: %v %v", ok, err)
	}
	c = read()
	second := n.store.Term()
	if second <= first {
		t.Fatalf("second term %d not after the first %d", second, first)
	}
	if c.Sync.Of("a", second) {
		t.Fatalf("the first term's sync record %+v is taken as the second term's (%d)", c.Sync, second)
	}
}

// proxiedEtcd starts an etcd and a proxy to it: the etcd's own endpoint,
// and the proxy (for faults on the link).
func proxiedEtcd(t *testing.T) (string, *tcpproxy.Proxy) {
	t.Helper()
	direct := testutil.Etcd(t)
	u, err := url.Parse(direct)
	if err != nil {
		t.Fatal(err)
	}
	p, err := tcpproxy.Start("127.0.0.1:0", u.Host)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return direct, p
}

// TestRenewalOverASlowLink: on a link whose round trip (400 ms) is longer
// than a renewal attempt's timeout (ttl/8: 250 ms at ttl 2 s), renewals
// still succeed: a slow attempt is hedged, not dropped and sent again
// (which never finishes there). The fault lab's 200 ms delay fenced a
// healthy primary at ttl 3 s before this.
func TestRenewalOverASlowLink(t *testing.T) {
	_, p := proxiedEtcd(t)
	n := newNode(t, "http://"+p.Addr(), "db1", 2*time.Second)
	n.sess.SetWritable(true)
	p.SetDelay(200 * time.Millisecond)
	renewals := 0
	deadline := time.After(20 * time.Second)
	for renewals < 8 {
		select {
		case <-n.sess.Renewed():
			renewals++
		case <-deadline:
			t.Fatalf("%d renewals in 20 s over a 400 ms round trip", renewals)
		}
		if st := n.sess.State(); st.ID == 0 || !st.ValidUntil.After(time.Now()) {
			t.Fatalf("the lease lapsed on a slow but working link: %+v", st)
		}
	}
}

// TestSilentWatchIsNotTrusted: a watch whose etcd member went silent (a
// black-holed or frozen host: the connection stays open, nothing comes)
// is not used past ttl/2, and is made again on a member that answers. The
// fault lab saw a standby keep an isolated leader's deleted key in its
// view for 10 s, until gRPC's keepalive closed the silent connection.
func TestSilentWatchIsNotTrusted(t *testing.T) {
	direct, p := proxiedEtcd(t)
	n := newNode(t, "http://"+p.Addr(), "db1", 2*time.Second)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	n.store.Watch(ctx)
	testutil.Eventually(t, 5*time.Second, "the watched view", func() error {
		n.store.view.mu.Lock()
		defer n.store.view.mu.Unlock()
		if !n.store.view.synced {
			return fmt.Errorf("not synced")
		}
		return nil
	})
	// The member goes silent; the client is pointed at one that answers
	// (as the guard does).
	p.SetDelay(time.Hour)
	n.cli.SetEndpoints(direct)
	other, err := clientv3.New(clientv3.Config{Endpoints: []string{direct}, DialTimeout: 2 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if _, err := other.Put(ctx, n.store.Keys().Pause(), "x"); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 5*time.Second, "the change through a silent watch", func() error {
		c, err := n.store.Read(ctx)
		if err != nil {
			return err
		}
		if !c.Paused {
			return fmt.Errorf("the view still shows the cluster unpaused")
		}
		return nil
	})
	// And the watch runs again (the view is used, not a read a round).
	testutil.Eventually(t, 5*time.Second, "a live watch again", func() error {
		n.store.view.mu.Lock()
		defer n.store.view.mu.Unlock()
		if !n.store.view.synced || time.Since(n.store.view.heardAt) >= n.store.watchSilence() {
			return fmt.Errorf("no live watch")
		}
		return nil
	})
}
