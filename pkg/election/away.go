package election

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"slices"
	"time"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Why the primary keeps etcd's leader off its own host. etcd never expires
// a lease early, so a new etcd leader extends every lease by its full ttl
// when it takes over. When the host that runs the postgres primary also
// runs etcd's leader and is lost (isolated, frozen, killed), the primary's
// lease therefore outlives the host by an etcd election (about its
// election timeout, 1 s by default) plus a whole ttl, instead of by at
// most a ttl: the fault lab measured 5.9 s from the primary's last renewal
// to its key's expiry at ttl 3 s, against 3 s when etcd's leader was
// elsewhere. So while this member's postgres is writable, the guard asks
// etcd to hand its leadership to a member on another host (MoveLeader),
// the step etcd itself offers for planned maintenance. A leader transfer
// extends every lease again (the cost is a later expiry, never an earlier
// one), and it is asked for at most every awayEvery.
//
// "On this host" is a member whose client or peer address is one of this
// host's own addresses. An etcd cluster on hosts of its own has no such
// member, and nothing is asked. With etcd authentication the request needs
// the root role; without it etcd refuses, which is logged once.

// errAllHere: every voting member runs on this host (a one-machine demo
// or test): there is nowhere to move etcd's leader, and losing the host
// loses etcd anyway.
var errAllHere = errors.New("every etcd voting member is on this host")

// errNoneReady: etcd's leader is on this host, but no member elsewhere
// answered just now caught up; it is asked again at the next check.
var errNoneReady = errors.New("no etcd member on another host answered caught up: etcd's leader stays here for now")

// awayEvery is how often the primary's guard checks where etcd's leader is.
const awayEvery = 2 * time.Second

// SetPrimary tells the guard whether this member's postgres is writable
// (SetWritable's caller tells it too): only then is etcd's leader kept off
// this host.
func (g *Guard) SetPrimary(on bool) { g.primary.Store(on) }

// keepLeaderAway moves etcd's leader off this host if it is here. Run by
// the guard's loop (one goroutine) while SetPrimary(true).
func (g *Guard) keepLeaderAway(ctx context.Context) {
	if !g.away || !g.primary.Load() || time.Since(g.awayAt) < awayEvery {
		return
	}
	g.awayAt = time.Now()
	err := g.moveLeaderAway(ctx)
	switch {
	case err == nil:
	case errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) || errors.Is(err, errAllHere) || errors.Is(err, errNoneReady):
		// etcd slow or out of reach (the guard's probes report that), or
		// nowhere to move to.
		g.log.Debug("check where etcd's leader is", "error", err)
	case !g.awayWarned:
		g.awayWarned = true
		g.log.Warn("could not move etcd's leader off this host (the primary's host); a loss of this host then costs an etcd election on top of the ttl", "error", err)
	}
}

func (g *Guard) moveLeaderAway(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 2*g.timeout)
	defer cancel()
	// The leader's ID, and its own endpoint (which answers MoveLeader),
	// asked of the endpoints that answer the guard's probes.
	live := g.Live()
	var leader uint64
	var leaderEP *clientv3.Client
	// Every answering member's applied index, by ID: etcd's leadership is
	// handed only to one of these, caught up. A transfer to a member that
	// cannot take it (frozen, cut off, behind) stops the leader's
	// proposals until the transfer times out, an election timeout, and the
	// next check would ask again: with etcd's leader frozen and the
	// primary's host elected next, the lab saw renewals fail for a whole
	// 10 s freeze, and a false failover.
	answered := map[uint64]uint64{}
	for i, ep := range g.all {
		g.mu.Lock()
		p := g.probes[i]
		g.mu.Unlock()
		if p == nil || !slices.Contains(live, ep) {
			continue
		}
		st, err := p.Status(ctx, ep)
		if err != nil || st.Leader == 0 {
			continue
		}
		answered[st.Header.MemberId] = st.RaftAppliedIndex
		leader = st.Leader
		if st.Header.MemberId == st.Leader {
			leaderEP = p
		}
	}
	if leader == 0 || leader == g.awayFrom {
		// No leader known (the guard's probes say the rest), or the one
		// already found to be elsewhere: the member list is not read again.
		return nil
	}
	local, err := localAddrs()
	if err != nil {
		return err
	}
	var members *clientv3.MemberListResponse
	for _, p := range g.probeClients() {
		// Serializable: the member's own list, without a quorum round (the
		// leader's ID came from a member that knows one).
		if members, err = p.MemberList(ctx, clientv3.WithSerializable()); err == nil {
			break
		}
	}
	if members == nil {
		return fmt.Errorf("list etcd members: %w", err)
	}
	to, err := transferee(members.Members, leader, local, caughtUp(answered, leader))
	if err != nil {
		return err
	}
	if to == 0 {
		g.awayFrom = leader // elsewhere: nothing to do while it leads
		return nil
	}
	if leaderEP == nil {
		return fmt.Errorf("etcd's leader (%x) is on this host but its own endpoint did not answer", leader)
	}
	if _, err := leaderEP.MoveLeader(ctx, to); err != nil {
		return fmt.Errorf("move etcd's leader from %x to %x: %w", leader, to, err)
	}
	g.log.Info("moved etcd's leader off this host (the primary's)", "from", fmt.Sprintf("%x", leader), "to", fmt.Sprintf("%x", to))
	return nil
}

// transferLag is how far behind the leader's applied index a member may be
// and still be handed etcd's leadership.
const transferLag = 1000

// caughtUp lists the members that answered with an applied index within
// transferLag of the leader's (none when the leader did not answer: then
// its endpoint cannot take MoveLeader either).
func caughtUp(applied map[uint64]uint64, leader uint64) map[uint64]bool {
	out := map[uint64]bool{}
	li, ok := applied[leader]
	if !ok {
		return out
	}
	for id, a := range applied {
		if id != leader && a+transferLag >= li {
			out[id] = true
		}
	}
	return out
}

// transferee picks the member etcd's leader should move to: 0 when the
// leader (ID leader) is not on this host (no address of it in local), or
// when no voting member elsewhere is ready (in ready: it answered just
// now, caught up); else the first one that is.
func transferee(members []*etcdserverpb.Member, leader uint64, local []string, ready map[uint64]bool) (uint64, error) {
	isLocal := func(urls []string) bool {
		for _, u := range urls {
			if pu, err := url.Parse(u); err == nil && slices.Contains(local, pu.Hostname()) {
				return true
			}
		}
		return false
	}
	var to uint64
	here, elsewhere := false, false
	for _, m := range members {
		l := isLocal(m.ClientURLs) || isLocal(m.PeerURLs)
		if m.ID == leader {
			here = l
		} else if !l && !m.IsLearner && m.Name != "" {
			elsewhere = true
			if ready[m.ID] && to == 0 {
				to = m.ID
			}
		}
	}
	switch {
	case !here:
		return 0, nil
	case !elsewhere:
		return 0, errAllHere
	case to == 0:
		return 0, errNoneReady
	}
	return to, nil
}

func (g *Guard) probeClients() []*clientv3.Client {
	g.mu.Lock()
	defer g.mu.Unlock()
	var out []*clientv3.Client
	for _, p := range g.probes {
		if p != nil {
			out = append(out, p)
		}
	}
	return out
}

// localAddrs lists this host's own addresses (loopback included) and its
// host name.
func localAddrs() ([]string, error) {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil, fmt.Errorf("this host's addresses: %w", err)
	}
	out := []string{"localhost"}
	for _, a := range addrs {
		if ipn, ok := a.(*net.IPNet); ok {
			out = append(out, ipn.IP.String())
		}
	}
	return out, nil
}
