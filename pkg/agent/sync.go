package agent

import (
	"context"
	"maps"
	"slices"

	"github.com/cifha/cifha/pkg/ha"
	"github.com/cifha/cifha/pkg/state"
)

// syncStep carries out one step of synchronous-replication housekeeping on
// the leader (ha.DecideSync decides; the order of steps is the safety
// argument, see pkg/ha/sync.go). It reports whether it changed something.
func (a *Agent) syncStep(ctx context.Context, o ha.Observation) bool {
	if o.PG == nil || o.PG.InRecovery || o.DCSErr != nil {
		return false
	}
	p := state.ParseSyncStandbyNames(o.PG.SyncNames)
	eff := ha.SyncNames{Names: p.Names, Block: p.Block, OK: p.OK, Raw: o.PG.SyncNames}
	// The mark: the first position read while the effective setting named
	// exactly these standbys. A standby named in it that has flushed past
	// the mark has every commit acknowledged before it; every later one
	// waited for it.
	names := slices.Sorted(slices.Values(p.Names))
	if !p.OK || p.Block || len(names) == 0 {
		a.syncMark, a.syncCheckpointed = ha.SyncMark{}, nil
	} else if !slices.Equal(a.syncMark.Names, names) || a.syncMark.LSN == 0 {
		// Whether a commit waits at all is decided by a flag only the
		// checkpointer updates when it processes the reload, and it
		// skips reloads while a checkpoint runs behind schedule: this
		// session may already show the new setting while commits do not
		// wait yet. A CHECKPOINT returns only after one that started
		// after the request, and the checkpointer takes the reload
		// before starting it; the mark is taken in the round after.
		if !slices.Equal(a.syncCheckpointed, names) {
			if err := a.opt.PG.Checkpoint(ctx); err != nil {
				a.log.Warn("synchronous replication: checkpoint before the mark", "error", err)
				return true
			}
			a.syncCheckpointed = names
			a.syncMark = ha.SyncMark{}
			return true // the mark is read next round, after the checkpoint
		}
		a.syncMark = ha.SyncMark{Names: names, LSN: o.PG.CurrentLSN}
	}
	s := ha.DecideSync(ha.SyncInput{Self: a.opt.Name, Term: a.opt.DCS.Term(), Config: a.syncCfg, Record: o.Cluster.Sync, Effective: eff,
		Replicas: o.PG.Replication, Members: o.Cluster.Members, Mark: a.syncMark, MaxReplyAge: ha.Timing{TTL: a.opt.TTL}.SyncReplyTimeout()})
	if s.Reason != a.lastSyncReason {
		a.lastSyncReason = s.Reason
		if s.Kind == ha.SyncNone {
			a.log.Info("synchronous replication", "state", s.Reason)
		}
	}
	var err error
	switch s.Kind {
	case ha.SyncNone:
		return false
	case ha.SyncRecord:
		a.log.Info("synchronous replication: writing the sync record", "members", s.Members, "strict", s.Strict, "reason", s.Reason)
		// Remembered before the write: if its answer is lost, etcd may
		// hold it, and a restart is primed with these names too.
		a.syncWritten = append(a.syncWritten[:0], s.Members...)
		err = a.opt.DCS.PutSync(ctx, s.Members, s.Strict)
	case ha.SyncDeleteRecord:
		a.log.Info("synchronous replication: removing the sync record", "reason", s.Reason)
		err = a.opt.DCS.DeleteSync(ctx)
	case ha.SyncSetNames:
		v := state.SyncStandbyNames(int(a.opt.PG.Version()), s.Names, s.Block)
		if !p.OK && len(a.lastSyncRaw) > 0 && a.lastSyncRaw == o.PG.SyncNames {
			// Written and reloaded, yet postgres applies another value:
			// postgresql.auto.conf (ALTER SYSTEM) or a command-line
			// setting overrides the file. Said once; retried each round.
			a.log.Warn("synchronous_standby_names is overridden outside cifha's configuration (ALTER SYSTEM?); reset it", "applied", o.PG.SyncNames)
		}
		a.lastSyncRaw = o.PG.SyncNames
		a.log.Info("synchronous replication: setting synchronous_standby_names", "value", v, "reason", s.Reason)
		a.opt.PG.SetSyncNames(v)
		a.standbySyncSet = false
		if err = a.opt.PG.Configure(); err == nil {
			err = a.opt.PG.Reload()
		}
		if err != nil {
			// Not applied: keep what postgres applies, so that a later
			// configure and reload (a parameter change, cifhactl reload)
			// does not apply a value the record was not stepped for.
			a.opt.PG.SetSyncNames(o.PG.SyncNames)
			if cerr := a.opt.PG.Configure(); cerr != nil {
				a.log.Warn("synchronous replication: restore the configured value", "error", cerr)
			}
		}
	}
	if err != nil {
		a.log.Warn("synchronous replication step failed", "error", err)
	}
	return true
}

// standbySync keeps a standby's synchronous_standby_names at what it needs
// the moment it is promoted: in strict mode the placeholder (commits wait
// until the new leader has a synchronous standby of its own), else none.
func (a *Agent) standbySync() {
	v := ""
	if a.syncCfg.On && a.syncCfg.Strict {
		v = state.SyncStandbyNames(int(a.opt.PG.Version()), nil, true)
	}
	if v == a.standbySyncNames && a.standbySyncSet {
		return
	}
	a.opt.PG.SetSyncNames(v)
	if err := a.opt.PG.Configure(); err != nil {
		a.log.Warn("configure synchronous_standby_names", "error", err)
		return
	}
	if err := a.opt.PG.Reload(); err != nil {
		a.log.Warn("reload", "error", err)
		return
	}
	a.standbySyncNames, a.standbySyncSet = v, true
}

// primeSyncNames sets the synchronous_standby_names a postgres started now
// would run with, from the sync record, so that no start (a crashed
// primary's restart, an agent restart) acknowledges a commit the recorded
// standbys lack: this leader's recorded standbys, or in strict mode the
// placeholder when there are none. Called while postgres is not running.
func (a *Agent) primeSyncNames(c state.Cluster) {
	// The recorded standbys as the view shows them, and those this agent
	// last wrote (the view may lag, or a write's answer may have been
	// lost): naming more standbys only makes commits wait for more.
	set := map[string]bool{}
	if sy := c.Sync; sy != nil && sy.Leader == a.opt.Name {
		for _, m := range sy.Members {
			set[m] = true
		}
	}
	for _, m := range a.syncWritten {
		set[m] = true
	}
	names := slices.Sorted(maps.Keys(set))
	block := a.syncCfg.On && a.syncCfg.Strict && len(names) == 0
	a.opt.PG.SetSyncNames(state.SyncStandbyNames(int(a.opt.PG.Version()), names, block))
	a.standbySyncSet = false
}
