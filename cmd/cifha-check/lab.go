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
	"syscall"
	"time"

	"github.com/cifha/cifha/internal/checker"
	"github.com/cifha/cifha/internal/cluster"
	"github.com/cifha/cifha/internal/lab"
	"github.com/cifha/cifha/internal/testutil"
	"github.com/cifha/cifha/pkg/config"
)

// The lab's hosts, as docs/install.md lays them out (etcd members on db1,
// db2 and cif1) plus a third DB host, a client and the observer (the
// checker's own eye: pinned writers and health probes, never filtered).
var labHosts = []lab.HostSpec{{Name: "db1", Octet: 11}, {Name: "db2", Octet: 12}, {Name: "db3", Octet: 13},
	{Name: "cif1", Octet: 21}, {Name: "client", Octet: 31}, {Name: "obs", Octet: 254}}

// runLab is `cifha-check lab`: the checker's real-network mode. Every DB
// host is a network namespace with its own etcd member (db1, db2, cif1),
// agent and postgres; faults are nftables rules and signals; the rounds,
// checks and report are the loopback checker's.
func runLab(args []string) (code int) {
	fs := flag.NewFlagSet("cifha-check lab", flag.ContinueOnError)
	bin := fs.String("bin", "bin", "directory holding cifha, cifhactl and cifha-devetcd")
	id := fs.String("id", "", "run ID (default: random); every namespace and directory of the run is named cifhalab-<ID>-...")
	cleanup := fs.Bool("cleanup", false, "remove what labs left (all of them, or --id's): processes inside their namespaces, the namespaces, their directories; then exit")
	rounds := fs.Int("rounds", 20, "fault rounds")
	seed := fs.Uint64("seed", uint64(time.Now().UnixNano()), "seed of the fault sequence (printed; reuse it to replay)")
	faultList := fs.String("faults", "", "comma-separated faults (default all of the lab's: "+names(checker.LabFaults)+")")
	inTurn := fs.Bool("each-in-turn", false, "run the faults in the order given, round after round, instead of drawing them at random")
	syncMode := fs.Bool("sync", true, "synchronous mode (false: asynchronous, loss bounded by maximum_lag_on_failover)")
	ttl := fs.Duration("ttl", config.DefaultTTL, "lease ttl")
	failsafe := fs.Bool("failsafe", false, "DCS failsafe mode")
	dialTimeout := fs.Duration("dial-timeout", time.Second, "[etcd] dial_timeout")
	bound := fs.Duration("bound", 60*time.Second, "writes and health must be back within this after a fault")
	outage := fs.Duration("outage-hold", 30*time.Second, "how long etcd-outage keeps every etcd member down")
	minFree := fs.Float64("min-free", 10, "stop before a round when the run's file system has less than this percentage free")
	keep := fs.Bool("keep", false, "keep every file afterwards (a failed run keeps its logs and configuration)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "cifha-check lab: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	if *cleanup {
		left, _ := lab.Namespaces(*id)
		if err := lab.Cleanup(*id); err != nil {
			return fail(err)
		}
		fmt.Printf("removed %d namespaces\n", len(left))
		return 0
	}
	faults := checker.LabFaults
	if *faultList != "" {
		faults = nil
		for _, f := range strings.Split(*faultList, ",") {
			f = strings.TrimSpace(f)
			if !known(checker.LabFaults, f) && !known(checker.LabExtraFaults, f) {
				fmt.Fprintf(os.Stderr, "cifha-check lab: unknown fault %q (the lab's: %s)\n", f, names(checker.LabFaults))
				return 2
			}
			faults = append(faults, checker.Fault(f))
		}
	}
	if *rounds < 1 {
		fmt.Fprintln(os.Stderr, "cifha-check lab: --rounds must be at least 1")
		return 2
	}
	if *id == "" {
		*id = lab.NewID()
	}
	binAbs, err := filepath.Abs(*bin)
	if err != nil {
		return fail(err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	// The exact command, with the seed (and run ID) it drew, so that any
	// failure can be replayed.
	replay := []string{"cifha-check", "lab"}
	seeded := false
	fs.Visit(func(f *flag.Flag) { seeded = seeded || f.Name == "seed" })
	if !seeded {
		replay = append(replay, "--seed", fmt.Sprint(*seed))
	}
	fmt.Printf("lab %s: %s\n", *id, shellQuote(append(replay, args...)))
	root, err := testutil.MkdirForPostgres(lab.Prefix + *id + "-")
	if err != nil {
		return fail(err)
	}
	l, err := lab.New(*id, labHosts)
	if err != nil {
		os.RemoveAll(root)
		return fail(err)
	}
	defer func() {
		// Processes first (they hold the files), then the namespaces;
		// the files as the loopback checker keeps them.
		if err := cleanupHosts(l); err != nil {
			fmt.Fprintln(os.Stderr, "cifha-check lab: cleanup:", err)
			code = 1
		}
		switch {
		case *keep:
			fmt.Println("files kept in", root)
		case code != 0:
			if freed, err := checker.PruneToLogs(root); err == nil {
				fmt.Printf("logs kept in %s (data directories removed: %d MB; --keep keeps them)\n", root, freed>>20)
			}
		default:
			os.RemoveAll(root)
		}
	}()
	rep, err := labLane(ctx, labOpts{root: root, bin: binAbs, lab: l, seed: *seed, rounds: *rounds, faults: faults, inTurn: *inTurn,
		sync: *syncMode, failsafe: *failsafe, ttl: *ttl, dialTimeout: *dialTimeout, bound: *bound, outage: *outage, minFree: *minFree})
	return report(laneReport{faults: rep}, err, false)
}

// cleanupHosts removes the lab's namespaces and what runs in them, but
// not its directory (the deferred code above decides what to keep).
func cleanupHosts(l *lab.Lab) error {
	names, err := lab.Namespaces(l.ID)
	if err != nil {
		return err
	}
	return errors.Join(lab.KillAndDelete(names), lab.RemoveMounts(l.ID))
}

type labOpts struct {
	root, bin                       string
	lab                             *lab.Lab
	seed                            uint64
	rounds                          int
	faults                          []checker.Fault
	inTurn, sync, failsafe          bool
	ttl, dialTimeout, bound, outage time.Duration
	minFree                         float64
}

func labLane(ctx context.Context, o labOpts) (checker.Report, error) {
	logf := func(format string, args ...any) {
		fmt.Printf("%s "+format+"\n", append([]any{time.Now().Format("15:04:05")}, args...)...)
	}
	agentBin, err := cluster.CopyAgentBinaries(o.bin, o.root)
	if err != nil {
		return checker.Report{}, err
	}
	L := o.lab
	obs, client, cif := L.Host("obs"), L.Host("client"), L.Host("cif1")
	etcdHosts := []*lab.Host{L.Host("db1"), L.Host("db2"), cif}
	ec, err := lab.StartEtcd(filepath.Join(o.bin, "cifha-devetcd"), filepath.Join(o.root, "etcd"), etcdHosts, obs)
	if err != nil {
		return checker.Report{}, err
	}
	defer ec.Close()
	extra := ""
	if o.sync {
		extra = "synchronous_mode = true\n"
	}
	if o.failsafe {
		extra += "failsafe_mode = true\n"
	}
	byAddr := map[string]*lab.Host{}
	var addrs []string
	for _, name := range []string{"db1", "db2", "db3"} {
		h := L.Host(name)
		byAddr[h.Addr] = h
		addrs = append(addrs, h.Addr)
	}
	hostOf := func(n *cluster.Node) *lab.Host { return byAddr[n.Addr] }
	c, err := cluster.New(cluster.Options{BinDir: agentBin, Root: o.root, EtcdEndpoints: ec.Endpoints(),
		Cluster: "lab", Addrs: addrs, TTL: o.ttl, LoopInterval: time.Second, APIToken: "lab-token", Extra: extra,
		DialTimeout: o.dialTimeout,
		// Each member's pg_wal on a tmpfs of its own host's (wal-disk-full).
		WalDirs:        true,
		MemberNetworks: []string{lab.Subnet + ".0/24"},
		Command: func(n *cluster.Node, cred *syscall.Credential, path string, args ...string) *exec.Cmd {
			return hostOf(n).Command(cred, path, args...)
		},
		Dial: obs.DialContext})
	if err != nil {
		return checker.Report{}, err
	}
	defer c.Close(15 * time.Second)
	if err := walMounts(c, hostOf); err != nil {
		return checker.Report{}, err
	}
	if err := c.Start(); err != nil {
		return checker.Report{}, err
	}
	ctl := filepath.Join(agentBin, "cifhactl")
	token := filepath.Join(o.root, "secrets", "api.token")
	switcher := func(ctx context.Context, to string) error {
		// The operators' cifhactl runs on cif1 (docs/install.md).
		cmd := cif.Command(nil, ctl, "--endpoints", strings.Join(ec.Endpoints(), ","), "--cluster", "lab",
			"--token-file", token, "switchover", "--force", "--to", to)
		out, err := cmd.CombinedOutput()
		if err != nil {
			return fmt.Errorf("%v: %s", err, strings.TrimSpace(string(out)))
		}
		return nil
	}
	members := map[string]string{}
	for _, n := range c.Nodes {
		members[n.Addr] = n.Name
	}
	cifNode, err := startCIFNode(filepath.Join(o.root, "cif1"), filepath.Join(agentBin, "cifha"), cif, ec.Endpoints(), o.dialTimeout, c.Opt.SuperuserPassword, members)
	if err != nil {
		return checker.Report{}, err
	}
	defer cifNode.Close()
	// The lab's own switchover, for faults that cut cif1 from etcd: from
	// the observer, which every fault spares.
	obsSwitch := func(ctx context.Context, to string) error {
		out, err := obs.Command(nil, ctl, "--endpoints", strings.Join(ec.Endpoints(), ","), "--cluster", "lab",
			"--token-file", token, "switchover", "--force", "--to", to).CombinedOutput()
		if err != nil {
			return fmt.Errorf("%v: %s", err, strings.TrimSpace(string(out)))
		}
		return nil
	}
	logf("lab %s up: etcd on db1, db2, cif1; agents on db1-db3 (%s); cif-sync and a CIF client on cif1; ttl %s, failsafe %v, sync %v", L.ID, strings.Join(addrs, ", "), o.ttl, o.failsafe, o.sync)
	return checker.Run(ctx, c, checker.Options{Seed: o.seed, Rounds: o.rounds, Faults: o.faults, EachInTurn: o.inTurn, Bound: o.bound,
		Async: !o.sync, Failsafe: o.failsafe, OutageHold: o.outage, MaxLag: 1 << 20, Switch: switcher, Logf: logf,
		ClientDial:  client.DialContext,
		Lab:         &checker.Lab{Net: o.lab, Etcd: ec, HostOf: hostOf, Others: []*lab.Host{cif, client}, CIF: cif, Switch: obsSwitch},
		CIF:         cifNode,
		BeforeRound: func() error { return checkFree(o.root, o.minFree) }})
}

// walTmpfsLimit bounds each member's pg_wal tmpfs; only what is written
// takes memory. wal-disk-full lowers the limit to what is used.
const walTmpfsLimit = 4 << 30

// walMounts gives each DB host a mount namespace of its own with a tmpfs
// on its member's wal_dir, before the agents start (initdb and
// pg_basebackup put the WAL there).
func walMounts(c *cluster.Cluster, hostOf func(*cluster.Node) *lab.Host) error {
	cred, err := testutil.PostgresCredential()
	if err != nil {
		return err
	}
	for _, n := range c.Nodes {
		h := hostOf(n)
		if err := os.Mkdir(n.WalDir, 0o700); err != nil {
			return err
		}
		if err := os.Chown(n.WalDir, int(cred.Uid), int(cred.Gid)); err != nil {
			return err
		}
		if err := h.OwnMounts(); err != nil {
			return err
		}
		if err := h.MountTmpfs(n.WalDir, walTmpfsLimit, int(cred.Uid), int(cred.Gid)); err != nil {
			return err
		}
	}
	return nil
}

// startCIFNode starts the CIF node on cif1: a ~/.cif shaped like the
// seed's (CIF's default host, 127.0.0.1, until cif-sync names the
// primary), cif-sync keeping it, and the CIF-like Perl client.
func startCIFNode(dir, cifha string, h *lab.Host, endpoints []string, dialTimeout time.Duration, password string, members map[string]string) (*checker.CIFNode, error) {
	home := filepath.Join(dir, "home")
	if err := os.MkdirAll(home, 0o755); err != nil {
		return nil, err
	}
	file := filepath.Join(home, ".cif")
	cif := fmt.Sprintf(`# ~/.cif, as the seed's manual writes it
[client]
host = https://localhost:443/api
timeout = 60

[db]
host = 127.0.0.1
user = postgres
password = %s
database = postgres

[cif_archive]
# keep the data
`, password)
	if err := os.WriteFile(file, []byte(cif), 0o600); err != nil {
		return nil, err
	}
	q := make([]string, len(endpoints))
	for i, e := range endpoints {
		q[i] = fmt.Sprintf("%q", e)
	}
	conf := filepath.Join(dir, "cif-sync.toml")
	if err := os.WriteFile(conf, []byte(fmt.Sprintf(`cluster = "lab"
cif_file = %q

[etcd]
endpoints = [%s]
dial_timeout = %q

[log]
level = "debug"
`, file, strings.Join(q, ", "), dialTimeout.String())), 0o600); err != nil {
		return nil, err
	}
	return checker.StartCIFNode(checker.CIFNodeOptions{Dir: dir, File: file, Members: members,
		CIFSync: []string{cifha, "cif-sync", "--config", conf},
		Command: func(path string, args ...string) *exec.Cmd { return h.Command(nil, path, args...) }})
}

// checkFree fails when the file system holding dir has less than pct %
// free: the run stops with a clear message instead of filling the disk.
func checkFree(dir string, pct float64) error {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return err
	}
	free := float64(st.Bavail) / float64(st.Blocks) * 100
	if free < pct {
		return fmt.Errorf("the file system of %s has %.1f%% free, less than --min-free %.0f%%: stopping before the next round", dir, free, pct)
	}
	return nil
}

func known(fs []checker.Fault, f string) bool {
	for _, k := range fs {
		if string(k) == f {
			return true
		}
	}
	return false
}

func names(fs []checker.Fault) string {
	var s []string
	for _, f := range fs {
		s = append(s, string(f))
	}
	return strings.Join(s, ",")
}

func shellQuote(args []string) string {
	var out []string
	for _, a := range args {
		if a == "" || strings.ContainsAny(a, " \t'\"$\\*?") {
			a = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
		out = append(out, a)
	}
	return strings.Join(out, " ")
}
