package agent

import (
	"context"
	"errors"
	"fmt"
	"github.com/cifha/cifha/pkg/ha"
	"sync"
	"time"

	"github.com/cifha/cifha/pkg/election"
	"github.com/cifha/cifha/pkg/pgctl"
)

// A planned switchover, as the old leader carries it out (one action of
// the loop, bounded by Options.SwitchoverTimeout at each wait):
//
//  1. check the candidate live (running, streaming, replay not paused, lag
//     within maximum_lag_on_failover);
//  2. stop postgres fast: clients are disconnected, a shutdown checkpoint is
//     written, and the walsenders send everything before they exit;
//  3. read the shutdown checkpoint with pg_controldata;
//  4. wait until the candidate has replayed past it: it then has every
//     committed transaction;
//  5. hand the leader key to the candidate's lease in one transaction;
//  6. wait for the candidate to publish "promoting", then "running" as a
//     primary on a newer timeline, and restart as its standby. Its WAL ends
//     at the shutdown checkpoint, which the candidate replayed, so no
//     pg_rewind is needed.
//
// Roll back: before step 5 the key never left this member, so on any
// failure it starts postgres again as the primary (within its lease). After
// step 5, if the candidate's key vanishes without the candidate ever
// publishing "promoting", the candidate cannot have accepted writes (it
// promotes only after that publish succeeds, and a member key outlives its
// agent by the lease ttl, longer than this member polls), so this member
// takes the key back and resumes as primary. If the candidate did start to
// promote, the normal failover rules apply: never two primaries.

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
	chk := ha.CandidateCheck{Cluster: c, Self: a.opt.Name, Candidate: name, LeaderLSN: leaderLSN,
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

// switchover carries out Plan Switchover (see above). It reports the
// outcome to the waiting API request and returns nil when the outcome is a
// clean refusal or roll back.
func (a *Agent) switchover(ctx context.Context, o ha.Observation, p ha.Plan) error {
	pg, dcs := a.opt.PG, a.opt.DCS
	req := o.Cluster.Switchover
	log := a.log.With("switchover_to", p.Target)
	reported := false
	done := func(ok bool, format string, args ...any) {
		msg := fmt.Sprintf(format, args...)
		if ok {
			log.Info("switchover done", "result", msg)
		} else {
			log.Warn("switchover did not happen", "result", msg)
		}
		reported = true
		result := "failed"
		if ok {
			result = "done"
		}
		a.metrics.switchovs.WithLabelValues(result).Inc()
		a.switchW.report(req.ID, switchResult{OK: ok, Message: msg})
	}
	defer func() {
		// Every outcome reaches the waiting request, errors included.
		if !reported {
			done(false, "switchover to %s interrupted by an error on %s; see its log and cifhactl status", p.Target, a.opt.Name)
		}
	}()
	cancelReq := func(format string, args ...any) error {
		done(false, format, args...)
		return dcs.ClearSwitchover(ctx, req.ModRev)
	}
	if err := a.checkCandidate(ctx, o.Cluster, p.Target, o.PG.CurrentLSN); err != nil {
		return cancelReq("switchover to %s refused: %v", p.Target, err)
	}
	toLease := o.Cluster.MemberLease[p.Target]

	// Before the handoff the key never left this member: a failure starts
	// postgres again as the primary.
	rollback := func(why string) error {
		// Clearing the request first guarantees that a handoff transaction
		// still on its way to etcd can no longer commit (it compares the
		// request's revision). If the clear's outcome is unknown, so is the
		// handoff's: stay stopped.
		if err := dcs.ClearSwitchover(ctx, req.ModRev); err != nil {
			done(false, "switchover to %s failed (%s), and clearing the request failed (%v); %s stays stopped and the loop decides", p.Target, why, err, a.opt.Name)
			return err
		}
		lease, held := a.stillHolds(ctx, o.Lease.ID)
		if !held {
			// The key or the lease is not provably this member's any more
			// (etcd cut off, lease re-granted): the loop decides from a
			// fresh observation, never a writable start on a guess.
			done(false, "switchover to %s failed (%s); %s no longer provably holds the leader key, so it does not resume as primary by itself", p.Target, why, a.opt.Name)
			return nil
		}
		if err := pg.Configure(); err != nil {
			return err
		}
		if err := a.madeWritable(lease); err != nil {
			return err
		}
		if err := a.start(ctx); err != nil {
			done(false, "switchover to %s failed (%s), and restarting %s as primary failed: %v", p.Target, why, a.opt.Name, err)
			return err
		}
		done(false, "switchover to %s failed (%s); %s resumed as primary", p.Target, why, a.opt.Name)
		return nil
	}

	// A checkpoint while still accepting writes leaves the shutdown
	// checkpoint little to write: the unavailability shrinks, not the
	// command's duration.
	cctx, cancelCk := context.WithTimeout(ctx, a.opt.StopTimeout)
	if err := pg.Checkpoint(cctx); err != nil {
		log.Warn("switchover: checkpoint before shutdown", "error", err)
	}
	cancelCk()
	log.Info("switchover: stopping postgres for a clean shutdown checkpoint")
	a.publishState(ctx, o, "switching over", p)
	if err := pg.StopWithin(ctx, pgctl.Fast, a.opt.StopTimeout); err != nil && pg.Running() {
		return rollback(fmt.Sprintf("stop postgres: %v", err))
	}
	a.writableLease = 0
	a.fence.disarm()
	cd, err := pg.ControlData(ctx)
	if err != nil {
		return rollback(err.Error())
	}
	if !cd.CleanShutdown() {
		return rollback(fmt.Sprintf("postgres did not shut down cleanly (state %q)", cd.State))
	}
	log.Info("switchover: waiting for the candidate to replay the shutdown checkpoint", "checkpoint", cd.Checkpoint.String())
	apiURL := o.Cluster.Members[p.Target].APIURL
	deadline := a.now().Add(a.opt.SwitchoverTimeout)
	for {
		cctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
		c, err := a.opt.Peers.Candidate(cctx, apiURL)
		cancel()
		// The replay position is the end of the last record replayed:
		// past the checkpoint's start means the checkpoint was replayed.
		if err == nil && c.InRecovery && c.ReplayLSN > cd.Checkpoint {
			break
		}
		if a.now().After(deadline) {
			why := fmt.Sprintf("it did not replay up to %s within %s", cd.Checkpoint, a.opt.SwitchoverTimeout)
			if err != nil {
				why += fmt.Sprintf(" (last error: %v)", err)
			}
			return rollback(why)
		}
		if err := sleepCtx(ctx, 20*time.Millisecond); err != nil {
			return err
		}
	}
	rec := election.LastLeader{Timeline: cd.Timeline, LSN: cd.Checkpoint.String(), At: a.now().UTC(), From: a.opt.Name}
	if d, err := time.ParseDuration(o.Cluster.Members[p.Target].TTL); err == nil {
		rec.TTL = int(d / time.Second) // the candidate's lease ttl: its key expires on that
	}
	if err := dcs.Handoff(ctx, p.Target, toLease, rec, req.ModRev); err != nil {
		// The transaction may have committed although the answer was lost:
		// read the key again before deciding anything.
		c, rerr := dcs.Read(ctx)
		switch {
		case rerr == nil && c.Leader != nil && c.Leader.Valid && c.Leader.Name == p.Target && c.Leader.Lease == toLease:
			log.Warn("switchover: the handoff's answer was lost but it committed", "error", err)
		case rerr == nil:
			return rollback(err.Error()) // rollback checks the key is still ours
		default:
			done(false, "switchover to %s: the handoff's outcome is unknown (%v; re-read: %v); %s stays stopped and the loop decides", p.Target, err, rerr, a.opt.Name)
			return err
		}
	}
	log.Info("switchover: leader key handed over; waiting for the candidate to promote")
	return a.awaitPromotion(ctx, p, cd, int64(o.Lease.ID), done)
}

// awaitPromotion is step 6: the key is the candidate's now.
func (a *Agent) awaitPromotion(ctx context.Context, p ha.Plan, cd pgctl.ControlData, leaseID int64, done func(bool, string, ...any)) error {
	pg, dcs := a.opt.PG, a.opt.DCS
	deadline := a.now().Add(a.opt.SwitchoverTimeout)
	promoting := false
	// The key may be taken back only if every poll succeeded, close enough
	// together that "promoting" (published for at least as long as the
	// candidate's postgres may be promoting) cannot have been missed.
	certain, lastOK := true, a.now()
	for {
		c, err := dcs.Read(ctx)
		if err != nil || a.now().Sub(lastOK) > a.opt.TTL/3 && a.opt.TTL > 0 {
			certain = false
		}
		if err == nil {
			lastOK = a.now()
			m, ok := c.Members[p.Target]
			if ok && (m.State == "promoting" || m.Role == "primary") {
				promoting = true
			}
			l := c.Leader
			switch {
			case ok && m.Role == "primary" && m.State == "running" && m.Timeline > cd.Timeline && l != nil && l.Name == p.Target:
				host, port, err := splitAddr(m.ConnAddress)
				if err != nil {
					return err
				}
				if err := pg.Configure(); err != nil {
					return err
				}
				if err := pg.SetStandby(pg.StandbyFor(p.Target, host, port)); err != nil {
					return err
				}
				done(true, "switched over to %s (timeline %d); %s follows it as a standby", p.Target, m.Timeline, a.opt.Name)
				return a.start(ctx)
			case l == nil && !promoting && certain:
				// The candidate lost the key before it could promote (it
				// died or was stopped): take the role back.
				var lease election.LeaseState
				err := errors.New("this member's lease changed during the switchover")
				if int64(a.opt.DCS.Lease().ID) == leaseID {
					lease, err = a.acquire(ctx, election.LastLeader{Timeline: cd.Timeline, LSN: cd.Checkpoint.String(), At: a.now().UTC()})
				}
				if err != nil {
					done(false, "switchover to %s failed: it lost the leader key before promoting, and taking it back failed (%v); the cluster elects a leader", p.Target, err)
					return nil
				}
				if err := pg.Configure(); err != nil {
					return err
				}
				if err := a.madeWritable(lease); err != nil {
					return err
				}
				a.roleOK = false
				done(false, "switchover to %s failed: it lost the leader key before promoting; %s resumed as primary", p.Target, a.opt.Name)
				return a.start(ctx)
			case l == nil || l.Name != p.Target:
				done(false, "switchover to %s interrupted: the leader key changed (or the candidate may have begun promoting); the cluster's normal rules apply", p.Target)
				return nil
			}
		}
		if a.now().After(deadline) {
			done(false, "switchover to %s: it holds the leader key but did not finish promoting within %s", p.Target, a.opt.SwitchoverTimeout)
			return nil
		}
		if err := sleepCtx(ctx, 20*time.Millisecond); err != nil {
			return err
		}
	}
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
	c, err := a.opt.DCS.Read(ctx)
	if err != nil || !a.opt.DCS.Holds(c) || a.opt.DCS.Lease().ID != leaseID {
		return lease, false
	}
	return lease, true
}

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
