package state

import (
	"strconv"
	"testing"
)

// Lag in seconds is 0 for a standby that has replayed everything (an idle
// cluster is not behind however long ago the last commit was), postgres'
// replay_lag while it has not, and unknown when postgres shows none.
func TestReplayLagSeconds(t *testing.T) {
	for _, tc := range []struct {
		cur, rep LSN
		lag      float64
		want     string
	}{
		{0x5000, 0x5000, -1, "0"},
		{0x5000, 0x5000, 3.2, "0"}, // a stale measurement after catching up
		{0x6000, 0x5000, 0.25, "0.25"},
		{0x6000, 0x5000, -1, "unknown"},
		{0x6000, 0, -1, "unknown"},
	} {
		got := "unknown"
		if v := ReplayLagSeconds(tc.cur, tc.rep, tc.lag); v != nil {
			got = strconv.FormatFloat(*v, 'f', -1, 64)
		}
		if got != tc.want {
			t.Errorf("ReplayLagSeconds(%s, %s, %v) = %s, want %s", tc.cur, tc.rep, tc.lag, got, tc.want)
		}
	}
}
