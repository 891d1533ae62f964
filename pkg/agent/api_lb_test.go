package agent

import (
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/cifha/cifha/pkg/agent/agenttest"
	"github.com/cifha/cifha/pkg/election"
	"github.com/cifha/cifha/pkg/ha"
)

// The load-balancer and orchestrator endpoints answer with Patroni's
// meanings (docs/operations.md).
func TestLoadBalancerEndpoints(t *testing.T) {
	clk := agenttest.NewClock(t0)
	pg := &agenttest.Postgres{Up: true}
	a := New(Options{Name: "db2", PG: pg, DCS: agenttest.NewDCS("db2", election.LeaseState{}), Now: clk.Now, TTL: 3 * time.Second, FenceMargin: time.Second})
	h := Handler(a)
	get := func(path string) int {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest(http.MethodGet, path, nil))
		return w.Code
	}
	expect := func(what string, want map[string]int) {
		t.Helper()
		for path, code := range want {
			if got := get(path); got != code {
				t.Errorf("%s: GET %s = %d, want %d", what, path, got, code)
			}
		}
	}
	expect("before the first observation", map[string]int{"/read-write": 503, "/read-only": 503, "/readiness": 503, "/liveness": 503, "/replica": 503})

	half := 0.5
	leaderOf := func(lag []election.ReplicaLag) election.Cluster {
		return election.Cluster{Leader: &election.Leader{Name: "db1", Valid: true},
			Members: map[string]election.Member{"db1": {Name: "db1", CurrentLSN: "0/6000", Replicas: lag}}}
	}
	// A streaming standby 100 bytes and 0.5 s behind, as the leader sees it.
	a.snap.Store(&Snapshot{Member: election.Member{Name: "db2", State: "running", ReplayLSN: "0/5F9C"}, Running: true, InRecovery: true, Streaming: true,
		ObservedAt: t0, Cluster: leaderOf([]election.ReplicaLag{{Name: "db2", LagBytes: 100, LagSeconds: &half}})})
	expect("streaming standby", map[string]int{
		"/read-write": 503, "/primary": 503, "/read-only": 200, "/readiness": 200, "/liveness": 200,
		"/replica": 200, "/replica?lag=1kB": 200, "/replica?lag=100": 200, "/replica?lag=50": 503, "/replica?lag=0": 503,
		"/replica?lag=1s": 200, "/replica?lag=100ms": 503, "/replica?lag=bogus": 400, "/replica?lag=-5s": 400,
	})
	// Not in the leader's view: bytes from the published positions, seconds unknown.
	a.snap.Store(&Snapshot{Member: election.Member{Name: "db2", State: "running", ReplayLSN: "0/6000"}, Running: true, InRecovery: true, Streaming: true,
		ObservedAt: t0, Cluster: leaderOf(nil)})
	expect("standby the leader has not listed", map[string]int{"/replica?lag=0": 200, "/replica?lag=1s": 503})
	// No leader: lag unknown, and unknown is not within any limit.
	a.snap.Store(&Snapshot{Member: election.Member{Name: "db2", State: "running"}, Running: true, InRecovery: true, Streaming: true, ObservedAt: t0})
	expect("standby without a leader", map[string]int{"/replica": 200, "/replica?lag=1GB": 503, "/replica?lag=1h": 503})
	// A standby that does not stream serves nothing.
	a.snap.Store(&Snapshot{Member: election.Member{Name: "db2", State: "running"}, Running: true, InRecovery: true, ObservedAt: t0})
	expect("standby not streaming", map[string]int{"/read-only": 503, "/readiness": 503, "/replica": 503, "/liveness": 200})

	// The primary, its lease valid.
	a.snap.Store(&Snapshot{Member: election.Member{Name: "db2", State: "running"}, Running: true, IsLeader: true,
		Lease: election.LeaseState{ID: 1, ValidUntil: t0.Add(3 * time.Second)}, ObservedAt: t0})
	expect("primary", map[string]int{"/read-write": 200, "/primary": 200, "/read-only": 200, "/readiness": 200, "/replica": 503, "/liveness": 200})
	// Its lease within the fence margin: no longer a writable primary.
	clk.Advance(2500 * time.Millisecond)
	expect("primary at the fence margin", map[string]int{"/read-write": 503, "/read-only": 503, "/liveness": 200})
	// The loop stops observing: dead after ttl on the leader...
	clk.Advance(time.Second)
	expect("leader loop stuck", map[string]int{"/liveness": 503})
	// ...unless it is busy in a long action.
	a.acting.Store(&actingInfo{action: ha.Clone, since: clk.Now()})
	expect("cloning", map[string]int{"/liveness": 200})
	a.acting.Store(&actingInfo{action: ha.Promote, since: clk.Now()})
	expect("stuck promoting", map[string]int{"/liveness": 503})
}
