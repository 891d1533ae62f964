// Command cifha is the high-availability agent that runs on each
// PostgreSQL host of a CIF deployment. See docs/ and `cifha --help`.
package main

import (
	"context"
	"flag"
	"fmt"
	"github.com/cifha/cifha/pkg/election"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/cifha/cifha/pkg/agent"
	"github.com/cifha/cifha/pkg/cifsync"
	"github.com/cifha/cifha/pkg/config"
	"github.com/hashicorp/go-hclog"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "cif-sync" {
		os.Exit(runCIFSync(os.Args[2:]))
	}
	if len(os.Args) > 1 && os.Args[1] == "fence-watchdog" {
		// Started by the agent itself; see pkg/agent/watchdog.go.
		agent.RunWatchdog(os.Stdin, hclog.New(&hclog.LoggerOptions{Name: "fence-watchdog"}), election.BootNow)
		os.Exit(0)
	}
	os.Exit(run())
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
	cli, err := agent.EtcdClient(cfg.Etcd)
	if err != nil {
		log.Error("etcd", "error", err)
		return 1
	}
	defer cli.Close()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	hc, err := agent.APIClient(cfg.APICAFile, time.Second)
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

func run() int {
	fs := flag.NewFlagSet("cifha", flag.ContinueOnError)
	cfgPath := fs.String("config", config.DefaultPath, "configuration file")
	check := fs.Bool("check-config", false, "validate the configuration and exit")
	version := fs.Bool("version", false, "print the version and exit")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: cifha [--config FILE] [--check-config]\n\n"+
			"cifha runs PostgreSQL on this host as part of an HA cluster coordinated through etcd.\n"+
			"Run it as the postgres user (systemd: deploy/systemd/cifha.service).\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(os.Args[1:]); err != nil {
		return 2
	}
	if *version {
		fmt.Println("cifha", agent.Version)
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
