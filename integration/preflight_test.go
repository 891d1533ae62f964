package integration

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cifha/cifha/internal/cluster"
	"github.com/cifha/cifha/internal/devetcd"
	"github.com/cifha/cifha/internal/testutil"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// initializeClaimed reports whether the cluster's initialize key exists.
func initializeClaimed(t *testing.T, c *cluster.Cluster) bool {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: c.Opt.EtcdEndpoints, DialTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	resp, err := cli.Get(ctx, "/cifha/"+c.Opt.Cluster+"/initialize")
	if err != nil {
		t.Fatal(err)
	}
	return len(resp.Kvs) > 0
}

// TestPreflightPortInUse (issue 13, acceptance 2): another postgres (not
// cifha's: Debian's own cluster, say) listens on the member's address and
// port. The agent waits with a message naming the holder and the fix and
// claims nothing in etcd; once the other postgres is gone it bootstraps.
func TestPreflightPortInUse(t *testing.T) {
	c := newCluster(t, 1, func(o *cluster.Options) { o.NoStart = true })
	n := c.Nodes[0]
	cred, _ := testutil.PostgresCredential()
	if os.Geteuid() != 0 {
		cred = nil
	}
	// The other postgres, in a directory of its own.
	other := filepath.Join(c.Opt.Root, "other")
	pgbin := testutil.PGBinDir(t)
	run := func(name string, args ...string) *exec.Cmd {
		cmd := exec.Command(filepath.Join(pgbin, name), args...)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred, Setpgid: true}
		return cmd
	}
	if out, err := run("initdb", "-D", other, "-U", "postgres", "--auth=trust").CombinedOutput(); err != nil {
		t.Fatalf("initdb: %v: %s", err, out)
	}
	pm := run("postgres", "-D", other, "-c", "listen_addresses="+n.Addr, "-c", "port=5432", "-c", "unix_socket_directories="+other)
	if err := pm.Start(); err != nil {
		t.Fatal(err)
	}
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			pm.Process.Signal(syscall.SIGINT) // fast shutdown, by PID
			pm.Wait()
		}
	}
	t.Cleanup(stop)
	testutil.Eventually(t, 20*time.Second, "the other postgres listens", func() error {
		conn, err := net.DialTimeout("tcp", n.Addr+":5432", time.Second)
		if err != nil {
			return err
		}
		return conn.Close()
	})

	if err := n.Start(); err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("%s:5432 is in use by pid %d", n.Addr, pm.Process.Pid)
	testutil.Eventually(t, 20*time.Second, "the agent names the holder", func() error {
		if l := n.Log(); !strings.Contains(l, want) || !strings.Contains(l, "fix: stop the program that holds it") {
			return fmt.Errorf("log lacks %q:\n%s", want, tail(l, 10))
		}
		return nil
	})
	if initializeClaimed(t, c) {
		t.Fatal("the initialize key was taken while the port was busy")
	}
	if _, err := os.Stat(n.DataDir); err == nil {
		t.Fatal("a data directory was made while the port was busy")
	}
	stop()
	waitHealthy(t, c, 90*time.Second)
	if !strings.Contains(n.Log(), "preflight passed") {
		t.Error("no 'preflight passed' in the log")
	}
}

// TestPreflightDataDirParent (issue 13, acceptance 2): the data
// directory's parent belongs to root and postgres cannot write it. The
// agent waits with the fix and claims nothing.
func TestPreflightDataDirParent(t *testing.T) {
	c := newCluster(t, 1, func(o *cluster.Options) { o.NoStart = true })
	n := c.Nodes[0]
	// The node's directory (the data directory's parent) becomes root's
	// (as root), or read-only (as anyone else).
	if os.Geteuid() == 0 {
		if err := os.Chown(n.Dir, 0, 0); err != nil {
			t.Fatal(err)
		}
		os.Chmod(n.Dir, 0o755)
	} else {
		os.Chmod(n.Dir, 0o555)
		t.Cleanup(func() { os.Chmod(n.Dir, 0o700) })
	}
	if err := n.Start(); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 20*time.Second, "the agent says what to fix", func() error {
		if l := n.Log(); !strings.Contains(l, "preflight: waiting, nothing claimed in etcd: data_dir: "+n.Dir+" is not writable by") ||
			!strings.Contains(l, "fix: install -d -o ") {
			return fmt.Errorf("log:\n%s", tail(l, 10))
		}
		return nil
	})
	if initializeClaimed(t, c) {
		t.Fatal("the initialize key was taken with an unwritable data directory parent")
	}
}

// TestPreflightReadOnlyPath: under the unit's ProtectSystem=strict every
// directory outside its ReadWritePaths is read-only, whatever its mode.
// The preflight (the same checks as cifha doctor) names such a directory
// and the drop-in that allows it. The read-only mount is made in a
// private mount namespace.
func TestPreflightReadOnlyPath(t *testing.T) {
	if os.Geteuid() != 0 {
		if testutil.InCI() {
			t.Fatal("needs root (mount namespace)")
		}
		t.Skip("needs root")
	}
	c := newCluster(t, 1, func(o *cluster.Options) { o.NoStart = true; o.WalDirs = true })
	n := c.Nodes[0]
	if err := os.MkdirAll(n.WalDir, 0o700); err != nil {
		t.Fatal(err)
	}
	cred, err := testutil.PostgresCredential()
	if err != nil {
		t.Fatal(err)
	}
	os.Chown(n.WalDir, int(cred.Uid), int(cred.Gid))
	script := fmt.Sprintf("mount --bind %[1]s %[1]s && mount -o remount,bind,ro %[1]s && exec %[2]s doctor --config %[3]s --timeout 1s",
		n.WalDir, filepath.Join(binDir, "cifha"), n.ConfigPath)
	out, _ := exec.Command("unshare", "-m", "--propagation", "private", "--", "sh", "-c", script).CombinedOutput()
	for _, want := range []string{n.WalDir + " is on a read-only file system here", "ReadWritePaths=" + n.WalDir} {
		if !strings.Contains(string(out), want) {
			t.Errorf("doctor output lacks %q:\n%s", want, out)
		}
	}
}

// TestAgentWaitsForEtcd: hosts boot together, and etcd may come up after
// the agent. The agent waits, says so, starts nothing and claims nothing;
// when etcd answers it bootstraps.
func TestAgentWaitsForEtcd(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens until etcd starts below
	// Registered before the cluster's cleanup, so it runs after it: the
	// agent stops while etcd still answers.
	var etcd *devetcd.Server
	t.Cleanup(func() {
		if etcd != nil {
			etcd.Close()
		}
	})
	dir := testutil.Dir(t, "cifha-late-etcd-")
	c := newCluster(t, 1, func(o *cluster.Options) {
		o.NoStart = true
		o.EtcdEndpoints = []string{"http://" + addr}
	})
	n := c.Nodes[0]
	if err := n.Start(); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 30*time.Second, "the agent says it waits for etcd", func() error {
		if l := n.Log(); !strings.Contains(l, "waiting for etcd, nothing claimed and postgres not started") || !strings.Contains(l, "cannot connect") {
			return fmt.Errorf("log:\n%s", tail(l, 10))
		}
		return nil
	})
	if !n.Running() {
		t.Fatalf("the agent exited:\n%s", tail(n.Log(), 10))
	}
	if _, err := os.Stat(n.DataDir); err == nil {
		t.Fatal("a data directory was made before etcd answered")
	}
	etcd, err = devetcd.Start(filepath.Join(dir, "data"), addr)
	if err != nil {
		t.Fatal(err)
	}
	waitHealthy(t, c, 90*time.Second)
	if !strings.Contains(n.Log(), "etcd answers: starting") {
		t.Error("no 'etcd answers: starting' in the log")
	}
}
