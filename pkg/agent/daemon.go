package agent

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"github.com/cifha/cifha/pkg/ha"
	"net"
	"net/http"
	"os"
	"os/user"
	"time"

	"github.com/cifha/cifha/pkg/config"
	"github.com/cifha/cifha/pkg/election"
	"github.com/cifha/cifha/pkg/pgctl"
	"github.com/cifha/cifha/pkg/tuning"
	"github.com/hashicorp/go-hclog"
	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// Version is the agent's version, set at build time.
var Version = "dev"

// EtcdClient connects to etcd as configured (TLS and auth included).
func EtcdClient(c config.Etcd) (*clientv3.Client, error) {
	cc := clientv3.Config{
		Endpoints:   c.Endpoints,
		DialTimeout: c.DialTimeout.Duration,
		Username:    c.Username,
		Password:    c.Password,
		Logger:      zap.NewNop(),
		// Keepalive on the gRPC connection notices a dead etcd member quickly.
		DialKeepAliveTime:    2 * time.Second,
		DialKeepAliveTimeout: 2 * time.Second,
	}
	if c.CAFile != "" || c.CertFile != "" {
		ti := transport.TLSInfo{TrustedCAFile: c.CAFile, CertFile: c.CertFile, KeyFile: c.KeyFile}
		tc, err := ti.ClientConfig()
		if err != nil {
			return nil, fmt.Errorf("etcd TLS: %w", err)
		}
		cc.TLS = tc
	}
	cli, err := clientv3.New(cc)
	if err != nil {
		return nil, fmt.Errorf("etcd client: %w", err)
	}
	return cli, nil
}

// APIClient is an HTTP client for the agents' APIs, trusting caFile (PEM)
// in addition to nothing else when it is set, else the system's roots.
func APIClient(caFile string, timeout time.Duration) (*http.Client, error) {
	return APIClientCert(caFile, "", "", timeout)
}

// APIClientCert is APIClient presenting a client certificate (for control
// APIs with api.client_ca_file) when certFile and keyFile are set.
func APIClientCert(caFile, certFile, keyFile string, timeout time.Duration) (*http.Client, error) {
	c := &http.Client{Timeout: timeout}
	if caFile == "" && certFile == "" {
		return c, nil
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if caFile != "" {
		pool, err := loadPool(caFile)
		if err != nil {
			return nil, fmt.Errorf("api ca_file: %w", err)
		}
		tc.RootCAs = pool
	}
	if certFile != "" {
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, fmt.Errorf("api client certificate: %w", err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	c.Transport = &http.Transport{TLSClientConfig: tc}
	return c, nil
}

// loadPool reads a PEM CA bundle.
func loadPool(path string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s: no PEM certificate found", path)
	}
	return pool, nil
}

// ServerTLS is the API's TLS configuration: the server certificate and,
// with clientCAFile, verification of client certificates when given (the
// control endpoints then require one).
func ServerTLS(certFile, keyFile, clientCAFile string) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("api TLS: %w", err)
	}
	tc := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if clientCAFile != "" {
		pool, err := loadPool(clientCAFile)
		if err != nil {
			return nil, fmt.Errorf("api client_ca_file: %w", err)
		}
		tc.ClientCAs, tc.ClientAuth = pool, tls.VerifyClientCertIfGiven
	}
	return tc, nil
}

// Run is the whole daemon: it wires etcd, postgres, the loop and the API
// from cfg and runs until ctx ends, then shuts down cleanly.
func Run(ctx context.Context, cfg *config.Config, log hclog.Logger) error {
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
	log.Info("starting", "member", cfg.Name, "cluster", cfg.Cluster, "postgres", ver.String(), "bin_dir", binDir,
		"data_dir", cfg.Postgres.DataDir, "ttl", cfg.HA.TTL.Duration, "version", Version)

	triggerFile := ""
	if cfg.HA.PromoteMethod == "trigger_file" {
		if ver >= 160000 {
			return fmt.Errorf("ha.promote_method = \"trigger_file\": promote_trigger_file was removed in PostgreSQL 16 (this is %s)", ver)
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
			return err
		}
		tuned = tuning.CIF(mem, int(ver))
	}
	osUser := "postgres"
	if u, err := user.Current(); err == nil {
		osUser = u.Username
	}
	pc := cfg.Postgres
	settings := pgctl.Settings{
		Version: ver, ClusterName: cfg.Name, Listen: pc.Listen, Port: pc.Port, SocketDir: pc.SocketDir,
		OSUser: osUser, Superuser: pc.Superuser, ReplicationUser: pc.ReplicationUser,
		Params: MergeParams(tuned, tuning.HA(int(ver), tuning.HAOptions{ArchiveCommand: pc.ArchiveCommand, TriggerFile: triggerFile}), pc.Parameters),
		HBA:    pc.HBA,
	}
	inst := pgctl.New(pgctl.Config{BinDir: binDir, DataDir: pc.DataDir, SocketDir: pc.SocketDir, Port: pc.Port,
		Superuser: pc.Superuser, LogFile: pc.LogFile, PassFile: pc.PassFile}, ver)
	pg := NewPG(inst, settings, pc.SuperuserPassword, pc.ReplicationUser, pc.ReplicationPassword, cfg.Name)
	pg.TriggerFile = triggerFile

	if removed, err := pgctl.CleanTemp(pc.DataDir); err != nil {
		log.Warn("clean up interrupted clone", "error", err)
	} else if len(removed) > 0 {
		log.Info("removed directories of an interrupted initdb or clone", "paths", removed)
	}
	cli, err := EtcdClient(cfg.Etcd)
	if err != nil {
		return err
	}
	defer cli.Close()
	ttl := clusterTTL(ctx, cli, cfg, log)
	// One clock for every deadline: the session's ValidUntil and the
	// agent's Now (CLOCK_BOOTTIME, so a suspend counts).
	clock := election.BootClock()
	sess := election.NewSession(cli, ttl, log.Named("lease"), clock)
	store := election.NewStore(cli, cfg.Cluster, cfg.Name, sess, log.Named("etcd"))

	// The lease outlives the loop: a leader releases its key only after
	// postgres has stopped, so the session is cancelled last.
	sessCtx, stopSession := context.WithCancel(context.Background())
	sessDone := make(chan struct{})
	go func() { sess.Run(sessCtx); close(sessDone) }()
	defer func() { stopSession(); <-sessDone }()
	watchCtx, stopWatch := context.WithCancel(context.Background())
	defer stopWatch()

	peerClient, err := APIClient(cfg.API.CAFile, time.Second)
	if err != nil {
		return err
	}
	wd, err := NewProcessWatchdog(log.Named("watchdog"))
	if err != nil {
		return err
	}
	defer wd.Close()

	a := New(Options{
		Name: cfg.Name, PG: pg, DCS: store, Wake: store.Watch(watchCtx), LeaseChanged: sess.Changed(),
		Log: log.Named("ha"), Now: clock, LoopInterval: cfg.HA.LoopInterval.Duration, StartTimeout: cfg.HA.StartTimeout.Duration,
		// A writable step is the leader-key transaction plus a start or a
		// promotion (about 0.1 s here): it must end before the fence.
		WritableBudget:      ha.Timing{TTL: ttl}.RequestTimeout() + 500*time.Millisecond,
		PrimaryStartTimeout: cfg.HA.PrimaryStartTimeout.Duration,
		SwitchoverTimeout:   cfg.HA.SwitchoverTimeout.Duration,
		FenceMargin:         cfg.HA.FenceMargin.Duration, APIURL: cfg.API.AdvertiseURL, ConnAddress: pc.ConnectAddress,
		AgentVersion: Version, NoFailover: cfg.Tags.NoFailover, FailoverPriority: cfg.Tags.FailoverPriority,
		Peers:  HTTPPeers{Client: WithToken(peerClient, cfg.API.Token)},
		MaxLag: cfg.HA.MaxLagBytes, RecentWindow: 2 * ttl, RemoveOnRewindFailure: cfg.HA.RemoveDataDirectoryOnRewindFailure,
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
	})

	ln, err := net.Listen("tcp", cfg.API.Listen)
	if err != nil {
		return fmt.Errorf("api listen: %w", err)
	}
	srv := &http.Server{Handler: Handler(a), ReadHeaderTimeout: 5 * time.Second}
	if cfg.API.CertFile != "" {
		tc, err := ServerTLS(cfg.API.CertFile, cfg.API.KeyFile, cfg.API.ClientCAFile)
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

// WithToken returns a copy of c that sends token as a bearer token on
// every request (for members with api.protect_reads).
func WithToken(c *http.Client, token string) *http.Client {
	if token == "" {
		return c
	}
	cc := *c
	base := c.Transport
	if base == nil {
		base = http.DefaultTransport
	}
	cc.Transport = bearer{base: base, token: token}
	return &cc
}

type bearer struct {
	base  http.RoundTripper
	token string
}

func (b bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+b.token)
	return b.base.RoundTrip(r)
}
