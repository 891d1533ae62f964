package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/cifha/cifha/pkg/api"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/cifha/cifha/pkg/election"
	"github.com/spf13/cobra"
)

// memberNames completes member names from etcd (shell completion).
func memberNames(g *globals) func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
	return func(cmd *cobra.Command, args []string, _ string) ([]string, cobra.ShellCompDirective) {
		if len(args) > 0 {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		c, _, err := g.readNow(cmd)
		if err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		var names []string
		for n := range c.Members {
			names = append(names, n)
		}
		return names, cobra.ShellCompDirectiveNoFileComp
	}
}

// memberOpCmd posts an action to the named member's own agent.
func memberOpCmd(g *globals, use, short, path string, wait time.Duration) *cobra.Command {
	var asJSON, force bool
	cmd := &cobra.Command{
		Use:               use + " MEMBER",
		Short:             short,
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: memberNames(g),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			// Any name is passed on: a key written by hand under a name no
			// member can have is removable too (the agent checks).
			if name == "" || strings.ContainsAny(name, "/\n\r") {
				return &exitError{exitUsage, fmt.Errorf("%q is not a member name", name)}
			}
			c, err := g.newController(cmd, asJSON)
			if err != nil {
				return err
			}
			url, err := c.memberURL(name)
			if err != nil {
				return err
			}
			if path == "/reinit" {
				if err := confirm(cmd, force, fmt.Sprintf("Re-clone %s from the leader? Its data directory is moved aside.", name)); err != nil {
					return err
				}
			}
			return c.post(cmd.Context(), url, path, nil, wait)
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the agent's answer as JSON")
	if path == "/reinit" {
		cmd.Flags().BoolVarP(&force, "force", "f", false, "do not ask for confirmation")
	}
	return cmd
}

func reloadCmd(g *globals) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:               "reload [MEMBER]",
		Short:             "Rewrite the postgres configuration and reload it (every member, or MEMBER)",
		Args:              cobra.MaximumNArgs(1),
		ValidArgsFunction: memberNames(g),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.newController(cmd, asJSON)
			if err != nil {
				return err
			}
			names := args
			if len(names) == 0 {
				for n := range c.cluster.Members {
					names = append(names, n)
				}
			}
			var failed error
			for _, n := range names {
				url, err := c.memberURL(n)
				if err == nil {
					err = c.post(cmd.Context(), url, "/reload", nil, g.timeout+10*time.Second)
				}
				if err != nil {
					fmt.Fprintf(cmd.ErrOrStderr(), "%s: %v\n", n, err)
					failed = &exitError{exitUnhealthy, nil}
				}
			}
			return failed
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print each agent's answer as JSON")
	return cmd
}

func removeCmd(g *globals) *cobra.Command {
	var asJSON, force bool
	cmd := &cobra.Command{
		Use:   "remove MEMBER",
		Short: "Forget a dead member: the leader drops its replication slot (refused while its agent runs)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			// Any name is passed on: a key written by hand under a name no
			// member can have is removable too (the agent checks).
			if name == "" || strings.ContainsAny(name, "/\n\r") {
				return &exitError{exitUsage, fmt.Errorf("%q is not a member name", name)}
			}
			c, err := g.newController(cmd, asJSON)
			if err != nil {
				return err
			}
			leader, url := c.leaderURL()
			if leader == "" {
				return &exitError{exitUnhealthy, errors.New("the cluster has no leader")}
			}
			if err := confirm(cmd, force, fmt.Sprintf("Remove member %s (drop its replication slot on %s)?", name, leader)); err != nil {
				return err
			}
			return c.post(cmd.Context(), url, "/remove", api.RemoveBody{Name: name}, g.timeout+10*time.Second)
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the agent's answer as JSON")
	cmd.Flags().BoolVarP(&force, "force", "f", false, "do not ask for confirmation")
	return cmd
}

// configURL is where config changes go: the leader (its postgres validates
// them), else any member.
func (c *controller) configURL() (string, error) {
	if _, u := c.leaderURL(); u != "" {
		return u, nil
	}
	for _, m := range c.cluster.Members {
		if m.State == "running" || m.State == "streaming" {
			return m.APIURL, nil
		}
	}
	return "", &exitError{exitUnhealthy, errors.New("no member with a running postgres to validate the change")}
}

func setCmd(g *globals) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "set KEY=VALUE...",
		Short: "Change cluster-wide settings (validated, then applied by every member)",
		Long: `set changes settings kept in etcd and applied by every member:

  ttl=10s                         leader lease ttl (applies when each agent starts)
  loop_interval=1s                HA loop interval
  maximum_lag_on_failover=1MB     failover and switchover lag limit
  postgresql.parameters.NAME=V    a postgres parameter (reloaded; a restart-only
                                  one shows "restart pending" until cifhactl restart)

An empty value (KEY=) removes the key: members use their file's value again.
Every value is checked against the leader's pg_settings before anything is
stored; an invalid one is refused with its key named.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			set := map[string]string{}
			for _, a := range args {
				k, v, ok := strings.Cut(a, "=")
				if !ok || k == "" {
					return &exitError{exitUsage, fmt.Errorf("%q: expected KEY=VALUE", a)}
				}
				set[strings.TrimSpace(k)] = v
			}
			c, err := g.newController(cmd, asJSON)
			if err != nil {
				return err
			}
			url, err := c.configURL()
			if err != nil {
				return err
			}
			return c.post(cmd.Context(), url, "/config", api.ConfigBody{Set: set}, g.timeout+10*time.Second)
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the agent's answer as JSON")
	return cmd
}

func showConfigCmd(g *globals) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "show-config",
		Short: "Print the cluster-wide settings stored in etcd (always JSON; --json accepted)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, cluster, err := g.readNow(cmd)
			if err != nil {
				return err
			}
			if why, bad := c.Invalid[election.KeysFor(cluster).Config()]; bad {
				return &exitError{exitUnhealthy, fmt.Errorf("the stored cluster config is unreadable: %s", why)}
			}
			return printJSON(cmd, c.Config)
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", true, "print JSON (the only format)")
	return cmd
}

func editConfigCmd(g *globals) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "edit-config",
		Short: "Edit the cluster-wide settings in $EDITOR (validated before they are stored)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := g.newController(cmd, asJSON)
			if err != nil {
				return err
			}
			before, _ := json.MarshalIndent(c.cluster.Config, "", "  ")
			dir, err := os.MkdirTemp("", "cifhactl-")
			if err != nil {
				return err
			}
			defer os.RemoveAll(dir)
			path := filepath.Join(dir, "cluster-config.json")
			if err := os.WriteFile(path, append(before, '\n'), 0o600); err != nil {
				return err
			}
			editor := os.Getenv("EDITOR")
			if editor == "" {
				editor = "vi"
			}
			ed := exec.CommandContext(cmd.Context(), "sh", "-c", editor+` "$1"`, "editor", path)
			ed.Stdin, ed.Stdout, ed.Stderr = os.Stdin, cmd.OutOrStdout(), cmd.ErrOrStderr()
			if err := ed.Run(); err != nil {
				return &exitError{exitUsage, fmt.Errorf("editor: %w", err)}
			}
			after, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			if bytes.Equal(bytes.TrimSpace(after), bytes.TrimSpace(before)) {
				fmt.Fprintln(cmd.OutOrStdout(), "no change")
				return nil
			}
			next, err := election.ParseDynamicConfig(after)
			if err != nil {
				return &exitError{exitUsage, fmt.Errorf("%v (nothing stored)", err)}
			}
			url, err := c.configURL()
			if err != nil {
				return err
			}
			rev := c.cluster.ConfigRev
			return c.post(cmd.Context(), url, "/config", api.ConfigBody{Replace: &next, ModRev: &rev}, g.timeout+10*time.Second)
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the agent's answer as JSON")
	return cmd
}
