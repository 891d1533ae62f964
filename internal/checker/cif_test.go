package checker

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/cifha/cifha/internal/cluster"
)

// TestCIFCheck: the CIF node's checks on recorded histories: a handover
// the file and the client followed in time passes; a wrong host, a late
// commit, a late file and a rewrite during a cut from etcd each fail.
func TestCIFCheck(t *testing.T) {
	t0 := time.Date(2026, 12, 7, 1, 0, 0, 0, time.UTC)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	// db1 writable until 1000, db2 from 3000 (a failover).
	spans := map[string][]span{
		"db1": {{at(0), at(10)}, {at(990), at(1000)}},
		"db2": {{at(3000), at(3010)}, {at(5000), at(5010)}, {at(9000), at(9010)}},
	}
	members := map[string]string{"10.0.0.1": "db1", "10.0.0.2": "db2", "10.0.0.3": "db3"}
	p := &cluster.Node{Name: "db2", Addr: "10.0.0.2"}
	late := []cifCommit{{99, "10.0.0.9", at(20000)}} // ends check()'s wait at once
	for _, tc := range []struct {
		name    string
		changes []fileChange
		commits []cifCommit
		cut     [2]time.Time
		want    string // "" passes; else part of the error
	}{
		{"followed in time", []fileChange{{at(3300), "10.0.0.2"}},
			[]cifCommit{{1, "10.0.0.1", at(500)}, {2, "10.0.0.2", at(3350)}}, [2]time.Time{}, ""},
		{"a standby written", []fileChange{{at(3300), "10.0.0.3"}, {at(3400), "10.0.0.2"}},
			[]cifCommit{{2, "10.0.0.2", at(3450)}}, [2]time.Time{}, "10.0.0.3"},
		{"the client late", []fileChange{{at(3300), "10.0.0.2"}},
			[]cifCommit{{2, "10.0.0.2", at(4500)}}, [2]time.Time{}, "first committed"},
		{"the client never", []fileChange{{at(3300), "10.0.0.2"}},
			nil, [2]time.Time{}, "did not commit"},
		{"the file late", []fileChange{{at(8500), "10.0.0.2"}},
			[]cifCommit{{2, "10.0.0.2", at(8600)}}, [2]time.Time{}, "after it first accepted"},
		{"rewritten during a cut", []fileChange{{at(3300), "10.0.0.2"}},
			[]cifCommit{{2, "10.0.0.2", at(3350)}}, [2]time.Time{at(2000), at(9000)}, "while the CIF node was cut"},
		{"late after a cut is fine", []fileChange{{at(9500), "10.0.0.2"}},
			[]cifCommit{{2, "10.0.0.2", at(9600)}}, [2]time.Time{at(2000), at(9400)}, ""},
	} {
		n := &CIFNode{o: CIFNodeOptions{Members: members}, host: "10.0.0.2", changes: tc.changes,
			commits: append(append([]cifCommit(nil), tc.commits...), late...), cut: tc.cut}
		r, err := n.check(context.Background(), p, spans, time.Second)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s: error %v, want one about %q", tc.name, err, tc.want)
		}
		if r.acked != len(tc.commits)+1 {
			t.Errorf("%s: %d acknowledged, want %d", tc.name, r.acked, len(tc.commits)+1)
		}
	}
	// The file naming another host than the primary after the round fails.
	n := &CIFNode{o: CIFNodeOptions{Members: members}, host: "10.0.0.1"}
	if _, err := n.check(context.Background(), p, spans, 100*time.Millisecond); err == nil || !strings.Contains(err.Error(), "not the primary") {
		t.Errorf("stale file: %v", err)
	}
}
