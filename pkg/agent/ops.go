package agent

import (
	"context"
	"errors"
	"fmt"
	"github.com/cifha/cifha/pkg/ha"
	"maps"
	"time"

	"github.com/cifha/cifha/pkg/election"
	"github.com/cifha/cifha/pkg/pgctl"
)

type opRequest struct {
	op   ha.Op
	arg  string
	done chan error
	// apply, if set, runs on the loop goroutine when the loop takes the
	// request (a SIGHUP's new settings), before the op is decided; an
	// error ends the request there, with nothing changed.
	apply func() error
}

// request hands op to the loop and waits for its outcome.
func (a *Agent) request(ctx context.Context, op ha.Op, arg string) error {
	r := &opRequest{op: op, arg: arg, done: make(chan error, 1)}
	select {
	case a.ops <- r:
	case <-ctx.Done():
		return fmt.Errorf("%s: the agent's loop is busy: %w", op, ctx.Err())
	}
	select {
	case err := <-r.done:
		return err
	case <-ctx.Done():
		return fmt.Errorf("%s: requested, but not finished in time: %w", op, ctx.Err())
	}
}

// finishOp reports the outcome of the pending request, if this iteration
// handled it.
func (a *Agent) finishOp(p ha.Plan, err error) {
	r := a.pending
	if r == nil {
		return
	}
	a.pending = nil
	switch p.Action {
	case ha.Restart, ha.Reload, ha.Reinit, ha.DropSlot:
		r.done <- err
	case ha.Refuse:
		r.done <- errors.New(p.Reason)
	default:
		r.done <- fmt.Errorf("not carried out: %s", p.Reason)
	}
}

// actOp carries out the operator actions.
func (a *Agent) actOp(ctx context.Context, o ha.Observation, p ha.Plan) error {
	pg := a.opt.PG
	switch p.Action {
	case ha.Refuse:
		return nil
	case ha.Reload:
		if err := pg.Configure(); err != nil {
			return err
		}
		if !pg.Running() {
			return nil
		}
		return pg.Reload()
	case ha.Restart:
		primary := !o.Standby.Standby
		if err := pg.StopWithin(ctx, pgctl.Fast, a.opt.StopTimeout); err != nil {
			return fmt.Errorf("restart: stop: %w", err)
		}
		if err := pg.Configure(); err != nil {
			return err
		}
		if primary {
			// Writable again only if the key is provably still this
			// member's on the same lease (the stop may have outlasted it).
			lease, held := a.stillHolds(ctx, o.Lease.ID)
			if !held {
				return errors.New("restart: the leader key or lease changed while postgres was stopped; the loop decides from here")
			}
			if err := a.madeWritable(lease); err != nil {
				return err
			}
		}
		return a.start(ctx)
	case ha.Reinit:
		if pg.Running() {
			if err := pg.StopWithin(ctx, pgctl.Fast, a.opt.StopTimeout); err != nil {
				return fmt.Errorf("reinit: stop: %w", err)
			}
		}
		return a.reclone(ctx, o, p)
	case ha.DropSlot:
		if election.ValidName(p.Target) {
			if err := pg.DropSlot(ctx, SlotName(p.Target)); err != nil {
				return err
			}
		}
		// A member key written by hand (no lease, or under a name no
		// member can have) is deleted too; a live member's key is never
		// touched (the transaction requires it to be lease-less).
		if _, ign := o.Cluster.Ignored[election.KeysFor(a.opt.Cluster).Member(p.Target)]; ign {
			return a.opt.DCS.DeleteUnboundMember(ctx, p.Target)
		}
		return nil
	}
	return fmt.Errorf("unknown operator action %v", p.Action)
}

// reclone moves the data directory aside (never deletes it: it may hold
// the only copy of some transactions) and clones the leader.
func (a *Agent) reclone(ctx context.Context, o ha.Observation, p ha.Plan) error {
	pg := a.opt.PG
	host, port, err := splitAddr(p.TargetAddr)
	if err != nil {
		return err
	}
	if pg.Running() {
		// A diverged standby whose rewind failed (read-only) stops first.
		if err := pg.StopWithin(ctx, pgctl.Fast, a.opt.StopTimeout); err != nil {
			return fmt.Errorf("stop before re-cloning: %w", err)
		}
	}
	moved, err := pg.MoveAside(o.Now)
	if err != nil {
		return err
	}
	a.log.Warn("data directory moved aside; it is kept for the operator to delete", "path", moved, "reason", p.Reason)
	a.rewindFailed, a.rewindFailedFor = "", ""
	a.publishState(ctx, o, "cloning", p)
	if err := pg.Clone(ctx, host, port, "", pg.StandbyFor(p.Target, host, port)); err != nil {
		return fmt.Errorf("clone: %w", err)
	}
	if err := pg.Configure(); err != nil {
		return err
	}
	return a.start(ctx)
}

// applyLimits takes the cluster-wide maximum_lag_on_failover and
// loop_interval (no I/O). An unreadable config key keeps what was applied:
// unknown is not "the defaults".
func (a *Agent) applyLimits(c election.Cluster) {
	if _, bad := c.Invalid[a.keysConfig]; bad {
		return
	}
	cfg := c.Config
	if a.limitsApplied && c.ConfigRev == a.limitsRev {
		return // unchanged since it was applied: nothing to redo each round
	}
	if !a.storedConfigValid(cfg, c.ConfigRev) {
		return
	}
	a.limitsApplied, a.limitsRev = true, c.ConfigRev
	lag := a.opt.MaxLag
	if cfg.MaximumLagOnFailover != nil {
		lag = *cfg.MaximumLagOnFailover
	}
	a.maxLag.Store(lag)
	sc := a.opt.Sync
	if v := cfg.SynchronousMode; v != nil {
		sc.On = *v
	}
	if v := cfg.SynchronousModeStrict; v != nil {
		sc.Strict = *v
	}
	if v := cfg.SynchronousNodeCount; v != nil {
		sc.Count = *v
	}
	fs := a.opt.Failsafe
	if v := cfg.FailsafeMode; v != nil {
		fs = *v
	}
	if fs != a.failsafeOn {
		a.log.Info("failsafe mode changed", "on", fs)
		a.failsafeOn = fs
	}
	if sc != a.syncCfg {
		a.log.Info("synchronous mode changed", "on", sc.On, "strict", sc.Strict, "count", sc.Count)
		a.syncCfg = sc
	}
	loop := a.opt.LoopInterval
	if cfg.LoopInterval != "" {
		// The one timing rule, with this member's own ttl and margin.
		d, err := time.ParseDuration(cfg.LoopInterval)
		if err == nil {
			err = ValidateDynamic(election.DynamicConfig{LoopInterval: cfg.LoopInterval}, nil, Limits{FenceMargin: a.opt.FenceMargin, TTL: a.opt.TTL})
		}
		if err == nil {
			loop = d
		} else if a.badLoop != cfg.LoopInterval {
			a.badLoop = cfg.LoopInterval
			a.log.Warn("cluster loop_interval not valid for this member; keeping the file's", "loop_interval", cfg.LoopInterval, "ttl", a.opt.TTL, "error", err)
		}
	}
	if loop != a.loopInterval {
		a.log.Info("loop interval changed", "interval", loop)
		a.loopInterval = loop
		a.loopChanged = true
	}
}

// applyParams writes the cluster-wide postgres parameters when they
// changed and reloads postgres; parameters that need a restart show up in
// pg_settings.pending_restart, published for `cifhactl status`.
func (a *Agent) applyParams(o ha.Observation) {
	if o.DCSErr != nil {
		return
	}
	if _, bad := o.Cluster.Invalid[a.keysConfig]; bad {
		return
	}
	want := o.Cluster.Config.Parameters
	if a.paramsApplied && maps.Equal(want, a.appliedParams) {
		return
	}
	if !a.storedConfigValid(o.Cluster.Config, o.Cluster.ConfigRev) {
		return
	}
	a.opt.PG.SetDynamicParams(maps.Clone(want))
	if !a.opt.PG.Running() || o.DataDir != pgctl.DataDirValid {
		a.appliedParams, a.paramsApplied = maps.Clone(want), true
		return // written at the next start
	}
	if err := a.opt.PG.Configure(); err != nil {
		a.log.Error("write cluster-wide parameters (retried next round)", "error", err)
		return
	}
	if err := a.opt.PG.Reload(); err != nil {
		a.log.Error("reload after a cluster config change (retried next round)", "error", err)
		return
	}
	a.appliedParams, a.paramsApplied = maps.Clone(want), true
	a.log.Info("applied cluster-wide parameters", "parameters", len(want))
}

// storedConfigValid re-checks the config read from etcd without pg_settings
// (names, cifha-managed parameters, line breaks, bounds): a key written by
// hand is never applied unchecked. An invalid one is logged once and the
// last applied settings stay.
//
// The answer is kept per revision of the config key: the loop asks every
// iteration, the key rarely changes.
func (a *Agent) storedConfigValid(c election.DynamicConfig, rev int64) bool {
	if a.checkedRev == rev && rev != 0 {
		return a.checkedOK
	}
	// Structure only: ttl and loop_interval depend on each member's own
	// file settings and are checked where they are applied, key by key, so
	// that one member's limits never make it drop the whole config.
	c.TTL, c.LoopInterval = "", ""
	err := ValidateDynamic(c, nil, Limits{})
	a.checkedRev, a.checkedOK = rev, err == nil
	if err != nil {
		a.log.Error("ignoring the cluster config in etcd: invalid; keeping the settings last applied", "error", err, "revision", rev)
	}
	return err == nil
}
