package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cifha/cifha/internal/cluster"
	"github.com/cifha/cifha/internal/testutil"
)

// doctorLines returns the output lines of one check with its status
// ("FAIL port ..."), each joined with its fix line.
func doctorLines(out, status, check string) []string {
	lines := strings.Split(out, "\n")
	var got []string
	for i, l := range lines {
		f := strings.Fields(l)
		if len(f) >= 2 && f[0] == status && f[1] == check {
			if i+1 < len(lines) && strings.HasPrefix(strings.TrimSpace(lines[i+1]), "fix:") {
				l += " | " + strings.TrimSpace(lines[i+1])
			}
			got = append(got, l)
		}
	}
	return got
}

// TestDoctor (issue 11): `cifha doctor`, run as the postgres user, passes
// on a healthy member and names every problem of acceptance 6 with a fix:
// etcd down, a peer's API down, a wrong bin_dir, data and tablespace
// directories owned by another user, a port in use, a missing archive
// directory, and (on the CIF node) a ~/.cif whose login fails.
func TestDoctor(t *testing.T) {
	cred, _ := testutil.PostgresCredential()
	if os.Geteuid() != 0 {
		cred = nil
	}
	var secrets string
	c := newCluster(t, 3, func(o *cluster.Options) {
		o.PeerProxies = true
		secrets = filepath.Join(o.Root, "secrets")
		o.Files = map[string]string{filepath.Join(o.Root, "cif.password"): "cif-doctor-pw\n"}
		o.Extra = "\n[bootstrap]\n" +
			fmt.Sprintf("roles = [{ name = \"cif\", password_file = %q }]\n", filepath.Join(o.Root, "cif.password")) +
			"databases = [{ name = \"cif\", owner = \"cif\" }]\n"
	})
	p := waitHealthy(t, c, 60*time.Second)
	var s *cluster.Node
	for _, n := range others(c, p) {
		testutil.Eventually(t, 30*time.Second, n.Name+" streams", func() error { return followsFrom(t, n, p) })
		s = n
	}

	// A healthy standby: no check fails.
	out, code := runCifha(t, cred, "doctor", "--config", s.ConfigPath, "--timeout", "2s")
	if code != 0 || len(doctorLines(out, "ok", "replication")) != 1 || len(doctorLines(out, "ok", "peer")) != 2 {
		t.Fatalf("doctor on healthy %s: exit %d:\n%s", s.Name, code, out)
	}
	for _, want := range []string{"in use by this member's postgres", "in use by this member's agent", "replication login as"} {
		if !strings.Contains(out, want) {
			t.Errorf("doctor on %s does not say %q:\n%s", s.Name, want, out)
		}
	}

	// A peer's API cut off: named, with the fix.
	var cut *cluster.Node
	for _, n := range c.Nodes {
		if n != s && n != p {
			cut = n
		}
	}
	cut.CutPeers()
	out, code = runCifha(t, cred, "doctor", "--config", s.ConfigPath, "--timeout", "1s")
	cut.RestorePeers()
	if l := doctorLines(out, "FAIL", "peer"); code != 1 || len(l) != 1 || !strings.Contains(l[0], cut.Name) || !strings.Contains(l[0], "fix: check that cifha runs on "+cut.Name) {
		t.Errorf("peer API down: exit %d, lines %q:\n%s", code, l, out)
	}

	// A new host, set up wrongly: every problem is named with its fix.
	root := testutil.Dir(t, "cifha-doctor-")
	rootOwned := filepath.Join(root, "rootdir")
	os.MkdirAll(filepath.Join(rootOwned, "data"), 0o700) // owned by root (the test), not postgres
	os.MkdirAll(filepath.Join(rootOwned, "ts"), 0o700)
	os.Chmod(rootOwned, 0o777)
	cfg := filepath.Join(root, "cifha.toml")
	text := fmt.Sprintf(`cluster = "it"
name = "db9"
[api]
listen = "127.0.0.11:8008"
[etcd]
endpoints = ["127.0.0.1:1"]
dial_timeout = "1s"
[postgres]
bin_dir = "/usr/lib/postgresql/15/nope"
data_dir = %q
listen = "127.0.0.11"
port = 5432
socket_dir = %q
superuser_password_file = %q
replication_password_file = %q
[postgres.tablespaces]
index = %q
[archive]
mode = "directory"
dir = %q
`, filepath.Join(rootOwned, "data"), root, filepath.Join(secrets, "superuser.password"), filepath.Join(secrets, "replication.password"),
		filepath.Join(rootOwned, "ts"), filepath.Join(root, "archive-missing"))
	if err := os.WriteFile(cfg, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	out, code = runCifha(t, cred, "doctor", "--config", cfg, "--timeout", "1s")
	if code != 1 {
		t.Errorf("doctor on a broken host: exit %d, want 1:\n%s", code, out)
	}
	if os.Geteuid() == 0 { // ownership is only wrong when the test can make it so
		for _, want := range []struct{ check, detail, fix string }{
			{"data_dir", "owned by uid 0", "fix: chown -R postgres:postgres"},
			{"tablespace", "owned by uid 0", "fix: chown -R postgres:postgres"},
		} {
			l := doctorLines(out, "FAIL", want.check)
			if len(l) != 1 || !strings.Contains(l[0], want.detail) || !strings.Contains(l[0], want.fix) {
				t.Errorf("%s: lines %q, want %q and %q", want.check, l, want.detail, want.fix)
			}
		}
	}
	for _, want := range []struct{ check, detail, fix string }{
		{"binaries", "lacks postgres", "fix: set [postgres] bin_dir"},
		{"port", "127.0.0.11:5432 is in use", "fix: stop the program that holds it"},
		{"api", "127.0.0.11:8008 is in use", "fix: stop what holds it"},
		{"archive", "archive-missing does not exist", "fix: install -d -o postgres"},
		{"etcd", "no etcd endpoint answers", "fix: start etcd there"},
	} {
		l := doctorLines(out, "FAIL", want.check)
		if len(l) != 1 || !strings.Contains(l[0], want.detail) || !strings.Contains(l[0], want.fix) {
			t.Errorf("%s: lines %q, want %q and %q\n%s", want.check, l, want.detail, want.fix, out)
		}
	}

	// The CIF node: ~/.cif pointing at the primary with the right
	// password passes; a wrong password fails with the fix.
	cifFile := filepath.Join(root, "dot-cif")
	syncCfg := filepath.Join(root, "cif-sync.toml")
	// The members advertise their peer proxies; [hosts] names their real
	// addresses, as a site would with DNS names.
	hosts := "[hosts]\n"
	for _, n := range c.Nodes {
		hosts += fmt.Sprintf("%s = %q\n", n.Name, n.Addr)
	}
	os.WriteFile(syncCfg, []byte(fmt.Sprintf("cluster = \"it\"\ncif_file = %q\n%s[etcd]\nendpoints = [%q]\n", cifFile, hosts, c.Opt.EtcdEndpoints[0])), 0o644)
	writeCIF := func(pw string) {
		os.WriteFile(cifFile, []byte(fmt.Sprintf("[client]\napikey = x\n\n[db]\nhost = %s\nuser = cif\npassword = %s\ndatabase = cif\n", p.Addr, pw)), 0o644)
	}
	writeCIF("cif-doctor-pw")
	// As root, as cif-sync runs (deploy/systemd): it can close this
	// node's connections to an old primary.
	testutil.Eventually(t, 30*time.Second, "doctor --cif-sync passes", func() error {
		out, code = runCifha(t, nil, "doctor", "--cif-sync", syncCfg, "--timeout", "2s")
		if code != 0 || len(doctorLines(out, "ok", "login")) != 1 || len(doctorLines(out, "ok", "primary")) != 1 || len(doctorLines(out, "ok", "connections")) != 1 {
			return fmt.Errorf("exit %d:\n%s", code, out)
		}
		return nil
	})
	// Without CAP_NET_ADMIN it cannot, and says what to do.
	out, code = runCifha(t, cred, "doctor", "--cif-sync", syncCfg, "--timeout", "2s")
	if l := doctorLines(out, "FAIL", "connections"); code != 1 || len(l) != 1 || !strings.Contains(l[0], "fix: run cif-sync and this check as root") {
		t.Errorf("doctor --cif-sync as an unprivileged user: exit %d, lines %q:\n%s", code, l, out)
	}
	writeCIF("wrong")
	out, code = runCifha(t, cred, "doctor", "--cif-sync", syncCfg, "--timeout", "2s")
	if l := doctorLines(out, "FAIL", "login"); code != 1 || len(l) != 1 || !strings.Contains(l[0], "password authentication failed") || !strings.Contains(l[0], "fix: the role and database come from") {
		t.Errorf("~/.cif with a wrong password: exit %d, lines %q:\n%s", code, l, out)
	}
	if strings.Contains(out, "cif-doctor-pw") || strings.Contains(out, "password = wrong") {
		t.Errorf("doctor printed a password:\n%s", out)
	}
}
