package agent

import (
	"context"
	"errors"
	"fmt"
	"github.com/cifha/cifha/pkg/ha"
	"strings"
	"sync"
	"time"

	"github.com/cifha/cifha/pkg/election"
	"github.com/cifha/cifha/pkg/pgctl"
)

// The switchover's steps as the old leader carries them out. Decide
// (pkg/ha/switchover.go) chooses each step from a fresh observation; each
// function here is one bounded action that records its outcome in a.sw.
// Nothing here polls or sleeps: the loop wakes at Plan.WakeAt, on etcd
// changes and on its tick.

// switchResult is a switchover's outcome for the API request waiting on it.
type switchResult struct {
	OK      bool
	Message string
}

type switchWaiters struct {
	mu sync.Mutex
	m  map[string]chan switchResult
}

func (w *switchWaiters) add(id string) chan switchResult {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.m == nil {
		w.m = map[string]chan switchResult{}
	}
	ch := make(chan switchResult, 1)
	w.m[id] = ch
	return ch
}

func (w *switchWaiters) remove(id string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	delete(w.m, id)
}

func (w *switchWaiters) report(id string, r switchResult) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if ch, ok := w.m[id]; ok {
		select {
		case ch <- r:
		default:
		}
	}
}

// checkCandidate reads the candidate's live state from its API and applies
// the one switchover candidate rule (ha.CheckCandidate).
func (a *Agent) checkCandidate(ctx context.Context, c election.Cluster, name string, leaderLSN pgctl.LSN) error {
	chk := ha.CandidateCheck{Cluster: c, Self: a.opt.Name, Term: a.opt.DCS.Term(), Candidate: name, LeaderLSN: leaderLSN,
		MaxLag: a.maxLag.Load(), RecentWindow: a.opt.RecentWindow}
	if m, ok := c.Members[name]; ok && name != a.opt.Name && !c.Paused && !m.NoFailover {
		if a.opt.Peers == nil {
			chk.LiveErr = errors.New("no API client")
		} else {
			cctx, cancel := context.WithTimeout(ctx, time.Second)
			chk.Live, chk.LiveErr = a.opt.Peers.Candidate(cctx, m.APIURL)
			cancel()
		}
	}
	return ha.CheckCandidate(chk)
}

// switchDone reports a switchover's outcome to the waiting API request and
// the metrics, and forgets the switchover.
func (a *Agent) switchDone(id string, ok bool, format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	result := "failed"
	if ok {
		result = "done"
		a.log.Info("switchover done", "result", msg)
	} else {
		a.log.Warn("switchover did not happen", "result", msg)
	}
	a.metrics.switchovs.WithLabelValues(result).Inc()
	a.reply(id, switchResult{OK: ok, Message: msg})
	a.sw = nil
}

// reply queues a switchover's outcome for the waiting API request. It is
// sent at the end of the round, after the snapshot is stored: an operator
// told "resumed as primary" (or "done") then finds /primary and /status
// already saying so, instead of a round of the old state.
func (a *Agent) reply(id string, r switchResult) {
	a.replies = append(a.replies, pendingReply{id: id, r: r})
}

type pendingReply struct {
	id string
	r  switchResult
}

// sendReplies sends the round's queued outcomes.
func (a *Agent) sendReplies() {
	for _, p := range a.replies {
		a.switchW.report(p.id, p.r)
	}
	a.replies = a.replies[:0]
}

// switchoverStop is the first step: checkpoint, clean fast stop, and the
// shutdown checkpoint's position from pg_controldata.
func (a *Agent) switchoverStop(ctx context.Context, o ha.Observation, p ha.Plan) error {
	pg, dcs := a.opt.PG, a.opt.DCS
	req := o.Cluster.Switchover
	if req.ID == a.lastSwitchover {
		// Already carried out (its key could not be cleared then): never a
		// second outage for one request.
		return dcs.ClearSwitchover(ctx, req.ModRev)
	}
	a.lastSwitchover = req.ID
	log := a.log.With("switchover_to", p.Target)
	// A checkpoint while still accepting writes leaves the shutdown
	// checkpoint little to write: the unavailability shrinks, not the
	// command's duration.
	cctx, cancelCk := context.WithTimeout(ctx, a.opt.StopTimeout)
	if err := pg.Checkpoint(cctx); err != nil {
		log.Warn("switchover: checkpoint before shutdown", "error", err)
	}
	cancelCk()
	log.Info("switchover: stopping postgres for a clean shutdown checkpoint")
	sw := &ha.SwitchoverProgress{ID: req.ID, To: p.Target, ToLease: o.Cluster.MemberLease[p.Target], FromLease: o.Lease.ID,
		ReqModRev: req.ModRev, Phase: ha.PhaseStopped, Deadline: a.now().Add(a.opt.SwitchoverTimeout)}
	a.sw = sw
	_ = a.publishState(ctx, o, "switching over", p)
	if err := pg.StopWithin(ctx, pgctl.Fast, a.opt.StopTimeout); err != nil && pg.Running() {
		// Never stopped: still the primary under its key and lease.
		a.switchDone(req.ID, false, "switchover to %s failed: stopping postgres failed (%v); %s remains the primary", p.Target, err, a.opt.Name)
		return dcs.ClearSwitchover(ctx, req.ModRev)
	}
	a.writableLease = 0
	a.fence.disarm()
	cd, err := pg.ControlData(ctx)
	switch {
	case err != nil:
		sw.Failed = err.Error()
	case !cd.CleanShutdown():
		sw.Failed = fmt.Sprintf("postgres did not shut down cleanly (state %q)", cd.State)
	default:
		sw.Checkpoint, sw.Timeline = cd.Checkpoint, cd.Timeline
		log.Info("switchover: waiting for the candidate to replay the shutdown checkpoint", "checkpoint", cd.Checkpoint.String())
	}
	return nil
}

// switchoverHandoff moves the leader key to the candidate's lease in one
// transaction guarded by this member's key, the candidate's lease, the
// request's revision and the absence of the pause key.
func (a *Agent) switchoverHandoff(ctx context.Context, o ha.Observation, p ha.Plan) error {
	sw := a.sw
	rec := election.LastLeader{Timeline: sw.Timeline, LSN: sw.Checkpoint.String(), At: a.now().UTC(), From: a.opt.Name, SwitchoverID: sw.ID}
	if d, err := time.ParseDuration(o.Cluster.Members[p.Target].TTL); err == nil {
		rec.TTL = int(d / time.Second) // the candidate's lease ttl: its key expires on that
	}
	err := a.opt.DCS.Handoff(ctx, p.Target, sw.ToLease, rec, sw.ReqModRev)
	switch {
	case err == nil:
		a.log.Info("switchover: leader key handed over; waiting for the candidate to promote", "switchover_to", p.Target)
		sw.Phase, sw.Deadline = ha.PhaseHandedOff, a.now().Add(a.opt.SwitchoverTimeout)
		return nil
	case errors.Is(err, election.ErrRefused) || errors.Is(err, election.ErrNotLeader):
		sw.Failed = err.Error()
		return nil
	}
	// The outcome is unknown (the transaction may have committed): the
	// next observation shows where the key is, and Decide goes on from
	// there (a roll back clears the request first, so a late handoff can
	// no longer commit).
	return err
}

// switchoverRollback: before the handoff the key never left this member.
// The request is cleared first: if that fails, so might a late handoff
// commit, so postgres stays stopped and the step is retried.
func (a *Agent) switchoverRollback(ctx context.Context, p ha.Plan) error {
	sw := a.sw
	if err := a.opt.DCS.ClearSwitchover(ctx, sw.ReqModRev); err != nil {
		return fmt.Errorf("switchover roll back: clear the request: %w", err)
	}
	lease, held := a.stillHolds(ctx, sw.FromLease)
	if !held {
		// The key or the lease is not provably this member's any more: the
		// loop decides from a fresh observation, never a writable start on
		// a guess.
		a.switchDone(sw.ID, false, "%s; %s no longer provably holds the leader key, so it does not resume as primary by itself", p.Reason, a.opt.Name)
		return nil
	}
	if err := a.opt.PG.Configure(); err != nil {
		return err
	}
	if err := a.madeWritable(lease); err != nil {
		a.switchDone(sw.ID, false, "%s; resuming refused: %v", p.Reason, err)
		return err
	}
	id := sw.ID
	if err := a.start(ctx); err != nil {
		a.switchDone(id, false, "%s, and restarting %s as primary failed: %v", p.Reason, a.opt.Name, err)
		return err
	}
	a.switchDone(id, false, "%s; %s resumed as primary", strings.TrimSuffix(p.Reason, ": resuming as primary"), a.opt.Name)
	return nil
}

// switchoverFollow: the candidate runs as primary on a newer timeline;
// this member restarts as its standby (its WAL ends at the checkpoint the
// candidate replayed: no pg_rewind).
func (a *Agent) switchoverFollow(ctx context.Context, p ha.Plan) error {
	pg := a.opt.PG
	host, port, err := splitAddr(p.TargetAddr)
	if err != nil {
		return err
	}
	if err := pg.Configure(); err != nil {
		return err
	}
	if err := pg.SetStandby(pg.StandbyFor(p.Target, host, port)); err != nil {
		return err
	}
	a.switchDone(a.sw.ID, true, "%s; %s follows it as a standby", strings.TrimSuffix(p.Reason, "; following it as a standby"), a.opt.Name)
	return a.start(ctx)
}

// switchoverTakeBack: the candidate lost the key without claiming its
// promotion. The take-back is one transaction that proves it (the claim
// key is unchanged since the read that showed no claim, and the leader key
// is free), so a candidate that promoted can never lose its writes to it.
func (a *Agent) switchoverTakeBack(ctx context.Context, o ha.Observation, p ha.Plan) error {
	sw := a.sw
	lease := a.opt.DCS.Lease()
	if lease.ID != sw.FromLease {
		a.switchDone(sw.ID, false, "switchover to %s failed: it lost the leader key before promoting, and this member's lease changed meanwhile; the cluster elects a leader", p.Target)
		return nil
	}
	if err := a.gateNow(lease); err != nil {
		return err
	}
	rec := election.LastLeader{Timeline: sw.Timeline, LSN: sw.Checkpoint.String(), At: a.now().UTC()}
	if err := a.opt.DCS.TakeBack(ctx, sw.ID, rec, o.Cluster.PromotionRev, o.Cluster.LastLeaderRev); err != nil {
		a.switchDone(sw.ID, false, "switchover to %s failed: it lost the leader key before promoting, and taking it back failed (%v); the cluster elects a leader", p.Target, err)
		return nil
	}
	if err := a.opt.PG.Configure(); err != nil {
		return err
	}
	if err := a.madeWritable(lease); err != nil {
		return err
	}
	a.roleOK = false
	a.switchDone(sw.ID, false, "switchover to %s failed: it lost the leader key before promoting; %s resumed as primary", p.Target, a.opt.Name)
	return a.start(ctx)
}

// stillHolds re-reads etcd and reports whether this member still holds the
// leader key on the lease it held when the action began (and that lease is
// good past the fence margin): the condition for starting a writable
// primary after postgres was stopped for a while.
func (a *Agent) stillHolds(ctx context.Context, leaseID int64) (election.LeaseState, bool) {
	lease := a.opt.DCS.Lease()
	if lease.ID != leaseID || a.gateNow(lease) != nil {
		return lease, false
	}
	c, err := a.opt.DCS.ReadFresh(ctx)
	if err != nil || !a.opt.DCS.Holds(c) || a.opt.DCS.Lease().ID != leaseID {
		return lease, false
	}
	return lease, true
}
