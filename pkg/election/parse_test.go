package election

import (
	"testing"

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
			{Key: []byte(keys.Member("db1")), Value: []byte(member)},
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
		if c.LastLeader != nil && !ValidName(c.LastLeader.Name) {
			t.Fatalf("last-leader with invalid name %q", c.LastLeader.Name)
		}
		if c.Initialize == "" {
			t.Fatal("a claimed initialize key read as unclaimed")
		}
	})
}
