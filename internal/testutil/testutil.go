// Package testutil holds what every test that touches real PostgreSQL or etcd
// shares: running as the postgres OS user, directories that user can reach,
// locating binaries (a missing one fails under CI=true instead of skipping),
// and polling with a deadline instead of sleeping.
package testutil

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/cifha/cifha/internal/devetcd"
	"time"
)

const reexecEnv = "CIFHA_TEST_REEXEC"

// InCI reports whether the tests run in CI, where nothing may be skipped.
func InCI() bool { return os.Getenv("CI") == "true" }

// PostgresCredential returns the uid/gid of the postgres OS user.
func PostgresCredential() (*syscall.Credential, error) {
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("no postgres OS user (apt-get install postgresql): %w", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}

// RunAsPostgres is a TestMain body for packages whose tests start postgres
// in-process. PostgreSQL refuses to run as root, so when the tests run as
// root the test binary re-executes itself as the postgres OS user (from a
// copy that user can read) and passes its exit status through.
func RunAsPostgres(m *testing.M) int {
	if os.Geteuid() != 0 || os.Getenv(reexecEnv) != "" {
		return m.Run()
	}
	cred, err := PostgresCredential()
	if err != nil {
		if InCI() {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		fmt.Fprintln(os.Stderr, "skipping:", err)
		return 0
	}
	dir, err := os.MkdirTemp("", "cifha-testbin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	_ = os.Chmod(dir, 0o755)
	self, _ := os.Executable()
	copyPath := filepath.Join(dir, filepath.Base(self))
	if err := copyFile(self, copyPath, 0o755); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	// Drop flags naming files in go test's root-only build directory.
	var args []string
	for _, a := range os.Args[1:] {
		if strings.HasPrefix(a, "-test.testlogfile") || strings.HasPrefix(a, "-test.gocoverdir") {
			continue
		}
		args = append(args, a)
	}
	cmd := exec.Command(copyPath, args...)
	cmd.Stdout, cmd.Stderr, cmd.Stdin = os.Stdout, os.Stderr, os.Stdin
	cmd.Env = append(os.Environ(), reexecEnv+"=1", "HOME="+dir, "GOCOVERDIR=")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Run(); err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			return ee.ExitCode()
		}
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

func copyFile(src, dst string, mode os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// PGBinDir returns the PostgreSQL bin directory, skipping the test when
// there is none, except in CI where that fails it.
func PGBinDir(t testing.TB) string {
	t.Helper()
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin/postgres")
	var err error
	dir := ""
	if len(dirs) == 0 {
		err = fmt.Errorf("no /usr/lib/postgresql/*/bin/postgres (apt-get install postgresql)")
	} else {
		dir = filepath.Dir(dirs[len(dirs)-1])
	}
	if err != nil {
		if InCI() {
			t.Fatalf("CI=true and %v", err)
		}
		t.Skip(err)
	}
	return dir
}

// Dir makes a directory the postgres OS user can use (t.TempDir's parent is
// root-only) and removes it when the test ends, even on failure.
func Dir(t testing.TB, pattern string) string {
	t.Helper()
	dir, err := MkdirForPostgres(pattern)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// MkdirForPostgres makes a temporary directory owned by the postgres OS user
// when running as root.
func MkdirForPostgres(pattern string) (string, error) {
	dir, err := os.MkdirTemp("", pattern)
	if err != nil {
		return "", err
	}
	if os.Geteuid() == 0 {
		cred, err := PostgresCredential()
		if err != nil {
			return "", err
		}
		if err := os.Chown(dir, int(cred.Uid), int(cred.Gid)); err != nil {
			return "", err
		}
	}
	return dir, nil
}

// Eventually polls cond every interval until it returns nil or timeout
// passes, then fails the test with cond's last error.
func Eventually(t testing.TB, timeout time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var err error
	for {
		if err = cond(); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not true after %s: %v", what, timeout, err)
		}
		time.Sleep(50 * time.Millisecond) // poll interval, bounded by the deadline above
	}
}

// Etcd starts an in-process etcd for the test and returns its client URL.
func Etcd(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "cifha-etcd-")
	if err != nil {
		t.Fatal(err)
	}
	s, err := devetcd.Start(dir, "127.0.0.1:0")
	if err != nil {
		os.RemoveAll(dir)
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close(); os.RemoveAll(dir) })
	return s.Endpoint
}

// NeedRoot skips t when not run as root, and fails it in CI (sessions and
// CI run as root: a root-only test that skips there hides a broken step).
func NeedRoot(t testing.TB, why string) {
	t.Helper()
	if os.Geteuid() != 0 {
		if InCI() {
			t.Fatalf("%s needs root in CI", why)
		}
		t.Skipf("%s needs root", why)
	}
}
