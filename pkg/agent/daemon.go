package agent

import (
	"context"
	"maps"
	"slices"

	"crypto/tls"
	"errors"
	"fmt"
	"github.com/cifha/cifha/pkg/api"
	"github.com/cifha/cifha/pkg/doctor"
	"github.com/cifha/cifha/pkg/ha"
	"github.com/cifha/cifha/pkg/version"
	"net"
	"net/http"
	"os"
	"os/user"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/cifha/cifha/pkg/config"
	"github.com/cifha/cifha/pkg/election"
	"github.com/cifha/cifha/pkg/pgctl"
	"github.com/cifha/cifha/pkg/tuning"
	"github.com/hashicorp/go-hclog"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Run is the whole daemon: it wires etcd, postgres, the loop and the API
// from cfg and runs until ctx ends, then shuts down cleanly.
//
// reload, if not nil, delivers SIGHUP: the file is read again; settings
// that can change live take effect, the others are logged and shown in
// /status as needing a restart; an invalid file changes nothing.
func Run(ctx context.Context, cfg *config.Config, log hclog.Logger, reload <-chan os.Signal) error {
	binDir := cfg.Postgres.BinDir
	if binDir == "" {
		d, err := pgctl.DetectBinDir()
		if err != nil {
			return err
		}
		binDir = d
	}
	ver, err := pgctl.DetectVersion(ctx, binDir)
	if err != nil {
		return err
	}
	log.Info("starting", "cluster", cfg.Cluster, "postgres", ver.String(), "bin_dir", binDir,
		"data_dir", cfg.Postgres.DataDir, "ttl", cfg.HA.TTL.Duration, "version", version.Version)

	if err := tuning.SupportedVersion(int(ver)); err != nil {
		return fmt.Errorf("%s in bin_dir %s: %w", ver, binDir, err)
	}
	// Nothing is claimed in etcd (the initialize key, the leader key)
	// until this host can run postgres: a busy port or socket, or a data
	// directory that cannot be made, is reported with its fix and waited
	// out here.
	// First what an interrupted initdb or clone left (it would fail the
	// preflight's emptiness checks of wal_dir and the tablespaces).
	if removed, err := pgctl.CleanTempDirs(cfg.Postgres.DataDir, cfg.Postgres.WalDir, cfg.Postgres.Tablespaces); err != nil {
		log.Warn("clean up interrupted clone", "error", err)
	} else if len(removed) > 0 {
		log.Info("removed directories of an interrupted initdb or clone", "paths", removed)
	}
	if !waitPreflight(ctx, cfg, log) {
		log.Info("stopped before the preflight passed")
		return nil
	}
	ps, err := pgSettings(cfg, ver, binDir)
	if err != nil {
		return err
	}
	pc := cfg.Postgres
	triggerFile, settings, restore, cleanup, peersDir := ps.triggerFile, ps.settings, ps.restore, ps.cleanup, ps.peersDir
	inst := pgctl.New(pgctl.Config{BinDir: binDir, DataDir: pc.DataDir, WalDir: pc.WalDir, Tablespaces: pc.Tablespaces, SocketDir: pc.SocketDir, Port: pc.Port,
		Superuser: pc.Superuser, LogFile: pc.LogFile, PassFile: pc.PassFile, TLS: ps.settings.TLS}, ver)
	pg := NewPG(inst, settings, pc.SuperuserPassword, pc.ReplicationUser, pc.ReplicationPassword, cfg.Name)
	pg.TriggerFile = triggerFile
	pg.Bootstrap = cfg.Bootstrap
	var postBootstrap func() func(context.Context) error
	if len(cfg.Bootstrap.SQLFiles) > 0 || len(cfg.Bootstrap.PostBootstrap) > 0 {
		postBootstrap = func() func(context.Context) error {
			b := pg.Bootstrap // read on the loop goroutine (a reload writes it there)
			return func(ctx context.Context) error { return pg.PostBootstrap(ctx, b) }
		}
	}
	pg.RestoreCommand, pg.ArchiveCleanupCommand = restore, cleanup

	// The client is made inside the wait: with a username it logs in
	// while connecting, and fails while etcd is down.
	var cli *clientv3.Client
	defer func() {
		if cli != nil {
			cli.Close()
		}
	}()
	verr := waitEtcd(ctx, log, func(ctx context.Context) error {
		if cli == nil {
			c, err := election.NewClient(cfg.Etcd)
			if err != nil {
				return err
			}
			cli = c
		}
		vctx, cancel := context.WithTimeout(ctx, cfg.Etcd.DialTimeout.Duration+time.Second)
		defer cancel()
		return election.Check(vctx, cli, cfg.Etcd)
	}, time.Second)
	if ctx.Err() != nil {
		log.Info("stopped while waiting for etcd")
		return nil
	}
	if cli == nil {
		return verr // no client: a wrong setting (TLS files, a refused login)
	}
	if verr != nil {
		if !cfg.Etcd.AllowUnsafeServer {
			return fmt.Errorf("etcd server check: %w (etcd.allow_unsafe_server overrides this for tests only)", verr)
		}
		log.Warn("etcd server check failed; running anyway (etcd.allow_unsafe_server)", "error", verr)
	}
	ttl := clusterTTL(ctx, cli, cfg, log)
	// One clock for every deadline: the session's ValidUntil and the
	// agent's Now (CLOCK_BOOTTIME, so a suspend counts).
	clock := election.BootClock()
	sess := election.NewSession(cli, ttl, log.Named("lease"), clock)
	store := election.NewStore(cli, cfg.Cluster, cfg.Name, sess, log.Named("etcd"))
	sess.SetCheckKey(store.Keys().Leader())
	// Requests go only to etcd members that answer (election.Guard: a
	// frozen or black-holed member keeps its connections open).
	tm := ha.Timing{TTL: ttl}
	guard := election.NewGuard(cli, cfg.Etcd, store.Keys().Leader(), 500*time.Millisecond, max(tm.RenewAttemptTimeout(), 250*time.Millisecond), log.Named("etcd"))
	guardCtx, stopGuard := context.WithCancel(context.Background())
	guardDone := make(chan struct{})
	go func() { guard.Run(guardCtx, cfg.Etcd); close(guardDone) }()
	defer func() { stopGuard(); <-guardDone }()

	// The lease outlives the loop: a leader releases its key only after
	// postgres has stopped, so the session is cancelled last.
	sessCtx, stopSession := context.WithCancel(context.Background())
	sessDone := make(chan struct{})
	go func() { sess.Run(sessCtx); close(sessDone) }()
	defer func() { stopSession(); <-sessDone }()
	watchCtx, stopWatch := context.WithCancel(context.Background())
	defer stopWatch()

	peerClient, err := api.NewHTTPClient(api.TLS{CAFile: cfg.API.CAFile}, "", time.Second)
	if err != nil {
		return err
	}
	var self *Agent // the peers get this agent's current token (a SIGHUP may change it)
	peerClient = api.WithTokenFunc(peerClient, func() string {
		if self == nil {
			return cfg.API.Token
		}
		return self.Token()
	})
	wd, err := NewProcessWatchdog(log.Named("watchdog"))
	if err != nil {
		return err
	}
	defer wd.Close()

	a := New(Options{
		Name: cfg.Name, PG: pg, DCS: store, Wake: store.Watch(watchCtx), LeaseChanged: sess.Changed(), LeaseRenewed: sess.Renewed(), Writable: func(on bool) { sess.SetWritable(on); guard.SetPrimary(on) },
		Log: log.Named("ha"), Now: clock, LoopInterval: cfg.HA.LoopInterval.Duration, StartTimeout: cfg.HA.StartTimeout.Duration,
		// A writable step (the leader-key transaction plus a start or a
		// promotion, about 0.1 s here) must be able to end before the fence.
		WritableBudget:      ha.Timing{TTL: ttl}.WritableBudget(),
		PrimaryStartTimeout: cfg.HA.PrimaryStartTimeout.Duration,
		SwitchoverTimeout:   cfg.HA.SwitchoverTimeout.Duration,
		FenceMargin:         cfg.HA.FenceMargin.Duration, APIURL: cfg.API.AdvertiseURL, ConnAddress: pc.ConnectAddress,
		AgentVersion: version.Version, NoFailover: cfg.Tags.NoFailover, FailoverPriority: cfg.Tags.FailoverPriority,
		Peers:  HTTPPeers{Client: peerClient},
		MaxLag: cfg.HA.MaxLagBytes, Sync: ha.SyncConfig{On: cfg.HA.SynchronousMode, Strict: cfg.HA.SynchronousModeStrict, Count: cfg.HA.SynchronousNodeCount},
		Failsafe:     cfg.HA.FailsafeMode,
		RecentWindow: 2 * ttl, RemoveOnRewindFailure: cfg.HA.RemoveDataDirectoryOnRewindFailure,
		LastLeaderEvery: cfg.HA.LoopInterval.Duration,
		TriggerFile:     triggerFile,
		Hooks: Hooks{OnStart: cfg.Callbacks.OnStart, OnStop: cfg.Callbacks.OnStop, OnRoleChange: cfg.Callbacks.OnRoleChange,
			Timeout: cfg.Callbacks.Timeout.Duration, Cluster: cfg.Cluster},
		Watchdog:          wd,
		Control:           store,
		ConfigKey:         store.Keys().Config(),
		TTL:               ttl,
		Cluster:           cfg.Cluster,
		RequireClientCert: cfg.API.ClientCAFile != "",
		Username:          cfg.API.Username,
		ProtectReads:      cfg.API.ProtectReads,
		Token:             cfg.API.Token,
		ArchiveDir:        peersDir,
		PostBootstrap:     postBootstrap,
	})
	self = a

	ln, err := net.Listen("tcp", cfg.API.Listen)
	if err != nil {
		return fmt.Errorf("api listen: %w", err)
	}
	srv := &http.Server{Handler: Handler(a), ReadHeaderTimeout: 5 * time.Second}
	if cfg.API.CertFile != "" {
		tc, err := api.ServerTLS(cfg.API.CertFile, cfg.API.KeyFile, cfg.API.ClientCAFile)
		if err != nil {
			ln.Close()
			return err
		}
		srv.TLSConfig = tc
		ln = tls.NewListener(ln, srv.TLSConfig)
	}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("api server", "error", err)
		}
	}()
	defer func() {
		c, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = srv.Shutdown(c)
	}()

	if reload != nil {
		go reloadLoop(ctx, reload, cfg, ver, binDir, a, pg, log)
	}
	sdCtx, sdStop := context.WithCancel(ctx)
	defer sdStop()
	go newSDNotifier(a).run(sdCtx)
	err = a.Run(ctx)
	if pg.Running() {
		// postgres could not be stopped: keep the lease until it runs out so
		// that no standby can take over while it may still accept writes
		// (it dies with this process: parent-death signal).
		log.Error("postgres still running at exit; not releasing the lease")
		sess.Abandon()
	}
	log.Info("stopped")
	return err
}

// clusterTTL is the cluster config's ttl (cifhactl set ttl=...) when it is
// set and valid for this member, else the file's. A lease keeps the ttl it
// was granted with, so a change applies when the agent starts.
func clusterTTL(ctx context.Context, cli *clientv3.Client, cfg *config.Config, log hclog.Logger) time.Duration {
	ttl := cfg.HA.TTL.Duration
	gctx, cancel := context.WithTimeout(ctx, cfg.Etcd.DialTimeout.Duration+time.Second)
	defer cancel()
	resp, err := cli.Get(gctx, election.KeysFor(cfg.Cluster).Config())
	if err != nil || len(resp.Kvs) == 0 {
		return ttl
	}
	dc, err := election.ParseDynamicConfig(resp.Kvs[0].Value)
	if err != nil || dc.TTL == "" {
		return ttl
	}
	d, err := time.ParseDuration(dc.TTL)
	if err == nil {
		err = cfg.HA.Timing(cfg.Etcd.DialTimeout.Duration).With(d).Validate()
	}
	if err != nil {
		log.Warn("ignoring the cluster config's ttl: invalid for this member", "ttl", dc.TTL, "error", err)
		return ttl
	}
	log.Info("ttl from the cluster config", "ttl", d)
	return d
}

// shellQuote quotes s for sh (postgres runs archive and restore commands
// through it); "%" is doubled, since postgres expands %-escapes first.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(strings.ReplaceAll(s, "%", "%%"), "'", `'\''`) + "'"
}

// bootstrapHBA allows [bootstrap] clients into each bootstrap database as
// its owner, by password (scram-sha-256; md5 before 10).
func bootstrapHBA(cfg *config.Config, ver pgctl.Version) []string {
	method := "scram-sha-256"
	if ver < 100000 {
		method = "md5"
	}
	host := "host"
	if cfg.Postgres.SSLCertFile != "" {
		host = "hostssl" // with TLS on, CIF logs in over TLS only
	}
	var out []string
	for _, d := range cfg.Bootstrap.Databases {
		owner := d.Owner
		if owner == "" {
			owner = cfg.Postgres.Superuser
		}
		for _, cl := range cfg.Bootstrap.Clients {
			out = append(out, fmt.Sprintf("%s %s %s %s %s", host, d.Name, owner, cl, method))
		}
	}
	return out
}

// pgSetup is what the configuration makes of postgres' settings.
type pgSetup struct {
	triggerFile, restore, cleanup, peersDir string
	settings                                pgctl.Settings
}

// pgSettings builds postgres' settings from the configuration: tuning,
// HA settings, the archive's commands, the operator's parameters and
// pg_hba lines. Run at start and by a SIGHUP reload.
func pgSettings(cfg *config.Config, ver pgctl.Version, binDir string) (pgSetup, error) {
	triggerFile := ""
	if cfg.HA.PromoteMethod == "trigger_file" {
		if ver >= 160000 {
			return pgSetup{}, fmt.Errorf("ha.promote_method = \"trigger_file\": promote_trigger_file was removed in PostgreSQL 16 (this is %s)", ver)
		}
		triggerFile = cfg.HA.TriggerFile
	}
	var tuned []tuning.Param
	if cfg.Tuning.Profile == "cif" {
		mem, err := tuning.HostMemory()
		if cfg.Tuning.Memory != "" {
			mem, err = config.ParseBytes(cfg.Tuning.Memory)
		}
		if err != nil {
			return pgSetup{}, err
		}
		tuned = append(tuning.CIF(mem, int(ver)), tuning.CPU(runtime.NumCPU(), int(ver))...)
	}
	osUser := "postgres"
	if u, err := user.Current(); err == nil {
		osUser = u.Username
	}
	pc := cfg.Postgres
	var restore, cleanup string
	peersDir := ""
	switch cfg.Archive.Mode {
	case "command":
		pc.ArchiveCommand, restore, cleanup = cfg.Archive.ArchiveCommand, cfg.Archive.RestoreCommand, cfg.Archive.CleanupCommand
	case "directory", "peers":
		// postgres runs these through sh: both paths single-quoted.
		// The path cifha was started by (the unit's ExecStart), not the
		// symlink's target os.Executable gives: an upgrade that replaces
		// a versioned target must not break postgres' commands.
		self := os.Args[0]
		if !filepath.IsAbs(self) {
			var err error
			if self, err = os.Executable(); err != nil {
				return pgSetup{}, fmt.Errorf("archive: locate the cifha binary: %w", err)
			}
		}
		pc.ArchiveCommand = fmt.Sprintf("%s archive-wal --dir %s %%p %%f", shellQuote(self), shellQuote(cfg.Archive.Dir))
		restore = fmt.Sprintf("%s restore-wal --dir %s %%f %%p", shellQuote(self), shellQuote(cfg.Archive.Dir))
		if cfg.Archive.Mode == "peers" {
			// The same commands with this configuration: they find the
			// peers in etcd and reach them with the API token.
			cf, err := filepath.Abs(cfg.Path)
			if err != nil || cfg.Path == "" {
				return pgSetup{}, fmt.Errorf("archive: the configuration file's path (for postgres' archive commands): %v", err)
			}
			pc.ArchiveCommand = fmt.Sprintf("%s archive-wal --config %s %%p %%f", shellQuote(self), shellQuote(cf))
			restore = fmt.Sprintf("%s restore-wal --config %s %%f %%p", shellQuote(self), shellQuote(cf))
			peersDir = cfg.Archive.Dir
		}
		if cfg.Archive.Cleanup {
			cleanup = fmt.Sprintf("%s %s %%r", shellQuote(filepath.Join(binDir, "pg_archivecleanup")), shellQuote(cfg.Archive.Dir))
		}
	}
	settings := pgctl.Settings{
		Version: ver, ClusterName: cfg.Name, Listen: pc.Listen, Port: pc.Port, SocketDir: pc.SocketDir,
		OSUser: osUser, Superuser: pc.Superuser, ReplicationUser: pc.ReplicationUser,
		Params:         MergeParams(tuned, tuning.HA(int(ver), tuning.HAOptions{ArchiveCommand: pc.ArchiveCommand, TriggerFile: triggerFile}), pc.Parameters),
		HBA:            append(append([]string{}, pc.HBA...), bootstrapHBA(cfg, ver)...),
		MemberNetworks: pc.MemberNetworks,
		TLS:            pgctl.TLSFor(pc),
	}
	return pgSetup{triggerFile: triggerFile, restore: restore, cleanup: cleanup, peersDir: peersDir, settings: settings}, nil
}

// liveKeys are the configuration keys a SIGHUP applies without a restart
// (by prefix): the control API's credentials, the log level, and what
// only rewrites postgres' files (parameters, pg_hba, tuning, bootstrap).
var liveKeys = []string{"api.token_file", "api.username", "log.level", "postgres.parameters", "postgres.hba", "postgres.member_networks", "tuning.", "bootstrap."}

func isLive(key string) bool {
	for _, p := range liveKeys {
		if key == p || strings.HasPrefix(key, p) {
			return true
		}
	}
	return false
}

// reloadLoop handles SIGHUP (see Run).
func reloadLoop(ctx context.Context, hup <-chan os.Signal, start *config.Config, ver pgctl.Version, binDir string, a *Agent, pg *PG, log hclog.Logger) {
	cur := start
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
		}
		log.Info("SIGHUP: reading the configuration again", "file", start.Path)
		next, err := config.Load(start.Path)
		if err != nil {
			log.Error("reload refused: the file is invalid; the running configuration stays", "error", err)
			continue
		}
		var restart []string
		for _, k := range config.Diff(start, next) {
			if !isLive(k) {
				restart = append(restart, k)
			}
		}
		a.SetRestartNeeded(restart)
		if len(restart) > 0 {
			log.Warn("restart needed: these settings take effect when the agent restarts", "keys", restart)
		}
		changed := config.Diff(cur, next)
		var live []string
		for _, k := range changed {
			if isLive(k) {
				live = append(live, k)
			}
		}
		if len(live) == 0 {
			log.Info("reload: no setting that applies live changed")
			cur = next
			continue
		}
		if next.Log.Level != cur.Log.Level {
			log.SetLevel(hclog.LevelFromString(next.Log.Level))
		}
		if next.API.Token != cur.API.Token || next.API.Username != cur.API.Username {
			a.SetCredentials(Credentials{Token: next.API.Token, Username: next.API.Username})
			log.Info("control API credentials replaced")
		}
		// postgres' files from the running configuration with the new
		// live sections (listen, port, paths... stay as started).
		mix := *start
		mix.Postgres.Parameters, mix.Postgres.HBA, mix.Postgres.MemberNetworks = next.Postgres.Parameters, next.Postgres.HBA, next.Postgres.MemberNetworks
		if next.Postgres.HBADefault {
			// The default client line follows TLS, which applies only at a
			// restart: until then it is the running postgres' (a hostssl
			// line before ssl is on would lock every client out).
			mix.Postgres.HBA = config.DefaultHBA(start.Postgres.SSLCertFile != "")
		}
		mix.Tuning, mix.Bootstrap = next.Tuning, next.Bootstrap
		ps, err := pgSettings(&mix, ver, binDir)
		if err != nil {
			log.Error("reload: postgres settings", "error", err)
			continue
		}
		rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		err = a.ApplyConfig(rctx, func() error {
			// What postgres would refuse is refused here, before its files
			// change: a reload it rejects would leave them for the next start.
			if pg.Running() {
				sctx, cancel := context.WithTimeout(rctx, 2*time.Second)
				settings, err := pg.ReadSettings(sctx)
				cancel()
				if err == nil {
					for _, name := range slices.Sorted(maps.Keys(next.Postgres.Parameters)) {
						if err := checkValue(name, next.Postgres.Parameters[name], settings); err != nil {
							return fmt.Errorf("postgres.parameters.%s: %w", name, err)
						}
					}
				}
			}
			pg.Settings = ps.settings
			pg.Bootstrap = next.Bootstrap
			a.roleOK = false // a leader makes sure of the (new) roles and databases again
			return nil
		})
		cancel()
		if err != nil {
			log.Error("reload refused: postgres configuration not applied; the running configuration stays", "error", err)
			continue
		}
		cur = next
		log.Info("configuration reloaded", "changed", live)
	}
}

// waitEtcd runs check until it passes or fails for a reason other than an
// unreachable etcd (election.ErrUnreachable: every endpoint down or
// silent). Hosts boot together, and an etcd member that is restarting or
// behind a dead proxy is no reason to exit: nothing has been claimed and
// postgres has not been started, so the agent waits, as Patroni does for
// its DCS, and says so. A wrong setting (a refused certificate, a server
// without the lease fix) is returned at once. It returns ctx's error when
// ctx ends first.
func waitEtcd(ctx context.Context, log hclog.Logger, check func(context.Context) error, delay time.Duration) error {
	last, said := "", time.Time{}
	for {
		err := check(ctx)
		if err == nil || !errors.Is(err, election.ErrUnreachable) {
			if err == nil && last != "" {
				log.Info("etcd answers: starting")
			}
			return err
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		// Said when it changes, and again every 5 minutes: a wrong
		// endpoint (a typo, another service's port) looks like a down one.
		if msg := err.Error(); msg != last || time.Since(said) >= 5*time.Minute {
			log.Error("waiting for etcd, nothing claimed and postgres not started: " + msg)
			last, said = msg, time.Now()
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(delay):
		}
		delay = min(2*delay, 10*time.Second)
	}
}

// waitPreflight runs doctor.Preflight until it passes, logging each
// failure with its fix once per change, retrying with a growing pause
// (1 s doubling to 30 s). It returns false if the agent is stopped first.
func waitPreflight(ctx context.Context, cfg *config.Config, log hclog.Logger) bool {
	name := "postgres"
	if u, err := user.Current(); err == nil {
		name = u.Username
	}
	delay, last := time.Second, ""
	for {
		rep := doctor.Preflight(cfg, os.Geteuid(), os.Getegid(), name)
		var msgs []string
		for _, x := range rep.Results {
			if x.Status == doctor.Fail {
				msgs = append(msgs, x.Check+": "+x.Detail+"; fix: "+x.Fix)
			}
		}
		if len(msgs) == 0 {
			if last != "" {
				log.Info("preflight passed: starting")
			}
			return true
		}
		if joined := strings.Join(msgs, "\n"); joined != last {
			for _, m := range msgs {
				log.Error("preflight: waiting, nothing claimed in etcd: " + m)
			}
			last = joined
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(delay):
		}
		delay = min(2*delay, 30*time.Second)
	}
}
