// Command cifhactl is the operator's tool for a cifha cluster.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/cifha/cifha/pkg/api"
	"github.com/cifha/cifha/pkg/version"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/BurntSushi/toml"
	"github.com/cifha/cifha/pkg/config"
	"github.com/cifha/cifha/pkg/ctl"
	"github.com/cifha/cifha/pkg/election"
	"github.com/spf13/cobra"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Exit codes, documented in --help.
const (
	exitOK        = 0
	exitUnhealthy = 1 // the command ran; the cluster has a problem
	exitUsage     = 2 // bad arguments or configuration, or etcd unreachable
)

type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string {
	if e.err == nil {
		return fmt.Sprintf("exit status %d", e.code)
	}
	return e.err.Error()
}

type globals struct {
	tokenFile  string
	api        clientConfig
	configPath string
	endpoints  []string
	cluster    string
	timeout    time.Duration
}

// clientConfig is the part of cifha.toml cifhactl reads; the rest is ignored
// so an operator's copy need not include the agent's secrets.
type clientConfig struct {
	Cluster string `toml:"cluster"`
	API     struct {
		TokenFile      string `toml:"token_file"`
		CAFile         string `toml:"ca_file"`
		ClientCertFile string `toml:"client_cert_file"`
		ClientKeyFile  string `toml:"client_key_file"`
	} `toml:"api"`
	Etcd struct {
		Endpoints    []string        `toml:"endpoints"`
		DialTimeout  config.Duration `toml:"dial_timeout"`
		Username     string          `toml:"username"`
		PasswordFile string          `toml:"password_file"`
		CAFile       string          `toml:"ca_file"`
		CertFile     string          `toml:"cert_file"`
		KeyFile      string          `toml:"key_file"`
	} `toml:"etcd"`
}

// configSearch is where cifhactl looks for its configuration when --config
// is not given: an operator's own file first, then the host's, then the
// agent's configuration (which cifhactl also reads, the parts above only).
func configSearch(getenv func(string) string, home string) []string {
	var out []string
	if p := getenv("CIFHACTL_CONFIG"); p != "" {
		return []string{p} // named explicitly: no fallback hides a typo
	}
	if home != "" {
		out = append(out, filepath.Join(home, ".config", "cifha", "cifhactl.toml"))
	}
	return append(out, "/etc/cifha/cifhactl.toml", config.DefaultPath)
}

// findConfig returns the first existing file of configSearch (or the
// last candidate, whose absence is then reported).
func findConfig() (string, bool) {
	home, _ := os.UserHomeDir()
	cands := configSearch(os.Getenv, home)
	for _, c := range cands {
		if _, err := os.Stat(c); err == nil {
			return c, os.Getenv("CIFHACTL_CONFIG") != ""
		}
	}
	return cands[len(cands)-1], os.Getenv("CIFHACTL_CONFIG") != ""
}

func (g *globals) etcdConfig(explicitConfig bool) (config.Etcd, string, error) {
	if !explicitConfig {
		g.configPath, explicitConfig = findConfig()
	}
	var cc clientConfig
	// The config file supplies TLS and credentials even when --endpoints
	// overrides its endpoints; it may be absent only if it was not asked for.
	if _, err := toml.DecodeFile(g.configPath, &cc); err != nil {
		if explicitConfig || len(g.endpoints) == 0 || !errors.Is(err, os.ErrNotExist) {
			return config.Etcd{}, "", fmt.Errorf("read %s (or pass --endpoints and --cluster): %w", g.configPath, err)
		}
	}
	e := config.Etcd{Endpoints: cc.Etcd.Endpoints, DialTimeout: cc.Etcd.DialTimeout, Username: cc.Etcd.Username,
		CAFile: cc.Etcd.CAFile, CertFile: cc.Etcd.CertFile, KeyFile: cc.Etcd.KeyFile}
	if len(g.endpoints) > 0 {
		e.Endpoints = g.endpoints
	}
	cluster := cc.Cluster
	if g.cluster != "" {
		cluster = g.cluster
	}
	if cluster == "" {
		return e, "", errors.New("no cluster name: pass --cluster or --config")
	}
	if len(e.Endpoints) == 0 {
		return e, "", errors.New("no etcd endpoints: pass --endpoints or --config")
	}
	if e.DialTimeout.Duration == 0 {
		e.DialTimeout.Duration = 2 * time.Second
	}
	g.api = cc
	if cc.Etcd.PasswordFile != "" {
		b, err := os.ReadFile(cc.Etcd.PasswordFile)
		if err != nil {
			return e, "", fmt.Errorf("etcd.password_file: %w", err)
		}
		e.Password = strings.TrimRight(string(b), "\r\n")
	}
	return e, cluster, nil
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	err := newRoot().ExecuteContext(ctx)
	stop()
	if err != nil {
		var ee *exitError
		if errors.As(err, &ee) {
			if ee.err != nil {
				fmt.Fprintln(os.Stderr, "cifhactl:", explain(ee.err))
			}
			os.Exit(ee.code)
		}
		fmt.Fprintln(os.Stderr, "cifhactl:", explain(err))
		os.Exit(exitUsage)
	}
}

func newRoot() *cobra.Command {
	g := &globals{}
	root := &cobra.Command{
		Use:   "cifhactl",
		Short: "Operate a cifha PostgreSQL HA cluster",
		Long: `cifhactl reads the cluster's state from etcd and the agents' APIs.

Actions (switchover, failover, restart, reinit, reload, set, remove, pause,
resume) go to the agents' control API with the token of api.token_file (or
--token-file); reading goes to etcd. A refused action prints the agent's
reason. Every command that prints data has --json.

Exit status:
  0  success (and, for status, a leader exists and every member answered)
  1  the cluster has a problem (no leader, a member unreachable), or an
     action was refused or failed (the reason is printed)
  2  bad arguments or configuration, or etcd unreachable`,
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       version.Get().String(),
	}
	root.PersistentFlags().StringVarP(&g.configPath, "config", "c", config.DefaultPath, "configuration file (cluster, [etcd], [api] token_file...); default: the first of $CIFHACTL_CONFIG, ~/.config/cifha/cifhactl.toml, /etc/cifha/cifhactl.toml, /etc/cifha/cifha.toml")
	root.PersistentFlags().StringSliceVar(&g.endpoints, "endpoints", nil, "etcd endpoints (override the config)")
	root.PersistentFlags().StringVar(&g.cluster, "cluster", "", "cluster name (overrides the config)")
	root.PersistentFlags().DurationVar(&g.timeout, "timeout", 3*time.Second, "overall timeout")
	root.PersistentFlags().StringVar(&g.tokenFile, "token-file", "", "file holding the agents' API token (default: api.token_file of the config)")
	root.AddCommand(statusCmd(g), historyCmd(g),
		simpleCmd(g, "pause", "Maintenance mode: agents keep reporting but take no automatic action (no failover, no restart)"),
		simpleCmd(g, "resume", "Leave maintenance mode"),
		switchoverCmd(g), failoverCmd(g),
		memberOpCmd(g, "restart", "Restart MEMBER's postgres (fast stop, start; the leader keeps its key, no failover)", "/restart", 2*time.Minute),
		memberOpCmd(g, "reinit", "Re-clone standby MEMBER from the leader (refused on the leader; old data moved aside)", "/reinit", time.Hour),
		reloadCmd(g), removeCmd(g), setCmd(g), showConfigCmd(g), editConfigCmd(g),
		&cobra.Command{Use: "version", Short: "Print the version, commit and build date", Args: cobra.NoArgs,
			RunE: func(cmd *cobra.Command, _ []string) error {
				fmt.Fprintln(cmd.OutOrStdout(), "cifhactl", version.Get())
				return nil
			}})
	return root
}

// connect returns an etcd client and the cluster name from the globals.
func (g *globals) connect(cmd *cobra.Command) (*clientv3.Client, string, error) {
	ec, cluster, err := g.etcdConfig(cmd.Flags().Changed("config"))
	if err != nil {
		return nil, "", &exitError{exitUsage, err}
	}
	cli, err := election.NewClient(ec)
	if err != nil {
		return nil, "", &exitError{exitUsage, err}
	}
	connected = &ec
	return cli, cluster, nil
}

// connected is the etcd configuration of this run's client, for explain.
var connected *config.Etcd

// explain adds to an error that may come from an unreachable etcd (a
// timeout, an unavailable endpoint) what a direct probe of each endpoint
// finds, when etcd indeed does not answer: gRPC reports a refused client
// certificate, or TLS on one side only, as a timeout.
func explain(err error) error {
	if connected == nil || err == nil || !unreachable(err) {
		return err
	}
	cli, cerr := election.NewClient(*connected)
	if cerr != nil {
		return fmt.Errorf("%w (%v)", err, cerr)
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), max(connected.DialTimeout.Duration, time.Second)+time.Second)
	defer cancel()
	if cerr := election.Check(ctx, cli, *connected); cerr != nil {
		return fmt.Errorf("%w (%v)", err, cerr)
	}
	return err
}

func unreachable(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, election.ErrNoEndpoint) {
		return true
	}
	for e := err; e != nil; e = errors.Unwrap(e) {
		if c := status.Code(e); c == codes.Unavailable || c == codes.DeadlineExceeded {
			return true
		}
	}
	return false
}

func historyCmd(g *globals) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "history",
		Short: "Show every leader change: time, old and new leader, timeline, LSN, reason",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cli, cluster, err := g.connect(cmd)
			if err != nil {
				return err
			}
			defer cli.Close()
			ctx, cancel := context.WithTimeout(cmd.Context(), g.timeout)
			defer cancel()
			recs, bad, err := election.ReadHistory(ctx, cli, election.KeysFor(cluster))
			if err != nil {
				return &exitError{exitUsage, err}
			}
			if asJSON {
				if recs == nil {
					recs = []election.HistoryRecord{}
				}
				return printJSON(cmd, recs)
			}
			ctl.RenderHistory(cmd.OutOrStdout(), recs)
			if bad > 0 {
				fmt.Fprintf(cmd.ErrOrStderr(), "%d history records could not be read\n", bad)
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func statusCmd(g *globals) *cobra.Command {
	var asJSON, watch bool
	var interval time.Duration
	cmd := &cobra.Command{
		Use:     "status",
		Aliases: []string{"list"},
		Short:   "Show the members, their roles, states, timelines and replication lag",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cli, cluster, err := g.connect(cmd)
			if err != nil {
				return err
			}
			defer cli.Close()
			// The same client as every other API caller (honours api.ca_file);
			// ctl.Status bounds each request itself.
			// Members with api.protect_reads answer /status only with the
			// token; send it when one is configured.
			tok, _ := g.token()
			hc, err := api.NewHTTPClient(g.apiTLS(), tok, 0)
			if err != nil {
				return &exitError{exitUsage, err}
			}
			once := func() error {
				ctx, cancel := context.WithTimeout(cmd.Context(), g.timeout)
				defer cancel()
				st, err := ctl.Status(ctx, cli, cluster, hc, 500*time.Millisecond)
				if err != nil {
					return &exitError{exitUsage, err}
				}
				if asJSON {
					if err := printJSON(cmd, st); err != nil {
						return err
					}
				} else {
					if watch {
						fmt.Fprintf(cmd.OutOrStdout(), "\033[H\033[2J%s\n", time.Now().Format(time.RFC3339))
					}
					ctl.RenderTable(cmd.OutOrStdout(), st)
				}
				if !st.Healthy {
					return &exitError{exitUnhealthy, nil} // the problems are in the output already
				}
				return nil
			}
			if !watch {
				return once()
			}
			for {
				if err := once(); err != nil {
					var ee *exitError
					if !errors.As(err, &ee) || ee.code != exitUnhealthy {
						fmt.Fprintln(cmd.ErrOrStderr(), err)
					}
				}
				select {
				case <-cmd.Context().Done():
					return nil
				case <-time.After(interval):
				}
			}
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	cmd.Flags().BoolVarP(&watch, "watch", "w", false, "refresh until interrupted")
	cmd.Flags().DurationVar(&interval, "interval", 2*time.Second, "refresh interval with --watch")
	return cmd
}

// printJSON writes v as indented JSON to the command's output.
func printJSON(cmd *cobra.Command, v any) error {
	enc := json.NewEncoder(cmd.OutOrStdout())
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
