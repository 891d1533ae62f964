package checker

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"syscall"
	"time"

	"github.com/cifha/cifha/internal/cluster"
	"github.com/cifha/cifha/internal/lab"
)

// The lab's faults (Options.Lab): each DB host is a network namespace with
// its own etcd member or not (internal/lab), and these faults are the
// kernel's packet filter inside a host's namespace, or signals to every
// process of a host. The observer host (the checker's pinned writers and
// health probes) is never filtered, so the history sees every member
// whatever the fault.
const (
	// HostIsolate: every packet between the primary's host and the other
	// hosts dropped, both ways, until another member accepts writes.
	HostIsolate Fault = "host-isolate"
	// LeaderEtcdCut: the primary's host cut from the other etcd members
	// (client and peer ports), while it still reaches its standbys. Its
	// own etcd member, if it has one, is then in the minority. Without
	// failsafe mode it must fence and a standby take over; with it, the
	// standbys' promises keep it primary and nothing changes.
	LeaderEtcdCut Fault = "leader-etcd-cut"
	// LeaderStandbyCut: the primary's host cut from the other DB hosts'
	// postgres and API ports (replication and the agents' calls), while
	// everyone reaches etcd: no failover; in synchronous mode commits
	// resume once the leader drops the unreachable synchronous standby.
	LeaderStandbyCut Fault = "leader-standby-cut"
	// OneWayIn: every packet arriving at the primary's host dropped
	// (it still sends); OneWayOut: every packet it sends dropped (it
	// still receives). Both until another member accepts writes.
	OneWayIn  Fault = "oneway-in"
	OneWayOut Fault = "oneway-out"
	// StandbyCut: a standby's host cut from the primary's postgres port,
	// while it reaches etcd: it must not promote, nothing changes.
	StandbyCut Fault = "standby-cut"
	// LinkLoss: 5 % of the packets on every link dropped at random for a
	// while: nothing may change. LinkLossHeavy: 10-30 %; a failover is
	// allowed, but safety must hold.
	LinkLoss      Fault = "link-loss"
	LinkLossHeavy Fault = "link-loss-heavy"
	// LinkDelay: 100 ms added to every packet a host sends, on every host
	// but the observer, for a while: 200 ms more on every round trip
	// between two hosts. Nothing may change.
	//
	// Not 200 ms each way: at a 400 ms round trip etcd itself stops
	// serving a follower's linearizable reads at its default timings (a
	// read's ReadIndex round, follower to leader, a heartbeat round, back,
	// takes 800 ms, and etcd retries it every 500 ms, ignoring the answer
	// to the one before: "ignored out-of-date read index response"),
	// measured in the lab. etcd's tuning guide asks for a heartbeat
	// interval near the round trip there, and no supervisor on such an
	// etcd keeps its lease.
	LinkDelay Fault = "link-delay"
	// HostFreeze: every process of the primary's host (agent, postgres,
	// the host's etcd member) stopped with SIGSTOP until another member
	// accepts writes, then SIGCONT: a paused VM, the classic zombie leader.
	HostFreeze Fault = "host-freeze"
	// HostKill: every process of the primary's host killed with SIGKILL,
	// then the host's etcd member and agent started again.
	HostKill Fault = "host-kill"
	// EtcdMemberKill, EtcdMemberFreeze, EtcdMemberIsolate: the etcd
	// leader member killed, frozen, or cut from its peers for a while,
	// then restored: nothing may change.
	EtcdMemberKill    Fault = "etcd-member-kill"
	EtcdMemberFreeze  Fault = "etcd-member-freeze"
	EtcdMemberIsolate Fault = "etcd-member-isolate"
	// EtcdMajorityLoss: two of three etcd members killed for a while,
	// then restarted.
	EtcdMajorityLoss Fault = "etcd-majority-loss"
	// CIFEtcdCut: the CIF node cut from every etcd member (its own one
	// then in the minority) while the operator switches over from
	// elsewhere: ~/.cif must keep the last good host for the whole cut,
	// and name the new primary once the cut heals.
	CIFEtcdCut Fault = "cif-etcd-cut"
	// WalDiskFull: the file system of the primary's pg_wal (a tmpfs in its
	// host's own mount namespace) made full, under a bulk load, for a
	// while; then the space comes back. A failover is allowed; losing an
	// acknowledged row, two primaries, or a data directory is not, and
	// the cluster must be healthy again once there is space.
	WalDiskFull Fault = "wal-disk-full"
)

// LabFaults lists the faults of the lab, with the shared ones that keep
// their meaning there (switchover, agent restart, etcd outage, a postgres
// crash, a frozen agent).
var LabFaults = []Fault{HostIsolate, LeaderEtcdCut, LeaderStandbyCut, OneWayIn, OneWayOut, StandbyCut, LinkLoss, LinkLossHeavy, LinkDelay,
	HostFreeze, HostKill, EtcdMemberKill, EtcdMemberFreeze, EtcdMemberIsolate, EtcdMajorityLoss, EtcdOutage,
	Switchover, AgentRestart, AgentStop, PostgresCrash, WalDiskFull}

// LabExtraFaults are faults the lab runs only when asked (--faults):
// cif-etcd-cut's switchover from the observer still times out reading
// the cluster from the cut-off member at times (TestLab, session 11).
var LabExtraFaults = []Fault{CIFEtcdCut}

// Lab is the lab the cluster runs in.
type Lab struct {
	Net  *lab.Lab
	Etcd *lab.Etcd
	// HostOf is the namespace host a node runs on.
	HostOf func(n *cluster.Node) *lab.Host
	// Others are the hosts that are neither DB hosts nor the observer
	// (the client, the CIF node): filtered by whole-network faults.
	Others []*lab.Host
	// CIF is the CIF node's host (cif-etcd-cut), and Switch runs a
	// switchover from a host that reaches etcd whatever the fault.
	CIF    *lab.Host
	Switch func(ctx context.Context, to string) error
}

// filtered lists the hosts a whole-network fault acts on: every DB host
// and the others, never the observer.
func (L *Lab) filtered(c *cluster.Cluster) []*lab.Host {
	var hosts []*lab.Host
	for _, n := range c.Nodes {
		hosts = append(hosts, L.HostOf(n))
	}
	return append(hosts, L.Others...)
}

// benign reports whether f must change nothing: the same primary
// afterwards, never refusing a write (a false failover or a demotion is a
// failure of the round).
func benign(f Fault, failsafe bool) bool {
	switch f {
	case LeaderStandbyCut, StandbyCut, LinkLoss, LinkDelay, EtcdMemberKill, EtcdMemberFreeze, EtcdMemberIsolate, EtcdMemberLoss:
		return true
	case LeaderEtcdCut, EtcdPartition, EtcdOutage:
		return failsafe
	}
	return false
}

// heldUntilMoved reports whether f is held until another member accepts
// writes (the old primary must have fenced first: the overlap check says
// whether it did).
func heldUntilMoved(f Fault, failsafe bool) bool {
	switch f {
	case AgentStop, HostIsolate, OneWayIn, OneWayOut, HostFreeze:
		return true
	case EtcdPartition, LeaderEtcdCut:
		return !failsafe
	}
	return false
}

// labHold is how long a lab fault that changes nothing is held: past the
// ttl three times over, and at least 10 s.
func labHold(ttl time.Duration) time.Duration { return max(3*ttl, 10*time.Second) }

// sleepCtx waits d or until ctx ends: the hold of a fault is the
// experiment's parameter, not a condition to wait for.
func sleepCtx(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

// injectLab injects one of the lab's faults on primary p. It returns the
// restore step (nil: none), and how long to hold a benign fault (0: the
// round's usual rule).
func injectLab(ctx context.Context, c *cluster.Cluster, p *cluster.Node, f Fault, opt Options, rng *rand.Rand) (restore func() error, hold time.Duration, err error) {
	L := opt.Lab
	if L == nil {
		return nil, 0, fmt.Errorf("%s needs the lab", f)
	}
	ph := L.HostOf(p)
	var dbOthers, allOthers []string
	for _, n := range c.Nodes {
		if n != p {
			dbOthers = append(dbOthers, L.HostOf(n).Addr)
		}
	}
	allOthers = append(allOthers, dbOthers...)
	for _, h := range L.Others {
		allOthers = append(allOthers, h.Addr)
	}
	for _, m := range L.Etcd.Members {
		if m.Host != ph && !contains(allOthers, m.Host.Addr) {
			allOthers = append(allOthers, m.Host.Addr)
		}
	}
	healP := func() error { return ph.Heal() }
	switch f {
	case HostIsolate:
		return healP, 0, ph.SetFilter(lab.Rule{Dir: lab.Both, Peers: allOthers})
	case OneWayIn:
		return healP, 0, ph.SetFilter(lab.Rule{Dir: lab.In, Peers: allOthers})
	case OneWayOut:
		return healP, 0, ph.SetFilter(lab.Rule{Dir: lab.Out, Peers: allOthers})
	case LeaderEtcdCut:
		var etcdPeers []string
		for _, m := range L.Etcd.Members {
			if m.Host != ph {
				etcdPeers = append(etcdPeers, m.Host.Addr)
			}
		}
		return healP, labHold(c.Opt.TTL), ph.SetFilter(lab.Rule{Dir: lab.Both, Peers: etcdPeers, Port: 2379}, lab.Rule{Dir: lab.Both, Peers: etcdPeers, Port: 2380})
	case LeaderStandbyCut:
		return healP, labHold(c.Opt.TTL), ph.SetFilter(lab.Rule{Dir: lab.Both, Peers: dbOthers, Port: 5432}, lab.Rule{Dir: lab.Both, Peers: dbOthers, Port: 8008})
	case StandbyCut:
		var standbys []*cluster.Node
		for _, n := range c.Nodes {
			if n != p {
				standbys = append(standbys, n)
			}
		}
		s := standbys[rng.IntN(len(standbys))]
		sh := L.HostOf(s)
		opt.Logf("  standby %s cut from %s's postgres", s.Name, p.Name)
		return func() error { return sh.Heal() }, labHold(c.Opt.TTL), sh.SetFilter(lab.Rule{Dir: lab.Both, Peers: []string{ph.Addr}, Port: 5432})
	case LinkLoss, LinkLossHeavy:
		pct := 5
		if f == LinkLossHeavy {
			pct = 10 + rng.IntN(21)
		}
		opt.Logf("  %d%% loss on every link", pct)
		hosts := L.filtered(c)
		var addrs []string
		for _, h := range hosts {
			addrs = append(addrs, h.Addr)
		}
		for _, h := range hosts {
			// Each host drops its share of what it sends to the others:
			// every link loses pct % each way. (Dropping at both ends, as
			// the first lab did, made 30 % into 51 % a way.)
			if err := h.SetFilter(lab.Rule{Dir: lab.Out, Peers: without(addrs, h.Addr), LossPercent: pct}); err != nil {
				return nil, 0, err
			}
		}
		return func() error {
			var errs []error
			for _, h := range hosts {
				errs = append(errs, h.Heal())
			}
			return errors.Join(errs...)
		}, 20 * time.Second, nil
	case LinkDelay:
		hosts := L.filtered(c)
		opt.Logf("  100ms added to every packet each host sends (200ms a round trip)")
		return func() error { return L.Net.SetDelay(0) }, 20 * time.Second, L.Net.SetDelay(100*time.Millisecond, hosts...)
	case HostFreeze:
		if err := ph.Signal(syscall.SIGSTOP); err != nil {
			return nil, 0, err
		}
		return func() error { return ph.Signal(syscall.SIGCONT) }, 0, nil
	case HostKill:
		p.KillHost()
		_ = ph.Signal(syscall.SIGKILL) // whatever else the host ran (its etcd member, backends)
		var mine *lab.EtcdMember
		for _, m := range L.Etcd.Members {
			if m.Host == ph {
				mine = m
				m.Kill()
			}
		}
		return func() error {
			if mine != nil {
				if err := L.Etcd.Restart(mine); err != nil {
					return err
				}
			}
			return p.Start()
		}, 0, nil
	case EtcdMemberKill, EtcdMemberFreeze, EtcdMemberIsolate:
		m, err := L.Etcd.Leader(ctx)
		if err != nil {
			return nil, 0, err
		}
		opt.Logf("  etcd leader %s", m.Name)
		switch f {
		case EtcdMemberKill:
			m.Kill()
			return func() error {
				if err := L.Etcd.Restart(m); err != nil {
					return err
				}
				return L.Etcd.WaitHealthy(opt.Bound)
			}, labHold(c.Opt.TTL), nil
		case EtcdMemberFreeze:
			if err := m.Signal(syscall.SIGSTOP); err != nil {
				return nil, 0, err
			}
			return func() error {
				if err := m.Signal(syscall.SIGCONT); err != nil {
					return err
				}
				return L.Etcd.WaitHealthy(opt.Bound)
			}, labHold(c.Opt.TTL), nil
		default:
			if err := L.Etcd.Isolate(m); err != nil {
				return nil, 0, err
			}
			return func() error {
				if err := m.Host.Heal(); err != nil {
					return err
				}
				return L.Etcd.WaitHealthy(opt.Bound)
			}, labHold(c.Opt.TTL), nil
		}
	case CIFEtcdCut:
		if L.CIF == nil || opt.CIF == nil || L.Switch == nil {
			return nil, 0, errors.New("cif-etcd-cut needs the CIF node")
		}
		var etcdPeers []string
		for _, m := range L.Etcd.Members {
			if m.Host != L.CIF {
				etcdPeers = append(etcdPeers, m.Host.Addr)
			}
		}
		if err := L.CIF.SetFilter(lab.Rule{Dir: lab.Both, Peers: etcdPeers, Port: 2379}, lab.Rule{Dir: lab.Both, Peers: etcdPeers, Port: 2380}); err != nil {
			return nil, 0, err
		}
		opt.CIF.cutFromEtcd(true)
		heal := func() error { opt.CIF.cutFromEtcd(false); return L.CIF.Heal() }
		if err := switchAway(ctx, c, p, L.Switch, rng); err != nil {
			return heal, 0, err
		}
		// Held past the ttl after the switchover: whatever cif-sync still
		// sees of etcd (its own member, cut off) must not move the file.
		return heal, labHold(c.Opt.TTL), nil
	case WalDiskFull:
		if p.WalDir == "" {
			return nil, 0, errors.New("wal-disk-full needs the members' wal_dir on a tmpfs of their host's (cifha-check lab does that)")
		}
		was, err := ph.FillTmpfs(p.WalDir)
		if err != nil {
			return nil, 0, err
		}
		opt.Logf("  %s's pg_wal file system full, under a bulk load", p.Name)
		stop := bulkLoad(c, p)
		return func() error {
			stop()
			if err := ph.ResizeTmpfs(p.WalDir, was); err != nil {
				return err
			}
			return nil
		}, labHold(c.Opt.TTL), nil
	case EtcdMajorityLoss:
		var killed []*lab.EtcdMember
		for _, i := range rng.Perm(len(L.Etcd.Members))[:len(L.Etcd.Members)/2+1] {
			m := L.Etcd.Members[i]
			m.Kill()
			killed = append(killed, m)
		}
		return func() error {
			for _, m := range killed {
				if err := L.Etcd.Restart(m); err != nil {
					return err
				}
			}
			return L.Etcd.WaitHealthy(opt.Bound)
		}, labHold(c.Opt.TTL), nil
	}
	return nil, 0, fmt.Errorf("%s is not a lab fault", f)
}

// bulkLoad writes WAL on p as a bulk import does (10 MB of rows a
// statement, over and over) until stop is called; its errors (no space,
// the primary restarting, gone) are the point and are ignored. The rows
// are truncated afterwards (best effort: p may no longer be the primary).
func bulkLoad(c *cluster.Cluster, p *cluster.Node) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			conn, err := c.ConnectDSN(ctx, p.DSN()+" connect_timeout=1")
			if err != nil {
				sleepCtx(ctx, 100*time.Millisecond)
				continue
			}
			for ctx.Err() == nil {
				if _, err := conn.Exec(ctx, "INSERT INTO checker_bulk SELECT g, repeat('x', 100) FROM generate_series(1, 80000) g"); err != nil {
					break
				}
			}
			conn.Close(context.Background())
			sleepCtx(ctx, 100*time.Millisecond)
		}
	}()
	return func() {
		cancel()
		<-done
	}
}

// truncateBulk empties the bulk load's table on the primary (after a
// wal-disk-full round, so that rounds do not add up on disk).
func truncateBulk(ctx context.Context, p *cluster.Node) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if conn, err := p.Connect(ctx); err == nil {
		_, _ = conn.Exec(ctx, "TRUNCATE checker_bulk")
		conn.Close(context.Background())
	}
}

func contains(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

func without(ss []string, s string) []string {
	var out []string
	for _, x := range ss {
		if x != s {
			out = append(out, x)
		}
	}
	return out
}

// labEtcdOutage kills every lab etcd member for hold, then restarts them.
func labEtcdOutage(ctx context.Context, L *Lab, hold, bound time.Duration) error {
	for _, m := range L.Etcd.Members {
		m.Kill()
	}
	sleepCtx(ctx, hold)
	for _, m := range L.Etcd.Members {
		if err := L.Etcd.Restart(m); err != nil {
			return err
		}
	}
	return L.Etcd.WaitHealthy(bound)
}
