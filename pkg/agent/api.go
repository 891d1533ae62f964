package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/cifha/cifha/pkg/api"
	"github.com/cifha/cifha/pkg/archive"
	"github.com/cifha/cifha/pkg/ha"
	"net/http"
	"sort"
	"strings"
	"time"

	"github.com/cifha/cifha/pkg/config"
	"github.com/cifha/cifha/pkg/pgctl"
)

// Handler serves the agent's read-only API:
//
//	GET /health      200 when postgres is running
//	GET /primary     200 only on the lease holder whose postgres is read-write
//	GET /read-write  the same (Patroni's name)
//	GET /replica     200 only on a streaming standby; ?lag=16MB or ?lag=10s
//	                 also needs its replay lag, as the leader last published
//	                 it, at most that (unknown lag: 503); a bad value is 400
//	GET /read-only   200 on the primary and on a streaming standby
//	GET /readiness   200 when postgres serves in its role (/read-only's rule)
//	GET /liveness    200 while the HA loop runs: its last observation is at
//	                 most ttl old (2 ttl on a standby), or it is busy in a
//	                 long action (clone, bootstrap, rewind, reinit)
//	GET /status      JSON: this member and the cluster as last observed
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
			st := statusOf(s, a.now())
			st.MaxLagOnFailover = a.maxLag.Load()
			if wd := a.opt.Watchdog; wd != nil {
				st.FenceWatchdogError = wd.Err()
			}
			st.RestartNeeded = a.RestartNeeded()
			if s != nil {
				st.LoopInterval = s.LoopInterval.String()
				st.SynchronousMode = "off"
				if s.Sync.On {
					st.SynchronousMode = "on"
					if s.Sync.Strict {
						st.SynchronousMode = "strict"
					}
				}
				st.Sync = s.Cluster.Sync
				st.FailsafeMode, st.Failsafe = s.Failsafe, s.Cluster.Failsafe
				if left := s.Cover.Until.Sub(a.now()); s.Cover.Lease != 0 && left > 0 {
					st.FailsafeCoverFor = left.Round(time.Millisecond).String()
				}
				if pr := s.Promise; pr.Leader != "" && a.now().Before(pr.Until) {
					st.FailsafePromise = fmt.Sprintf("%s for %s", pr.Leader, pr.Until.Sub(a.now()).Round(time.Millisecond))
				}
			}
			writeJSON(w, code, st)
		}
	}
	mux.HandleFunc("/health", check(func(s *Snapshot, _ time.Time) bool { return s.Running && a.opt.PG.Running() }))
	primary := func(s *Snapshot, now time.Time) bool {
		// The fence rule is applied again now: a snapshot taken before the
		// lease ran low must not keep routing writes here after the fence.
		return s.IsLeader && ha.MayStayWritable(now, s.Lease, a.opt.FenceMargin) && s.Running && !s.InRecovery && s.Member.State == "running" && a.opt.PG.Running()
	}
	replica := func(s *Snapshot, _ time.Time) bool { return s.Running && s.Streaming && a.opt.PG.Running() }
	readable := func(s *Snapshot, now time.Time) bool { return primary(s, now) || replica(s, now) }
	mux.HandleFunc("/primary", check(primary))
	mux.HandleFunc("/read-write", check(primary))
	mux.HandleFunc("/read-only", check(readable))
	mux.HandleFunc("/readiness", check(readable))
	mux.HandleFunc("/replica", func(w http.ResponseWriter, r *http.Request) {
		maxLag, err := parseLagLimit(r.URL.Query().Get("lag"))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		check(func(s *Snapshot, now time.Time) bool { return replica(s, now) && maxLag.allows(ownLag(s, a.opt.Name)) })(w, r)
	})
	mux.HandleFunc("/liveness", check(func(_ *Snapshot, now time.Time) bool { return a.Alive(now) }))
	// /status and /wal carry the cluster's details; api.protect_reads puts
	// them behind the control credentials. /health, /primary and /replica
	// stay open for load balancers.
	mux.HandleFunc("/status", a.protect(check(func(s *Snapshot, _ time.Time) bool { return true })))
	a.controlRoutes(mux)
	// DCS failsafe mode: a leader cut off from etcd asks for a promise.
	mux.HandleFunc("/failsafe", a.postFailsafe)
	// Prometheus metrics (docs/operations.md, deploy/prometheus): open like
	// /health unless api.protect_reads.
	metrics := a.metrics.Handler()
	mux.HandleFunc("/metrics", a.protect(func(w http.ResponseWriter, r *http.Request) { metrics.ServeHTTP(w, r) }))
	// /wal reads postgres now (not the last snapshot): failover candidates
	// compare their positions with it once the leader is gone.
	mux.HandleFunc("/wal", a.protect(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet {
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), time.Second)
		defer cancel()
		resp := api.WALResponse{NoFailover: a.opt.NoFailover, FailoverPriority: a.opt.FailoverPriority, Running: a.opt.PG.Running(), StreamedAgoMS: -1}
		if at := a.streamedAt.Load(); at != 0 {
			resp.StreamedAgoMS = a.now().Sub(time.Unix(0, at)).Milliseconds()
		}
		st, err := a.opt.PG.Status(ctx)
		if err != nil {
			// Running but unreadable (busy, starting, timed out) is not
			// "no candidate": the caller must treat it as unknown.
			resp.Error = err.Error()
			writeJSON(w, http.StatusServiceUnavailable, resp)
			return
		}
		resp.InRecovery, resp.Timeline = st.InRecovery, max(st.Timeline, int(a.streamedTL.Load()))
		resp.ReceiveLSN, resp.ReplayLSN, resp.ReplayPaused = st.ReceiveLSN.String(), st.ReplayLSN.String(), st.ReplayPaused
		writeJSON(w, http.StatusOK, resp)
	}))
	// Archive mode "peers": the primary's segments arrive here, and
	// standbys fetch what they lack (the control credentials: WAL holds
	// every row).
	if a.opt.ArchiveDir != "" {
		mux.Handle("/archive/", archive.Handler(a.opt.ArchiveDir, 1<<30+1<<20, func(r *http.Request) bool {
			if a.opt.RequireClientCert && (r.TLS == nil || len(r.TLS.VerifiedChains) == 0) {
				return false // the same rule as the control endpoints
			}
			return a.authorized(r)
		}))
	}
	// Every response names the member, so a preflight (cifha doctor) can
	// tell this host's own agent from another program on its port.
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Cifha-Member", a.opt.Name)
		mux.ServeHTTP(w, r)
	})
}

// HTTPPeers implements Peers over the members' HTTP APIs. For members with
// api.protect_reads, give it a client from WithToken.
type HTTPPeers struct{ Client *http.Client }

// Candidate implements Peers.
func (p HTTPPeers) Candidate(ctx context.Context, apiURL string) (ha.Candidate, error) {
	if apiURL == "" {
		return ha.Candidate{}, errors.New("no API URL published")
	}
	var wr api.WALResponse
	code, err := api.Get(ctx, p.Client, apiURL, "/wal", &wr)
	if code == http.StatusUnauthorized {
		return ha.Candidate{}, fmt.Errorf("%s/wal: %w", apiURL, api.ErrUnauthorized)
	}
	if err != nil {
		return ha.Candidate{}, fmt.Errorf("%s: %w", apiURL, err)
	}
	c := ha.Candidate{Running: wr.Running, InRecovery: wr.InRecovery, ReplayPaused: wr.ReplayPaused, NoFailover: wr.NoFailover, FailoverPriority: wr.FailoverPriority,
		Timeline: wr.Timeline, StreamedAgo: -1}
	if wr.StreamedAgoMS >= 0 {
		c.StreamedAgo = time.Duration(wr.StreamedAgoMS) * time.Millisecond
	}
	if wr.Error != "" {
		if wr.Running {
			// Running but its position could not be read: unknown, not "no candidate".
			return ha.Candidate{}, fmt.Errorf("%s/wal: postgres running but unreadable: %s", apiURL, wr.Error)
		}
		// postgres down on that member: it answered, and it is no candidate.
		return c, nil
	}
	if c.ReceiveLSN, err = pgctl.ParseLSN(wr.ReceiveLSN); err != nil {
		return ha.Candidate{}, fmt.Errorf("GET %s/wal: %w", apiURL, err)
	}
	if c.ReplayLSN, err = pgctl.ParseLSN(wr.ReplayLSN); err != nil {
		return ha.Candidate{}, fmt.Errorf("GET %s/wal: %w", apiURL, err)
	}
	return c, nil
}

func statusOf(s *Snapshot, now time.Time) api.StatusResponse {
	if s == nil {
		return api.StatusResponse{Plan: "starting"}
	}
	r := api.StatusResponse{Self: s.Member, IsLeader: s.IsLeader, Invalid: s.Cluster.Invalid, DCSErr: s.DCSErr,
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

// StatusResponse is kept as an alias for callers of the agent package.
type StatusResponse = api.StatusResponse

// lagLimit is /replica's ?lag=: a size ("16MB", "1048576") or a duration
// ("10s", "500ms"); zero value: no limit.
type lagLimit struct {
	set     bool
	bytes   int64
	seconds float64
	inTime  bool
}

func parseLagLimit(v string) (lagLimit, error) {
	v = strings.TrimSpace(v)
	if v == "" {
		return lagLimit{}, nil
	}
	if v == "0" {
		return lagLimit{set: true}, nil
	}
	if n, err := config.ParseBytes(v); err == nil {
		return lagLimit{set: true, bytes: n}, nil
	}
	if d, err := time.ParseDuration(v); err == nil && d >= 0 {
		return lagLimit{set: true, seconds: d.Seconds(), inTime: true}, nil
	}
	return lagLimit{}, fmt.Errorf("lag=%q is neither a size (16MB, 1048576) nor a duration (10s, 500ms)", v)
}

// allows reports whether a lag within the limit is known.
func (l lagLimit) allows(lag replicaLag) bool {
	if !l.set {
		return true
	}
	if l.inTime {
		return lag.seconds != nil && *lag.seconds <= l.seconds
	}
	return lag.bytes != nil && *lag.bytes <= l.bytes
}

type replicaLag struct {
	bytes   *int64
	seconds *float64
}

// ownLag is this standby's lag as the leader last published it
// (state.Member.LagOf). Unknown parts are nil.
func ownLag(s *Snapshot, self string) replicaLag {
	l := s.Cluster.Leader
	if l == nil || !l.Valid {
		return replicaLag{}
	}
	lm, ok := s.Cluster.Members[l.Name]
	if !ok {
		return replicaLag{}
	}
	me := s.Member
	me.Name = self
	b, sec := lm.LagOf(me)
	return replicaLag{bytes: b, seconds: sec}
}
