package pgctl

import "testing"

const controlSample = `pg_control version number:            1300
Catalog version number:               202209061
Database cluster state:               shut down
pg_control last modified:             Wed 25 Nov 2026 10:00:00 PM UTC
Latest checkpoint location:           0/3000028
Latest checkpoint's REDO location:    0/3000028
Latest checkpoint's TimeLineID:       2
`

func TestParseControlData(t *testing.T) {
	c, err := ParseControlData(controlSample)
	if err != nil {
		t.Fatal(err)
	}
	if !c.CleanShutdown() || c.Checkpoint.String() != "0/3000028" || c.Timeline != 2 {
		t.Fatalf("got %+v", c)
	}
	for _, bad := range []string{"", "Database cluster state: in production\n", "Database cluster state: shut down\nLatest checkpoint location: zz\nLatest checkpoint's TimeLineID: 1\n"} {
		if _, err := ParseControlData(bad); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}
