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
	"flag"
	"fmt"
	"github.com/cifha/cifha/pkg/api"
	"github.com/cifha/cifha/pkg/election"
	"github.com/cifha/cifha/pkg/version"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/cifha/cifha/pkg/agent"
	"github.com/cifha/cifha/pkg/cifsync"
	"github.com/cifha/cifha/pkg/config"
	"github.com/hashicorp/go-hclog"
)

const usage = `usage: cifha [run] [--config FILE] [--check-config]
       cifha cif-sync [--config FILE] [--once]
       cifha version
       cifha help

  run (the default)  the HA agent: runs PostgreSQL on this host as part of a
                     cluster coordinated through etcd (systemd:
                     deploy/systemd/cifha.service). Run it as the postgres user.
  cif-sync           on the CIF node: keep ~/.cif's [db] host pointing at the
                     primary (docs/cif.md).
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
	case "fence-watchdog":
		// Started by the agent itself; see pkg/agent/watchdog.go.
		agent.RunWatchdog(os.Stdin, hclog.New(&hclog.LoggerOptions{Name: "fence-watchdog"}), election.BootNow)
		return 0
	case "version":
		fmt.Println("cifha", version.Version)
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
		fmt.Println("cifha", version.Version)
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
	if err := agent.Run(ctx, cfg, log); err != nil {
		log.Error("fatal", "error", err)
		return 1
	}
	return 0
}
