package checker

import (
	"math"
	"strings"
	"testing"
	"time"
)

func TestOverlaps(t *testing.T) {
	t0 := time.Date(2026, 11, 29, 1, 0, 0, 0, time.UTC)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	for _, tc := range []struct {
		name string
		acks map[string][]span
		want int
	}{
		{"one member", map[string][]span{"db1": {{at(0), at(5)}, {at(3), at(8)}}}, 0},
		{"handover with a gap", map[string][]span{"db1": {{at(0), at(5)}}, "db2": {{at(6), at(9)}}}, 0},
		{"touching is not overlapping", map[string][]span{"db1": {{at(0), at(5)}}, "db2": {{at(5), at(9)}}}, 0},
		{"two writable at once", map[string][]span{"db1": {{at(0), at(5)}, {at(20), at(25)}}, "db2": {{at(4), at(9)}, {at(22), at(30)}}}, 2},
	} {
		if got := overlaps(tc.acks); got != tc.want {
			t.Errorf("%s: %d overlaps, want %d", tc.name, got, tc.want)
		}
	}
}

func TestReport(t *testing.T) {
	r := Report{Seed: 7, ByFault: map[Fault]*Stats{HostLoss: {Rounds: 2, Acked: 40, Lost: 1}}}
	if r.OK() {
		t.Fatal("a lost row in synchronous mode must fail the run")
	}
	r.Async = true
	if !r.OK() {
		t.Fatal("asynchronous mode reports lost rows without failing")
	}
	r.ByFault[Switchover] = &Stats{Rounds: 1, Overlaps: 1}
	if r.OK() {
		t.Fatal("an overlap always fails")
	}
	var b strings.Builder
	r.Table(&b)
	if !strings.Contains(b.String(), "seed 7") || !strings.Contains(b.String(), "host-loss") {
		t.Fatalf("table:\n%s", b.String())
	}
}

func TestReportMerge(t *testing.T) {
	var r Report
	r.Merge(Report{Seed: 1, ByFault: map[Fault]*Stats{HostLoss: {Rounds: 2, Acked: 40, MaxUnavailable: 3 * time.Second}}})
	r.Merge(Report{Seed: 2, ByFault: map[Fault]*Stats{HostLoss: {Rounds: 3, Acked: 10, MaxUnavailable: 2 * time.Second, Failures: []string{"round 1: x"}},
		Switchover: {Rounds: 1}}})
	h := r.ByFault[HostLoss]
	if h.Rounds != 5 || h.Acked != 50 || h.MaxUnavailable != 3*time.Second || len(h.Failures) != 1 || r.ByFault[Switchover].Rounds != 1 {
		t.Fatalf("merged: %+v %+v", h, r.ByFault[Switchover])
	}
	if r.OK() {
		t.Fatal("a lane's failure fails the merged run")
	}
}

func TestParsePgbench(t *testing.T) {
	out := `pgbench (15.18 (Debian 15.18-0+deb12u1))
transaction type: <builtin: TPC-B (sort of)>
number of transactions actually processed: 12345
number of failed transactions: 3 (0.024%)
latency average = 4.1 ms
tps = 1953.123456 (without initial connection time)
`
	tps, failed := parsePgbench(out)
	if tps < 1953 || tps > 1954 || failed != 3 {
		t.Fatalf("tps %v failed %d", tps, failed)
	}
}

func TestMetricsParsing(t *testing.T) {
	body := []byte(`# HELP cifha_actions_total Actions taken.
# TYPE cifha_actions_total counter
cifha_actions_total{action="none",member="db1"} 12
cifha_actions_total{action="fence",member="db1"} 1
# HELP cifha_loop_duration_seconds Loop duration.
# TYPE cifha_loop_duration_seconds histogram
cifha_loop_duration_seconds_bucket{le="0.01"} 5
cifha_loop_duration_seconds_bucket{le="0.1"} 9
cifha_loop_duration_seconds_bucket{le="+Inf"} 10
cifha_loop_duration_seconds_sum 0.5
cifha_loop_duration_seconds_count 10
`)
	f, err := parseFamily(body, "cifha_actions_total")
	if err != nil {
		t.Fatal(err)
	}
	if a := actionCounts(f); a["none"] != 12 || a["fence"] != 1 {
		t.Fatalf("actions %v", a)
	}
	f, err = parseFamily(body, "cifha_loop_duration_seconds")
	if err != nil {
		t.Fatal(err)
	}
	bs, err := histBuckets(f)
	if err != nil || len(bs) != 3 || bs[0] != (bucket{0.01, 5}) || bs[1] != (bucket{0.1, 9}) || !math.IsInf(bs[2].le, 1) || bs[2].n != 10 {
		t.Fatalf("buckets %v (%v)", bs, err)
	}
	if _, err := parseFamily([]byte("garbage{"), "x"); err == nil {
		t.Fatal("garbage parsed")
	}
	if _, err := parseFamily(body, "cifha_missing"); err == nil {
		t.Fatal("a missing family was found")
	}
}

func TestForkPoint(t *testing.T) {
	hist := "1\t0/3000148\tno recovery target specified\n\n2\t0/5A000A0\tno recovery target specified\n"
	if got := forkPoint(hist); got != 0x5A000A0 {
		t.Fatalf("fork %x", got)
	}
	if forkPoint("garbage") != 0 {
		t.Fatal("garbage parsed")
	}
}
