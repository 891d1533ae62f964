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
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
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
	bin := flag.String("bin", "bin", "directory holding cifha, cifhactl and cifha-devetcd")
	rounds := flag.Int("rounds", 20, "fault rounds")
	seed := flag.Uint64("seed", uint64(time.Now().UnixNano()), "seed of the fault sequence (printed; reuse it to replay)")
	faultList := flag.String("faults", "", "comma-separated faults (default all: "+faultNames()+")")
	sync := flag.Bool("sync", true, "synchronous mode (false: asynchronous, loss bounded by maximum_lag_on_failover)")
	ttl := flag.Duration("ttl", config.DefaultTTL, "lease ttl")
	bound := flag.Duration("bound", 60*time.Second, "writes and health must be back within this after a fault")
	etcdMembers := flag.Int("etcd-members", 3, "etcd members (processes)")
	keep := flag.Bool("keep", false, "keep the files (logs) afterwards (a failed run always keeps them)")
	failsafe := flag.Bool("failsafe", false, "DCS failsafe mode (etcd-outage then stops no write; etcd-partition causes no failover)")
	outage := flag.Duration("outage-hold", 30*time.Second, "how long etcd-outage keeps every etcd member down")
	load := flag.Duration("load", 0, "instead of fault rounds: a pgbench load for this long with no fault injected (reports failovers, demotions, fences, agent memory and loop latency; use with -ttl 3s)")
	loadClients := flag.Int("load-clients", 8, "pgbench clients for -load")
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
	if *rounds < 1 || *etcdMembers < 1 {
		fmt.Fprintln(os.Stderr, "cifha-check: -rounds and -etcd-members must be at least 1")
		return 2
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
		// A failed run keeps its logs: a failure must be explainable.
		if *keep || code != 0 {
			fmt.Println("files (agent and postgres logs) kept in", root)
		} else {
			os.RemoveAll(root)
		}
	}()
	// The postgres user must be able to execute the agent's binaries.
	agentBin, err := cluster.CopyAgentBinaries(binAbs, root)
	if err != nil {
		return fail(err)
	}
	ec, err := etcdcluster.Start(filepath.Join(binAbs, "cifha-devetcd"), filepath.Join(root, "etcd"), *etcdMembers)
	if err != nil {
		return fail(err)
	}
	defer ec.Close()
	extra := ""
	if *sync {
		extra = "synchronous_mode = true\n"
	}
	if *failsafe {
		extra += "failsafe_mode = true\n"
	}
	c, err := cluster.New(cluster.Options{BinDir: agentBin, Root: root, EtcdEndpoints: ec.Endpoints(), EtcdProxies: true, PeerProxies: true,
		Cluster: "check", Addrs: []string{"127.0.0.31", "127.0.0.32", "127.0.0.33"}, TTL: *ttl, LoopInterval: time.Second,
		APIToken: "check-token", Extra: extra})
	if err != nil {
		return fail(err)
	}
	defer c.Close(15 * time.Second)
	if err := c.Start(); err != nil {
		return fail(err)
	}
	if *load > 0 {
		if _, err := checker.WaitHealthy(ctx, c, *bound, *sync); err != nil {
			return fail(err)
		}
		lrep, err := checker.RunLoad(ctx, c, checker.LoadOptions{Duration: *load, Clients: *loadClients,
			Logf: func(format string, args ...any) {
				fmt.Printf("%s "+format+"\n", append([]any{time.Now().Format("15:04:05")}, args...)...)
			}})
		fmt.Println()
		fmt.Printf("ttl %s, seed unused\n", *ttl)
		lrep.Print(os.Stdout)
		if err != nil {
			return fail(err)
		}
		if !lrep.OK() {
			return 1
		}
		return 0
	}
	rep, err := checker.Run(ctx, c, checker.Options{Seed: *seed, Rounds: *rounds, Faults: faults, Bound: *bound, Etcd: ec, Async: !*sync,
		Failsafe: *failsafe, OutageHold: *outage,
		// The agents' maximum_lag_on_failover (the default, 1MB): an
		// asynchronous round that loses more fails.
		MaxLag: 1 << 20,
		Switch: Switcher(filepath.Join(agentBin, "cifhactl"), ec.Endpoints(), "check", filepath.Join(root, "secrets", "api.token")),
		Logf: func(format string, args ...any) {
			fmt.Printf("%s "+format+"\n", append([]any{time.Now().Format("15:04:05")}, args...)...)
		}})
	fmt.Println()
	rep.Table(os.Stdout)
	if err != nil {
		return fail(err)
	}
	if !rep.OK() {
		return 1
	}
	return 0
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
