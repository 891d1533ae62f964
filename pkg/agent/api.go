package agent

import (
	"encoding/json"
	"net/http"
	"sort"
	"time"

	"github.com/cifha/cifha/pkg/election"
)

// StatusResponse is the body of GET /status.
type StatusResponse struct {
	Self     election.Member   `json:"self"`
	IsLeader bool              `json:"is_leader"`
	Leader   string            `json:"leader"`
	Members  []election.Member `json:"members"`
	// Invalid lists keys in etcd the agent ignores, with why.
	Invalid map[string]string `json:"invalid,omitempty"`
	DCSErr  string            `json:"dcs_error,omitempty"`
	// LeaseValidFor is how long this agent's lease is known to be valid.
	LeaseValidFor string    `json:"lease_valid_for,omitempty"`
	Plan          string    `json:"plan"`
	ObservedAt    time.Time `json:"observed_at"`
}

// Handler serves the agent's read-only API:
//
//	GET /health   200 when postgres is running
//	GET /primary  200 only on the lease holder whose postgres is read-write
//	GET /replica  200 only on a streaming standby
//	GET /status   JSON: this member and the cluster as last observed
//
// Each answers 503 otherwise (HAProxy's httpchk treats that as down).
func Handler(a *Agent) http.Handler {
	mux := http.NewServeMux()
	check := func(ok func(s *Snapshot, now time.Time) bool) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			if r.Method != http.MethodGet && r.Method != http.MethodHead && r.Method != http.MethodOptions {
				http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
				return
			}
			s := a.Snapshot()
			code := http.StatusServiceUnavailable
			if s != nil && ok(s, a.now()) {
				code = http.StatusOK
			}
			writeJSON(w, code, statusOf(s, a.now()))
		}
	}
	mux.HandleFunc("/health", check(func(s *Snapshot, _ time.Time) bool { return s.Running && a.opt.PG.Running() }))
	mux.HandleFunc("/primary", check(func(s *Snapshot, now time.Time) bool {
		// The lease is checked again now: a snapshot taken before the lease
		// lapsed must not keep routing writes here.
		return s.IsLeader && s.Lease.Held(now) && s.Running && !s.InRecovery && s.Member.State == "running" && a.opt.PG.Running()
	}))
	mux.HandleFunc("/replica", check(func(s *Snapshot, _ time.Time) bool { return s.Running && s.Streaming && a.opt.PG.Running() }))
	mux.HandleFunc("/status", check(func(s *Snapshot, _ time.Time) bool { return true }))
	return mux
}

func statusOf(s *Snapshot, now time.Time) StatusResponse {
	if s == nil {
		return StatusResponse{Plan: "starting"}
	}
	r := StatusResponse{Self: s.Member, IsLeader: s.IsLeader, Invalid: s.Cluster.Invalid, DCSErr: s.DCSErr,
		Plan: s.Plan.Action.String() + ": " + s.Plan.Reason, ObservedAt: s.ObservedAt}
	if l := s.Cluster.Leader; l != nil && l.Valid {
		r.Leader = l.Name
	}
	if s.Lease.Held(now) {
		r.LeaseValidFor = s.Lease.ValidUntil.Sub(now).Round(time.Millisecond).String()
	}
	for _, m := range s.Cluster.Members {
		r.Members = append(r.Members, m)
	}
	sort.Slice(r.Members, func(i, j int) bool { return r.Members[i].Name < r.Members[j].Name })
	return r
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}
