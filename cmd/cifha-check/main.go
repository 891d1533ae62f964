// Command cifha-check is cifha's fault checker (internal/checker): it starts
// a local cluster of real processes (a multi-member etcd, three cifha agents
// running PostgreSQL on 127.0.0.31-33), runs rounds of seeded random faults
// under client writes, and prints per fault the rounds, rows acknowledged,
// rows lost, overlapping write intervals and the longest write gap, with the
// seed to replay a failure. It exits 1 if any round lost an acknowledged
// row, saw two writable members, or did not recover within the bound.
//
//	make soak                         # 1000 rounds, synchronous mode
//	bin/cifha-check -rounds 20 -seed 7 -faults host-loss,switchover
//
// Run as root (PostgreSQL and the agents run as the postgres user) on a
// machine with PostgreSQL installed; it uses loopback addresses only.
//
// `cifha-check lab` is the same checker on a real network: every host a
// network namespace, faults by the kernel's packet filter and by signals
// to whole hosts (lab.go, docs/lab.md); `cifha-check lab --cleanup`
// removes what a killed lab left.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/cifha/cifha/internal/checker"
	"github.com/cifha/cifha/internal/cluster"
	"github.com/cifha/cifha/internal/etcdcluster"
	"github.com/cifha/cifha/internal/testutil"
	"github.com/cifha/cifha/pkg/config"
)

func main() { os.Exit(run()) }

func run() (code int) {
	if len(os.Args) > 1 && os.Args[1] == "lab" {
		return runLab(os.Args[2:])
	}
	bin := flag.String("bin", "bin", "directory holding cifha, cifhactl and cifha-devetcd")
	rounds := flag.Int("rounds", 20, "fault rounds")
	seed := flag.Uint64("seed", uint64(time.Now().UnixNano()), "seed of the fault sequence (printed; reuse it to replay)")
	faultList := flag.String("faults", "", "comma-separated faults (default all: "+faultNames()+")")
	syncMode := flag.Bool("sync", true, "synchronous mode (false: asynchronous, loss bounded by maximum_lag_on_failover)")
	ttl := flag.Duration("ttl", config.DefaultTTL, "lease ttl")
	bound := flag.Duration("bound", 60*time.Second, "writes and health must be back within this after a fault")
	etcdMembers := flag.Int("etcd-members", 3, "etcd members (processes)")
	keep := flag.Bool("keep", false, "keep every file afterwards, data directories included (a failed run keeps its logs and configuration)")
	failsafe := flag.Bool("failsafe", false, "DCS failsafe mode (etcd-outage then stops no write; etcd-partition causes no failover)")
	outage := flag.Duration("outage-hold", 30*time.Second, "how long etcd-outage keeps every etcd member down")
	load := flag.Duration("load", 0, "instead of fault rounds: a pgbench load for this long with no fault injected (reports failovers, demotions, fences, agent memory and loop latency; use with -ttl 3s)")
	loadClients := flag.Int("load-clients", 8, "pgbench clients for -load")
	lanes := flag.Int("lanes", 1, "independent clusters run side by side (lane i: its own 3-member etcd, agents on 127.0.0.(31+10i)-(33+10i), seed+i, its share of the rounds); the table sums them")
	flag.Parse()
	var faults []checker.Fault
	if *faultList != "" {
		for _, f := range strings.Split(*faultList, ",") {
			f = strings.TrimSpace(f)
			known := false
			for _, k := range checker.AllFaults {
				known = known || string(k) == f
			}
			if !known {
				fmt.Fprintf(os.Stderr, "cifha-check: unknown fault %q (known: %s)\n", f, faultNames())
				return 2
			}
			faults = append(faults, checker.Fault(f))
		}
	}
	if *rounds < 1 || *etcdMembers < 1 || *lanes < 1 || *lanes > 20 {
		fmt.Fprintln(os.Stderr, "cifha-check: -rounds and -etcd-members must be at least 1, -lanes 1 to 20")
		return 2
	}
	if *lanes > *rounds {
		*lanes = *rounds
	}
	if *load > 0 {
		*lanes = 1
	}
	binAbs, err := filepath.Abs(*bin)
	if err != nil {
		return fail(err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	root, err := testutil.MkdirForPostgres("cifha-check-")
	if err != nil {
		return fail(err)
	}
	defer func() {
		// A failed run keeps its logs (a failure must be explainable), not
		// its gigabytes of data directories (checker.PruneToLogs).
		switch {
		case *keep:
			fmt.Println("files kept in", root)
		case code != 0:
			if freed, err := checker.PruneToLogs(root); err != nil {
				fmt.Fprintln(os.Stderr, "cifha-check: remove data directories:", err)
			} else {
				fmt.Printf("logs kept in %s (data directories removed: %d MB; -keep keeps them)\n", root, freed>>20)
			}
		default:
			os.RemoveAll(root)
		}
	}()
	if *lanes == 1 {
		rep, err := runLane(ctx, laneOpts{root: root, bin: binAbs, lane: 0, seed: *seed, rounds: *rounds, faults: faults, sync: *syncMode,
			ttl: *ttl, bound: *bound, etcdMembers: *etcdMembers, failsafe: *failsafe, outage: *outage, load: *load, loadClients: *loadClients})
		return report(rep, err, *load > 0)
	}
	// Lanes: each its own cluster and etcd under root/laneN, its own seed
	// (seed+i: replay a failed lane alone with -seed seed+i -lanes 1, on
	// the first lane's addresses) and its share of the rounds. Faults act on
	// one lane's processes and proxies only, so lanes do not disturb each
	// other beyond sharing the CPU.
	var (
		mu   sync.Mutex
		all  = checker.Report{Seed: *seed, ByFault: map[checker.Fault]*checker.Stats{}, Async: !*syncMode}
		wg   sync.WaitGroup
		errs []error
	)
	for i := 0; i < *lanes; i++ {
		n := *rounds / *lanes
		if i < *rounds%*lanes {
			n++
		}
		dir := filepath.Join(root, fmt.Sprintf("lane%d", i))
		if err := mkdirForPostgres(dir); err != nil {
			return fail(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			rep, err := runLane(ctx, laneOpts{root: dir, bin: binAbs, lane: i, laned: true, seed: *seed + uint64(i), rounds: n, faults: faults, sync: *syncMode,
				ttl: *ttl, bound: *bound, etcdMembers: *etcdMembers, failsafe: *failsafe, outage: *outage})
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				// Said at once: the other lanes may run for hours yet.
				fmt.Printf("%s [lane %d] stopped: %v\n", time.Now().Format("15:04:05"), i, err)
			}
			fmt.Printf("\nlane %d (seed %d):\n", i, *seed+uint64(i))
			rep.faults.Table(os.Stdout)
			all.Merge(rep.faults)
			if err != nil {
				errs = append(errs, fmt.Errorf("lane %d (seed %d): %w", i, *seed+uint64(i), err))
			}
		}()
	}
	wg.Wait()
	done := 0
	for _, st := range all.ByFault {
		done += st.Rounds
	}
	fmt.Printf("\nall %d lanes, %d of %d rounds run:\n", *lanes, done, *rounds)
	return report(laneReport{faults: all}, errors.Join(errs...), false)
}

type laneOpts struct {
	root, bin          string
	lane               int
	laned              bool // one of several lanes: log lines say which
	seed               uint64
	rounds             int
	faults             []checker.Fault
	sync, failsafe     bool
	ttl, bound, outage time.Duration
	etcdMembers        int
	load               time.Duration
	loadClients        int
}

// laneReport is what one lane found: the fault table, or (load mode) the
// load report.
type laneReport struct {
	faults checker.Report
	load   *checker.LoadReport
}

func report(rep laneReport, err error, load bool) int {
	fmt.Println()
	if load && rep.load != nil {
		rep.load.Print(os.Stdout)
	} else if !load {
		rep.faults.Table(os.Stdout)
	}
	if err != nil {
		return fail(err)
	}
	if load {
		if rep.load == nil || !rep.load.OK() {
			return 1
		}
		return 0
	}
	if !rep.faults.OK() {
		return 1
	}
	return 0
}

// mkdirForPostgres makes dir (0755) owned by the postgres user when root.
func mkdirForPostgres(dir string) error {
	if err := os.Mkdir(dir, 0o755); err != nil {
		return err
	}
	if os.Geteuid() != 0 {
		return nil
	}
	cred, err := testutil.PostgresCredential()
	if err != nil {
		return err
	}
	return os.Chown(dir, int(cred.Uid), int(cred.Gid))
}

// runLane starts one cluster (etcd and three agents) under o.root and runs
// the fault rounds or the load on it.
func runLane(ctx context.Context, o laneOpts) (laneReport, error) {
	var out laneReport
	prefix := ""
	if o.laned {
		prefix = fmt.Sprintf("[lane %d] ", o.lane)
	}
	logf := func(format string, args ...any) {
		fmt.Printf("%s %s"+format+"\n", append([]any{time.Now().Format("15:04:05"), prefix}, args...)...)
	}
	// The postgres user must be able to execute the agent's binaries.
	agentBin, err := cluster.CopyAgentBinaries(o.bin, o.root)
	if err != nil {
		return out, err
	}
	ec, err := etcdcluster.Start(filepath.Join(o.bin, "cifha-devetcd"), filepath.Join(o.root, "etcd"), o.etcdMembers)
	if err != nil {
		return out, err
	}
	defer ec.Close()
	extra := ""
	if o.sync {
		extra = "synchronous_mode = true\n"
	}
	if o.failsafe {
		extra += "failsafe_mode = true\n"
	}
	var addrs []string
	for i := 1; i <= 3; i++ {
		addrs = append(addrs, fmt.Sprintf("127.0.0.%d", 30+10*o.lane+i))
	}
	c, err := cluster.New(cluster.Options{BinDir: agentBin, Root: o.root, EtcdEndpoints: ec.Endpoints(), EtcdProxies: true, PeerProxies: true,
		Cluster: "check", Addrs: addrs, TTL: o.ttl, LoopInterval: time.Second,
		APIToken: "check-token", Extra: extra})
	if err != nil {
		return out, err
	}
	defer c.Close(15 * time.Second)
	if err := c.Start(); err != nil {
		return out, err
	}
	if o.load > 0 {
		if _, err := checker.WaitHealthy(ctx, c, o.bound, o.sync); err != nil {
			return out, err
		}
		lrep, err := checker.RunLoad(ctx, c, checker.LoadOptions{Duration: o.load, Clients: o.loadClients, Logf: logf})
		fmt.Printf("\nttl %s, seed unused\n", o.ttl)
		out.load = &lrep
		return out, err
	}
	out.faults, err = checker.Run(ctx, c, checker.Options{Seed: o.seed, Rounds: o.rounds, Faults: o.faults, Bound: o.bound, Etcd: ec, Async: !o.sync,
		Failsafe: o.failsafe, OutageHold: o.outage,
		// The agents' maximum_lag_on_failover (the default, 1MB): an
		// asynchronous round that loses more fails.
		MaxLag: 1 << 20,
		Switch: Switcher(filepath.Join(agentBin, "cifhactl"), ec.Endpoints(), "check", filepath.Join(o.root, "secrets", "api.token")),
		Logf:   logf})
	return out, err
}

// Switcher runs `cifhactl switchover --force --to NAME`.
func Switcher(ctl string, endpoints []string, clusterName, tokenFile string) func(context.Context, string) error {
	return func(ctx context.Context, to string) error {
		out, err := exec.CommandContext(ctx, ctl, "--endpoints", strings.Join(endpoints, ","), "--cluster", clusterName,
			"--token-file", tokenFile, "switchover", "--force", "--to", to).CombinedOutput()
		if err != nil {
			return fmt.Errorf("%v: %s", err, strings.TrimSpace(string(out)))
		}
		return nil
	}
}

func faultNames() string {
	var s []string
	for _, f := range checker.AllFaults {
		s = append(s, string(f))
	}
	return strings.Join(s, ",")
}

func fail(err error) int {
	fmt.Fprintln(os.Stderr, "cifha-check:", err)
	return 1
}
