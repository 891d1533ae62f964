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
	for _, c := range []struct {
		name    string
		members []*etcdserverpb.Member
		leader  uint64
		want    uint64
		err     string
	}{
		{"leader here: moved to the first other voter", three, 1, 2, ""},
		{"leader elsewhere: nothing", three, 2, 0, ""},
		{"a learner or an unstarted member is not a target", []*etcdserverpb.Member{m(1, "db1", "10.0.0.11", false), m(2, "db2", "10.0.0.12", true), m(4, "", "10.0.0.14", false), m(3, "cif1", "10.0.0.21", false)}, 1, 3, ""},
		{"every member here: refused", []*etcdserverpb.Member{m(1, "a", "127.0.0.1", false), m(2, "b", "localhost", false)}, 1, 0, "every etcd voting member"},
		{"unknown leader: nothing", three, 9, 0, ""},
	} {
		got, err := transferee(c.members, c.leader, local)
		if got != c.want || (c.err == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), c.err)) {
			t.Errorf("%s: got %d, %v; want %d, %q", c.name, got, err, c.want, c.err)
		}
	}
}
