// Command cifha is the high-availability agent that runs on each
// PostgreSQL host of a CIF deployment. See docs/ and `cifha --help`.
//
// updatemaxprocs=0: since Go 1.25 the runtime re-reads the cgroup CPU limit
// every second to adjust GOMAXPROCS, which wakes an otherwise idle agent
// (and its fence watchdog) sixty times a minute. cifha is never CPU-bound;
// GOMAXPROCS is set once at start (still from the cgroup limit), and the
// GOMAXPROCS environment variable overrides it as usual.
//
//go:debug updatemaxprocs=0
package main

import (
	"context"
	"errors"
	"net"
	"net/http"
	"sort"
	"sync"

	"flag"
	"fmt"
	"github.com/cifha/cifha/pkg/api"
	"github.com/cifha/cifha/pkg/election"
	"github.com/cifha/cifha/pkg/version"
	clientv3 "go.etcd.io/etcd/client/v3"
	"io"
	"os"
	"os/signal"
	"os/user"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/cifha/cifha/pkg/agent"
	"github.com/cifha/cifha/pkg/archive"
	"github.com/cifha/cifha/pkg/cifsync"
	"github.com/cifha/cifha/pkg/config"
	"github.com/cifha/cifha/pkg/doctor"
	"github.com/cifha/cifha/pkg/tuning"
	"github.com/hashicorp/go-hclog"
)

const usage = `usage: cifha [run] [--config FILE] [--check-config]
       cifha cif-sync [--config FILE] [--once]
       cifha tune [--ram SIZE] [--cpus N] [--pg-version V] [--profile cif|none] [--only postgres|sysctl]
       cifha doctor [--config FILE] [--user NAME] | cifha doctor --cif-sync FILE
       cifha archive-wal --dir DIR PATH NAME     (postgres archive_command)
       cifha restore-wal --dir DIR NAME PATH     (postgres restore_command)
       cifha version
       cifha help

  run (the default)  the HA agent: runs PostgreSQL on this host as part of a
                     cluster coordinated through etcd (systemd:
                     deploy/systemd/cifha.service). Run it as the postgres user.
  cif-sync           on the CIF node: keep ~/.cif's [db] host pointing at the
                     primary (docs/cif.md).
  tune               print the postgres settings and the sysctl.d file for a
                     host (this one by default), each value with a comment.
  doctor             preflight checks on a DB host (or with --cif-sync, on the
                     CIF node), each failure with its fix; exit 1 on any.
  archive-wal        store one WAL file in the archive directory (atomic,
                     never overwrites; the same file twice succeeds).
  restore-wal        copy one WAL file from the archive directory (exit 1
                     when it is not there).
  version            print the version.
  help               print this help.

See docs/operations.md; the operator's tool is cifhactl.
`

func main() { os.Exit(dispatch(os.Args[1:])) }

// dispatch picks the subcommand. Subcommands are explicit: an unknown word
// (a typo, or a command of a later version) is an error with the usage on
// stderr and exit status 2, never a start of the daemon. Arguments that
// begin with "-" are the agent's flags (the systemd unit's form).
func dispatch(args []string) int {
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		for _, a := range args {
			if a == "-h" || a == "--help" || a == "-help" {
				fmt.Print(usage)
				return 0
			}
		}
		return run(args)
	}
	switch args[0] {
	case "run":
		return run(args[1:])
	case "cif-sync":
		return runCIFSync(args[1:])
	case "tune":
		return runTune(args[1:], os.Stdout, os.Stderr)
	case "archive-wal", "restore-wal":
		return runArchive(args[0], args[1:], os.Stderr)
	case "doctor":
		return runDoctor(args[1:], os.Stdout, os.Stderr)
	case "fence-watchdog":
		// Started by the agent itself; see pkg/agent/watchdog.go.
		agent.RunWatchdog(os.Stdin, hclog.New(&hclog.LoggerOptions{Name: "fence-watchdog"}), election.BootNow)
		return 0
	case "version":
		fmt.Println("cifha", version.Get())
		return 0
	case "help":
		fmt.Print(usage)
		return 0
	}
	fmt.Fprintf(os.Stderr, "cifha: unknown command %q\n\n%s", args[0], usage)
	return 2
}

// runCIFSync is `cifha cif-sync`: on the CIF front-end node, keep ~/.cif's
// [db] host pointing at the current primary.
func runCIFSync(args []string) int {
	fs := flag.NewFlagSet("cifha cif-sync", flag.ContinueOnError)
	cfgPath := fs.String("config", "/etc/cifha/cif-sync.toml", "cif-sync configuration file")
	once := fs.Bool("once", false, "reconcile once and exit (exit 1 if the file could not be synced)")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: cifha cif-sync [--config FILE] [--once]\n\n"+
			"Keeps the [db] host of CIF's ~/.cif pointing at the cluster's primary (see docs/cif.md).\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	cfg, err := cifsync.LoadConfig(*cfgPath)
	if err != nil {
		fmt.Fprintf(os.Stderr, "cifha cif-sync: invalid configuration:\n%v\n", err)
		return 2
	}
	log := hclog.New(&hclog.LoggerOptions{
		Name: "cif-sync", Level: hclog.LevelFromString(cfg.Log.Level), JSONFormat: cfg.Log.Format == "json",
	})
	cli, err := election.NewClient(cfg.Etcd)
	if err != nil {
		log.Error("etcd", "error", err)
		return 1
	}
	defer cli.Close()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	hc, err := api.NewHTTPClient(api.TLS{CAFile: cfg.APICAFile}, "", time.Second)
	if err != nil {
		log.Error("api client", "error", err)
		return 2
	}
	s := cifsync.New(cfg, cli, log, hc)
	if *once {
		if err := s.Reconcile(ctx); err != nil {
			log.Error("not synced", "error", err)
			return 1
		}
		s.RunQueued(ctx)
		return 0
	}
	log.Info("starting", "cluster", cfg.Cluster, "file", cfg.CIFFile)
	if err := s.Run(ctx); err != nil {
		log.Error("fatal", "error", err)
		return 1
	}
	return 0
}

func run(args []string) int {
	fs := flag.NewFlagSet("cifha", flag.ContinueOnError)
	cfgPath := fs.String("config", config.DefaultPath, "configuration file")
	check := fs.Bool("check-config", false, "validate the configuration and exit")
	showVersion := fs.Bool("version", false, "print the version and exit")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), usage+"\nflags of run:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "cifha: unexpected argument %q\n\n%s", fs.Arg(0), usage)
		return 2
	}
	if *showVersion {
		fmt.Println("cifha", version.Get())
		return 0
	}
	cfg, err := config.Load(*cfgPath)
	if err != nil {
		fmt.Fprintf(os.Stderr, "cifha: invalid configuration:\n%v\n", err)
		return 2
	}
	if *check {
		fmt.Println("configuration ok")
		return 0
	}
	if os.Geteuid() == 0 {
		fmt.Fprintln(os.Stderr, "cifha: refusing to run as root: PostgreSQL will not run as root either.\n"+
			"Run cifha as the user that owns the data directory, usually postgres (e.g. `setpriv --reuid=postgres --regid=postgres --init-groups cifha ...`, or User=postgres in the systemd unit).")
		return 2
	}
	log := hclog.New(&hclog.LoggerOptions{
		Name: "cifha", Level: hclog.LevelFromString(cfg.Log.Level), JSONFormat: cfg.Log.Format == "json",
	}).With("member", cfg.Name)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	// SIGHUP reloads the file; SIGUSR1/2 are logged and ignored (their
	// default would end the agent, and postgres with it, silently).
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	other := make(chan os.Signal, 1)
	signal.Notify(other, syscall.SIGUSR1, syscall.SIGUSR2)
	go func() {
		for sig := range other {
			log.Warn("signal ignored (SIGHUP reloads, SIGTERM stops)", "signal", sig.String())
		}
	}()
	if err := agent.Run(ctx, cfg, log, hup); err != nil {
		log.Error("fatal", "error", err)
		return 1
	}
	return 0
}

// runTune is `cifha tune`: what the agent would write on a host described
// by the flags (this host by default), and the kernel settings.
func runTune(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("cifha tune", flag.ContinueOnError)
	fs.SetOutput(stderr)
	ram := fs.String("ram", "", "the host's RAM, e.g. 8GiB (default: this host's)")
	cpus := fs.Int("cpus", runtime.NumCPU(), "the host's CPUs")
	pgVersion := fs.String("pg-version", "", "PostgreSQL major version, e.g. 15 or 9.6 (default: the newest under /usr/lib/postgresql)")
	profile := fs.String("profile", "cif", "tuning profile: cif (the seed's postgressetup.sh) or none")
	only := fs.String("only", "", "print only \"postgres\" or \"sysctl\"")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: cifha tune [flags]\n\nPrints the postgres settings cifha writes and a sysctl.d file for a host.\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "cifha tune: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	o := tuning.TuneOptions{CPUs: *cpus, PageSize: int64(os.Getpagesize()), Profile: *profile, Only: *only}
	if *only != "" && *only != "postgres" && *only != "sysctl" {
		fmt.Fprintf(stderr, "cifha tune: --only %q: want postgres or sysctl\n", *only)
		return 2
	}
	if *cpus < 1 {
		fmt.Fprintf(stderr, "cifha tune: --cpus %d: want 1 or more\n", *cpus)
		return 2
	}
	var err error
	if *ram != "" {
		o.RAM, err = config.ParseBytes(*ram)
	} else {
		o.RAM, err = tuning.HostMemory()
	}
	if err != nil {
		fmt.Fprintf(stderr, "cifha tune: --ram: %v\n", err)
		return 2
	}
	v := *pgVersion
	if v == "" {
		dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin/postgres")
		best := 0
		for _, d := range dirs {
			if n, err := tuning.ParseVersion(filepath.Base(filepath.Dir(filepath.Dir(d)))); err == nil && n > best {
				best = n
			}
		}
		if best == 0 {
			fmt.Fprintln(stderr, "cifha tune: no PostgreSQL under /usr/lib/postgresql: give --pg-version")
			return 2
		}
		o.Version = best
	} else if o.Version, err = tuning.ParseVersion(v); err != nil {
		fmt.Fprintf(stderr, "cifha tune: --pg-version: %v\n", err)
		return 2
	}
	if err := tuning.Tune(stdout, o); err != nil {
		fmt.Fprintf(stderr, "cifha tune: %v\n", err)
		return 2
	}
	return 0
}

// runArchive is `cifha archive-wal --dir DIR PATH NAME` (archive_command)
// and `cifha restore-wal --dir DIR NAME PATH` (restore_command). Any
// failure exits 1: postgres retries archiving, and takes a failed restore
// as "not in the archive" (an exit above 125 would stop a standby).
func runArchive(cmd string, args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("cifha "+cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("dir", "", "the archive directory (archive mode \"directory\")")
	cfgPath := fs.String("config", "", "the agent's configuration (archive mode \"peers\": its archive directory, then the peers)")
	if err := fs.Parse(args); err != nil {
		return 1
	}
	operands := map[string]string{"archive-wal": "PATH NAME", "restore-wal": "NAME PATH"}[cmd]
	if (*dir == "") == (*cfgPath == "") || (*dir != "" && !filepath.IsAbs(*dir)) || fs.NArg() != 2 {
		fmt.Fprintf(stderr, "usage: cifha %s --dir /absolute/archive/dir %s\n       cifha %s --config FILE %s\n", cmd, operands, cmd, operands)
		return 1
	}
	if *cfgPath != "" {
		return runArchivePeers(cmd, *cfgPath, fs.Arg(0), fs.Arg(1), stderr)
	}
	var err error
	if cmd == "archive-wal" {
		err = archive.Store(*dir, fs.Arg(0), fs.Arg(1))
	} else {
		err = archive.Fetch(*dir, fs.Arg(0), fs.Arg(1))
	}
	if err != nil {
		fmt.Fprintf(stderr, "cifha %s: %v\n", cmd, err)
		return 1
	}
	return 0
}

// runArchivePeers is archive mode "peers". archive-wal stores the segment
// in this member's archive directory (that must succeed: postgres retries
// otherwise), then sends it to every other member; a peer that is down
// only misses it (it fetches what it lacks from the others when it
// restores), so a stopped standby never stops the primary's archiving.
// restore-wal looks in this member's directory, then asks the peers.
func runArchivePeers(cmd, cfgPath, a1, a2 string, stderr io.Writer) int {
	cfg, err := config.Load(cfgPath)
	if err != nil {
		fmt.Fprintf(stderr, "cifha %s: invalid configuration:\n%v\n", cmd, err)
		return 1
	}
	if cfg.Archive.Mode != "peers" {
		fmt.Fprintf(stderr, "cifha %s: %s: archive.mode is %q, not \"peers\"\n", cmd, cfgPath, cfg.Archive.Mode)
		return 1
	}
	dir := cfg.Archive.Dir
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if cmd == "archive-wal" {
		src, name := a1, a2
		if err := archive.Store(dir, src, name); err != nil {
			fmt.Fprintf(stderr, "cifha archive-wal: %v\n", err)
			return 1
		}
		peers, err := archivePeers(ctx, cfg)
		if err != nil {
			fmt.Fprintf(stderr, "cifha archive-wal: %s stored here, not sent to the peers: %v\n", name, err)
			return 0
		}
		hc, err := archiveClient(cfg)
		if err != nil {
			fmt.Fprintf(stderr, "cifha archive-wal: %v\n", err)
			return 0
		}
		// In parallel, each bounded: a peer that does not answer (a black
		// hole) costs one dial timeout, not a stalled archiver.
		var wg sync.WaitGroup
		errs := make([]error, len(peers))
		for i, p := range peers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				pctx, cancel := context.WithTimeout(ctx, time.Minute)
				defer cancel()
				errs[i] = archive.Push(pctx, hc, p, src, name)
			}()
		}
		wg.Wait()
		for _, err := range errs {
			if err != nil {
				fmt.Fprintf(stderr, "cifha archive-wal: %s stored here, not on a peer: %v\n", name, err)
			}
		}
		return 0
	}
	name, dst := a1, a2
	err = archive.Fetch(dir, name, dst)
	if err == nil {
		return 0
	}
	if !errors.Is(err, archive.ErrNotFound) {
		fmt.Fprintf(stderr, "cifha restore-wal: %v\n", err)
	}
	peers, perr := archivePeers(ctx, cfg)
	if perr != nil {
		fmt.Fprintf(stderr, "cifha restore-wal: %s not here, and the peers are unknown: %v\n", name, perr)
		return 1
	}
	hc, herr := archiveClient(cfg)
	if herr != nil {
		fmt.Fprintf(stderr, "cifha restore-wal: %v\n", herr)
		return 1
	}
	for _, p := range peers {
		err := archive.Pull(ctx, hc, p, name, dst)
		if err == nil {
			return 0
		}
		if !errors.Is(err, archive.ErrNotFound) {
			fmt.Fprintf(stderr, "cifha restore-wal: %v\n", err)
		}
	}
	return 1 // nowhere: postgres goes on with streaming
}

// archiveClient reaches the peers' APIs: their CA, the client
// certificate cifhactl would present (api.client_cert_file) when the
// peers require one, the token, and a short dial timeout.
func archiveClient(cfg *config.Config) (*http.Client, error) {
	hc, err := api.NewHTTPClient(api.TLS{CAFile: cfg.API.CAFile, CertFile: cfg.API.ClientCertFile, KeyFile: cfg.API.ClientKeyFile}, "", 2*time.Minute)
	if err != nil {
		return nil, err
	}
	tr, ok := hc.Transport.(*http.Transport)
	if !ok || tr == nil {
		tr = http.DefaultTransport.(*http.Transport).Clone()
	}
	tr.DialContext = (&net.Dialer{Timeout: 3 * time.Second}).DialContext
	tr.TLSHandshakeTimeout = 5 * time.Second
	hc.Transport = tr
	return api.WithToken(hc, cfg.API.Token), nil
}

// archivePeers lists the other members' API URLs, from etcd.
func archivePeers(ctx context.Context, cfg *config.Config) ([]string, error) {
	cli, err := election.NewClient(cfg.Etcd)
	if err != nil {
		return nil, err
	}
	defer cli.Close()
	keys := election.KeysFor(cfg.Cluster)
	gctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	resp, err := cli.Get(gctx, keys.Member(""), clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("read the members from etcd: %w", err)
	}
	c := election.ParseCluster(keys, resp.Header.Revision, resp.Kvs)
	var out []string
	for name, m := range c.Members {
		if name != cfg.Name && m.APIURL != "" {
			out = append(out, m.APIURL)
		}
	}
	sort.Strings(out)
	return out, nil
}

// runDoctor is `cifha doctor`: read-only preflight checks (pkg/doctor).
func runDoctor(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("cifha doctor", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", config.DefaultPath, "the agent's configuration file (on a DB host)")
	cifPath := fs.String("cif-sync", "", "on the CIF node: cif-sync's configuration file (checks ~/.cif instead of a DB host)")
	userName := fs.String("user", "postgres", "when run as root: the user the agent runs as, whose access is checked")
	timeout := fs.Duration("timeout", 3*time.Second, "bound of each network check")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: cifha doctor [--config FILE] [--user NAME] [--timeout D]\n       cifha doctor --cif-sync FILE\n\n"+
			"Checks this host without changing anything and prints each problem with its fix;\nexit status 1 if any check failed, 2 if the configuration is invalid.\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "cifha doctor: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	var rep doctor.Report
	if *cifPath != "" {
		cfg, err := cifsync.LoadConfig(*cifPath)
		if err != nil {
			fmt.Fprintf(stderr, "cifha doctor: invalid cif-sync configuration:\n%v\n", err)
			return 2
		}
		rep = doctor.CheckCIF(ctx, cfg, *timeout)
	} else {
		cfg, err := config.Load(*cfgPath)
		if err != nil {
			fmt.Fprintf(stderr, "cifha doctor: invalid configuration:\n%v\n", err)
			return 2
		}
		o := doctor.HostOptions{Config: cfg, Timeout: *timeout, UID: os.Geteuid(), GID: os.Getegid()}
		if o.UID == 0 {
			u, err := user.Lookup(*userName)
			if err != nil {
				fmt.Fprintf(stderr, "cifha doctor: --user %s: %v\n", *userName, err)
				return 2
			}
			o.UID, _ = strconv.Atoi(u.Uid)
			o.GID, _ = strconv.Atoi(u.Gid)
			o.User = u.Username
		} else if u, err := user.Current(); err == nil {
			o.User = u.Username
		}
		if hc, err := api.NewHTTPClient(api.TLS{CAFile: cfg.API.CAFile}, "", *timeout); err == nil {
			o.HTTP = hc
		}
		rep = doctor.CheckHost(ctx, o)
	}
	rep.Print(stdout)
	if rep.Failed() {
		return 1
	}
	return 0
}
