package agent

import (
	"context"
	"errors"
	"fmt"
	"github.com/cifha/cifha/pkg/ha"
	"maps"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cifha/cifha/pkg/election"
	"github.com/cifha/cifha/pkg/pgctl"
	"github.com/cifha/cifha/pkg/state"
	"github.com/hashicorp/go-hclog"
)

// Options wires an Agent.
type Options struct {
	Name string
	PG   Postgres
	DCS  DCS
	// Wake signals that the cluster's keys changed (election.Store.Watch).
	Wake <-chan struct{}
	// PostBootstrap, if set, runs once on the new cluster's first primary
	// after its roles, tablespaces and databases exist ([bootstrap]
	// sql_files and post_bootstrap), outside the loop.
	// It is called on the loop goroutine and returns the job to run (with
	// its own copy of the settings).
	PostBootstrap func() func(ctx context.Context) error
	// LeaseChanged signals that the lease was granted or lost.
	LeaseChanged <-chan struct{}
	// LeaseRenewed signals each successful renewal (the fencer passes the
	// new deadline to the fence watchdog at once).
	LeaseRenewed <-chan struct{}
	// Writable, if set, is told whether postgres runs writable under a
	// lease (the fencer is armed): election.Session.SetWritable, which
	// renews more often then.
	Writable func(bool)
	Log      hclog.Logger
	// Now is the clock; time.Now when nil.
	Now func() time.Time

	LoopInterval time.Duration
	StartTimeout time.Duration
	// FenceMargin: a primary stops accepting writes this long before its
	// lease can expire (see docs/fencing.md).
	FenceMargin time.Duration
	// StopTimeout bounds each step of a shutdown before escalating.
	StopTimeout time.Duration

	APIURL           string
	ConnAddress      string
	AgentVersion     string
	NoFailover       bool
	FailoverPriority int

	// Failover.
	Peers Peers
	// MaxLag is maximum_lag_on_failover in bytes.
	MaxLag int64
	// Sync is this member's file setting of synchronous mode; the
	// cluster-wide setting wins where set.
	Sync ha.SyncConfig
	// Failsafe is this member's file setting of DCS failsafe mode; the
	// cluster-wide setting wins where set.
	Failsafe bool
	// RecentWindow: a candidate must have streamed within this (2 x ttl).
	RecentWindow time.Duration
	// TriggerFile, when set, promotes by creating it instead of pg_ctl promote.
	TriggerFile           string
	RemoveOnRewindFailure bool
	// LastLeaderEvery is how often the leader republishes its WAL position
	// in last-leader (the failover lag gate compares against it).
	LastLeaderEvery time.Duration
	// Hooks are the operator's role-change callbacks.
	Hooks Hooks
	// Watchdog, when set, is fed the fence deadline so that a separate
	// process stops postgres if this agent stops running (SIGSTOP, hang).
	Watchdog Watchdog
	// Control carries out the control API's cluster-wide actions.
	Control Control
	// Token is the bearer token the control API requires ("" disables it).
	Token string
	// ArchiveDir, in archive mode "peers", receives the primary's WAL
	// segments and serves them to standbys (PUT/GET /archive/<name>).
	ArchiveDir string
	// SwitchoverTimeout bounds each wait of a planned switchover (the
	// candidate's replay, then its promotion).
	SwitchoverTimeout time.Duration
	// Username enables HTTP basic auth on the control API (the password is
	// the token).
	Username string
	// ProtectReads puts GET /status and /wal behind the same credentials.
	ProtectReads bool
	// RequireClientCert: the control endpoints also require a verified
	// TLS client certificate (api.client_ca_file).
	RequireClientCert bool
	// WritableBudget bounds a step that makes postgres writable (the etcd
	// transaction and the start or promotion): it begins only if it can
	// end before the fence (ha.MayBecomeWritable).
	WritableBudget time.Duration
	// PrimaryStartTimeout: the leader releases the key after its postgres
	// has failed to start as primary for this long (0: never).
	PrimaryStartTimeout time.Duration
	// Cluster is the cluster's name (a label of the metrics).
	Cluster string
	// TTL is the lease ttl this agent runs with.
	TTL time.Duration
	// ConfigKey is the etcd key of the cluster-wide settings (to tell an
	// unreadable one from an absent one).
	ConfigKey string
}

// Snapshot is what the agent last saw and decided; the API serves it.
type Snapshot struct {
	Member     election.Member
	Cluster    election.Cluster
	IsLeader   bool
	Lease      election.LeaseState
	Running    bool
	InRecovery bool
	Streaming  bool
	DCSErr     string
	Plan       ha.Plan
	ObservedAt time.Time
	// LoopInterval is the loop interval in effect.
	LoopInterval time.Duration
	// Sync is the synchronous mode in effect.
	Sync ha.SyncConfig
	// Following is the leader this standby's files follow ("": none).
	Following string
	// Failsafe is the DCS failsafe mode in effect; Cover and Promise
	// what this member was promised as leader and promised as standby.
	Failsafe bool
	Cover    ha.FailsafeCover
	Promise  ha.Promise
	// Archiver is pg_stat_archiver as last read (nil: postgres not read).
	Archiver *Archiver
}

// Archiver is this postgres' WAL archiving (pg_stat_archiver).
type Archiver struct {
	On             bool
	Archived       int64
	Failed         int64
	LastArchivedAt time.Time
}

// Agent is the per-host daemon's core. Run is its only acting goroutine.
type Agent struct {
	opt Options
	log hclog.Logger
	now func() time.Time

	snap atomic.Pointer[Snapshot]

	lastPlan      ha.Plan
	lastPublished election.Member
	lastPubAt     time.Time
	loggedInvalid map[string]string
	lastObs       ha.Observation
	// writableLease is the lease under which postgres was made writable
	// (0 when postgres is not a primary started or promoted by this agent).
	writableLease int64
	// roleOK is set once the replication role is known to be in place for
	// this term as leader.
	roleOK bool
	actErr actErrLog
	// retry backs off repeated failures of the same action (backoff.go).
	retry backoff
	// acting is the action the loop is carrying out now (nil between
	// actions), for /liveness: a clone holds the loop for minutes.
	acting atomic.Pointer[actingInfo]
	// observedUp: an observation with the lease session held and postgres'
	// state read (systemd's READY=1).
	observedUp atomic.Bool
	// bootstrapPending: this member ran initdb and its first leader
	// housekeeping (roles, tablespaces, databases) has not succeeded yet.
	bootstrapPending bool
	// postBootstrap delivers PostBootstrap's result (nil: not running).
	postBootstrap chan error
	// runCtx is Run's context (work that outlives one step, such as
	// PostBootstrap, ends with it).
	runCtx context.Context
	// seenExit is the exit channel of a postgres whose exit the loop has
	// already handled, so a closed channel does not spin the loop.
	seenExit <-chan struct{}
	fence    *fencer
	// lastStreamed is when postgres was last seen streaming as a standby.
	lastStreamed time.Time
	// runningSince is when postgres was first seen running since it was
	// last seen stopped (ha.Observation.RunningSince).
	runningSince time.Time
	// streamedTL is the newest timeline seen while streaming (read by /wal).
	streamedTL atomic.Int64
	// streamedAt mirrors lastStreamed (unix ns) for /wal.
	streamedAt atomic.Int64
	// rewindFailed is the last pg_rewind error and the leader it was for.
	rewindFailed, rewindFailedFor string
	// lastLeaderAt is when last-leader was last written by this leader.
	lastLeaderAt time.Time
	// promotedAt is set by TakeOver until the post-promotion work is done.
	pendingHistory *election.HistoryRecord
	hooks          *hookRunner
	hookSt         hookState
	// switchW are the API requests waiting for a switchover's outcome.
	switchW switchWaiters
	// replies are this round's switchover outcomes, sent once the round's
	// snapshot is stored (sendReplies).
	replies []pendingReply
	// promoting is set once "promoting" was announced and stays published
	// until postgres is seen as a primary (or stopped), so that an old
	// leader waiting on a switchover cannot miss it.
	promoting bool
	// sw is the switchover this member carries out as the old leader
	// (nil: none); Decide steps it (ha.SwitchoverProgress).
	sw *ha.SwitchoverProgress
	// lastSwitchover is the ID of the switchover request last carried out;
	// a request whose key could not be cleared is never run twice.
	lastSwitchover string
	// ops carries operator requests from the API to the loop; pending is
	// the one being handled.
	ops chan *opRequest
	// creds are the control API's credentials (atomic: read by requests).
	creds atomic.Pointer[Credentials]
	// restartNeeded: keys changed in the file that need an agent restart.
	restartNeeded atomic.Pointer[[]string]
	pending       *opRequest
	// Cluster-wide settings as applied: maxLag is read by the API too.
	maxLag atomic.Int64
	// syncCfg is the effective synchronous mode (loop goroutine only);
	// syncMark what DecideSync needs remembered (ha.SyncMark).
	syncCfg  ha.SyncConfig
	syncMark ha.SyncMark
	// failsafeOn is the effective DCS failsafe mode (loop goroutine
	// only); fs carries it out.
	failsafeOn bool
	fs         *failsafe
	// lastSyncReason, lastSyncRaw: what was last logged and applied.
	lastSyncReason, lastSyncRaw string
	// syncCheckpointed: the setting a CHECKPOINT was run for (the mark
	// waits for it); syncWritten: the members of the last sync record
	// this agent wrote (primeSyncNames names them too).
	syncCheckpointed, syncWritten []string
	// standbySyncNames is the value a standby last configured.
	standbySyncNames string
	standbySyncSet   bool
	loopInterval     time.Duration
	loopChanged      bool
	appliedParams    map[string]string
	paramsApplied    bool
	keysConfig       string
	// limitsRev is the config revision applyLimits last applied.
	limitsRev     int64
	limitsApplied bool
	// checkedRev/checkedOK cache storedConfigValid for one config revision.
	checkedRev int64
	checkedOK  bool
	badLoop    string
	metrics    *Metrics
	// promotingSince is when "promoting" was announced.
	promotingSince time.Time
	// quiet counts consecutive rounds in which nothing changed (see
	// idleInterval); wasIdle is whether the last wait was an idle one.
	quiet   int
	wasIdle bool
	// fencedUnder is the lease under which postgres was last fenced (by
	// the loop or the fencer), 0 once postgres is started again.
	fencedUnder atomic.Int64
	// startFailingSince is when starting the leader's primary began to
	// fail (zero: not failing).
	startFailingSince time.Time
	// resignedAt is when this leader last released the key because its
	// postgres would not start.
	resignedAt time.Time
}

// New returns an Agent; it does nothing until Run.
// Credentials are the control API's token and basic-auth user name; a
// SIGHUP replaces them (SetCredentials) while requests read them.
type Credentials struct{ Token, Username string }

// SetCredentials replaces the control API's credentials (a reload).
func (a *Agent) SetCredentials(c Credentials) { a.creds.Store(&c) }

// Token is the control API's current token (the peer client sends it).
func (a *Agent) Token() string { return a.creds.Load().Token }

// SetRestartNeeded records the configuration keys changed in the file
// that take effect only when the agent restarts (shown in /status).
func (a *Agent) SetRestartNeeded(keys []string) { a.restartNeeded.Store(&keys) }

// RestartNeeded is what SetRestartNeeded recorded.
func (a *Agent) RestartNeeded() []string {
	if p := a.restartNeeded.Load(); p != nil {
		return *p
	}
	return nil
}

// ApplyConfig runs apply on the loop goroutine, then rewrites postgres'
// configuration and reloads it (a SIGHUP's live settings).
func (a *Agent) ApplyConfig(ctx context.Context, apply func() error) error {
	r := &opRequest{op: ha.OpReload, apply: apply, done: make(chan error, 1)}
	select {
	case a.ops <- r:
	case <-ctx.Done():
		return fmt.Errorf("reload: the agent's loop is busy: %w", ctx.Err())
	}
	select {
	case err := <-r.done:
		return err
	case <-ctx.Done():
		return fmt.Errorf("reload: requested, but not finished in time: %w", ctx.Err())
	}
}

func New(opt Options) *Agent {
	if opt.Now == nil {
		opt.Now = time.Now
	}
	if opt.Log == nil {
		opt.Log = hclog.NewNullLogger()
	}
	if opt.StopTimeout == 0 {
		opt.StopTimeout = 10 * time.Second
	}
	if opt.SwitchoverTimeout == 0 {
		opt.SwitchoverTimeout = 30 * time.Second
	}
	a := &Agent{opt: opt, log: opt.Log, now: opt.Now, loggedInvalid: map[string]string{}, ops: make(chan *opRequest),
		loopInterval: opt.LoopInterval, keysConfig: opt.ConfigKey}
	a.maxLag.Store(opt.MaxLag)
	a.creds.Store(&Credentials{Token: opt.Token, Username: opt.Username})
	a.syncCfg = opt.Sync
	a.failsafeOn = opt.Failsafe
	a.fs = newFailsafe(a)
	a.metrics = newMetrics(a)
	a.fence = &fencer{a: a, armedCh: make(chan struct{}, 1)}
	if len(opt.Hooks.OnStart)+len(opt.Hooks.OnStop)+len(opt.Hooks.OnRoleChange) > 0 {
		a.hooks = newHookRunner(opt.Hooks, opt.Log.Named("hooks"))
	}
	return a
}

// logActErr logs a failed action once per change of error, and again
// every minute while the same failure lasts (with how many times), so a
// start that fails every loop round does not flood the log.
func (a *Agent) logActErr(now time.Time, p ha.Plan, err error) {
	if err == nil {
		if a.actErr.msg != "" {
			a.log.Info("action succeeded after failing", "action", p.Action.String(), "failures", a.actErr.repeats+1)
		}
		a.actErr = actErrLog{}
		return
	}
	msg := p.Action.String() + ": " + err.Error()
	switch {
	case msg != a.actErr.msg:
		a.actErr = actErrLog{msg: msg, at: now}
		a.log.Error("action failed", "action", p.Action.String(), "error", err)
	case now.Sub(a.actErr.at) >= time.Minute:
		a.actErr.repeats++
		a.log.Error("action still failing", "action", p.Action.String(), "error", err, "failures", a.actErr.repeats+1)
		a.actErr.at = now
	default:
		a.actErr.repeats++
		a.log.Debug("action failed again", "action", p.Action.String(), "error", err)
	}
}

// actingInfo is an action under way.
type actingInfo struct {
	action ha.Action
	since  time.Time
}

// longAction: actions that may hold the loop for minutes by design, each
// bounded by its own timeout.
func longAction(a ha.Action) bool {
	switch a {
	case ha.Bootstrap, ha.Clone, ha.Rewind, ha.Reclone, ha.Reinit:
		return true
	}
	return false
}

// actErrLog remembers the last logged action failure (loop goroutine).
type actErrLog struct {
	msg     string
	at      time.Time
	repeats int
}

// Snapshot returns the latest snapshot (nil before the first iteration).
func (a *Agent) Snapshot() *Snapshot { return a.snap.Load() }

// minGap keeps a burst of wake-ups from spinning the loop.
const minGap = 20 * time.Millisecond

// Run observes, decides and acts until ctx ends, then shuts down cleanly:
// postgres is stopped and, if this member leads, the leader key released.
func (a *Agent) Run(ctx context.Context) error {
	a.runCtx = ctx
	a.bootstrapPending = a.opt.PG.BootstrapMarked()
	ticker := time.NewTicker(a.opt.LoopInterval)
	defer ticker.Stop()
	fctx, stopFencer := context.WithCancel(ctx)
	fencerDone := make(chan struct{})
	go func() { a.fence.run(fctx); close(fencerDone) }()
	defer func() { stopFencer(); <-fencerDone }()
	askerDone := make(chan struct{})
	go func() { a.fs.run(fctx); close(askerDone) }()
	defer func() { stopFencer(); <-askerDone }()
	if a.hooks != nil {
		hctx, stopHooks := context.WithCancel(context.Background())
		hooksDone := make(chan struct{})
		go func() { a.hooks.run(hctx); close(hooksDone) }()
		// Hooks queued by the shutdown (on_stop) still run, bounded by
		// their timeout; after that the agent exits without waiting.
		defer func() {
			stopHooks()
			select {
			case <-hooksDone:
			case <-time.After(a.opt.Hooks.Timeout + 2*time.Second):
				a.log.Warn("hooks still running at exit")
			}
		}()
	}
	for {
		err := a.Iterate(ctx)
		if ctx.Err() != nil {
			a.shutdown()
			return nil
		}
		if err != nil {
			// A failed action is retried on the next tick, not on the next
			// wake-up: retrying on every change would spin the loop (and, by
			// publishing, every other member's loop too). An idle agent's
			// ticker is stopped: restart it first.
			if a.wasIdle {
				ticker.Reset(a.loopInterval)
				a.wasIdle = false
			}
			a.quiet = 0
			select {
			case <-ctx.Done():
				a.shutdown()
				return nil
			case r := <-a.ops:
				// An operator's request (restart, reinit, ...) is often
				// the remedy for a failing action: take it at once.
				a.pending = r
				a.retry = backoff{}
				if r.apply != nil {
					// A reload's new settings, on this goroutine; refused: nothing changed.
					if err := r.apply(); err != nil {
						r.done <- err
						a.pending = nil
					}
				}
			case <-ticker.C:
			}
			continue
		}
		if a.loopChanged {
			ticker.Reset(a.loopInterval)
			a.loopChanged = false
		}
		// An idle agent (nothing changed for a few rounds) looks less
		// often: every event (etcd, lease, postgres exit, an operator, the
		// fence time, the plan's wake-up) still wakes it at once, so only
		// the periodic safety net slows down. See idleInterval.
		idle := a.quiet >= quietRounds
		switch {
		case idle && !a.wasIdle:
			// Stopped, not just ignored: a ticker nobody reads still wakes
			// the runtime every interval.
			ticker.Stop()
		case !idle && a.wasIdle:
			ticker.Reset(a.loopInterval)
		}
		a.wasIdle = idle
		tick := ticker.C
		if idle {
			tick = nil
		}
		exited := a.opt.PG.Exited()
		if exited == a.seenExit {
			exited = nil // already handled; a closed channel would spin the loop
		}
		select {
		case <-ctx.Done():
			a.shutdown()
			return nil
		case r := <-a.ops:
			a.pending = r
			a.retry = backoff{} // an operator's request or a reload is often the fix: retry at once
			if r.apply != nil {
				// A reload's new settings, on this goroutine; refused: nothing changed.
				if err := r.apply(); err != nil {
					r.done <- err
					a.pending = nil
				}
			}
			continue // at once, without the minimum gap
		case <-tick:
		case <-a.idleTick():
		case <-a.opt.Wake:
			a.quiet = 0
		case err := <-a.postBootstrap:
			a.postBootstrap, a.bootstrapPending, a.quiet = nil, false, 0
			if err != nil {
				// Never retried: it may have done part of its work. The
				// cluster serves; the operator finishes it by hand.
				a.log.Error("post_bootstrap failed; the cluster serves without it: finish its work by hand", "error", err)
			} else {
				a.log.Info("post_bootstrap done")
			}
		case <-a.opt.LeaseChanged:
			a.quiet = 0
		case <-a.fenceDue():
		case <-a.planWake():
			continue // the plan asked for this moment: no extra gap
		case <-exited:
			a.seenExit = exited
			a.quiet = 0
			a.log.Warn("postgres exited")
		}
		select {
		case <-ctx.Done():
		case <-time.After(minGap):
		}
	}
}

// quietRounds is how many unchanged rounds make the agent idle.
const quietRounds = 3

// idleInterval is the loop interval of an idle agent: ttl/3 (Patroni's
// default loop_wait is 10 s), never less than loop_interval. Between idle
// rounds nothing is missed that matters for safety or failover: the fence
// has its own timer, leader loss and every relevant etcd change arrive by
// the watch, a postgres exit by its channel; what waits is the periodic
// refresh of positions (the leader's last-leader record, a standby's
// "streamed recently", both well within their windows).
func (a *Agent) idleInterval() time.Duration {
	return max(a.loopInterval, a.opt.TTL/3)
}

// idleTick is the idle agent's tick (nil while it is not idle).
func (a *Agent) idleTick() <-chan time.Time {
	if a.quiet < quietRounds {
		return nil
	}
	return time.After(a.idleInterval())
}

// planWake fires at the last plan's WakeAt (a switchover step, a
// scheduled switchover, a start timeout); nil when it has none.
func (a *Agent) planWake() <-chan time.Time {
	if a.lastPlan.WakeAt.IsZero() {
		return nil
	}
	return time.After(max(a.lastPlan.WakeAt.Sub(a.now()), 0))
}

// Iterate runs one observe-decide-act round and returns the action's error.
// Exported for the loop tests.
func (a *Agent) Iterate(ctx context.Context) error {
	started := time.Now()
	o := a.observe(ctx)
	if o.Lease.ID != 0 && o.DCSErr == nil {
		a.observedUp.Store(true)
	}
	a.applyParams(o)
	p := ha.Decide(o)
	switch {
	case p.Action == ha.StartPrimary && a.startFailingSince.IsZero():
		// Cleared once postgres is seen serving as primary: until then the
		// start counts as failing (also when postgres starts, then dies).
		a.startFailingSince = o.Now
	case p.Action == ha.AcquireAndStart:
		// A new term: it gets a full primary_start_timeout.
		a.startFailingSince = o.Now
	}
	// A failing clone, start or rewind is retried with a growing delay
	// (backoff.go); meanwhile the round acts on nothing and the last error
	// stands in the member's state.
	until, backingOff := a.retry.wait(o.Now, p)
	if backingOff && (p.WakeAt.IsZero() || until.Before(p.WakeAt)) {
		p.WakeAt = until
	}
	q, last := p, a.lastPlan
	q.WakeAt, last.WakeAt = time.Time{}, time.Time{}
	if q != last {
		// A change of plan is logged once (the wake-up time alone is no change).
		level := hclog.Info
		if p.Action == ha.Fence || p.Action == ha.Demote {
			level = hclog.Warn
		}
		a.log.Log(level, "plan", "action", p.Action.String(), "target", p.Target, "reason", p.Reason)
	}
	a.lastPlan = p
	if !o.Running && o.DCSErr == nil {
		a.primeSyncNames(o.Cluster)
	}
	var err error
	if backingOff {
		err = a.retry.lastErr
		a.log.Debug("backing off a failing action", "action", p.Action.String(), "until", until, "failures", a.retry.failures)
	} else {
		a.acting.Store(&actingInfo{action: p.Action, since: time.Now()})
		err = a.act(ctx, o, p)
		a.acting.Store(nil)
		a.logActErr(o.Now, p, err)
		a.retry.record(o.Now, p, err, a.loopInterval)
		if o.Op != ha.OpNone {
			a.finishOp(p, err)
		}
	}
	if o.HoldsLeader && o.PG != nil && !o.PG.InRecovery && p.Action == ha.None {
		a.leaderHousekeeping(ctx, o)
	} else if o.HoldsLeader && o.PG != nil && !o.PG.InRecovery && o.Cluster.Paused && o.DCSErr == nil {
		// Maintenance mode: the failsafe list still follows the members,
		// or an etcd outage during maintenance would fence the leader.
		a.fs.step(ctx, o, a.failsafeOn)
	} else if o.DCSErr == nil && o.PG != nil && o.PG.InRecovery && p.Action == ha.None {
		a.ensureSlots(ctx, o)
		a.standbySync()
	}
	if p.Action.MakesWritable() || p.Action == ha.Demote || p.Action == ha.Fence || p.Action == ha.Switchover ||
		p.Action == ha.SwitchoverFollow {
		// The role changed under the observation (a standby promoted, a
		// leader stopped or resumed): publishing the old one would keep
		// /primary answering wrongly for a round.
		o = a.observe(ctx)
	}
	prev := a.lastPublished
	if m := a.publish(ctx, o, p, err); err == nil && o.DCSErr == nil && q == last && (p.Action == ha.None || p.Action == ha.Wait) && !significant(m, prev) && o.Op == ha.OpNone {
		a.quiet++
	} else {
		a.quiet = 0
	}
	a.sendReplies()
	a.hooksAfter(o)
	// Whether this member leads (then it promises nothing) and the term
	// its writable postgres runs in, for the failsafe asker.
	// With etcd unreadable whether it holds the key is unknown: taking
	// stays as it was (unknown is never "not leading").
	taking := o.HoldsLeader || a.writableLease != 0 || a.promoting || (o.Running && (o.PG == nil || !o.PG.InRecovery) && !o.Standby.Standby)
	a.fs.setRole(taking, o.DCSErr != nil, a.writableLease)
	a.lastObs = o
	a.metrics.observeLoop(time.Since(started), p)
	return err
}

// Metrics returns the agent's Prometheus metrics.
func (a *Agent) Metrics() *Metrics { return a.metrics }

func (a *Agent) observe(ctx context.Context) ha.Observation {
	o := ha.Observation{Self: a.opt.Name, FenceMargin: a.opt.FenceMargin, WritableBudget: a.opt.WritableBudget,
		PrimaryStartTimeout: a.opt.PrimaryStartTimeout}
	pg := a.opt.PG
	o.DataDir, o.DataDirErr = pg.DataDirState()
	if o.DataDir == pgctl.DataDirValid {
		st, err := pg.StandbyState()
		if err != nil {
			o.DataDirErr = err
		}
		o.Standby = st
	}
	o.Running = pg.Running()
	if !o.Running {
		a.writableLease = 0
		a.fence.disarm()
		a.runningSince = time.Time{}
	} else if a.runningSince.IsZero() {
		a.runningSince = a.now()
	}
	o.RunningSince = a.runningSince
	if !o.Running && o.DataDir == pgctl.DataDirValid {
		o.ForeignPID = pg.ForeignPID()
	}
	if o.Running {
		sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		st, err := pg.Status(sctx)
		cancel()
		if err != nil {
			o.PGErr = err
		} else {
			o.PG = &st
		}
	}
	if !o.Running || (o.PG != nil && !o.PG.InRecovery) {
		a.promoting = false // promoted, or not running: no longer "promoting"
	}
	if a.promoting && a.now().Sub(a.promotingSince) > a.opt.SwitchoverTimeout+a.opt.StartTimeout {
		// Still a standby long after the announcement: the promotion
		// failed. (An old leader stops waiting after SwitchoverTimeout.)
		a.promoting = false
	}
	o.WritableLease = a.writableLease
	if a.sw != nil {
		sw := *a.sw
		o.Switchover = &sw
	}
	o.FencedUnder = a.fencedUnder.Load()
	if o.PG != nil && !o.PG.InRecovery {
		a.startFailingSince = time.Time{} // serving as primary
	}
	o.StartFailingSince = a.startFailingSince
	o.ResignedAt = a.resignedAt
	if a.pending != nil {
		o.Op, o.OpArg = a.pending.op, a.pending.arg
	}
	o.NoFailover, o.FailoverPriority = a.opt.NoFailover, a.opt.FailoverPriority
	o.RecentWindow, o.RemoveOnRewindFailure = a.opt.RecentWindow, a.opt.RemoveOnRewindFailure
	if o.PG != nil && o.PG.InRecovery && o.PG.WalReceiver == "streaming" {
		a.lastStreamed = a.now()
		a.streamedAt.Store(a.lastStreamed.UnixNano())
		if int64(o.PG.Timeline) > a.streamedTL.Load() {
			a.streamedTL.Store(int64(o.PG.Timeline))
		}
	}
	o.LastStreamed = a.lastStreamed
	o.StreamedTimeline = int(a.streamedTL.Load())
	o.Cover, o.Promise = a.fs.coverNow(), a.fs.promiseNow()
	// The lease is read before etcd so that HoldsLeader can never pair a
	// newer lease with an older read.
	o.Lease = a.opt.DCS.Lease()
	c, err := a.opt.DCS.Read(ctx)
	if err == nil && a.writableLease != 0 && o.Running && !a.opt.DCS.Holds(c) {
		// This member made postgres writable under its lease, yet the
		// view says it does not hold the key. The view may lag this
		// agent's own acquire, so ask etcd: if the key is really gone
		// (deleted, or its lease revoked, which etcd can do early, see
		// election.Session.renew), Decide fences at once.
		c, err = a.opt.DCS.ReadFresh(ctx)
	}
	// The clock is read last: a time read before the slow status and etcd
	// calls above would make a fence decision late.
	o.Now = a.now()
	if err != nil {
		o.DCSErr = err
		return o
	}
	o.Cluster = c
	a.applyLimits(c)
	o.MaxLag = a.maxLag.Load()
	o.HoldsLeader = a.opt.DCS.Holds(c)
	if o.HoldsLeader {
		o.Term = a.opt.DCS.Term()
	}
	o.OwnsLeaderKey = a.opt.DCS.OwnsKey(c)
	if l := c.Leader; l != nil && l.Valid && a.rewindFailedFor == l.Name {
		o.RewindFailed = a.rewindFailed
	}
	if to := a.switchoverTarget(o); to != "" {
		o.SwitchoverTarget, o.SwitchoverTargetErr = a.readTarget(ctx, c, to)
		o.Now = a.now()
	}
	if c.Leader == nil && o.PG != nil && o.PG.InRecovery && a.opt.Peers != nil {
		o.Candidates = a.candidates(ctx, c)
		o.Now = a.now()
	}
	seen := make(map[string]string, len(c.Invalid)+len(c.Ignored))
	for _, m := range []map[string]string{c.Invalid, c.Ignored} {
		for k, why := range m {
			if a.loggedInvalid[k] != why {
				a.log.Warn("ignoring invalid key in etcd", "key", k, "problem", why)
			}
			seen[k] = why
		}
	}
	a.loggedInvalid = seen
	return o
}

// switchoverTarget names the switchover candidate whose live position this
// round needs: a request due on this leader, or a switchover awaiting the
// candidate's replay ("" otherwise).
func (a *Agent) switchoverTarget(o ha.Observation) string {
	if a.sw != nil {
		if a.sw.Phase == ha.PhaseStopped {
			return a.sw.To
		}
		return ""
	}
	r := o.Cluster.Switchover
	if r == nil || r.From != a.opt.Name || r.To == a.opt.Name || !o.HoldsLeader || o.PG == nil || o.PG.InRecovery {
		return ""
	}
	if !r.At.IsZero() && o.Now.Before(r.At) {
		return ""
	}
	return r.To
}

// readTarget reads member name's live position from its API (bounded).
func (a *Agent) readTarget(ctx context.Context, c election.Cluster, name string) (*ha.Candidate, error) {
	m, ok := c.Members[name]
	if !ok {
		return nil, fmt.Errorf("%s is not a member", name)
	}
	if a.opt.Peers == nil {
		return nil, errors.New("no API client")
	}
	cctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	defer cancel()
	cand, err := a.opt.Peers.Candidate(cctx, m.APIURL)
	if err != nil {
		return nil, err
	}
	return &cand, nil
}

// madeWritable is the last step before postgres is made writable (started
// as primary or promoted) on every path: it applies the fence rule with a
// fresh clock (gateNow), then records that postgres accepts writes under
// lease and arms the fencer. On error nothing must be made writable.
func (a *Agent) madeWritable(lease election.LeaseState) error {
	if err := a.gateNow(lease); err != nil {
		return err
	}
	a.writableLease = int64(lease.ID)
	a.fence.arm(lease.ID)
	return nil
}

func splitAddr(addr string) (string, int, error) {
	h, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, fmt.Errorf("address %q: %w", addr, err)
	}
	port, err := strconv.Atoi(p)
	if err != nil {
		return "", 0, fmt.Errorf("address %q: bad port", addr)
	}
	return h, port, nil
}

func (a *Agent) act(ctx context.Context, o ha.Observation, p ha.Plan) error {
	pg, dcs := a.opt.PG, a.opt.DCS
	switch p.Action {
	case ha.None, ha.Wait:
		return nil

	case ha.StopForeign:
		sctx, cancel := context.WithTimeout(ctx, a.opt.StopTimeout)
		defer cancel()
		return pg.StopForeign(sctx)

	case ha.Bootstrap:
		if o.Cluster.Initialize == "" {
			won, err := dcs.ClaimInitialize(ctx)
			if err != nil {
				return err
			}
			if !won {
				a.log.Info("another member is initialising the cluster")
				return nil
			}
			a.log.Info("won the initialize key: running initdb")
		}
		if err := pg.InitDB(ctx); err != nil {
			// Let another member (or a retry) bootstrap; the failed initdb
			// left nothing behind.
			if rerr := dcs.ReleaseInitialize(ctx); rerr != nil {
				a.log.Error("release initialize key", "error", rerr)
			}
			return fmt.Errorf("bootstrap: %w", err)
		}
		if err := pg.Configure(); err != nil {
			return fmt.Errorf("bootstrap: %w", err)
		}
		if err := pg.SetPrimary(); err != nil {
			return fmt.Errorf("bootstrap: %w", err)
		}
		// Until the leader's first housekeeping made the tablespaces, roles
		// and databases, it publishes "bootstrapping", not "running", so no
		// member clones a half-made cluster (a tablespace created after a
		// clone would be replayed at the primary's path, not the member's).
		a.bootstrapPending = true
		// Kept beside the data directory: an agent restarted before the
		// first housekeeping still knows the cluster is half-made.
		if err := pg.MarkBootstrap(true); err != nil {
			return fmt.Errorf("bootstrap: %w", err)
		}
		return a.acquireAndStart(ctx, o, p.Reason)

	case ha.Clone:
		host, port, err := splitAddr(p.TargetAddr)
		if err != nil {
			return err
		}
		a.publishState(ctx, o, "cloning", p)
		a.log.Info("cloning", "from", p.Target, "address", p.TargetAddr)
		if err := pg.Clone(ctx, host, port, "", pg.StandbyFor(p.Target, host, port)); err != nil {
			return fmt.Errorf("clone: %w", err)
		}
		if err := pg.Configure(); err != nil {
			return err
		}
		return a.start(ctx)

	case ha.StartPrimary:
		if err := pg.Configure(); err != nil {
			return err
		}
		if err := a.gateNow(o.Lease); err != nil {
			return err
		}
		if err := a.madeWritable(o.Lease); err != nil {
			return err
		}
		return a.start(ctx)

	case ha.Resign:
		a.log.Warn("releasing the leader key", "reason", p.Reason)
		if err := dcs.Resign(ctx); err != nil {
			return err
		}
		a.resignedAt = o.Now
		return nil

	case ha.ClearLeaderKey:
		return dcs.ClearUnbound(ctx, o.Cluster.Leader.ModRev, o.Cluster.Leader.Lease)

	case ha.AcquireAndStart:
		return a.acquireAndStart(ctx, o, p.Reason)

	case ha.StartStandby:
		if err := pg.Configure(); err != nil {
			return err
		}
		if p.Target != "" {
			host, port, err := splitAddr(p.TargetAddr)
			if err != nil {
				return err
			}
			if err := pg.SetStandby(pg.StandbyFor(p.Target, host, port)); err != nil {
				return err
			}
		}
		return a.start(ctx)

	case ha.Follow:
		host, port, err := splitAddr(p.TargetAddr)
		if err != nil {
			return err
		}
		if err := pg.SetStandby(pg.StandbyFor(p.Target, host, port)); err != nil {
			return err
		}
		if pg.Version() >= 130000 {
			return pg.Reload() // primary_conninfo is reloadable from 13
		}
		if err := pg.StopWithin(ctx, pgctl.Fast, a.opt.StopTimeout); err != nil {
			return err
		}
		return a.start(ctx)

	case ha.Promote:
		if ll := o.Cluster.LastLeader; ll != nil && ll.Name == o.Self && ll.From != "" && a.pendingHistory == nil {
			a.pendingHistory = &election.HistoryRecord{At: o.Now.UTC(), OldLeader: ll.From, NewLeader: o.Self, LSN: ll.LSN,
				Reason: fmt.Sprintf("planned switchover from %s", ll.From)}
		}
		a.roleOK = false
		if err := a.gateNow(o.Lease); err != nil {
			return err
		}
		if ll := o.Cluster.LastLeader; ll != nil && ll.Name == o.Self && ll.From != "" {
			// Handed the key by a switchover: claim the promotion first, in
			// a transaction that needs the key on this member's lease. The
			// old leader takes the key back only while no claim exists, so
			// this promotion can never be undone by a take-back.
			if err := a.opt.DCS.ClaimPromotion(ctx, ll.SwitchoverID); err != nil {
				return fmt.Errorf("not promoting: %w", err)
			}
		}
		if err := a.announcePromotion(ctx, o, p); err != nil {
			return err
		}
		if err := a.madeWritable(o.Lease); err != nil {
			return err
		}
		return a.promote(ctx)

	case ha.Switchover:
		return a.switchoverStop(ctx, o, p)
	case ha.Handoff:
		return a.switchoverHandoff(ctx, o, p)
	case ha.SwitchoverHandedOff:
		a.sw.Phase, a.sw.Deadline = ha.PhaseHandedOff, a.now().Add(a.opt.SwitchoverTimeout)
		return nil
	case ha.SwitchoverRollback:
		return a.switchoverRollback(ctx, p)
	case ha.SwitchoverFollow:
		return a.switchoverFollow(ctx, p)
	case ha.TakeBack:
		return a.switchoverTakeBack(ctx, o, p)
	case ha.SwitchoverAbandon:
		a.switchDone(a.sw.ID, false, "%s", p.Reason)
		return nil

	case ha.Restart, ha.Reload, ha.Reinit, ha.DropSlot, ha.Refuse:
		return a.actOp(ctx, o, p)

	case ha.ClearRequest:
		a.log.Info("clearing request", "reason", p.Reason)
		if sw := o.Cluster.Switchover; sw != nil {
			a.reply(sw.ID, switchResult{Message: p.Reason})
			return dcs.ClearSwitchover(ctx, sw.ModRev)
		}
		return nil

	case ha.TakeOver:
		prev := ""
		if o.Cluster.LastLeader != nil {
			prev = o.Cluster.LastLeader.Name
		}
		lsn := ha.Position(o.PG.ReceiveLSN, o.PG.ReplayLSN)
		lease, err := a.acquire(ctx, election.LastLeader{Timeline: o.PG.Timeline, LSN: lsn.String(), At: o.Now}, o)
		if err != nil {
			return err
		}
		a.log.Info("took the leader key; promoting", "previous_leader", prev, "received_lsn", lsn.String())
		if err := a.gateNow(lease); err != nil {
			return err
		}
		if err := a.announcePromotion(ctx, o, p); err != nil {
			return err
		}
		if err := a.madeWritable(lease); err != nil {
			return err
		}
		a.roleOK = false
		a.pendingHistory = &election.HistoryRecord{At: o.Now.UTC(), OldLeader: prev, NewLeader: o.Self, LSN: lsn.String(), Reason: p.Reason}
		return a.promote(ctx)

	case ha.Rewind:
		host, port, err := splitAddr(p.TargetAddr)
		if err != nil {
			return err
		}
		if pg.Running() {
			// A standby whose history diverged (never a primary here: a
			// running primary is never planned a rewind) stops first.
			if err := pg.StopWithin(ctx, pgctl.Fast, a.opt.StopTimeout); err != nil {
				return fmt.Errorf("stop before rewind: %w", err)
			}
		}
		if err := pg.Configure(); err != nil { // the passfile pg_rewind uses
			return err
		}
		a.log.Info("rewinding", "from", p.Target)
		if err := pg.Rewind(ctx, host, port); err != nil {
			if !errors.Is(err, pgctl.ErrRewindNotStarted) {
				// Only a rewind that may have changed the data directory
				// is final (then a fresh clone, or the operator); one that
				// never reached its source is planned again next round.
				a.rewindFailed, a.rewindFailedFor = err.Error(), p.Target
			}
			return err
		}
		a.rewindFailed, a.rewindFailedFor = "", ""
		a.log.Info("rewound; starting as standby", "leader", p.Target)
		if err := pg.Configure(); err != nil { // pg_rewind copied the source's files
			return err
		}
		if err := pg.SetStandby(pg.StandbyFor(p.Target, host, port)); err != nil {
			return err
		}
		return a.start(ctx)

	case ha.Reclone:
		return a.reclone(ctx, o, p)

	case ha.RepairLeaderKey:
		return dcs.Repair(ctx)

	case ha.Reacquire:
		rec := election.LastLeader{At: o.Now}
		if o.PG != nil {
			rec.Timeline, rec.LSN = o.PG.Timeline, o.PG.CurrentLSN.String()
		}
		lease := o.Lease
		if !o.HoldsLeader {
			var err error
			if lease, err = a.acquire(ctx, rec, o); err != nil {
				return err
			}
			a.log.Warn("took the leader key again after the etcd outage; postgres stayed writable on failsafe promises throughout", "lease", fmt.Sprintf("%x", lease.ID))
		}
		// Postgres never stopped: the term continues under the new lease.
		return a.madeWritable(lease)

	case ha.ClearStaleLeader:
		return dcs.ClearStale(ctx, o.Cluster.Leader.ModRev)

	case ha.Demote:
		return pg.StopWithin(ctx, pgctl.Fast, a.opt.StopTimeout)

	case ha.Fence:
		// Must finish before the lease can expire: fast, escalating to
		// immediate and SIGKILL within a fraction of the margin each.
		step := a.opt.FenceMargin / 3
		if step <= 0 {
			step = 100 * time.Millisecond
		}
		fenced := a.writableLease
		if fenced == 0 {
			fenced = o.Lease.ID
		}
		if err := pg.StopWithin(ctx, pgctl.Fast, step); err != nil {
			return err
		}
		a.fencedUnder.Store(fenced)
		return nil
	}
	return fmt.Errorf("unknown action %v", p.Action)
}

func errOr(err error, msg string) error {
	if err != nil {
		return err
	}
	return errors.New(msg)
}

// gateNow re-applies the fence rule with a fresh clock right before a
// step that makes postgres writable: Decide's check used the observation's
// time, and slow calls may have passed since.
func (a *Agent) gateNow(lease election.LeaseState) error {
	if lease.ID != a.opt.DCS.Lease().ID {
		return errors.New("not making postgres writable: the lease changed since the observation")
	}
	if ok, why := ha.MayBecomeWritable(a.now(), a.opt.DCS.Lease(), a.opt.FenceMargin, a.opt.WritableBudget); !ok {
		return fmt.Errorf("not making postgres writable: %s", why)
	}
	if wd := a.opt.Watchdog; wd != nil {
		if e := wd.Err(); e != "" {
			return fmt.Errorf("not making postgres writable: %s", e)
		}
	}
	return nil
}

func (a *Agent) start(ctx context.Context) error {
	a.fencedUnder.Store(0)
	if a.opt.TriggerFile != "" {
		// A trigger file left from an interrupted promotion would make this
		// start promote itself without the key.
		a.opt.PG.RemoveTriggerFile(a.opt.TriggerFile)
	}
	// A postgres this agent starts (after a rewind, say) is new: it gets
	// the recent window to connect before it can be called diverged.
	a.runningSince = a.now()
	err := a.opt.PG.Start(ctx, a.opt.StartTimeout)
	if errors.Is(err, pgctl.ErrStartTimout) {
		a.log.Warn("postgres still starting", "waited", a.opt.StartTimeout)
		return nil
	}
	return err
}

// acquireAndStart takes the leader key and only then starts a primary, so a
// writable postgres never runs without the key.
func (a *Agent) acquireAndStart(ctx context.Context, o ha.Observation, reason string) error {
	pg := a.opt.PG
	// Keep the recorded timeline until postgres reports its own: writing 0
	// would let a stale primary look newer than this one.
	rec := election.LastLeader{At: o.Now}
	if ll := o.Cluster.LastLeader; ll != nil && ll.Name == o.Self {
		rec.Timeline, rec.LSN = ll.Timeline, ll.LSN
	}
	lease, err := a.acquire(ctx, rec, o)
	if err != nil {
		return err
	}
	a.log.Info("acquired the leader key")
	a.roleOK = false
	if ll := o.Cluster.LastLeader; ll == nil || ll.Name != o.Self {
		prev := ""
		if ll != nil {
			prev = ll.Name
		}
		a.pendingHistory = &election.HistoryRecord{At: o.Now.UTC(), OldLeader: prev, NewLeader: o.Self, Reason: reason}
	}
	if err := pg.Configure(); err != nil {
		return err
	}
	if err := a.madeWritable(lease); err != nil {
		return err
	}
	return a.start(ctx)
}

// acquire takes the leader key and returns the lease it is bound to. The
// lease is read before the transaction: if the session replaces it in
// between, the key is bound to a newer lease than the one returned and the
// next Decide fences (a false alarm, never a missed one).
func (a *Agent) acquire(ctx context.Context, rec election.LastLeader, o ha.Observation) (election.LeaseState, error) {
	lease := a.opt.DCS.Lease()
	if lease.ID == 0 {
		return lease, election.ErrNoLease
	}
	if err := a.gateNow(lease); err != nil {
		return lease, err
	}
	// Serialised with the failsafe promises this member gives: none is
	// given from here on, and one given before stops this.
	if err := a.fs.beginTake(a.now(), o.Cluster.FailsafeRev != 0); err != nil {
		return lease, err
	}
	ok, err := a.opt.DCS.Acquire(ctx, rec, o.Cluster.FailsafeRev)
	if err != nil || !ok {
		return lease, errOr(err, "leader key taken by another member")
	}
	return lease, nil
}

// leaderHousekeeping keeps a replication slot for every other member (made
// as soon as it registers, so a rejoin finds its WAL) and the last-leader
// record's timeline current.
func (a *Agent) leaderHousekeeping(ctx context.Context, o ha.Observation) {
	if !a.roleOK {
		if err := a.opt.PG.EnsureRoles(ctx, a.bootstrapPending); err != nil {
			a.log.Error("ensure roles and databases", "error", err)
		} else {
			a.roleOK = true
			if a.bootstrapPending && a.postBootstrap == nil {
				// Tablespaces exist now; post_bootstrap runs at most once
				// (an agent restart while it runs does not start it again).
				if err := a.opt.PG.MarkBootstrap(false); err != nil {
					a.log.Warn("remove the bootstrap marker", "error", err)
				}
				if a.opt.PostBootstrap == nil {
					a.bootstrapPending = false
				} else {
					// Outside the loop: a schema load may take minutes; the
					// leader stays "bootstrapping" (no clone) until it ends.
					done := make(chan error, 1)
					a.postBootstrap = done
					a.log.Info("running post_bootstrap")
					job := a.opt.PostBootstrap()
					go func() { done <- job(a.runCtx) }()
				}
			}
		}
	}
	if a.opt.TriggerFile != "" {
		// Promotion done: a trigger file must not outlive it (postgres
		// would promote a later standby start by itself).
		a.opt.PG.RemoveTriggerFile(a.opt.TriggerFile)
	}
	a.ensureSlots(ctx, o)
	a.fs.step(ctx, o, a.failsafeOn)
	if a.syncStep(ctx, o) {
		a.quiet = 0 // the next step is due at the next loop interval, not the idle one
	}
	if h := a.pendingHistory; h != nil {
		// After a promotion: checkpoint (so pg_rewind on the old primary sees
		// the new timeline), then record the change.
		if err := a.opt.PG.Checkpoint(ctx); err != nil {
			a.log.Warn("checkpoint after promotion", "error", err)
		}
		h.Timeline = o.PG.Timeline
		if err := a.opt.DCS.AppendHistory(ctx, *h); err != nil {
			a.log.Warn("append history", "error", err)
		} else {
			a.pendingHistory = nil
		}
	}
	if f := o.Cluster.Failover; f != nil {
		// A manual failover request is done once a leader serves.
		if err := a.opt.DCS.ClearFailover(ctx, f.ModRev); err != nil {
			a.log.Warn("clear failover request", "error", err)
		}
	}
	// Republish the WAL position regularly: the failover lag gate compares
	// candidates with the last position the leader published.
	ll := o.Cluster.LastLeader
	// (Only when it moved: an idle primary writes nothing.)
	if ll == nil || ll.Name != o.Self || ll.Term != o.Term || ll.Timeline < o.PG.Timeline ||
		(o.Now.Sub(a.lastLeaderAt) >= a.opt.LastLeaderEvery && ll.LSN != o.PG.CurrentLSN.String()) {
		if err := a.opt.DCS.PutLastLeader(ctx, election.LastLeader{Timeline: o.PG.Timeline, LSN: o.PG.CurrentLSN.String(), At: o.Now.UTC()}); err != nil {
			a.log.Warn("update last-leader", "error", err)
		} else {
			a.lastLeaderAt = o.Now
		}
	}
}

// ensureSlots keeps a replication slot for every known member (every
// member key, and the last leader, whose key is gone while it is down) on
// this member's postgres, leader or standby. Slots made on a standby
// survive its promotion, so when a member rejoins a new leader its slot is
// already there: no walreceiver waits on a missing slot (the new leader
// used to create it only when the member's key reappeared, racing its
// first connection). WAL kept for them is bounded by
// max_slot_wal_keep_size. Nothing is queried unless a slot is missing.
func (a *Agent) ensureSlots(ctx context.Context, o ha.Observation) {
	if o.PG.InRecovery && a.opt.PG.Version() < 130000 {
		// Before 13 nothing bounds what a slot keeps (no
		// max_slot_wal_keep_size): no slots on standbys there.
		return
	}
	have := make(map[string]bool, len(o.PG.Slots))
	for _, s := range o.PG.Slots {
		if s.Lost && !s.Active {
			// Past max_slot_wal_keep_size: it can no longer serve. Make it
			// again (a member that needs older WAL is re-cloned anyway).
			if err := a.opt.PG.DropSlot(ctx, s.Name); err != nil {
				a.log.Warn("drop a lost replication slot", "slot", s.Name, "error", err)
				have[s.Name] = true
			}
			continue
		}
		have[s.Name] = true
	}
	names := slices.Sorted(maps.Keys(o.Cluster.Members))
	if ll := o.Cluster.LastLeader; ll != nil {
		names = append(names, ll.Name)
	}
	for _, name := range names {
		slot := SlotName(name)
		if name == o.Self || have[slot] || !election.ValidName(name) {
			continue
		}
		have[slot] = true
		if err := a.opt.PG.CreateSlot(ctx, slot); err != nil {
			a.log.Error("create replication slot", "for", name, "error", err)
		} else {
			a.log.Info("created replication slot", "for", name)
		}
	}
}

// promote promotes postgres by the configured method (pg_ctl waits until it
// accepts writes; the trigger file is polled by postgres every 5 s).
func (a *Agent) promote(ctx context.Context) error {
	if a.opt.TriggerFile != "" {
		return a.opt.PG.PromoteByTriggerFile(a.opt.TriggerFile)
	}
	return a.opt.PG.Promote(ctx)
}

// candidates asks every other replica's API for its live WAL position.
func (a *Agent) candidates(ctx context.Context, c election.Cluster) map[string]ha.Candidate {
	out := map[string]ha.Candidate{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for name, m := range c.Members {
		if name == a.opt.Name || m.Role != "replica" {
			continue
		}
		wg.Add(1)
		go func(name, url string) {
			defer wg.Done()
			cctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
			defer cancel()
			cand, err := a.opt.Peers.Candidate(cctx, url)
			if err != nil {
				cand = ha.Candidate{Err: err.Error()}
			}
			mu.Lock()
			out[name] = cand
			mu.Unlock()
		}(name, m.APIURL)
	}
	wg.Wait()
	return out
}

// member builds this member's published state from an observation.
func (a *Agent) member(o ha.Observation, p ha.Plan) election.Member {
	m := election.Member{
		Name: a.opt.Name, APIURL: a.opt.APIURL, ConnAddress: a.opt.ConnAddress,
		AgentVersion: a.opt.AgentVersion, NoFailover: a.opt.NoFailover, FailoverPriority: a.opt.FailoverPriority,
		Version: a.opt.PG.Version().String(), Reason: p.Reason, UpdatedAt: o.Now.UTC(),
	}
	if a.opt.TTL > 0 {
		m.TTL = a.opt.TTL.String()
	}
	if o.DataDir == pgctl.DataDirValid {
		m.Role = "primary"
		if o.Standby.Standby {
			m.Role = "replica"
		}
	}
	switch {
	case p.Action == ha.Bootstrap:
		m.State = "bootstrapping"
	case o.DataDir == pgctl.DataDirForeign:
		m.State = "blocked"
	case o.DataDir == pgctl.DataDirMissing:
		m.State = "uninitialized"
	case !o.Running && o.ForeignPID != 0:
		// Not ours, maybe writable: never "stopped" (others would take it
		// for a safe, stopped primary).
		m.State = "foreign postmaster"
	case !o.Running:
		m.State = "stopped"
	case o.PG == nil:
		m.State = "unknown"
	case !o.PG.InRecovery && a.bootstrapPending && o.HoldsLeader:
		m.State = "bootstrapping" // see ha.Bootstrap in act
		m.Role = "primary"
	case !o.PG.InRecovery:
		m.State = "running"
		m.Role = "primary"
	default:
		m.Role = "replica"
		m.State = "in recovery"
		if o.PG.WalReceiver == "streaming" {
			m.State = "streaming"
		}
	}
	if a.promoting && o.Running && (o.PG == nil || o.PG.InRecovery) {
		m.State = "promoting"
	}
	if a.sw != nil && !o.Running {
		m.State = "switching over"
	}
	if st := o.PG; st != nil {
		m.Timeline = st.Timeline
		m.ReplayPaused = st.ReplayPaused
		m.PendingRestart = st.PendingRestart
		if st.CurrentLSN != 0 {
			m.CurrentLSN = st.CurrentLSN.String()
		}
		if st.ReceiveLSN != 0 {
			m.ReceiveLSN = st.ReceiveLSN.String()
		}
		if st.ReplayLSN != 0 {
			m.ReplayLSN = st.ReplayLSN.String()
		}
		if !st.InRecovery {
			for _, sl := range st.Slots {
				m.Slots = append(m.Slots, sl.Name)
			}
			slices.Sort(m.Slots)
		}
		for _, r := range st.Replication {
			if r.ReplayLSN == 0 {
				continue // connected but not reported yet: lag unknown, not "everything"
			}
			m.Replicas = append(m.Replicas, election.ReplicaLag{Name: r.Name, State: r.State,
				ReplayLSN: r.ReplayLSN.String(), LagBytes: st.CurrentLSN.Sub(r.ReplayLSN),
				LagSeconds: state.ReplayLagSeconds(st.CurrentLSN, r.ReplayLSN, r.ReplayLagSeconds)})
		}
	}
	return m
}

// significant reports whether two published states differ in something other
// members react to (everything but positions and the timestamp).
func significant(a, b election.Member) bool {
	return a.Role != b.Role || a.State != b.State || a.Timeline != b.Timeline || a.Reason != b.Reason ||
		a.ConnAddress != b.ConnAddress || a.APIURL != b.APIURL || a.ReplayPaused != b.ReplayPaused ||
		!slices.Equal(a.PendingRestart, b.PendingRestart) || !slices.Equal(a.Slots, b.Slots)
}

// publishEvery is how often an unchanged member state is republished (its
// WAL positions): what others react to is published at once; positions are
// for people and cifhactl status, which asks each agent's API anyway, and
// the key lives on the session lease, not on refreshes. An idle cluster
// then writes (and wakes other agents) rarely.
func publishEvery(loop time.Duration) time.Duration { return max(loop*9/10, 10*time.Second) }

// publish stores the snapshot and puts the member state when needed; it
// returns the state it built.
func (a *Agent) publish(ctx context.Context, o ha.Observation, p ha.Plan, actErr error) election.Member {
	m := a.member(o, p)
	if actErr != nil {
		m.Reason = fmt.Sprintf("%s (last action failed: %v)", p.Reason, actErr)
	}
	// The lease that fences this primary: extended by a failsafe cover.
	snap := &Snapshot{Member: m, Cluster: o.Cluster, IsLeader: o.HoldsLeader, Lease: ha.EffectiveLease(o.Lease, o.WritableLease, o.Cover),
		Running: o.Running, Plan: p, ObservedAt: o.Now, LoopInterval: a.loopInterval, Sync: a.syncCfg,
		Failsafe: a.failsafeOn, Cover: o.Cover, Promise: o.Promise}
	if o.DCSErr != nil && o.WritableLease != 0 {
		// etcd unreadable: the key cannot be seen, but this primary's
		// term runs until its (effective) lease ends, which /primary
		// checks at every request.
		if prev := a.snap.Load(); prev != nil && prev.IsLeader {
			snap.IsLeader = true
		}
	}
	if o.Standby.Standby {
		snap.Following, _, _ = strings.Cut(o.Standby.Target, " ")
	}
	if o.PG != nil {
		snap.InRecovery = o.PG.InRecovery
		snap.Streaming = o.PG.InRecovery && o.PG.WalReceiver == "streaming"
		if o.PG.ArchiverKnown {
			snap.Archiver = &Archiver{On: o.PG.Archiving, Archived: o.PG.ArchivedCount, Failed: o.PG.ArchiveFailed, LastArchivedAt: o.PG.LastArchived}
		} else if prev := a.snap.Load(); prev != nil {
			snap.Archiver = prev.Archiver // a slow read keeps the last value rather than dropping the series
		}
	}
	if o.DCSErr != nil {
		snap.DCSErr = o.DCSErr.Error()
	}
	a.snap.Store(snap)
	// Publish when something others react to changed, else once per loop
	// interval: every put wakes every other agent.
	if o.DCSErr != nil || (!significant(m, a.lastPublished) && o.Now.Sub(a.lastPubAt) < publishEvery(a.loopInterval)) {
		return m
	}
	if err := a.opt.DCS.PutMember(ctx, m); err != nil {
		if !errors.Is(err, election.ErrNoLease) {
			a.log.Warn("publish member state", "error", err)
		}
		return m
	}
	a.lastPublished, a.lastPubAt = m, o.Now
	return m
}

// publishState publishes a transient state (cloning) before a long action.
func (a *Agent) publishState(ctx context.Context, o ha.Observation, state string, p ha.Plan) error {
	m := a.member(o, p)
	m.State = state
	err := a.opt.DCS.PutMember(ctx, m)
	if err == nil {
		a.lastPublished, a.lastPubAt = m, o.Now
	}
	return err
}

// announcePromotion publishes state "promoting" before postgres is
// promoted, and refuses to promote if that fails: an old leader waiting on
// a switchover takes its role back only if it never saw this state (see
// switchover.go), so the promotion must never happen unannounced.
func (a *Agent) announcePromotion(ctx context.Context, o ha.Observation, p ha.Plan) error {
	a.promoting, a.promotingSince = true, a.now()
	if err := a.publishState(ctx, o, "promoting", p); err != nil {
		a.promoting = false
		return fmt.Errorf("announce promotion: %w", err)
	}
	return nil
}

func (a *Agent) shutdown() {
	ctx, cancel := context.WithTimeout(context.Background(), 3*a.opt.StopTimeout)
	defer cancel()
	held := a.lastObs.HoldsLeader
	if a.opt.PG.Running() {
		a.log.Info("stopping postgres")
		if err := a.opt.PG.StopWithin(ctx, pgctl.Fast, a.opt.StopTimeout); err != nil {
			a.log.Error("stop postgres", "error", err)
		}
	}
	if a.hooks != nil && a.hookSt.running && !a.opt.PG.Running() {
		a.hooks.fire("on_stop", a.hookSt.role)
		a.hookSt = hookState{}
	}
	// Only after postgres stopped accepting writes is the key released.
	if held && !a.opt.PG.Running() {
		if err := a.opt.DCS.Resign(ctx); err != nil {
			a.log.Warn("resign", "error", err)
		} else {
			a.log.Info("released the leader key")
		}
	}
}
