// Command cifha-demo starts a local cifha cluster for a first look: an
// embedded etcd and three cifha agents (db1, db2, db3) on 127.0.0.21-23,
// each running real PostgreSQL on port 5432 as the postgres user. Ctrl-C
// stops everything and removes the demo's files.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/cifha/cifha/internal/cluster"
	"github.com/cifha/cifha/internal/devetcd"
	"github.com/cifha/cifha/internal/etcdcluster"
	"github.com/cifha/cifha/internal/testutil"
)

func main() { os.Exit(run()) }

func run() int {
	bin := flag.String("bin", "bin", "directory holding cifha and cifhactl")
	etcdAddr := flag.String("etcd", "127.0.0.1:23790", "address for the embedded etcd")
	etcdMembers := flag.Int("etcd-members", 1, "1: one embedded etcd; 3 (or 5): a real etcd cluster of cifha-devetcd processes from -bin, one of which can be killed or frozen")
	keep := flag.Bool("keep", false, "keep the demo's files after Ctrl-C")
	flag.Parse()
	binAbs, err := filepath.Abs(*bin)
	if err != nil {
		return fail(err)
	}
	devetcdBin := filepath.Join(binAbs, "cifha-devetcd")
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	root, err := testutil.MkdirForPostgres("cifha-demo-")
	if err != nil {
		return fail(err)
	}
	defer func() {
		if *keep {
			fmt.Println("files kept in", root)
		} else {
			os.RemoveAll(root)
			fmt.Println("==> removed", root)
		}
	}()
	if os.Geteuid() == 0 {
		// The postgres user must be able to execute the binaries.
		if binAbs, err = cluster.CopyAgentBinaries(binAbs, root); err != nil {
			return fail(err)
		}
	}
	var endpoints []string
	if *etcdMembers > 1 {
		step("starting a %d-member etcd cluster (cifha-devetcd processes)", *etcdMembers)
		ec, err := etcdcluster.Start(devetcdBin, filepath.Join(root, "etcd"), *etcdMembers)
		if err != nil {
			return fail(fmt.Errorf("%w (run `make demo`, which builds bin/cifha-devetcd)", err))
		}
		defer ec.Close()
		endpoints = ec.Endpoints()
		for _, m := range ec.Members {
			fmt.Printf("    %s: %s (data and log in %s)\n", m.Name, m.ClientURL, m.Dir)
		}
	} else {
		step("starting embedded etcd on %s", *etcdAddr)
		etcd, err := devetcd.Start(filepath.Join(root, "etcd"), *etcdAddr)
		if err != nil {
			return fail(err)
		}
		defer etcd.Close()
		endpoints = []string{etcd.Endpoint}
	}

	c, err := cluster.New(cluster.Options{
		BinDir: binAbs, Root: root, EtcdEndpoints: endpoints, Cluster: "demo",
		Addrs: []string{"127.0.0.21", "127.0.0.22", "127.0.0.23"}, TTL: 10 * time.Second, LoopInterval: time.Second,
		Tuning: "profile = \"cif\"\nmemory = \"1GB\"", SuperuserPassword: "demo",
		APIToken: demoToken(),
	})
	if err != nil {
		return fail(err)
	}
	defer func() {
		step("stopping the agents (standbys first, then the leader)")
		p, _ := c.Primary(context.Background())
		for _, n := range c.Nodes {
			if n != p {
				n.Stop(20 * time.Second)
			}
		}
		c.Close(20 * time.Second)
	}()
	step("starting 3 cifha agents (db1, db2, db3 on 127.0.0.21-23, postgres on :5432)")
	if err := c.Start(); err != nil {
		return fail(err)
	}
	started := time.Now()
	var primary *cluster.Node
	for primary == nil {
		select {
		case <-ctx.Done():
			return 0
		case <-time.After(200 * time.Millisecond):
		}
		p, err := c.Primary(ctx)
		if err != nil {
			if time.Since(started) > 90*time.Second {
				return fail(fmt.Errorf("no primary after 90 s; agent logs are in %s/db*/cifha.log", root))
			}
			continue
		}
		ok := true
		for _, n := range c.Nodes {
			if code, _, err := n.API(ctx, "/replica"); n != p && (err != nil || code != 200) {
				ok = false
			}
		}
		if ok {
			primary = p
		}
	}
	step("cluster ready in %.1f s: one primary, two streaming standbys", time.Since(started).Seconds())
	var standby *cluster.Node
	for _, n := range c.Nodes {
		if n != primary {
			standby = n
			break
		}
	}
	ctlConf := filepath.Join(root, "cifhactl.toml")
	quoted := make([]string, len(endpoints))
	for i, e := range endpoints {
		quoted[i] = strconv.Quote(e)
	}
	os.WriteFile(ctlConf, []byte(fmt.Sprintf("cluster = \"demo\"\n[api]\ntoken_file = %q\n[etcd]\nendpoints = [%s]\n",
		filepath.Join(root, "secrets", "api.token"), strings.Join(quoted, ", "))), 0o600)
	ctl := filepath.Join(binAbs, "cifhactl")
	fmt.Println()
	cmd := exec.Command(ctl, "-c", ctlConf, "status")
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	_ = cmd.Run()
	fmt.Printf(`
Things to try (in another terminal; after a failover the primary's address
changes: run status again):

  %[1]s -c %[2]s status          # the table above; add --json
  curl -s -o /dev/null -w '%%{http_code}\n' http://%[3]s:8008/primary   # 200 on the primary, 503 elsewhere
  curl -s http://%[6]s:8008/status
  PGPASSWORD=demo psql -h %[3]s -U postgres -c 'create table t(x int); insert into t values (1)'
  PGPASSWORD=demo psql -h %[6]s -U postgres -c 'select * from t'   # a standby has the row
  kill -9 $(head -1 %[4]s/postmaster.pid)   # crash the primary's postgres: cifha restarts it in place
  kill -9 %[7]d    # kill the leader's agent: its postgres dies with it, a standby takes over in ~10 s
  %[1]s -c %[2]s switchover --to %[8]s   # planned, no write lost, ~0.6 s unavailable
  %[1]s -c %[2]s set postgresql.parameters.work_mem=8MB   # every member, reloaded
  %[1]s -c %[2]s set postgresql.parameters.shared_buffers=256MB   # status: restart pending
  %[1]s -c %[2]s restart %[8]s
  %[1]s -c %[2]s history
  # the demo restarts a dead agent after 15 s, as systemd would: the old
  # leader then rejoins as a standby with pg_rewind (watch status)
  tail -f %[5]s/db*/cifha.log

Files: %[5]s (removed on exit). Press Ctrl-C to stop everything.
`, ctl, ctlConf, primary.Addr, primary.DataDir, root, standby.Addr, primary.PID(), standby.Name)
	// Like systemd's Restart=always (but after 15 s, so that a failover is
	// visible first): an agent that died is started again.
	deadSince := map[string]time.Time{}
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			fmt.Println()
			return 0
		case <-tick.C:
		}
		for _, n := range c.Nodes {
			if n.Running() {
				delete(deadSince, n.Name)
				continue
			}
			if _, ok := deadSince[n.Name]; !ok {
				deadSince[n.Name] = time.Now()
				step("agent %s exited; restarting it in 15 s", n.Name)
				continue
			}
			if time.Since(deadSince[n.Name]) > 15*time.Second {
				step("restarting agent %s", n.Name)
				if err := n.Start(); err != nil {
					fmt.Fprintln(os.Stderr, "cifha-demo:", err)
				}
				delete(deadSince, n.Name)
			}
		}
	}
}

func step(format string, args ...any) {
	fmt.Printf("==> "+format+"\n", args...)
}

func fail(err error) int {
	fmt.Fprintln(os.Stderr, "cifha-demo:", err)
	return 1
}

// demoToken is a fresh random token for the demo's control API.
func demoToken() string {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}
