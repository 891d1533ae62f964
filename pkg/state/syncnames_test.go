package state

import (
	"slices"
	"testing"
)

func TestSyncStandbyNamesRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		v     int
		names []string
		block bool
		want  string
	}{
		{150000, nil, false, ""},
		{150000, []string{"db2"}, false, `FIRST 1 ("db2")`},
		{150000, []string{"db2", "db-3"}, false, `FIRST 2 ("db2", "db-3")`},
		{90600, []string{"db2", "db3"}, false, `2 ("db2", "db3")`},
		{150000, nil, true, `FIRST 1 ("cifha: no synchronous standby")`},
	} {
		got := SyncStandbyNames(tc.v, tc.names, tc.block)
		if got != tc.want {
			t.Errorf("%v %v: got %q want %q", tc.names, tc.block, got, tc.want)
		}
		p := ParseSyncStandbyNames(got)
		if !p.OK || !slices.Equal(p.Names, tc.names) || p.Block != tc.block {
			t.Errorf("parse %q: %+v", got, p)
		}
	}
	for _, bad := range []string{"*", "db2", `ANY 1 ("db2")`, `FIRST 2 ("db2")`, `FIRST 1 (db2)`, `FIRST 1 ("a b")`, `FIRST 0 ()`, `FIRST 2 ("cifha: no synchronous standby", "db2")`} {
		if p := ParseSyncStandbyNames(bad); p.OK {
			t.Errorf("%q parsed as ours: %+v", bad, p)
		}
	}
}

func FuzzParseSyncStandbyNames(f *testing.F) {
	f.Add(`FIRST 2 ("db2", "db3")`)
	f.Add(`1 ("cifha: no synchronous standby")`)
	f.Add(`ANY 1 (*)`)
	f.Fuzz(func(t *testing.T, s string) {
		p := ParseSyncStandbyNames(s)
		if !p.OK {
			return
		}
		// Whatever parses as ours formats back to an equivalent value.
		q := ParseSyncStandbyNames(SyncStandbyNames(150000, p.Names, p.Block))
		if !q.OK || !slices.Equal(q.Names, p.Names) || q.Block != p.Block {
			t.Fatalf("%q -> %+v -> %+v", s, p, q)
		}
	})
}
