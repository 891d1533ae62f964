package etcdcluster

import (
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// build builds cifha-devetcd into a new directory, removed at the end.
func build(t *testing.T) (root, bin string) {
	t.Helper()
	root, err := os.MkdirTemp("", "etcdcluster-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(root) })
	bin = filepath.Join(root, "cifha-devetcd")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/cifha/cifha/cmd/cifha-devetcd").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	return root, bin
}

// TestStartPastATakenPort: a member whose port was taken between being
// picked and being bound (seen in CI) is started again on other ports, and
// Start returns a cluster with every member running and healthy.
func TestStartPastATakenPort(t *testing.T) {
	root, bin := build(t)
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	calls := 0
	pickPort = func() (int, error) {
		calls++
		if calls == 2 { // the first member's peer port
			return taken.Addr().(*net.TCPAddr).Port, nil
		}
		return freePort()
	}
	defer func() { pickPort = freePort }()
	c, err := Start(bin, root, 3)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, m := range c.Members {
		if !m.Running() {
			t.Errorf("%s is not running", m.Name)
		}
		if err := m.health(); err != nil {
			t.Errorf("%s: %v", m.Name, err)
		}
	}
	if calls < 8 {
		t.Errorf("the member was not given new ports (%d ports picked)", calls)
	}
}

// TestIsolateKillFreeze: a real 3-member cluster keeps serving writes with
// one member killed, frozen or isolated; the isolated member itself has no
// leader (it answers no linearizable request) while its client port is open.
func TestIsolateKillFreeze(t *testing.T) {
	root, bin := build(t)
	c, err := Start(bin, root, 3)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	put := func(ep string) error {
		cli, err := clientv3.New(clientv3.Config{Endpoints: []string{ep}, DialTimeout: time.Second, Logger: zap.NewNop()})
		if err != nil {
			return err
		}
		defer cli.Close()
		ctx, cancel := context.WithTimeout(clientv3.WithRequireLeader(context.Background()), 500*time.Millisecond)
		defer cancel()
		_, err = cli.Put(ctx, "k", "v")
		return err
	}
	// A proposal forwarded to a leader that just vanished is never
	// answered: clients retry with short attempts (as the agents do).
	eventually := func(what string, ok func() bool) {
		t.Helper()
		deadline := time.Now().Add(15 * time.Second)
		for !ok() {
			if time.Now().After(deadline) {
				for _, m := range c.Members {
					b, _ := os.ReadFile(filepath.Join(m.Dir, "etcd.log"))
					t.Logf("%s log:\n%s", m.Name, b[max(0, len(b)-2000):])
				}
				t.Fatal(what)
			}
			time.Sleep(100 * time.Millisecond) // poll interval within the deadline
		}
	}
	writes := func(m *Member) func() bool { return func() bool { return put(m.ClientURL) == nil } }
	eventually("writes", writes(c.Members[0]))

	m := c.Members[0]
	c.Isolate(m)
	eventually("the isolated member stops serving writes", func() bool { return put(m.ClientURL) != nil && put(m.ClientURL) != nil })
	eventually("the majority serves writes with one member isolated", writes(c.Members[1]))
	c.Heal(m)
	if err := c.WaitHealthy(20 * time.Second); err != nil {
		t.Fatal(err)
	}
	eventually("writes through the healed member", writes(m))

	if err := c.Members[1].Freeze(); err != nil {
		t.Fatal(err)
	}
	eventually("writes with one member frozen", writes(c.Members[2]))
	_ = c.Members[1].Thaw()
	if err := c.WaitHealthy(20 * time.Second); err != nil {
		t.Fatal(err)
	}

	c.Members[2].Kill()
	eventually("writes with one member killed", writes(c.Members[0]))
	if err := c.Restart(c.Members[2]); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitHealthy(20 * time.Second); err != nil {
		t.Fatal(err)
	}
}
