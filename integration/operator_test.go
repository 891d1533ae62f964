package integration

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cifha/cifha/internal/testutil"
)

// TestOperatorAccess (issue 13, acceptance 3): an operator who is not root
// and not postgres, only a member of the operators' group (here the
// postgres group), runs `cifhactl status` and `cifhactl switchover` with
// nothing but cifhactl's own configuration file (found in
// ~/.config/cifha/cifhactl.toml; /etc/cifha/cifhactl.toml is the same code
// path) and the group-readable token file it names.
func TestOperatorAccess(t *testing.T) {
	c, p, _ := controlCluster(t, nil)
	ops, err := os.MkdirTemp("", "cifha-ops-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(ops) })
	var cred *syscall.Credential
	uid, gid := -1, -1
	if os.Geteuid() == 0 {
		pg, err := testutil.PostgresCredential()
		if err != nil {
			t.Fatal(err)
		}
		nobody, err := user.Lookup("nobody")
		if err != nil {
			t.Fatal(err)
		}
		nu, _ := strconv.Atoi(nobody.Uid)
		ng, _ := strconv.Atoi(nobody.Gid)
		cred = &syscall.Credential{Uid: uint32(nu), Gid: uint32(ng), Groups: []uint32{pg.Gid}}
		uid, gid = int(pg.Uid), int(pg.Gid)
	}
	// The operators' group may read (0640) and enter (0750); others nothing.
	write := func(path, text string, mode os.FileMode) {
		t.Helper()
		if text == "" {
			if err := os.MkdirAll(path, mode); err != nil {
				t.Fatal(err)
			}
		} else if err := os.WriteFile(path, []byte(text), mode); err != nil {
			t.Fatal(err)
		}
		os.Chmod(path, mode)
		if uid >= 0 {
			os.Chown(path, uid, gid)
		}
	}
	write(ops, "", 0o750)
	home := filepath.Join(ops, "home")
	for _, d := range []string{home, filepath.Join(home, ".config"), filepath.Join(home, ".config", "cifha")} {
		write(d, "", 0o750)
	}
	tokenFile := filepath.Join(ops, "api.token")
	write(tokenFile, "s3cret-token\n", 0o640)
	write(filepath.Join(home, ".config", "cifha", "cifhactl.toml"), fmt.Sprintf("cluster = %q\n\n[api]\ntoken_file = %q\n\n[etcd]\nendpoints = [%q]\n",
		c.Opt.Cluster, tokenFile, c.Opt.EtcdEndpoints[0]), 0o640)
	bin, err := os.ReadFile(filepath.Join(binDir, "cifhactl"))
	if err != nil {
		t.Fatal(err)
	}
	ctlBin := filepath.Join(ops, "cifhactl")
	write(ctlBin, string(bin), 0o750)

	run := func(args ...string) (string, int) {
		cmd := exec.Command(ctlBin, args...)
		cmd.Env = []string{"HOME=" + home, "PATH=/usr/bin:/bin"}
		cmd.Dir = home
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		err := cmd.Run()
		if ee, ok := err.(*exec.ExitError); ok {
			return out.String(), ee.ExitCode()
		}
		if err != nil {
			t.Fatal(err)
		}
		return out.String(), 0
	}
	testutil.Eventually(t, 30*time.Second, "the operator's status", func() error {
		if out, code := run("status"); code != 0 || !strings.Contains(out, p.Name+" *") {
			return fmt.Errorf("exit %d:\n%s", code, out)
		}
		return nil
	})
	target := others(c, p)[0]
	if out, code := run("switchover", "--to", target.Name, "--force"); code != 0 {
		t.Fatalf("the operator's switchover: exit %d:\n%s", code, out)
	}
	testutil.Eventually(t, 30*time.Second, target.Name+" leads", func() error {
		if l := leaderName(t, c); l != target.Name {
			return fmt.Errorf("leader %s", l)
		}
		return nil
	})
}
