package election

import (
	"context"
	"errors"
	"github.com/cifha/cifha/internal/testutil"
	"testing"
	"time"
)

// TestHandoff: the leader key moves to the candidate's lease in one
// transaction; the candidate adopts it (its leader-only writes work), the
// old leader's are refused, and a handoff to a lease the candidate no longer
// holds is refused.
func TestHandoff(t *testing.T) {
	ep := testutil.Etcd(t)
	ctx := context.Background()
	a := newNode(t, ep, "a", 3*time.Second)
	b := newNode(t, ep, "b", 3*time.Second)
	if ok, err := a.store.Acquire(ctx, LastLeader{Timeline: 1}, 0); err != nil || !ok {
		t.Fatalf("acquire %v %v", ok, err)
	}
	if err := b.store.PutMember(ctx, Member{Role: "replica", State: "streaming"}); err != nil {
		t.Fatal(err)
	}
	c, _ := a.store.Read(ctx)
	bLease := c.MemberLease["b"]
	if bLease != int64(b.sess.State().ID) {
		t.Fatalf("member lease %d, session %d", bLease, b.sess.State().ID)
	}
	if _, err := a.store.RequestSwitchover(ctx, SwitchoverRequest{ID: "x", From: "a", To: "b"}); err != nil {
		t.Fatal(err)
	}
	c, _ = a.store.Read(ctx)
	swRev := c.Switchover.ModRev
	if err := a.store.Handoff(ctx, "b", bLease+1, LastLeader{Timeline: 1, LSN: "0/10"}, swRev); err == nil {
		t.Fatal("handoff to a wrong lease succeeded")
	}
	if err := a.store.Handoff(ctx, "b", bLease, LastLeader{Timeline: 1, LSN: "0/10"}, swRev+100); err == nil {
		t.Fatal("handoff for a request that is not the one read succeeded")
	}
	if err := a.store.SetPause(ctx, true, "test"); err != nil {
		t.Fatal(err)
	}
	if err := a.store.Handoff(ctx, "b", bLease, LastLeader{Timeline: 1, LSN: "0/10"}, swRev); err == nil {
		t.Fatal("handoff while paused succeeded")
	}
	if err := a.store.SetPause(ctx, false, "test"); err != nil {
		t.Fatal(err)
	}
	if err := a.store.Handoff(ctx, "b", bLease, LastLeader{Timeline: 1, LSN: "0/10"}, swRev); err != nil {
		t.Fatal(err)
	}
	c, _ = b.store.Read(ctx)
	if c.Leader == nil || c.Leader.Name != "b" || c.Leader.Lease != bLease || c.Switchover != nil {
		t.Fatalf("after handoff: leader %+v switchover %+v", c.Leader, c.Switchover)
	}
	if c.LastLeader == nil || c.LastLeader.Name != "b" || c.LastLeader.LSN != "0/10" {
		t.Fatalf("last leader %+v", c.LastLeader)
	}
	if !b.store.Holds(c) || a.store.Holds(c) {
		t.Fatal("holds")
	}
	if err := b.store.PutLastLeader(ctx, LastLeader{Timeline: 2, LSN: "0/20"}); err != nil {
		t.Fatalf("new leader's write: %v", err)
	}
	if err := a.store.PutLastLeader(ctx, LastLeader{Timeline: 1}); !errors.Is(err, ErrNotLeader) {
		t.Fatalf("old leader's write: %v", err)
	}
	if err := a.store.Handoff(ctx, "b", bLease, LastLeader{}, swRev); err == nil {
		t.Fatal("a second handoff by the old leader succeeded")
	}
	if err := b.store.AppendHistory(ctx, HistoryRecord{NewLeader: "b"}); err != nil {
		t.Fatal(err)
	}
}
