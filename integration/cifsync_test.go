package integration

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cifha/cifha/internal/cluster"
	"github.com/cifha/cifha/internal/testutil"
	"github.com/cifha/cifha/pkg/cifsync"
	"github.com/jackc/pgx/v5"
)

// cifSync is a running `cifha cif-sync` process.
type cifSync struct {
	cmd  *exec.Cmd
	done chan struct{}
	log  *bytes.Buffer
}

func startCIFSync(t *testing.T, cfgPath string) *cifSync {
	t.Helper()
	var buf bytes.Buffer
	cmd := exec.Command(filepath.Join(binDir, "cifha"), "cif-sync", "--config", cfgPath)
	cmd.Stdout, cmd.Stderr = &buf, &buf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s := &cifSync{cmd: cmd, done: make(chan struct{}), log: &buf}
	go func() { cmd.Wait(); close(s.done) }()
	t.Cleanup(s.stop)
	return s
}

func (s *cifSync) stop() {
	select {
	case <-s.done:
		return
	default:
	}
	s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(5 * time.Second):
		s.cmd.Process.Kill()
		<-s.done
	}
}

// dbConnect connects the way CIF does: from [db] host, user, password,
// database, on libpq's default port.
func dbConnect(ctx context.Context, cifFile string) (*pgx.Conn, error) {
	b, err := os.ReadFile(cifFile)
	if err != nil {
		return nil, err
	}
	v := cifsync.DBValues(b)
	dsn := fmt.Sprintf("host=%s user=%s password='%s' dbname=%s sslmode=disable connect_timeout=2", v["host"], v["user"], v["password"], v["database"])
	return pgx.Connect(ctx, dsn)
}

// TestCIFSyncFollowsThePrimary: a cif-sync process keeps a copy of the
// seed's ~/.cif pointing at the primary through a failover and a failover
// back, changing nothing but [db] host, within 1 s of each promotion; a
// client built from [db] reaches a read-write server; a cif-sync started
// after a change corrects the file at once; the post-change command runs
// once per change.
func TestCIFSyncFollowsThePrimary(t *testing.T) {
	c := newCluster(t, 3, func(o *cluster.Options) {
		// The seed's [db] has user postgres and an empty password, and the
		// seed trusted the CIF node: do the same for loopback here.
		o.HBA = []string{"host all all 127.0.0.0/8 trust"}
	})
	p := waitHealthy(t, c, 60*time.Second)
	exec1(t, p, "CREATE DATABASE cif")
	exec1(t, p, "CREATE TABLE fence_probe (node text, at timestamptz DEFAULT clock_timestamp())")

	dir := testutil.Dir(t, "cifsync-")
	orig, err := os.ReadFile("../pkg/cifsync/testdata/seed.cif")
	if err != nil {
		t.Fatal(err)
	}
	cifFile := filepath.Join(dir, ".cif")
	os.WriteFile(cifFile, orig, 0o640)
	hookLog := filepath.Join(dir, "hook.log")
	cfg := filepath.Join(dir, "cif-sync.toml")
	os.WriteFile(cfg, []byte(fmt.Sprintf(`cluster = %q
cif_file = %q
# All members share this machine here: closing connections to an old
# primary would cut the other members' replication too.
close_old_connections = false
[etcd]
endpoints = [%q]
[post_change]
command = ["sh", "-c", "echo \"$CIFHA_DB_HOST $CIFHA_LEADER\" >> %s"]
timeout = "5s"
[log]
level = "debug"
`, c.Opt.Cluster, cifFile, c.Opt.EtcdEndpoints[0], hookLog)), 0o600)

	expect := func(host string) []byte {
		out, _, err := cifsync.SetDBHost(orig, host)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	fileNames := func(host string) func() error {
		return func() error {
			b, _ := os.ReadFile(cifFile)
			if !bytes.Equal(b, expect(host)) {
				return fmt.Errorf("[db] host is %q, want %s (or other bytes changed)", cifsync.DBValues(b)["host"], host)
			}
			return nil
		}
	}
	clientWrites := func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		conn, err := dbConnect(ctx, cifFile)
		if err != nil {
			return err
		}
		defer conn.Close(ctx)
		var ro bool
		if err := conn.QueryRow(ctx, "SELECT pg_is_in_recovery()").Scan(&ro); err != nil || ro {
			return fmt.Errorf("not a read-write server: %v", err)
		}
		return nil
	}

	s := startCIFSync(t, cfg)
	testutil.Eventually(t, 10*time.Second, "file names the primary on start", fileNames(p.Addr))
	if err := clientWrites(); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(cifFile + ".cifha-bak"); !bytes.Equal(b, orig) {
		t.Error("no backup of the previous version")
	}

	// failover and measure how soon after the promotion the file follows.
	failover := func(old *cluster.Node) *cluster.Node {
		old.KillHost()
		var q *cluster.Node
		var promoted time.Time
		testutil.Eventually(t, 3*c.Opt.TTL+5*time.Second, "a new primary", func() error {
			for _, n := range others(c, old) {
				if code, _, err := n.API(ctxT(t, time.Second), "/primary"); err == nil && code == 200 {
					q, promoted = n, time.Now()
					return nil
				}
			}
			return fmt.Errorf("none yet")
		})
		testutil.Eventually(t, 5*time.Second, "file follows "+q.Name, fileNames(q.Addr))
		if lag := time.Since(promoted); lag > 3*time.Second {
			t.Errorf("file followed %s after the promotion was seen; want within 3 s", lag.Round(time.Millisecond))
		} else {
			t.Logf("file named %s at most %s after its promotion was seen", q.Name, lag.Round(time.Millisecond))
		}
		if err := clientWrites(); err != nil {
			t.Errorf("client from [db]: %v", err)
		}
		return q
	}
	q := failover(p)
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 30*time.Second, p.Name+" rejoins", func() error { return followsFrom(t, p, q) })
	r := failover(q) // failover back

	// cif-sync restarted while the leader changed: corrected on start.
	s.stop()
	if err := q.Start(); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 30*time.Second, q.Name+" rejoins", func() error { return followsFrom(t, q, r) })
	r.KillHost()
	var u *cluster.Node
	testutil.Eventually(t, 3*c.Opt.TTL+5*time.Second, "a new primary", func() error {
		var err error
		u, err = c.Primary(ctxT(t, 2*time.Second))
		return err
	})
	startCIFSync(t, cfg)
	testutil.Eventually(t, 5*time.Second, "file corrected on start", fileNames(u.Addr))

	// The post-change command ran once per change: start, two failovers, the restart.
	testutil.Eventually(t, 5*time.Second, "post-change command ran per change", func() error {
		b, _ := os.ReadFile(hookLog)
		lines := strings.Split(strings.TrimSpace(string(b)), "\n")
		if len(lines) != 4 || !strings.HasPrefix(lines[3], u.Addr+" "+u.Name) {
			return fmt.Errorf("hook log:\n%s", b)
		}
		return nil
	})
}
