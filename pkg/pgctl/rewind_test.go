package pgctl

import "testing"

// TestRewindNotStarted: only a pg_rewind that failed at its first
// connection to the source is retried; one that got further may have
// changed the data directory and is final.
func TestRewindNotStarted(t *testing.T) {
	for _, c := range []struct {
		out  string
		want bool
	}{
		// The lab, 28 % loss (PG 15).
		{`pg_rewind: error: connection to server at "10.231.0.12", port 5432 failed: timeout expired`, true},
		{`pg_rewind: error: connection to server at "10.0.0.2", port 5432 failed: Connection refused
	Is the server running on that host and accepting TCP/IP connections?`, true},
		{`pg_rewind: servers diverged at WAL location 0/5000000 on timeline 3
pg_rewind: rewinding from last common checkpoint at 0/4000060 on timeline 3
pg_rewind: error: could not fetch remote file "base/1/1259": connection to server at "10.0.0.2", port 5432 failed`, false},
		{`pg_rewind: error: could not find common ancestor of the source and target cluster's timelines`, false},
		{`pg_rewind: error: target server must be shut down cleanly`, false},
		{``, false},
	} {
		if got := rewindNotStarted(c.out); got != c.want {
			t.Errorf("%q: %v, want %v", c.out, got, c.want)
		}
	}
}
