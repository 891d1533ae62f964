package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"github.com/cifha/cifha/pkg/api"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/cifha/cifha/pkg/election"
	"github.com/spf13/cobra"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// controller is one action command's connection: the cluster as read from
// etcd and an API client that sends the token.
type controller struct {
	g       *globals
	cmd     *cobra.Command
	cluster election.Cluster
	hc      *http.Client
	asJSON  bool
}

// newController reads the cluster and the token; it fails with exit 2 on
// configuration problems.
func (g *globals) newController(cmd *cobra.Command, asJSON bool) (*controller, error) {
	c, _, err := g.readNow(cmd)
	if err != nil {
		return nil, err
	}
	tok, err := g.token()
	if err != nil {
		return nil, &exitError{exitUsage, err}
	}
	hc, err := api.NewHTTPClient(g.apiTLS(), tok, 0)
	if err != nil {
		return nil, &exitError{exitUsage, err}
	}
	return &controller{g: g, cmd: cmd, cluster: c, hc: hc, asJSON: asJSON}, nil
}

// readNow connects to etcd, reads the cluster once and disconnects. It
// returns the cluster's name too.
func (g *globals) readNow(cmd *cobra.Command) (election.Cluster, string, error) {
	cli, name, err := g.connect(cmd)
	if err != nil {
		return election.Cluster{}, "", err
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(cmd.Context(), g.timeout)
	defer cancel()
	c, err := readCluster(ctx, cli, name)
	if err != nil {
		return election.Cluster{}, "", &exitError{exitUsage, err}
	}
	return c, name, nil
}

// readCluster reads every key of the cluster in one request.
func readCluster(ctx context.Context, cli *clientv3.Client, cluster string) (election.Cluster, error) {
	keys := election.KeysFor(cluster)
	// WithRequireLeader: an etcd member cut off from its peers answers
	// "no leader" at once, and the client asks another endpoint, instead
	// of holding a linearizable read until the timeout (the lab's
	// cif-etcd-cut: a switchover from a host that reaches every member
	// timed out on the one in the minority).
	resp, err := cli.Get(clientv3.WithRequireLeader(ctx), keys.Prefix, clientv3.WithPrefix())
	if err != nil {
		return election.Cluster{}, fmt.Errorf("read cluster: %w", err)
	}
	return election.ParseCluster(keys, resp.Header.Revision, resp.Kvs), nil
}

// token reads the API token from --token-file or api.token_file (call
// after connect, which reads the config).
func (g *globals) token() (string, error) {
	tokenFile := g.tokenFile
	if tokenFile == "" {
		tokenFile = g.api.API.TokenFile
	}
	if tokenFile == "" {
		return "", errors.New("no API token: pass --token-file or set api.token_file in the config")
	}
	b, err := os.ReadFile(tokenFile)
	if err != nil {
		return "", fmt.Errorf("token file: %w", err)
	}
	return strings.TrimRight(string(b), "\r\n"), nil
}

// leaderURL is the leader's API address, or "" when there is no leader.
func (c *controller) leaderURL() (string, string) {
	if l := c.cluster.Leader; l != nil && l.Valid {
		if m, ok := c.cluster.Members[l.Name]; ok {
			return l.Name, m.APIURL
		}
	}
	return "", ""
}

// memberURL is member name's API address.
func (c *controller) memberURL(name string) (string, error) {
	m, ok := c.cluster.Members[name]
	if !ok {
		return "", &exitError{exitUnhealthy, fmt.Errorf("%s is not a member of the cluster", name)}
	}
	return m.APIURL, nil
}

// post sends one action to one agent and prints the answer as is (or as
// JSON). A refusal or failure exits 1 with the agent's reason.
func (c *controller) post(ctx context.Context, url, path string, body any, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var cr api.ControlResponse
	code, err := api.Post(ctx, c.hc, url, path, body, &cr)
	if err != nil && code == 0 {
		if c.asJSON {
			_ = printJSON(c.cmd, struct {
				api.ControlResponse
				Status int `json:"status"`
			}{api.ControlResponse{Message: fmt.Sprintf("%s: %v", path, err)}, 0})
			return &exitError{exitUnhealthy, nil}
		}
		return &exitError{exitUnhealthy, fmt.Errorf("%s: %w", path, err)}
	}
	if err != nil {
		return &exitError{exitUnhealthy, fmt.Errorf("%s: HTTP %d with an unreadable answer: %v", path, code, err)}
	}
	r := struct{ StatusCode int }{code}
	if c.asJSON {
		if err := printJSON(c.cmd, struct {
			api.ControlResponse
			Status int `json:"status"`
		}{cr, r.StatusCode}); err != nil {
			return err
		}
		if r.StatusCode >= 300 {
			return &exitError{exitUnhealthy, nil}
		}
		return nil
	}
	if r.StatusCode >= 300 {
		return &exitError{exitUnhealthy, fmt.Errorf("%s", cr.Message)}
	}
	fmt.Fprintln(c.cmd.OutOrStdout(), cr.Message)
	return nil
}

// confirm asks a yes/no question on the terminal unless force is set.
func confirm(cmd *cobra.Command, force bool, question string) error {
	if force {
		return nil
	}
	// On stderr: stdout may be --json output for a script.
	fmt.Fprintf(cmd.ErrOrStderr(), "%s [y/N] ", question)
	line, _ := bufio.NewReader(cmd.InOrStdin()).ReadString('\n')
	switch strings.ToLower(strings.TrimSpace(line)) {
	case "y", "yes":
		return nil
	}
	return &exitError{exitUnhealthy, errors.New("aborted")}
}

// simpleCmd posts an action without arguments to the leader's agent (any
// member's if there is no leader).
func simpleCmd(g *globals, action, short string) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   action,
		Short: short,
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := g.newController(cmd, asJSON)
			if err != nil {
				return err
			}
			var urls []string
			if _, u := c.leaderURL(); u != "" {
				urls = append(urls, u)
			}
			for _, m := range c.cluster.Members {
				urls = append(urls, m.APIURL)
			}
			if len(urls) == 0 {
				return &exitError{exitUnhealthy, errors.New("no member has published an API address")}
			}
			var lastErr error
			for _, u := range urls {
				err := c.post(cmd.Context(), u, "/"+action, nil, g.timeout)
				var ee *exitError
				if err != nil && errors.As(err, &ee) && ee.err != nil && strings.Contains(ee.err.Error(), "dial") {
					lastErr = err // that agent is down: try the next
					continue
				}
				return err
			}
			return lastErr
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the agent's answer as JSON")
	return cmd
}

func switchoverCmd(g *globals) *cobra.Command {
	var to, at string
	var force, asJSON, cancelIt bool
	var wait time.Duration
	cmd := &cobra.Command{
		Use:   "switchover (--to MEMBER [--at TIME] | --cancel)",
		Short: "Move the primary to MEMBER with no acknowledged write lost (planned, clean)",
		Long: `switchover asks the leader to hand over to MEMBER: it checks the candidate
(a known, streaming standby, not tagged nofailover, within
maximum_lag_on_failover, cluster not paused), shuts down cleanly, waits until
the candidate has replayed everything, hands it the leader key, and restarts
as its standby. If the candidate does not take over in time the old leader
resumes. With --at the switchover is scheduled (at most 7 days ahead);
--cancel removes a scheduled one.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if cancelIt {
				if to != "" || at != "" {
					return &exitError{exitUsage, errors.New("--cancel takes neither --to nor --at")}
				}
				c, err := g.newController(cmd, asJSON)
				if err != nil {
					return err
				}
				_, url := c.leaderURL()
				if url == "" {
					for _, m := range c.cluster.Members {
						url = m.APIURL
						break
					}
				}
				return c.post(cmd.Context(), url, "/switchover", api.SwitchoverBody{Cancel: true}, g.timeout)
			}
			if !election.ValidName(to) {
				return &exitError{exitUsage, fmt.Errorf("--to: %q is not a member name", to)}
			}
			if at != "" {
				if _, err := time.Parse(time.RFC3339, at); err != nil {
					return &exitError{exitUsage, fmt.Errorf("--at: %q is not an RFC 3339 time (e.g. 2026-11-25T23:00:00Z)", at)}
				}
			}
			c, err := g.newController(cmd, asJSON)
			if err != nil {
				return err
			}
			leader, url := c.leaderURL()
			if leader == "" {
				return &exitError{exitUnhealthy, errors.New("the cluster has no leader: use failover")}
			}
			when := "now"
			if at != "" {
				when = "at " + at
			}
			if err := confirm(cmd, force, fmt.Sprintf("Switch over from %s to %s %s?", leader, to, when)); err != nil {
				return err
			}
			return c.post(cmd.Context(), url, "/switchover", api.SwitchoverBody{To: to, At: at}, wait)
		},
	}
	cmd.Flags().StringVar(&to, "to", "", "the standby to promote (required)")
	cmd.Flags().StringVar(&at, "at", "", "schedule at this RFC 3339 time instead of now")
	cmd.Flags().BoolVarP(&force, "force", "f", false, "do not ask for confirmation")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the agent's answer as JSON")
	cmd.Flags().DurationVar(&wait, "wait", 5*time.Minute, "how long to wait for the outcome (the agent bounds the switchover itself by 2 x ha.switchover_timeout)")
	cmd.Flags().BoolVar(&cancelIt, "cancel", false, "cancel a scheduled switchover")
	return cmd
}

func failoverCmd(g *globals) *cobra.Command {
	var to string
	var force, asJSON bool
	var wait time.Duration
	cmd := &cobra.Command{
		Use:   "failover --to MEMBER",
		Short: "Promote MEMBER in a cluster with no leader (may lose the last transactions)",
		Long: `failover makes MEMBER the primary of a cluster that has no leader, even if
the automatic rules would not (it is behind, tagged nofailover, or another
member ranks first). Transactions the old leader acknowledged but MEMBER did
not receive are lost. Refused while a leader holds the key: use switchover.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !election.ValidName(to) {
				return &exitError{exitUsage, fmt.Errorf("--to: %q is not a member name", to)}
			}
			c, err := g.newController(cmd, asJSON)
			if err != nil {
				return err
			}
			if leader, _ := c.leaderURL(); leader != "" {
				return &exitError{exitUnhealthy, fmt.Errorf("%s is the leader: use switchover", leader)}
			}
			url, err := c.memberURL(to)
			if err != nil {
				return err
			}
			if err := confirm(cmd, force, fmt.Sprintf("WARNING: %s may lack transactions the old leader acknowledged; they would be lost. Promote %s?", to, to)); err != nil {
				return err
			}
			return c.post(cmd.Context(), url, "/failover", api.FailoverBody{To: to}, wait)
		},
	}
	cmd.Flags().StringVar(&to, "to", "", "the member to promote (required)")
	cmd.Flags().BoolVarP(&force, "force", "f", false, "do not ask for confirmation")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the agent's answer as JSON")
	cmd.Flags().DurationVar(&wait, "wait", 60*time.Second, "how long to wait for the outcome")
	_ = cmd.MarkFlagRequired("to")
	return cmd
}

// apiTLS is the client side of the agents' API TLS from the config.
func (g *globals) apiTLS() api.TLS {
	return api.TLS{CAFile: g.api.API.CAFile, CertFile: g.api.API.ClientCertFile, KeyFile: g.api.API.ClientKeyFile}
}
