package agent

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"fmt"
	"github.com/cifha/cifha/pkg/api"
	"github.com/cifha/cifha/pkg/ha"
	"github.com/cifha/cifha/pkg/state"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/cifha/cifha/pkg/election"
)

// controlAnswer is a handler's outcome.
type controlAnswer struct {
	code int
	msg  string
}

func ok(format string, args ...any) controlAnswer {
	return controlAnswer{http.StatusOK, fmt.Sprintf(format, args...)}
}

func no(code int, format string, args ...any) controlAnswer {
	return controlAnswer{code, fmt.Sprintf(format, args...)}
}

func (a *Agent) controlRoutes(mux *http.ServeMux) {
	mux.HandleFunc("/pause", a.control(5*time.Second, func(ctx context.Context, _ []byte) controlAnswer {
		if err := a.opt.Control.SetPause(ctx, true, a.opt.Name); err != nil {
			return no(http.StatusServiceUnavailable, "%v", err)
		}
		return ok("cluster paused")
	}))
	mux.HandleFunc("/resume", a.control(5*time.Second, func(ctx context.Context, _ []byte) controlAnswer {
		if err := a.opt.Control.SetPause(ctx, false, a.opt.Name); err != nil {
			return no(http.StatusServiceUnavailable, "%v", err)
		}
		return ok("cluster resumed")
	}))
	mux.HandleFunc("/switchover", a.control(2*a.opt.SwitchoverTimeout+10*time.Second, a.postSwitchover))
	opTimeout := 2*a.opt.StopTimeout + a.opt.StartTimeout + 10*time.Second
	mux.HandleFunc("/restart", a.control(opTimeout, a.simpleOp(ha.OpRestart, "postgres restarted on %s")))
	mux.HandleFunc("/reload", a.control(opTimeout, a.simpleOp(ha.OpReload, "configuration rewritten and reloaded on %s")))
	// A clone can take long (the database's size over the network).
	mux.HandleFunc("/reinit", a.control(time.Hour, a.simpleOp(ha.OpReinit, "%s re-cloned from the leader; it starts as a standby")))
	mux.HandleFunc("/remove", a.control(opTimeout, a.postRemove))
	mux.HandleFunc("/config", a.control(10*time.Second, a.postConfig))
	mux.HandleFunc("/failover", a.control(a.opt.SwitchoverTimeout+10*time.Second, a.postFailover))
}

// maxBody bounds a control request's body.
const maxBody = 1 << 16

// control wraps an action endpoint: POST only, bearer-token authentication
// (constant-time compare), a bounded body and context, and a JSON answer.
func (a *Agent) control(timeout time.Duration, do func(ctx context.Context, body []byte) controlAnswer) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			writeJSON(w, http.StatusMethodNotAllowed, api.ControlResponse{Message: "use POST"})
			return
		}
		if a.creds.Load().Token == "" || a.opt.Control == nil {
			writeJSON(w, http.StatusForbidden, api.ControlResponse{Message: "control API disabled: set api.token_file on this member"})
			return
		}
		if a.opt.RequireClientCert && (r.TLS == nil || len(r.TLS.VerifiedChains) == 0) {
			writeJSON(w, http.StatusUnauthorized, api.ControlResponse{Message: "a client certificate signed by api.client_ca_file is required"})
			return
		}
		if !a.authorized(r) {
			a.unauthorized(w)
			return
		}
		body, err := io.ReadAll(io.LimitReader(r.Body, maxBody+1))
		if err != nil || len(body) > maxBody {
			writeJSON(w, http.StatusBadRequest, api.ControlResponse{Message: fmt.Sprintf("request body unreadable or larger than %d bytes", maxBody)})
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), timeout)
		defer cancel()
		ans := do(ctx, body)
		a.log.Info("control", "action", r.URL.Path, "from", r.RemoteAddr, "status", ans.code, "result", ans.msg)
		writeJSON(w, ans.code, api.ControlResponse{OK: ans.code < 300, Message: ans.msg})
	}
}

// authorized checks the request's credentials in constant time: the bearer
// token, or HTTP basic auth with api.username and the token as password.
func (a *Agent) authorized(r *http.Request) bool {
	c := a.creds.Load()
	if c.Token == "" {
		return false
	}
	h := r.Header.Get("Authorization")
	if got, found := strings.CutPrefix(h, "Bearer "); found {
		return subtle.ConstantTimeCompare([]byte(got), []byte(c.Token)) == 1
	}
	if c.Username == "" {
		return false
	}
	user, pass, found := r.BasicAuth()
	if !found {
		return false
	}
	u := subtle.ConstantTimeCompare([]byte(user), []byte(c.Username))
	p := subtle.ConstantTimeCompare([]byte(pass), []byte(c.Token))
	return u&p == 1
}

func (a *Agent) unauthorized(w http.ResponseWriter) {
	w.Header().Set("WWW-Authenticate", `Bearer realm="cifha"`)
	if a.creds.Load().Username != "" {
		w.Header().Add("WWW-Authenticate", `Basic realm="cifha"`)
	}
	writeJSON(w, http.StatusUnauthorized, api.ControlResponse{Message: "missing or wrong token"})
}

// protect wraps a GET endpoint that api.protect_reads puts behind the
// same credentials as the control endpoints.
func (a *Agent) protect(h http.HandlerFunc) http.HandlerFunc {
	if !a.opt.ProtectReads {
		return h
	}
	return func(w http.ResponseWriter, r *http.Request) {
		if !a.authorized(r) {
			a.unauthorized(w)
			return
		}
		h(w, r)
	}
}

func newID() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func (a *Agent) postSwitchover(ctx context.Context, body []byte) controlAnswer {
	var req api.SwitchoverBody
	if err := api.DecodeRequest(body, &req); err != nil {
		return no(http.StatusBadRequest, "%v", err)
	}
	if req.Cancel {
		if req.To != "" || req.At != "" {
			return no(http.StatusBadRequest, "cancel takes no other field")
		}
		found, err := a.opt.Control.CancelSwitchover(ctx)
		if err != nil {
			return no(http.StatusServiceUnavailable, "%v", err)
		}
		if !found {
			return no(http.StatusConflict, "no switchover is pending")
		}
		return ok("pending switchover cancelled")
	}
	if !election.ValidName(req.To) {
		return no(http.StatusBadRequest, "invalid member name %q", req.To)
	}
	var at time.Time
	if req.At != "" {
		t, err := time.Parse(time.RFC3339, req.At)
		if err != nil {
			return no(http.StatusBadRequest, "at: %q is not an RFC 3339 time (e.g. 2026-11-25T23:00:00Z)", req.At)
		}
		if t.Before(a.now().Add(-time.Minute)) {
			return no(http.StatusBadRequest, "at: %s is in the past", req.At)
		}
		if t.After(a.now().Add(api.MaxSchedule)) {
			return no(http.StatusBadRequest, "at: %s is more than %s ahead", req.At, api.MaxSchedule)
		}
		if t.After(a.now()) {
			at = t
		}
	}
	s := a.Snapshot()
	if s == nil || !s.IsLeader || !s.Running || s.InRecovery {
		leader := ""
		if s != nil && s.Cluster.Leader != nil && s.Cluster.Leader.Valid {
			leader = s.Cluster.Leader.Name
		}
		return no(http.StatusConflict, "%s is not the leader (leader: %q); send the switchover to the leader", a.opt.Name, leader)
	}
	c, err := a.opt.DCS.Read(ctx)
	if err != nil {
		return no(http.StatusServiceUnavailable, "cannot read the cluster: %v", err)
	}
	if l := c.Leader; l == nil || !l.Valid || l.Name != a.opt.Name {
		return no(http.StatusConflict, "%s is not the leader", a.opt.Name)
	}
	sctx, cancelSt := context.WithTimeout(ctx, 2*time.Second) // the loop shares the connection
	st, err := a.opt.PG.Status(sctx)
	cancelSt()
	if err != nil || st.InRecovery {
		return no(http.StatusServiceUnavailable, "cannot read the leader's WAL position: %v", err)
	}
	if err := a.checkCandidate(ctx, c, req.To, st.CurrentLSN); err != nil {
		return no(http.StatusConflict, "switchover to %s refused: %v", req.To, err)
	}
	r := election.SwitchoverRequest{ID: newID(), From: a.opt.Name, To: req.To, At: at, RequestedAt: a.now().UTC()}
	wait := a.switchW.add(r.ID)
	defer a.switchW.remove(r.ID)
	won, err := a.opt.Control.RequestSwitchover(ctx, r)
	if err != nil {
		return no(http.StatusServiceUnavailable, "%v", err)
	}
	if !won {
		p := c.Switchover
		if p != nil {
			return no(http.StatusConflict, "a switchover from %s to %s is already pending", p.From, p.To)
		}
		return no(http.StatusConflict, "a switchover is already pending")
	}
	if !at.IsZero() {
		return controlAnswer{http.StatusAccepted, fmt.Sprintf("switchover from %s to %s scheduled at %s", r.From, r.To, at.UTC().Format(time.RFC3339))}
	}
	select {
	case res := <-wait:
		if res.OK {
			return ok("%s", res.Message)
		}
		return no(http.StatusConflict, "%s", res.Message)
	case <-ctx.Done():
		return no(http.StatusGatewayTimeout, "switchover to %s requested, but no outcome within the request's time; see cifhactl status", req.To)
	}
}

func (a *Agent) postFailover(ctx context.Context, body []byte) controlAnswer {
	var req api.FailoverBody
	if err := api.DecodeRequest(body, &req); err != nil {
		return no(http.StatusBadRequest, "%v", err)
	}
	if !election.ValidName(req.To) {
		return no(http.StatusBadRequest, "invalid member name %q", req.To)
	}
	c, err := a.opt.DCS.Read(ctx)
	if err != nil {
		return no(http.StatusServiceUnavailable, "cannot read the cluster: %v", err)
	}
	if c.Paused {
		return no(http.StatusConflict, "failover to %s refused: the cluster is paused (maintenance mode): resume it first", req.To)
	}
	if l := c.Leader; l != nil {
		return no(http.StatusConflict, "failover to %s refused: %s holds the leader key; use switchover for a healthy leader", req.To, l.Name)
	}
	m, found := c.Members[req.To]
	if !found {
		return no(http.StatusConflict, "failover to %s refused: %s is not a member of the cluster", req.To, req.To)
	}
	if m.Role != "replica" {
		return no(http.StatusConflict, "failover to %s refused: %s is not a standby (role %q, state %q)", req.To, req.To, m.Role, m.State)
	}
	won, err := a.opt.Control.RequestFailover(ctx, election.FailoverRequest{To: req.To, RequestedAt: a.now().UTC()}, time.Minute)
	if err != nil {
		return no(http.StatusServiceUnavailable, "%v", err)
	}
	if !won {
		return no(http.StatusConflict, "a manual failover is already pending")
	}
	for {
		c, err := a.opt.DCS.Read(ctx)
		if err == nil {
			if l := c.Leader; l != nil && l.Name == req.To {
				if m := c.Members[req.To]; m.Role == "primary" && m.State == "running" {
					return ok("failed over to %s (timeline %d)", req.To, m.Timeline)
				}
			} else if l != nil {
				return no(http.StatusConflict, "failover to %s: %s took the leader key instead", req.To, l.Name)
			}
		}
		if err := sleepCtx(ctx, 50*time.Millisecond); err != nil {
			return no(http.StatusGatewayTimeout, "failover to %s requested, but it did not finish within the request's time; see cifhactl status", req.To)
		}
	}
}

func (a *Agent) simpleOp(op ha.Op, done string) func(ctx context.Context, body []byte) controlAnswer {
	return func(ctx context.Context, body []byte) controlAnswer {
		if len(bytes.TrimSpace(body)) > 0 {
			var none struct{}
			if err := api.DecodeRequest(body, &none); err != nil {
				return no(http.StatusBadRequest, "%v", err)
			}
		}
		if err := a.request(ctx, op, ""); err != nil {
			if ctx.Err() != nil {
				return no(http.StatusGatewayTimeout, "%s on %s: no outcome in time: %v", op, a.opt.Name, err)
			}
			return no(http.StatusConflict, "%s refused on %s: %v", op, a.opt.Name, err)
		}
		return ok(done, a.opt.Name)
	}
}

func (a *Agent) postRemove(ctx context.Context, body []byte) controlAnswer {
	var req api.RemoveBody
	if err := api.DecodeRequest(body, &req); err != nil {
		return no(http.StatusBadRequest, "%v", err)
	}
	if req.Name == "" || len(req.Name) > 253 || state.Printable(req.Name) != nil || strings.Contains(req.Name, "/") {
		return no(http.StatusBadRequest, "invalid member name %q", req.Name)
	}
	if err := a.request(ctx, ha.OpDropSlot, req.Name); err != nil {
		if ctx.Err() != nil {
			return no(http.StatusGatewayTimeout, "remove %s: no outcome in time: %v", req.Name, err)
		}
		return no(http.StatusConflict, "remove %s refused: %v", req.Name, err)
	}
	return ok("member %s removed: its replication slot on the leader is dropped (WAL is no longer kept for it)", req.Name)
}

func (a *Agent) postConfig(ctx context.Context, body []byte) controlAnswer {
	var req api.ConfigBody
	if err := api.DecodeRequest(body, &req); err != nil {
		return no(http.StatusBadRequest, "%v", err)
	}
	if (req.Set == nil) == (req.Replace == nil) {
		return no(http.StatusBadRequest, "give exactly one of set or replace")
	}
	c, err := a.opt.DCS.Read(ctx)
	if err != nil {
		return no(http.StatusServiceUnavailable, "cannot read the cluster: %v", err)
	}
	rctx, cancelRd := context.WithTimeout(ctx, 2*time.Second) // the loop shares the connection
	settings, err := a.opt.PG.ReadSettings(rctx)
	cancelRd()
	if err != nil {
		return no(http.StatusServiceUnavailable, "cannot validate: postgres on %s is not readable (%v); send it to a running member", a.opt.Name, err)
	}
	lim := Limits{FenceMargin: a.opt.FenceMargin, LoopInterval: a.opt.LoopInterval, TTL: a.opt.TTL}
	var next election.DynamicConfig
	modRev := c.ConfigRev
	if req.Replace != nil {
		if req.ModRev != nil {
			modRev = *req.ModRev
		}
		next = *req.Replace
		if err := ValidateDynamic(next, settings, lim); err != nil {
			return no(http.StatusBadRequest, "refused, nothing stored: %v", err)
		}
	} else {
		if _, bad := c.Invalid[a.keysConfig]; bad {
			return no(http.StatusConflict, "the stored cluster config is unreadable (%s); replace it with edit-config", c.Invalid[a.keysConfig])
		}
		next, err = ApplySet(c.Config, req.Set, settings, lim)
		if err != nil {
			return no(http.StatusBadRequest, "refused, nothing stored: %v", err)
		}
	}
	if err := a.opt.Control.PutConfig(ctx, next, modRev); err != nil {
		return no(http.StatusConflict, "%v", err)
	}
	var restart []string
	for name := range next.Parameters {
		if s, found := settings[name]; found && s.NeedsRestart() && next.Parameters[name] != c.Config.Parameters[name] {
			restart = append(restart, name)
		}
	}
	msg := "cluster config stored; every member applies it within a loop interval"
	if len(restart) > 0 {
		msg += fmt.Sprintf("; %s take(s) effect only after `cifhactl restart` of each member (status shows restart pending)", strings.Join(restart, ", "))
	}
	if req.Replace != nil && next.TTL != c.Config.TTL || req.Set != nil && req.Set["ttl"] != "" {
		msg += "; ttl applies when each agent next starts (a lease keeps the ttl it was granted with)"
	}
	return ok("%s", msg)
}

// sleepCtx paces the failover request's wait for its outcome (an API
// handler's wait, off the acting loop).
func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
