package election

import (
	"strings"
	"testing"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
)

// TestTransferee: etcd's leader is moved only when it is on this host, to
// a voting member that is not, and never when there is none.
func TestTransferee(t *testing.T) {
	m := func(id uint64, name, addr string, learner bool) *etcdserverpb.Member {
		return &etcdserverpb.Member{ID: id, Name: name, ClientURLs: []string{"http://" + addr + ":2379"},
			PeerURLs: []string{"http://" + addr + ":2380"}, IsLearner: learner}
	}
	three := []*etcdserverpb.Member{m(1, "db1", "10.0.0.11", false), m(2, "db2", "10.0.0.12", false), m(3, "cif1", "10.0.0.21", false)}
	local := []string{"127.0.0.1", "10.0.0.11", "localhost"}
	all := map[uint64]bool{1: true, 2: true, 3: true, 4: true}
	for _, c := range []struct {
		name    string
		members []*etcdserverpb.Member
		leader  uint64
		ready   map[uint64]bool
		want    uint64
		err     string
	}{
		{"leader here: moved to the first other voter", three, 1, all, 2, ""},
		{"leader elsewhere: nothing", three, 2, all, 0, ""},
		{"a learner or an unstarted member is not a target", []*etcdserverpb.Member{m(1, "db1", "10.0.0.11", false), m(2, "db2", "10.0.0.12", true), m(4, "", "10.0.0.14", false), m(3, "cif1", "10.0.0.21", false)}, 1, all, 3, ""},
		{"every member here: refused", []*etcdserverpb.Member{m(1, "a", "127.0.0.1", false), m(2, "b", "localhost", false)}, 1, all, 0, "every etcd voting member"},
		{"unknown leader: nothing", three, 9, all, 0, ""},
		// The lab's false failover: etcd's leader (cif1) frozen, db1 (the
		// primary's host) elected next; db2 is the only one to move to.
		{"a frozen member is not a target", []*etcdserverpb.Member{m(3, "cif1", "10.0.0.21", false), m(1, "db1", "10.0.0.11", false), m(2, "db2", "10.0.0.12", false)}, 1, map[uint64]bool{2: true}, 2, ""},
		{"no member ready: stays, asked again later", three, 1, map[uint64]bool{}, 0, "no etcd member on another host"},
	} {
		got, err := transferee(c.members, c.leader, local, c.ready)
		if got != c.want || (c.err == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), c.err)) {
			t.Errorf("%s: got %d, %v; want %d, %q", c.name, got, err, c.want, c.err)
		}
	}
}

// TestCaughtUp: only members that answered, within transferLag of the
// leader's applied index, and never the leader itself; nobody when the
// leader did not answer.
func TestCaughtUp(t *testing.T) {
	got := caughtUp(map[uint64]uint64{1: 5000, 2: 4500, 3: 3000}, 1)
	if len(got) != 1 || !got[2] {
		t.Errorf("caught up: %v, want only 2", got)
	}
	if got := caughtUp(map[uint64]uint64{2: 4500}, 1); len(got) != 0 {
		t.Errorf("leader unanswered: %v, want none", got)
	}
}
