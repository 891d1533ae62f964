package election

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cifha/cifha/pkg/config"
	"github.com/hashicorp/go-hclog"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Why an endpoint guard. clientv3 spreads requests over every configured
// endpoint (gRPC round robin) and drops a member's connection only when
// gRPC's keepalive notices it, and grpc-go never pings more often than
// every 10 s. A member that still holds its TCP connections but answers
// nothing (its host frozen or its process SIGSTOPped, a black-holed link;
// the kernel keeps the connection "up") therefore keeps receiving its
// share of requests, each hanging until its timeout: the fault lab saw
// standbys fail every request they sent to a frozen member for the whole
// freeze, failovers take 12 s instead of 4, and a new leader renew through
// the frozen member and fence when it woke. A member cut from its peers
// answers, but only "no leader".
//
// The guard asks every configured endpoint, each over a connection of its
// own, for a serializable read that needs the member to know a leader
// (WithRequireLeader), every Interval, bounded by Timeout. Endpoints that
// answer are the client's endpoints (Client.SetEndpoints, which also ends
// the requests in flight to a removed one, so a hung renewal fails at once
// and its retry goes to a live member); one that stops answering is
// removed within Interval + Timeout, and put back once it answers again.
// When none answers the client keeps every endpoint: the guard only ever
// narrows the choice to members that answered, it never decides that
// etcd is down.

// Guard keeps a client's endpoints to the members that answer.
type Guard struct {
	cli      *clientv3.Client
	all      []string
	key      string
	probes   []*clientv3.Client
	interval time.Duration
	timeout  time.Duration
	log      hclog.Logger

	mu   sync.Mutex
	live []string // the endpoints the client uses now

	// away.go: keep etcd's leader off the primary's host.
	away       bool
	primary    atomic.Bool
	awayAt     time.Time
	awayFrom   uint64 // the last etcd leader found to be on another host
	awayWarned bool
}

// NewGuard makes a guard for cli, whose configuration is c (each probe
// connection is made with it, TLS and login included). key is a key the
// agent may read (the leader key): the probe reads it serializably,
// counting only. interval is how often every endpoint is asked; timeout
// bounds each question.
func NewGuard(cli *clientv3.Client, c config.Etcd, key string, interval, timeout time.Duration, log hclog.Logger) *Guard {
	g := &Guard{cli: cli, all: slices.Clone(c.Endpoints), key: key, interval: interval, timeout: timeout, log: log, live: slices.Clone(c.Endpoints),
		away: c.KeepLeaderAway}
	if len(g.all) < 2 {
		return g // nothing to choose between
	}
	// The probe connections are made by the first Once, each in its own
	// goroutine (connecting to a member that is down takes dial_timeout).
	g.probes = make([]*clientv3.Client, len(g.all))
	return g
}

// Live lists the endpoints the client uses now.
func (g *Guard) Live() []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return slices.Clone(g.live)
}

// Run probes until ctx ends, then closes the probe connections.
func (g *Guard) Run(ctx context.Context, c config.Etcd) {
	if len(g.all) < 2 {
		return
	}
	defer func() {
		g.mu.Lock()
		defer g.mu.Unlock()
		for _, p := range g.probes {
			if p != nil {
				p.Close()
			}
		}
	}()
	t := time.NewTicker(g.interval)
	defer t.Stop()
	for {
		g.Once(ctx, c)
		g.keepLeaderAway(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Once probes every endpoint at the same time and applies the result.
func (g *Guard) Once(ctx context.Context, c config.Etcd) {
	ok := make([]bool, len(g.all))
	var wg sync.WaitGroup
	for i, ep := range g.all {
		wg.Add(1)
		go func() {
			defer wg.Done()
			g.mu.Lock()
			p := g.probes[i]
			g.mu.Unlock()
			if p == nil {
				// Down when the guard started (or since): connecting is
				// bounded by dial_timeout, in this endpoint's goroutine.
				one := c
				one.Endpoints = []string{ep}
				np, err := NewClient(one)
				if err != nil {
					return
				}
				g.mu.Lock()
				g.probes[i], p = np, np
				g.mu.Unlock()
			}
			pctx, cancel := context.WithTimeout(clientv3.WithRequireLeader(ctx), g.timeout)
			defer cancel()
			_, err := p.Get(pctx, g.key, clientv3.WithSerializable(), clientv3.WithCountOnly())
			ok[i] = err == nil
		}()
	}
	wg.Wait()
	if ctx.Err() != nil {
		return
	}
	var live []string
	for i, ep := range g.all {
		if ok[i] {
			live = append(live, ep)
		}
	}
	if len(live) == 0 {
		live = slices.Clone(g.all) // nothing answered: no basis to choose
	}
	g.mu.Lock()
	changed := !slices.Equal(live, g.live)
	g.mu.Unlock()
	if changed {
		var out []string
		for _, ep := range g.all {
			if !slices.Contains(live, ep) {
				out = append(out, ep)
			}
		}
		g.log.Warn("etcd endpoints in use changed", "using", live, "not_answering", out)
		g.cli.SetEndpoints(live...)
		g.mu.Lock()
		g.live = live
		g.mu.Unlock()
	}
}
