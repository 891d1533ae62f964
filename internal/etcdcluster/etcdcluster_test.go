package etcdcluster

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// TestIsolateKillFreeze: a real 3-member cluster keeps serving writes with
// one member killed, frozen or isolated; the isolated member itself has no
// leader (it answers no linearizable request) while its client port is open.
func TestIsolateKillFreeze(t *testing.T) {
	root, err := os.MkdirTemp("", "etcdcluster-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(root)
	bin := filepath.Join(root, "cifha-devetcd")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/cifha/cifha/cmd/cifha-devetcd").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
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
