package election

import (
	"context"
	"testing"
	"time"

	"github.com/cifha/cifha/internal/testutil"
	"github.com/cifha/cifha/pkg/state"

	"go.etcd.io/etcd/api/v3/mvccpb"
)

// FuzzParseCluster: whatever bytes sit in etcd, parsing never panics, a
// member is accepted only under its own name, and the leader is valid only
// when it is a member name.
func FuzzParseCluster(f *testing.F) {
	f.Add("db1", `{"name":"db1","role":"primary","state":"running"}`, `{"name":"db1","timeline":2}`)
	f.Add("{garbage", `{"name":"db2"`, `[]`)
	f.Add("", `null`, `{"name":""}`)
	keys := KeysFor("c")
	f.Fuzz(func(t *testing.T, leader, member, last string) {
		kvs := []*mvccpb.KeyValue{
			{Key: []byte(keys.Leader()), Value: []byte(leader)},
			{Key: []byte(keys.Member("db1")), Value: []byte(member), Lease: 5},
			{Key: []byte(keys.Member("db2")), Value: []byte(member)}, // no lease: written by hand
			{Key: []byte(keys.Promotion()), Value: []byte(last)},
			{Key: []byte(keys.LastLeader()), Value: []byte(last)},
			{Key: []byte(keys.Initialize()), Value: []byte(leader)},
		}
		c := ParseCluster(keys, 1, kvs)
		if c.Leader == nil || c.Leader.Valid != ValidName(leader) {
			t.Fatalf("leader %+v for %q", c.Leader, leader)
		}
		if m, ok := c.Members["db1"]; ok && m.Name != "db1" {
			t.Fatalf("member accepted under another name: %+v", m)
		}
		if _, ok := c.Members["db1"]; !ok && c.Invalid[keys.Member("db1")] == "" {
			t.Fatal("rejected member not listed as invalid")
		}
		if _, ok := c.Members["db2"]; ok || c.Ignored[keys.Member("db2")] == "" {
			t.Fatal("a lease-less member key was not ignored")
		}
		if c.Promotion == nil {
			t.Fatal("a present promotion claim (readable or not) read as absent")
		}
		if c.LastLeader != nil && !ValidName(c.LastLeader.Name) {
			t.Fatalf("last-leader with invalid name %q", c.LastLeader.Name)
		}
		if c.Initialize == "" {
			t.Fatal("a claimed initialize key read as unclaimed")
		}
	})
}

// FuzzParseRequests: whatever sits in the switchover, failover and config
// keys, parsing never panics, a request is accepted only with valid member
// names, and anything rejected is listed as invalid (never silently absent).
func FuzzParseRequests(f *testing.F) {
	f.Add(`{"id":"x","from":"db1","to":"db2"}`, `{"to":"db2"}`, `{"ttl":"10s","parameters":{"work_mem":"4MB"}}`)
	f.Add(`{"from":"db1"}`, `{`, `{"colour":1}`)
	f.Add(`null`, `{"to":"../x"}`, `{"maximum_lag_on_failover":-1}`)
	keys := KeysFor("c")
	f.Fuzz(func(t *testing.T, sw, fo, cfg string) {
		c := ParseCluster(keys, 1, []*mvccpb.KeyValue{
			{Key: []byte(keys.Switchover()), Value: []byte(sw)},
			{Key: []byte(keys.Failover()), Value: []byte(fo)},
			{Key: []byte(keys.Config()), Value: []byte(cfg), ModRevision: 3},
		})
		if r := c.Switchover; r != nil && (!ValidName(r.From) || !ValidName(r.To)) {
			t.Fatalf("switchover with invalid names: %+v", r)
		}
		if c.Switchover == nil && c.Invalid[keys.Switchover()] == "" {
			t.Fatal("rejected switchover request not listed as invalid")
		}
		if r := c.Failover; r != nil && !ValidName(r.To) {
			t.Fatalf("failover with an invalid name: %+v", r)
		}
		if c.Failover == nil && c.Invalid[keys.Failover()] == "" {
			t.Fatal("rejected failover request not listed as invalid")
		}
		if c.ConfigRev != 3 {
			t.Fatal("config revision lost")
		}
	})
}

// FuzzParseSync: whatever sits in the sync key, it is either a record with
// a valid leader and distinct valid standby names, or listed as invalid
// (which blocks failovers): never silently "asynchronous".
func FuzzParseSync(f *testing.F) {
	f.Add(`{"leader":"db1","members":["db2"]}`)
	f.Add(`{"leader":"db1","members":["db2","db2"]}`)
	f.Add(`{"leader":"db1","members":["db1"],"strict":true}`)
	f.Add(`{"leader":"db1","members":null,"extra":1}`)
	keys := KeysFor("c")
	f.Fuzz(func(t *testing.T, v string) {
		c := ParseCluster(keys, 1, []*mvccpb.KeyValue{{Key: []byte(keys.Sync()), Value: []byte(v), ModRevision: 4}})
		if c.Sync == nil {
			if c.Invalid[keys.Sync()] == "" {
				t.Fatal("rejected sync record not listed as invalid")
			}
			return
		}
		if !ValidName(c.Sync.Leader) || c.Sync.ModRev != 4 {
			t.Fatalf("bad record accepted: %+v", c.Sync)
		}
		seen := map[string]bool{}
		for _, m := range c.Sync.Members {
			if !ValidName(m) || m == c.Sync.Leader || seen[m] {
				t.Fatalf("bad member accepted: %+v", c.Sync)
			}
			seen[m] = true
		}
	})
}

// FuzzParseFailsafe: whatever sits in the failsafe key, it is either a
// list with a valid leader it names, valid member names and API URLs, or
// listed as invalid with its revision kept (which blocks taking the
// leader key): never silently "no list".
func FuzzParseFailsafe(f *testing.F) {
	f.Add(`{"leader":"db1","members":{"db1":"http://10.0.0.1:8008","db2":"https://db2:8008"}}`)
	f.Add(`{"leader":"db1","members":{"db2":"http://10.0.0.2:8008"}}`)
	f.Add(`{"leader":"db1","members":{"db1":"ftp://x"}}`)
	f.Add(`{"leader":"db1","members":{"db1":"http://a\n"},"x":1}`)
	f.Add(`null`)
	keys := KeysFor("c")
	f.Fuzz(func(t *testing.T, v string) {
		c := ParseCluster(keys, 1, []*mvccpb.KeyValue{{Key: []byte(keys.Failsafe()), Value: []byte(v), ModRevision: 4}})
		if c.FailsafeRev != 4 {
			t.Fatalf("revision %d: a failsafe key of any content must guard taking the leader key", c.FailsafeRev)
		}
		if c.Failsafe == nil {
			if c.Invalid[keys.Failsafe()] == "" {
				t.Fatal("rejected failsafe list not listed as invalid")
			}
			return
		}
		if !ValidName(c.Failsafe.Leader) || !c.Failsafe.Has(c.Failsafe.Leader) {
			t.Fatalf("bad list accepted: %+v", c.Failsafe)
		}
		for name, u := range c.Failsafe.Members {
			if !ValidName(name) || state.ValidAPIURL(u) != nil {
				t.Fatalf("bad member accepted: %q %q", name, u)
			}
		}
	})
}

// TestAcquireGuardedByFailsafeList: the leader-key transaction fails if
// the failsafe list changed since the caller read it.
func TestAcquireGuardedByFailsafeList(t *testing.T) {
	ep := testutil.Etcd(t)
	ctx := context.Background()
	a := newNode(t, ep, "a", 3*time.Second)
	if ok, err := a.store.Acquire(ctx, LastLeader{}, 0); !ok || err != nil {
		t.Fatalf("acquire: %v %v", ok, err)
	}
	if err := a.store.PutFailsafe(ctx, map[string]string{"a": "http://127.0.0.1:8008"}); err != nil {
		t.Fatal(err)
	}
	c, err := a.store.ReadFresh(ctx)
	if err != nil || c.Failsafe == nil || c.FailsafeRev == 0 {
		t.Fatalf("list not read back: %+v %v", c.Failsafe, err)
	}
	rev := c.FailsafeRev
	if err := a.store.Resign(ctx); err != nil {
		t.Fatal(err)
	}
	b := newNode(t, ep, "b", 3*time.Second)
	if ok, err := b.store.Acquire(ctx, LastLeader{}, 0); ok || err != nil {
		t.Fatalf("acquire against a stale view of the list (absent): ok %v err %v", ok, err)
	}
	if ok, err := b.store.Acquire(ctx, LastLeader{}, rev); !ok || err != nil {
		t.Fatalf("acquire against the list as it is: ok %v err %v", ok, err)
	}
}
