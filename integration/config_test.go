package integration

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cifha/cifha/internal/cluster"
	"github.com/cifha/cifha/internal/testutil"
)

// runCifha runs the real binary once and returns its output and exit code.
func runCifha(t *testing.T, cred *syscall.Credential, args ...string) (string, int) {
	t.Helper()
	cmd := exec.Command(filepath.Join(binDir, "cifha"), args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); ok {
		return out.String(), ee.ExitCode()
	}
	if err != nil {
		t.Fatal(err)
	}
	return out.String(), 0
}

// TestBadConfigExitsWithoutTouchingData: the agent exits non-zero, names the
// key, and leaves an existing data directory exactly as it was.
func TestBadConfigExitsWithoutTouchingData(t *testing.T) {
	requireEnv(t)
	cred, _ := testutil.PostgresCredential()
	if os.Geteuid() != 0 {
		cred = nil
	}
	root := testutil.Dir(t, "cifha-badcfg-")
	c, err := cluster.New(cluster.Options{BinDir: binDir, Root: root, EtcdEndpoints: []string{testutil.Etcd(t)}, Cluster: "bad", Addrs: []string{"127.0.0.11"}})
	if err != nil {
		t.Fatal(err)
	}
	n := c.Nodes[0]
	good, err := os.ReadFile(n.ConfigPath)
	if err != nil {
		t.Fatal(err)
	}
	// A data directory holding something precious.
	if err := os.MkdirAll(n.DataDir, 0o700); err != nil {
		t.Fatal(err)
	}
	precious := filepath.Join(n.DataDir, "PRECIOUS")
	os.WriteFile(precious, []byte("only copy"), 0o600)
	cases := map[string]struct{ old, new, key string }{
		"ttl 0":           {`ttl = "3s"`, `ttl = "0s"`, "ha.ttl"},
		"unknown key":     {`[ha]`, "[ha]\nttl_seconds = 3", "ha.ttl_seconds"},
		"wrong type":      {`port = 5432`, `port = "5432"`, "postgres.port"},
		"missing datadir": {"data_dir = ", "# data_dir = ", "postgres.data_dir"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			if !strings.Contains(string(good), tc.old) {
				t.Fatalf("fixture lacks %q", tc.old)
			}
			bad := filepath.Join(n.Dir, "bad.toml")
			if err := os.WriteFile(bad, []byte(strings.Replace(string(good), tc.old, tc.new, 1)), 0o644); err != nil {
				t.Fatal(err)
			}
			out, code := runCifha(t, cred, "--config", bad)
			if code == 0 || !strings.Contains(out, tc.key) || !strings.Contains(out, bad) {
				t.Errorf("exit %d, output:\n%s", code, out)
			}
			entries, _ := os.ReadDir(n.DataDir)
			if b, err := os.ReadFile(precious); err != nil || string(b) != "only copy" || len(entries) != 1 {
				t.Errorf("data directory touched: %v %d entries", err, len(entries))
			}
		})
	}
	if os.Geteuid() == 0 {
		t.Run("refuses root", func(t *testing.T) {
			out, code := runCifha(t, nil, "--config", n.ConfigPath)
			if code == 0 || !strings.Contains(out, "root") || !strings.Contains(out, "postgres") {
				t.Errorf("exit %d, output:\n%s", code, out)
			}
		})
	}
	t.Run("foreign data directory is never touched", func(t *testing.T) {
		// A valid config, but the data dir holds something that is not
		// PostgreSQL's: the agent must wait, not initdb over it.
		if err := n.Start(); err != nil {
			t.Fatal(err)
		}
		defer n.Stop(10 * time.Second)
		testutil.Eventually(t, 10*time.Second, "agent reports the foreign directory", func() error {
			if !strings.Contains(n.Log(), "refusing to touch it") {
				return os.ErrNotExist
			}
			return nil
		})
		entries, _ := os.ReadDir(n.DataDir)
		if len(entries) != 1 {
			t.Errorf("data directory touched: %d entries", len(entries))
		}
	})
}
