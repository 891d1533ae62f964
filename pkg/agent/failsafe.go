package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/cifha/cifha/pkg/api"
	"github.com/cifha/cifha/pkg/ha"
	"github.com/cifha/cifha/pkg/state"
)

// failsafe is the agent's side of DCS failsafe mode; pkg/ha/failsafe.go
// has the rule and why it never makes two primaries.
//
// As leader: the loop keeps the failsafe member list in etcd (step); the
// asker goroutine (run), while postgres is writable and lease renewals
// are overdue, asks every other listed member for a promise each renewal
// interval and extends the cover when all promise. Like the fencer it is
// a second goroutine, and like the fencer it cannot make anything
// writable: it only moves a deadline that the fence rule reads.
//
// As standby: POST /failsafe gives a promise (give), and the loop's every
// attempt to take the leader key passes beginTake. The two are serialised
// by mu: a member that is taking the key (or leads) promises nothing, and
// one that promised does not take it.
type failsafe struct {
	a *Agent

	mu sync.Mutex
	// on: failsafe mode is in effect. ready: the failsafe list naming
	// this member as leader is known to be in etcd; list: the members to
	// ask (what etcd holds, with what is being written).
	on, ready bool
	list      map[string]string
	// armed is the lease postgres was made writable under (0: this
	// member is not a writable leader); cover its extension.
	armed int64
	cover ha.FailsafeCover
	// promise is the one this member gave; taking: it leads or is taking
	// the key, so it gives none.
	promise ha.Promise
	taking  bool
	// takeHold: after an attempt to take the key (beginTake) no promise
	// is given for a ttl, whatever the next observation shows (a view
	// that lags the attempt's transaction would show the key free).
	takeHold time.Time
	// failed is the last round's failure, logged on change; reported
	// says whether anything was logged since renewals were last on time
	// (so the first cover of an outage is logged too).
	failed   string
	reported bool
	wake     chan struct{}
}

func newFailsafe(a *Agent) *failsafe {
	f := &failsafe{a: a, wake: make(chan struct{}, 1)}
	if a.opt.TTL > 0 {
		// A promise given before a restart is remembered nowhere: it is
		// kept as "any leader" for a ttl (the longest this agent
		// promises), enforced while a failsafe list exists.
		f.promise = ha.Promise{Leader: ha.AnyLeader, Until: a.now().Add(a.opt.TTL)}
	}
	return f
}

func (f *failsafe) poke() {
	select {
	case f.wake <- struct{}{}:
	default:
	}
}

// coverNow and promiseNow are what the loop observes.
func (f *failsafe) coverNow() ha.FailsafeCover {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.cover
}

func (f *failsafe) promiseNow() ha.Promise {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.promise
}

// setRole records, after each observation, whether this member leads or
// is writable (then it promises nothing) and the lease its writable
// postgres runs under. A new term drops the old term's cover.
func (f *failsafe) setRole(taking, keep bool, armed int64) {
	f.mu.Lock()
	changed := f.armed != armed
	f.taking = taking || (keep && f.taking)
	f.armed = armed
	if f.cover.Lease != armed {
		f.cover = ha.FailsafeCover{}
	}
	if changed {
		// A new term asks only the list it confirms itself (step): the
		// old term's may lack members that joined since.
		f.ready, f.list = false, nil
	}
	f.mu.Unlock()
	if changed {
		f.poke()
	}
}

// setMode records whether failsafe mode is in effect and the members to
// ask (ready: the list naming this leader is in etcd).
func (f *failsafe) setMode(on, ready bool, list map[string]string) {
	f.mu.Lock()
	changed := f.on != on || f.ready != ready
	f.on, f.ready, f.list = on, on && ready, list
	if !on {
		f.cover = ha.FailsafeCover{} // fencing earlier is always safe
	}
	f.mu.Unlock()
	if changed {
		f.poke()
	}
}

// beginTake is called right before a transaction that takes the leader
// key: it refuses while a promise binds this member (listed: a failsafe
// list exists, which makes the after-start hold bind), and otherwise marks
// the member as taking the key so that no promise is given meanwhile.
func (f *failsafe) beginTake(now time.Time, listed bool) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if p := f.promise; now.Before(p.Until) && p.Leader != f.a.opt.Name && (p.Leader != ha.AnyLeader || listed) {
		return fmt.Errorf("not taking the leader key: promised %s (DCS failsafe) not to for another %s", p.Leader, p.Until.Sub(now).Round(time.Millisecond))
	}
	f.taking = true
	if f.a.opt.TTL > 0 {
		f.takeHold = now.Add(f.a.opt.TTL)
	}
	return nil
}

// errNoPromise is a refused failsafe request.
var errNoPromise = errors.New("no promise")

// give records a promise to leader for d from now, unless this member
// leads or is taking the key.
func (f *failsafe) give(leader string, now time.Time, d time.Duration, lsn state.LSN) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.taking || now.Before(f.takeHold) {
		return fmt.Errorf("%w: this member leads or is taking the leader key", errNoPromise)
	}
	until := now.Add(d)
	if p := f.promise; p.Leader == leader {
		lsn = max(lsn, p.LSN) // the highest position the leader reported
	}
	if p := f.promise; (p.Leader == leader || p.Leader == ha.AnyLeader) && p.Until.After(until) {
		if p.Leader == leader {
			f.promise.LSN = lsn
		}
		return nil // never shortened (the after-start hold binds more)
	}
	if p := f.promise; now.Before(p.Until) && p.Leader != leader && p.Leader != ha.AnyLeader {
		// Two leaders asking at once: possible only if one of them is
		// stale. Promising the second as well is safe (a promise only
		// holds this member back), but it is kept to the first until it
		// ends, so the second fences: never two covers at once.
		return fmt.Errorf("%w: promised %s for another %s", errNoPromise, p.Leader, p.Until.Sub(now).Round(time.Millisecond))
	}
	f.promise = ha.Promise{Leader: leader, Until: until, LSN: lsn}
	return nil
}

// step keeps the failsafe member list in etcd; the leader runs it each
// round while etcd answers. on is the effective failsafe mode.
func (f *failsafe) step(ctx context.Context, o ha.Observation, on bool) {
	a := f.a
	view := o.Cluster.Failsafe
	mine := view != nil && view.Leader == a.opt.Name
	if !on {
		// Stop extending first, then remove the list.
		f.setMode(false, false, nil)
		if o.Cluster.FailsafeRev != 0 {
			if err := a.opt.DCS.DeleteFailsafe(ctx); err != nil {
				a.log.Warn("failsafe mode: remove the member list", "error", err)
			} else {
				a.log.Info("failsafe mode off: removed the failsafe member list")
			}
		}
		return
	}
	want := map[string]string{a.opt.Name: a.opt.APIURL}
	var noURL []string
	for name, m := range o.Cluster.Members {
		if name == a.opt.Name {
			continue
		}
		if m.APIURL == "" {
			noURL = append(noURL, name)
			continue
		}
		want[name] = m.APIURL
	}
	ask := maps.Clone(want)
	if mine {
		for name, u := range view.Members {
			if ask[name] == "" {
				ask[name] = u // a member that left: still on the list in etcd
			}
		}
	}
	// A member without an API address cannot be asked: no cover while
	// it is a member (it could take the key).
	ready := mine && len(noURL) == 0 && a.opt.APIURL != ""
	if mine && maps.Equal(view.Members, want) {
		f.setMode(true, ready, ask)
		return
	}
	// While the write is under way, both the list in etcd and the new
	// one are asked: either may be what etcd holds.
	f.setMode(true, ready, ask)
	if err := a.opt.DCS.PutFailsafe(ctx, want); err != nil {
		a.log.Warn("failsafe mode: write the member list", "error", err)
		return
	}
	a.log.Info("failsafe mode: wrote the failsafe member list", "members", slices.Sorted(maps.Keys(want)))
	f.setMode(true, len(noURL) == 0 && a.opt.APIURL != "", ask)
}

// run is the asker goroutine (see failsafe).
func (f *failsafe) run(ctx context.Context) {
	t := time.NewTimer(idleCheck)
	defer t.Stop()
	tm := ha.Timing{TTL: f.a.opt.TTL}
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-f.wake:
		}
		f.mu.Lock()
		on, ready, armed, list := f.on, f.ready, f.armed, f.list
		f.mu.Unlock()
		if !on || armed == 0 || tm.TTL <= 0 {
			t.Reset(idleCheck) // setRole and setMode poke it on a change
			continue
		}
		if !f.a.opt.PG.Running() {
			// Armed while postgres starts (start-primary arms the term
			// before postgres runs): nothing pokes when it is up, so look
			// again soon. A checker round found the asker asleep for its
			// 30 s idle check through an etcd outage that began 5 s after
			// a postgres crash was repaired: no cover, the leader fenced.
			t.Reset(tm.RenewRetryDelay())
			continue
		}
		now := f.a.now()
		lease := f.a.opt.DCS.Lease()
		if lease.ID == armed {
			// Renewals are on time until the last one is older than an
			// interval plus an attempt: nothing to ask yet.
			due := lease.ValidUntil.Add(-tm.TTL + tm.WritableRenewInterval() + tm.RenewAttemptTimeout())
			if now.Before(due) {
				f.mu.Lock()
				f.failed, f.reported = "", false
				f.mu.Unlock()
				t.Reset(due.Sub(now))
				continue
			}
		}
		if !ready {
			f.report("the failsafe member list naming this leader is not confirmed in etcd (or a member has no API address): no cover")
			t.Reset(tm.RenewRetryDelay())
			continue
		}
		// A cover extends a live term; it never revives one.
		if !ha.MayStayWritable(now, ha.EffectiveLease(lease, armed, f.coverNow()), f.a.opt.FenceMargin) {
			t.Reset(tm.RenewRetryDelay())
			continue
		}
		if f.round(ctx, tm, armed, list) {
			t.Reset(tm.RenewInterval())
		} else {
			t.Reset(tm.RenewRetryDelay())
		}
	}
}

// round asks every other listed member at once, bounded by a renewal
// attempt's timeout, and extends the cover if all promised.
func (f *failsafe) round(ctx context.Context, tm ha.Timing, armed int64, list map[string]string) bool {
	a := f.a
	sent := a.now()
	// Every request arrives within half the margin of sent, so before
	// the term's deadline (the round starts only while now < deadline -
	// margin): a member cannot have taken the key before the request
	// reaches it, it is still bound by the lease or its last promise.
	rctx, cancel := context.WithTimeout(ctx, min(tm.RenewAttemptTimeout(), a.opt.FenceMargin/2))
	defer cancel()
	type answer struct {
		name string
		d    time.Duration
		err  error
	}
	ch := make(chan answer, len(list))
	n := 0
	lsn := ""
	if s := a.Snapshot(); s != nil {
		lsn = s.Member.CurrentLSN // the position seen last round
	}
	for name, url := range list {
		if name == a.opt.Name {
			continue
		}
		n++
		go func() {
			if a.opt.Peers == nil {
				ch <- answer{name, 0, errors.New("no API client")}
				return
			}
			d, err := a.opt.Peers.Failsafe(rctx, url, a.opt.Name, name, lsn)
			ch <- answer{name, d, err}
		}()
	}
	least := tm.TTL
	var failed []string
	for range n {
		r := <-ch
		switch {
		case r.err != nil:
			failed = append(failed, fmt.Sprintf("%s: %v", r.name, r.err))
		case r.d <= 0:
			failed = append(failed, r.name+": promised nothing")
		default:
			least = min(least, r.d)
		}
	}
	if len(failed) > 0 {
		slices.Sort(failed)
		f.report("not every member promised (" + strings.Join(failed, "; ") + "): postgres is fenced when the lease or the current cover ends")
		return false
	}
	f.mu.Lock()
	extended := false
	if f.armed == armed {
		if until := sent.Add(least); until.After(f.cover.Until) {
			f.cover, extended = ha.FailsafeCover{Lease: armed, Until: until}, true
		}
	}
	f.mu.Unlock()
	if extended {
		f.report("")
		a.fence.poke() // the fencer and the fence watchdog take the new deadline
	}
	return true
}

// report logs a change of the asker's state once.
func (f *failsafe) report(failed string) {
	f.mu.Lock()
	prev, reported := f.failed, f.reported
	f.failed, f.reported = failed, true
	f.mu.Unlock()
	switch {
	case reported && failed == prev:
	case failed == "":
		f.a.log.Warn("failsafe mode: etcd renewals overdue; every member promised: postgres stays writable on their promises")
	default:
		f.a.log.Warn("failsafe mode: "+failed, "etcd", "renewals overdue")
	}
}

// postFailsafe serves POST /failsafe: the leader named in the body asks
// this member for a promise (api.FailsafeRequest). It answers 200 with
// the promised duration only if this member's postgres is a running
// standby following that leader, it is not promoting, it neither leads nor
// is taking the key, and it has promised no other leader.
func (a *Agent) postFailsafe(w http.ResponseWriter, r *http.Request) {
	no := func(code int, format string, args ...any) {
		writeJSON(w, code, api.FailsafeResponse{Message: fmt.Sprintf(format, args...)})
	}
	if r.Method != http.MethodPost {
		no(http.StatusMethodNotAllowed, "use POST")
		return
	}
	// A promise holds failover back for a ttl: with credentials
	// configured, asking needs them (like the control endpoints).
	if a.opt.RequireClientCert && (r.TLS == nil || len(r.TLS.VerifiedChains) == 0) {
		no(http.StatusUnauthorized, "a client certificate signed by api.client_ca_file is required")
		return
	}
	if a.creds.Load().Token != "" && !a.authorized(r) {
		a.unauthorized(w)
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxBody+1))
	if err != nil || len(body) > maxBody {
		no(http.StatusBadRequest, "request body unreadable or larger than %d bytes", maxBody)
		return
	}
	var req api.FailsafeRequest
	if err := api.DecodeRequest(body, &req); err != nil {
		no(http.StatusBadRequest, "%v", err)
		return
	}
	if !state.ValidName(req.Leader) {
		no(http.StatusBadRequest, "leader %q is not a member name", truncate(req.Leader))
		return
	}
	var lsn state.LSN
	if req.LSN != "" {
		var err error
		if lsn, err = state.ParseLSN(req.LSN); err != nil {
			no(http.StatusBadRequest, "lsn %q: %v", truncate(req.LSN), err)
			return
		}
	}
	if req.Member != a.opt.Name {
		// The address the leader asked now serves another member (moved,
		// rescheduled): a promise from it binds nobody on the list.
		no(http.StatusConflict, "this is %s, not %q", a.opt.Name, truncate(req.Member))
		return
	}
	s := a.Snapshot()
	switch {
	case a.opt.TTL <= 0:
		no(http.StatusConflict, "this agent has no lease ttl")
		return
	case req.Leader == a.opt.Name:
		no(http.StatusConflict, "%s cannot promise itself", a.opt.Name)
		return
	case s == nil:
		no(http.StatusConflict, "this agent has not observed its postgres yet")
		return
	case !s.Running || !s.InRecovery || !a.opt.PG.Running():
		no(http.StatusConflict, "postgres on %s is not a running standby", a.opt.Name)
		return
	case !s.Streaming:
		// A standby that does not receive the leader's WAL would be
		// promised while the leader writes what it never gets.
		no(http.StatusConflict, "%s is not streaming from %s", a.opt.Name, req.Leader)
		return
	case s.Member.State == "promoting":
		no(http.StatusConflict, "%s is promoting", a.opt.Name)
		return
	case s.Following != req.Leader:
		no(http.StatusConflict, "%s follows %q, not %s", a.opt.Name, s.Following, req.Leader)
		return
	}
	d := a.opt.TTL
	if err := a.fs.give(req.Leader, a.now(), d, lsn); err != nil {
		no(http.StatusConflict, "%v", err)
		return
	}
	writeJSON(w, http.StatusOK, api.FailsafeResponse{OK: true, DurationMS: d.Milliseconds()})
}

func truncate(s string) string {
	if len(s) > 40 {
		return s[:40] + "..."
	}
	return s
}

// Failsafe implements Peers: POST <apiURL>/failsafe.
func (p HTTPPeers) Failsafe(ctx context.Context, apiURL, leader, member, lsn string) (time.Duration, error) {
	if apiURL == "" {
		return 0, errors.New("no API URL published")
	}
	var resp api.FailsafeResponse
	code, err := api.Post(ctx, p.Client, apiURL, "/failsafe", api.FailsafeRequest{Leader: leader, Member: member, LSN: lsn}, &resp)
	switch {
	case code == http.StatusUnauthorized:
		return 0, fmt.Errorf("%s/failsafe: %w", apiURL, api.ErrUnauthorized)
	case err != nil:
		return 0, fmt.Errorf("%s/failsafe: %w", apiURL, err)
	case code != http.StatusOK || !resp.OK:
		return 0, fmt.Errorf("%s/failsafe: %d: %s", apiURL, code, resp.Message)
	}
	return time.Duration(resp.DurationMS) * time.Millisecond, nil
}
