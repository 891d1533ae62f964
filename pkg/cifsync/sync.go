package cifsync

import (
	"context"
	"errors"
	"fmt"
	"github.com/cifha/cifha/pkg/api"
	"github.com/cifha/cifha/pkg/command"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/cifha/cifha/pkg/election"
	"github.com/hashicorp/go-hclog"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Stats is what cif-sync reports about itself (exported as metrics by the
// observability work).
type Stats struct {
	LastSync time.Time // last time the file was confirmed to name the primary
	Target   string    // the host the file names
	Leader   string
	Failures int // reconciliations that failed
}

// Syncer keeps one ~/.cif pointing at the cluster's primary.
type Syncer struct {
	cfg  *Config
	cli  *clientv3.Client
	keys election.Keys
	log  hclog.Logger
	hc   *http.Client
	now  func() time.Time
	// closeConns aborts this node's connections to a host's port 5432
	// (CloseConnections; a fake in tests).
	closeConns func(ctx context.Context, host string, port int) (int, error)

	mu    sync.Mutex
	stats Stats
	// pending carries changes to the post-change runner (coalesced).
	pending chan change
}

type change struct{ host, leader string }

// New returns a Syncer; Run starts it. hc talks to the agents' APIs (nil:
// a plain client with a 1 s timeout).
func New(cfg *Config, cli *clientv3.Client, log hclog.Logger, hc ...*http.Client) *Syncer {
	client := &http.Client{Timeout: time.Second}
	if len(hc) > 0 && hc[0] != nil {
		client = hc[0]
	}
	return &Syncer{cfg: cfg, cli: cli, keys: election.KeysFor(cfg.Cluster), log: log,
		hc: client, now: time.Now, closeConns: CloseConnections, pending: make(chan change, 1)}
}

// Stats returns a copy of the current statistics.
func (s *Syncer) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stats
}

// errNotYet means the new leader does not confirm it is a read-write primary yet.
var errNotYet = errors.New("leader not confirmed as a read-write primary yet")

// Run reconciles at once and then whenever the cluster's keys change, and
// every second as a retry; the file is left as it is while etcd cannot be
// read or the leader cannot be confirmed.
func (s *Syncer) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); s.runCommands(ctx) }()
	defer wg.Wait()
	wch := s.cli.Watch(clientv3.WithRequireLeader(ctx), s.keys.Prefix, clientv3.WithPrefix())
	retry := time.NewTimer(0)
	defer retry.Stop()
	var notYetSince, warnedAt time.Time
	for {
		select {
		case <-ctx.Done():
			return nil
		case _, ok := <-wch:
			if !ok && ctx.Err() == nil {
				select { // back off before re-watching (auth errors fail fast)
				case <-ctx.Done():
					return nil
				case <-time.After(500 * time.Millisecond):
				}
				wch = s.cli.Watch(clientv3.WithRequireLeader(ctx), s.keys.Prefix, clientv3.WithPrefix())
			}
		case <-retry.C:
		}
		err := s.Reconcile(ctx)
		next := time.Second
		switch {
		case errors.Is(err, errNotYet):
			// A promotion is in progress: look again soon, for a while;
			// then at the normal pace, and say so.
			if notYetSince.IsZero() {
				notYetSince = s.now()
			}
			if s.now().Sub(notYetSince) < 3*time.Second {
				next = 50 * time.Millisecond
			} else if s.now().Sub(warnedAt) > time.Minute {
				s.log.Warn("leader not confirmed as a read-write primary; file kept as it is", "error", err, "since", notYetSince)
				warnedAt = s.now()
			}
		case err != nil:
			notYetSince = time.Time{}
			s.log.Warn("not synced", "error", err)
		default:
			notYetSince = time.Time{}
		}
		if !retry.Stop() {
			select {
			case <-retry.C:
			default:
			}
		}
		retry.Reset(next)
	}
}

// Reconcile makes the file name the current primary, if it can be confirmed.
func (s *Syncer) Reconcile(ctx context.Context) error {
	err := s.reconcile(ctx)
	if err != nil && !errors.Is(err, errNotYet) {
		s.mu.Lock()
		s.stats.Failures++
		s.mu.Unlock()
	}
	return err
}

func (s *Syncer) reconcile(ctx context.Context) error {
	rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	resp, err := s.cli.Get(rctx, s.keys.Prefix, clientv3.WithPrefix())
	if err != nil {
		return fmt.Errorf("read etcd (file kept as it is): %w", err)
	}
	c := election.ParseCluster(s.keys, resp.Header.Revision, resp.Kvs)
	if c.Leader == nil || !c.Leader.Valid {
		return fmt.Errorf("no leader (file kept as it is)")
	}
	leader := c.Leader.Name
	m, ok := c.Members[leader]
	if !ok {
		return fmt.Errorf("%w: leader %s has not published its state", errNotYet, leader)
	}
	host := s.cfg.Hosts[leader]
	if host == "" {
		h, port, err := net.SplitHostPort(m.ConnAddress)
		if err != nil || h == "" {
			return fmt.Errorf("leader record names member %s with no usable address (%q); file kept as it is", leader, m.ConnAddress)
		}
		if port != "5432" {
			// ~/.cif has no port key: CIF would reach whatever listens on 5432.
			return fmt.Errorf("leader %s serves on port %s, but CIF's [db] has no port and uses 5432; file kept as it is (set [hosts] %s to a host that serves 5432)", leader, port, leader)
		}
		host = h
	}
	if err := s.confirm(ctx, m.APIURL, leader); err != nil {
		return err
	}
	previous, changed, err := ApplyFrom(s.cfg.CIFFile, host, s.cfg.BackupFile, s.cfg.FollowSymlinks)
	if err != nil {
		return err
	}
	if changed && previous != "" && previous != host && s.cfg.CloseOldConnections {
		// Here, not in the post-change runner: a slow post-change command
		// must not leave CIF's processes blocked on the old primary.
		n, err := s.closeConns(ctx, previous, CIFPort)
		if err != nil {
			s.log.Error("could not close this node's connections to the old primary; CIF processes blocked on it wait for TCP's timeouts", "old", previous, "error", err)
		} else {
			s.log.Info("closed this node's connections to the old primary", "old", previous, "connections", n)
		}
	}
	s.mu.Lock()
	s.stats.LastSync, s.stats.Target, s.stats.Leader = s.now(), host, leader
	s.mu.Unlock()
	if changed {
		s.log.Info("[db] host now names the primary", "host", host, "leader", leader, "file", s.cfg.CIFFile)
		select {
		case s.pending <- change{host, leader}:
		default:
			// A change is already queued: replace it with this newer one.
			select {
			case <-s.pending:
			default:
			}
			s.pending <- change{host, leader}
		}
	}
	return nil
}

// confirm asks the leader's agent whether it is a read-write primary, and
// checks that the agent answering is that leader.
func (s *Syncer) confirm(ctx context.Context, apiURL, leader string) error {
	if apiURL == "" {
		return fmt.Errorf("%w: no API URL", errNotYet)
	}
	var body api.StatusResponse
	code, err := api.Get(ctx, s.hc, apiURL, "/primary", &body)
	if code == 0 && err != nil {
		return fmt.Errorf("%w: %v", errNotYet, err)
	}
	if code != http.StatusOK {
		return fmt.Errorf("%w: /primary answered %d", errNotYet, code)
	}
	if err != nil {
		return fmt.Errorf("%w: /primary: %v", errNotYet, err)
	}
	if body.Self.Name != leader || !body.IsLeader {
		return fmt.Errorf("%w: %s/primary is answered by %q (leader %v), not leader %s", errNotYet, apiURL, body.Self.Name, body.IsLeader, leader)
	}
	return nil
}

// RunQueued runs the post-change command for a change queued by Reconcile
// (used by --once, where no background runner exists).
func (s *Syncer) RunQueued(ctx context.Context) {
	select {
	case ch := <-s.pending:
		s.runCommand(ctx, ch)
	default:
	}
}

// runCommands runs the post-change command once per change, bounded by its
// timeout, one at a time, outside the reconcile loop: a slow or failing
// command never delays the next rewrite. A failure is logged; the command
// runs again on the next change.
func (s *Syncer) runCommands(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case ch := <-s.pending:
			s.runCommand(ctx, ch)
		}
	}
}

// runCommand runs the post-change command for one change, bounded by its timeout.
func (s *Syncer) runCommand(ctx context.Context, ch change) {
	if len(s.cfg.PostChange.Command) == 0 {
		return
	}
	out, err := command.Run(ctx, command.Spec{Argv: s.cfg.PostChange.Command, Timeout: s.cfg.PostChange.Timeout.Duration,
		Env: []string{"CIFHA_DB_HOST=" + ch.host, "CIFHA_LEADER=" + ch.leader, "CIFHA_CLUSTER=" + s.cfg.Cluster}})
	if err != nil {
		s.log.Error("post-change command failed; it runs again on the next change", "command", s.cfg.PostChange.Command,
			"error", err, "output", out)
		return
	}
	s.log.Info("post-change command done", "command", s.cfg.PostChange.Command, "output", out)
}
