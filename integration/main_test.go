// Package integration runs real cifha processes (as the postgres OS user)
// against real PostgreSQL and an in-process etcd, each DB "host" on its own
// loopback address with postgres on port 5432.
package integration

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/cifha/cifha/internal/cluster"
	"github.com/cifha/cifha/internal/testutil"
)

// binDir holds the cifha and cifhactl binaries built once for the package.
var binDir string

func TestMain(m *testing.M) {
	os.Exit(func() int {
		dir, err := os.MkdirTemp("", "cifha-bin-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.RemoveAll(dir)
		_ = os.Chmod(dir, 0o755) // the postgres user runs these
		cmd := exec.Command("go", "build", "-o", dir+"/", "github.com/cifha/cifha/cmd/cifha", "github.com/cifha/cifha/cmd/cifhactl",
			"github.com/cifha/cifha/cmd/cifha-devetcd", "github.com/cifha/cifha/cmd/cifha-check")
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			fmt.Fprintln(os.Stderr, "build binaries:", err)
			return 1
		}
		binDir = dir
		return m.Run()
	}())
}

// requireEnv skips outside CI when PostgreSQL or the postgres user is
// missing, and fails in CI.
func requireEnv(t *testing.T) {
	t.Helper()
	testutil.PGBinDir(t)
	if _, err := testutil.PostgresCredential(); err != nil {
		if testutil.InCI() {
			t.Fatal(err)
		}
		t.Skip(err)
	}
}

// newCluster starts an etcd and n agents on 127.0.0.11.. and tears all of
// it down when the test ends, on failure too. Agent logs are printed when
// the test fails.
func newCluster(t *testing.T, n int, mutate func(*cluster.Options)) *cluster.Cluster {
	t.Helper()
	requireEnv(t)
	ep := testutil.Etcd(t)
	root := testutil.Dir(t, "cifha-it-")
	opt := cluster.Options{BinDir: binDir, Root: root, EtcdEndpoints: []string{ep}, Cluster: "it"}
	for i := 0; i < n; i++ {
		opt.Addrs = append(opt.Addrs, fmt.Sprintf("127.0.0.%d", 11+i))
	}
	if mutate != nil {
		mutate(&opt)
	}
	c, err := cluster.New(opt)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c.Close(15 * time.Second)
		if t.Failed() {
			for _, n := range c.Nodes {
				t.Logf("==== %s agent log ====\n%s", n.Name, tail(n.Log(), 80))
				if b, err := os.ReadFile(filepath.Join(n.Dir, "postgresql-"+n.Name+".log")); err == nil {
					t.Logf("==== %s postgres log ====\n%s", n.Name, tail(string(b), 30))
				}
			}
		}
	})
	if !opt.NoStart {
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
	}
	return c
}

// newClusterStartingFirst starts db1 alone until it is the primary, then
// the others, so db1 is the leader.
func newClusterStartingFirst(t *testing.T, n int, mutate func(*cluster.Options)) *cluster.Cluster {
	t.Helper()
	c := newCluster(t, n, func(o *cluster.Options) {
		if mutate != nil {
			mutate(o)
		}
		o.NoStart = true
	})
	if err := c.Nodes[0].Start(); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 60*time.Second, "db1 primary", func() error {
		p, err := c.Primary(ctxT(t, 5*time.Second))
		if err != nil {
			return err
		}
		if p != c.Nodes[0] {
			return fmt.Errorf("primary %s", p.Name)
		}
		return nil
	})
	for _, m := range c.Nodes[1:] {
		if err := m.Start(); err != nil {
			t.Fatal(err)
		}
	}
	if p := waitHealthy(t, c, 60*time.Second); p != c.Nodes[0] {
		t.Fatalf("primary is %s", p.Name)
	}
	return c
}

func tail(s string, n int) string {
	lines := 0
	for i := len(s) - 1; i >= 0; i-- {
		if s[i] == '\n' {
			lines++
			if lines > n {
				return s[i+1:]
			}
		}
	}
	return s
}

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}
