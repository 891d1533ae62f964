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

	"github.com/cifha/cifha/internal/testutil"
	"github.com/jackc/pgx/v5"
)

// TestHAProxyFollowsPrimary: deploy/haproxy/haproxy.cfg, with the seed's
// addresses mapped to the test's, run by Debian's real haproxy: writes
// through it reach the primary before and after a failover.
func TestHAProxyFollowsPrimary(t *testing.T) {
	bin, err := exec.LookPath("haproxy")
	if err != nil {
		if testutil.InCI() {
			t.Fatal("CI=true and haproxy is missing (make deps installs it)")
		}
		t.Skip(err)
	}
	c := newClusterStartingFirst(t, 2, nil)
	db1, db2 := c.Node("db1"), c.Node("db2")
	exec1(t, db1, "CREATE TABLE fence_probe (node text, at timestamptz DEFAULT clock_timestamp())")

	tmpl, err := os.ReadFile("../deploy/haproxy/haproxy.cfg")
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	front := ln.Addr().String()
	ln.Close()
	cfg := strings.NewReplacer("bind 127.0.0.1:5432", "bind "+front,
		"10.0.1.1:5432", db1.Addr+":5432", "10.0.1.2:5432", db2.Addr+":5432").Replace(string(tmpl))
	dir := t.TempDir()
	path := filepath.Join(dir, "haproxy.cfg")
	os.WriteFile(path, []byte(cfg), 0o600)
	if out, err := exec.Command(bin, "-c", "-f", path).CombinedOutput(); err != nil {
		t.Fatalf("haproxy -c: %v\n%s", err, out)
	}
	cmd := exec.Command(bin, "-db", "-f", path)
	logf, _ := os.Create(filepath.Join(dir, "haproxy.log"))
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait(); logf.Close() })

	host, port, _ := net.SplitHostPort(front)
	dsn := fmt.Sprintf("host=%s port=%s user=postgres password=%s dbname=postgres sslmode=disable connect_timeout=2", host, port, c.Opt.SuperuserPassword)
	writesReach := func(want string) func() error {
		return func() error {
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			defer cancel()
			conn, err := pgx.Connect(ctx, dsn)
			if err != nil {
				return err
			}
			defer conn.Close(ctx)
			var addr string
			if err := conn.QueryRow(ctx, "INSERT INTO fence_probe(node) VALUES ('haproxy') RETURNING host(inet_server_addr())").Scan(&addr); err != nil {
				return err
			}
			if addr != want {
				return fmt.Errorf("write reached %s, want %s", addr, want)
			}
			return nil
		}
	}
	testutil.Eventually(t, 15*time.Second, "writes through haproxy reach db1", writesReach(db1.Addr))
	db1.KillHost()
	testutil.Eventually(t, 3*c.Opt.TTL+5*time.Second, "writes through haproxy reach db2 after the failover", writesReach(db2.Addr))
}
