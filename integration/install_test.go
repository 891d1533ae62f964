package integration

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/cifha/cifha/internal/testutil"
	"github.com/cifha/cifha/pkg/cifsync"
)

// installHost is one "host" of TestInstallDoc: a mount namespace, held by
// a sleeping process, in which /etc, /usr/local, /var/lib, /home,
// /run/postgresql and /var/log/postgresql are the host's own directories.
// The network is the machine's: the host's address is its own loopback
// address, so etcd, postgres and the API bind exactly as on a real host.
type installHost struct {
	name, addr string
	dir        string // the host's directories, outside the namespace
	holder     *exec.Cmd
	commands   int
}

func (h *installHost) path(p string) string {
	for _, m := range installMounts {
		if p == m.target || strings.HasPrefix(p, m.target+"/") {
			return filepath.Join(h.dir, m.dir, strings.TrimPrefix(p, m.target))
		}
	}
	return p
}

var installMounts = []struct{ dir, target string }{
	{"etc", "/etc"}, {"usrlocal", "/usr/local"}, {"varlib", "/var/lib"}, {"home", "/home"},
	{"runpg", "/run/postgresql"}, {"logpg", "/var/log/postgresql"},
}

// installBlock is one command block of docs/install.md.
type installBlock struct {
	hosts []string
	user  string // "" for root
	lines []string
}

// parseInstallDoc returns the doc's sh blocks; a block's first line is a
// comment naming its hosts ("# db1", "# cif1 as alice").
func parseInstallDoc(doc string) ([]installBlock, error) {
	var blocks []installBlock
	re := regexp.MustCompile("(?s)```sh\n(.*?)```")
	for _, m := range re.FindAllStringSubmatch(doc, -1) {
		lines := strings.Split(strings.TrimRight(m[1], "\n"), "\n")
		if len(lines) < 2 || !strings.HasPrefix(lines[0], "# ") {
			return nil, fmt.Errorf("block without a '# host' first line: %q", m[1])
		}
		b := installBlock{}
		head := strings.Fields(strings.TrimPrefix(lines[0], "# "))
		for i := 0; i < len(head); i++ {
			switch {
			case head[i] == "as" && i+1 < len(head):
				b.user = head[i+1]
				i++
			case regexp.MustCompile(`^(db\d|cif\d)$`).MatchString(strings.TrimRight(head[i], ",")):
				b.hosts = append(b.hosts, strings.TrimRight(head[i], ","))
			default:
				return nil, fmt.Errorf("block header %q: unknown word %q", lines[0], head[i])
			}
		}
		// Commands: one per line, a here-document part of its line, a
		// trailing backslash joining lines.
		for i := 1; i < len(lines); i++ {
			l := lines[i]
			if strings.TrimSpace(l) == "" || strings.HasPrefix(strings.TrimSpace(l), "#") {
				continue
			}
			cmd := l
			for strings.HasSuffix(cmd, "\\") && i+1 < len(lines) {
				i++
				cmd += "\n" + lines[i]
			}
			if hm := regexp.MustCompile(`<<-?'?(\w+)'?`).FindStringSubmatch(cmd); hm != nil {
				for i+1 < len(lines) {
					i++
					cmd += "\n" + lines[i]
					if lines[i] == hm[1] {
						break
					}
				}
			}
			b.lines = append(b.lines, cmd)
		}
		blocks = append(blocks, b)
	}
	return blocks, nil
}

func TestInstallDocParse(t *testing.T) {
	doc := "x\n```sh\n# db1, db2\napt-get install -y x\ncat > f <<'EOF'\na\n# not a comment\nEOF\n\n# a comment\nls \\\n  -l\n```\n```sh\n# cif1 as alice\ncifhactl status\n```\n"
	bs, err := parseInstallDoc(doc)
	if err != nil {
		t.Fatal(err)
	}
	if len(bs) != 2 || strings.Join(bs[0].hosts, ",") != "db1,db2" || len(bs[0].lines) != 3 || bs[1].user != "alice" || len(bs[1].lines) != 1 {
		t.Fatalf("%+v", bs)
	}
	if _, err := parseInstallDoc("```sh\nls\n```\n"); err == nil {
		t.Fatal("a block without hosts must be refused")
	}
}

// TestInstallDoc follows docs/install.md on three "hosts" (db1, db2, cif1 on
// 127.0.0.11-13, each a mount namespace with its own /etc, /usr/local,
// /var/lib, /home and postgres socket directory), running every command of
// every block as written, with the addresses mapped to loopback. Outside
// the hosts' reach, and so replaced: apt-get (PostgreSQL is installed on the
// machine already; installing it "makes" Debian's cluster 15/main, started
// on port 5432 with its socket in /run/postgresql, as Debian's package
// does), curl (serves etcd's release tarball, holding etcd built from this
// module at the version go.mod requires, which must be the version the doc
// downloads), systemctl (integration/fakesystemctl runs the installed units'
// directives). The CIF node starts as the
// seed left it: user cif with /home/cif/.cif, and an operator alice. Then it
// checks what the doc's last section promises: a healthy cluster that the
// operator sees with `cifhactl status`, db1 the primary, ~/.cif on it and
// CIF able to log in and write, a switchover by the operator, ~/.cif
// following, Apache reloaded; and at most 10 commands per host.
func TestInstallDoc(t *testing.T) {
	requireEnv(t)
	if os.Geteuid() != 0 {
		if testutil.InCI() {
			t.Fatal("TestInstallDoc needs root (mount namespaces)")
		}
		t.Skip("needs root")
	}
	pgVersion := filepath.Base(filepath.Dir(testutil.PGBinDir(t)))
	docBytes, err := os.ReadFile("../docs/install.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(docBytes)
	blocks, err := parseInstallDoc(doc)
	if err != nil {
		t.Fatal(err)
	}

	// The etcd the doc downloads is the version this module builds.
	etcdVersion := goModVersion(t, "go.etcd.io/etcd/server/v3")
	etcdURL := fmt.Sprintf("https://github.com/etcd-io/etcd/releases/download/%s/etcd-%s-linux-amd64.tar.gz", etcdVersion, etcdVersion)
	if !strings.Contains(doc, etcdURL) {
		t.Fatalf("docs/install.md must download etcd %s (go.mod's): %s", etcdVersion, etcdURL)
	}

	work := testutil.Dir(t, "cifha-install-")
	if err := os.Chmod(work, 0o755); err != nil {
		t.Fatal(err)
	}
	// The release tarball (make dist) and etcd's.
	dist := filepath.Join(work, "dist")
	if out, err := exec.Command("make", "-C", "..", "dist", "DISTDIR="+dist).CombinedOutput(); err != nil {
		t.Fatalf("make dist: %v\n%s", err, out)
	}
	tarballs, _ := filepath.Glob(filepath.Join(dist, "cifha-*-linux-amd64.tar.gz"))
	if len(tarballs) != 1 {
		t.Fatalf("make dist made %v", tarballs)
	}
	etcdTar := filepath.Join(work, "etcd.tar.gz")
	writeEtcdTarball(t, etcdTar, filepath.Join(binDir, "cifha-devetcd"), "etcd-"+etcdVersion+"-linux-amd64/etcd")

	// The stand-ins.
	shim := filepath.Join(work, "shim")
	if err := os.MkdirAll(shim, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("go", "build", "-o", filepath.Join(shim, "systemctl"), "./fakesystemctl").CombinedOutput(); err != nil {
		t.Fatalf("build fakesystemctl: %v\n%s", err, out)
	}
	writeScript(t, filepath.Join(shim, "apt-get"), `#!/bin/bash
# apt-get stand-in: PostgreSQL and curl are on the machine already.
set -e
[ "$1" = install ] || { echo "apt-get (stand-in): only install" >&2; exit 1; }
shift
for p in "$@"; do
  case "$p" in
  -y|-q) ;;
  postgresql)
    ls /usr/lib/postgresql/*/bin/postgres >/dev/null
    # Debian's postinst: cluster <version>/main, started, port 5432.
    if ! pg_lsclusters -h | grep -q " main "; then
      pg_createcluster -p 5432 --start `+pgVersion+` main -- --no-sync >/dev/null
    fi ;;
  curl) ;;
  *) echo "apt-get (stand-in): unknown package $p" >&2; exit 1 ;;
  esac
done
`)
	writeScript(t, filepath.Join(shim, "curl"), `#!/bin/bash
# curl stand-in: serves etcd's release tarball only.
url="${@: -1}"
if [ "$url" != "`+etcdURL+`" ]; then echo "curl (stand-in): unexpected $url" >&2; exit 22; fi
cat `+etcdTar+`
`)
	apacheLog := filepath.Join(work, "apachectl.calls")

	hosts := map[string]*installHost{}
	t.Cleanup(func() { stopInstallHosts(t, hosts) })
	for i, name := range []string{"db1", "db2", "cif1"} {
		h := &installHost{name: name, addr: fmt.Sprintf("127.0.0.%d", 11+i), dir: filepath.Join(work, name)}
		hosts[name] = h
		startInstallHost(t, h, tarballs[0])
	}
	// The CIF node as the seed left it: CIF under Apache (apachectl records
	// its calls), user cif with ~/.cif, an operator alice.
	writeScript(t, filepath.Join(hosts["cif1"].dir, "usrlocal", "sbin", "apachectl"), "#!/bin/sh\necho \"$*\" >> "+apacheLog+"\n")
	cifHome := "/home/cif/.cif"
	seedCIF := "[client]\nremote = https://localhost\n\n[db]\nhost = 10.0.0.99\nuser = cif\npassword = change-me-cif-db\ndatabase = cif\n"
	hostRun(t, hosts["cif1"], "", "useradd -m cif && useradd -m alice && cat > "+cifHome+" && chown cif:cif "+cifHome+" && chmod 0600 "+cifHome, seedCIF)

	run := func(b installBlock, h *installHost, line string) ([]byte, error) {
		line = strings.ReplaceAll(line, "10.0.0.", "127.0.0.")
		line = strings.ReplaceAll(line, " 15 main", " "+pgVersion+" main")
		// A connection between two loopback addresses comes from
		// 127.0.0.1 (the route's source), not from the member's address,
		// so the members' own /32s cannot match here. The CIF node's
		// clients line keeps its /32: cifWrite binds 127.0.0.13.
		line = regexp.MustCompile(`member_networks = \[.*\]`).ReplaceAllString(line, `member_networks = ["127.0.0.0/8"]`)
		return hostExec(h, b.user, line, "", shim)
	}
	var check installBlock
	for _, b := range blocks {
		if b.user != "" {
			check = b
			continue // the operator's check, below
		}
		for _, hn := range b.hosts {
			h := hosts[hn]
			if h == nil {
				t.Fatalf("block for unknown host %s", hn)
			}
			// One shell per block and host, as an operator pastes it.
			script := "set -e -o pipefail\n" + strings.Join(b.lines, "\n")
			if out, err := run(b, h, script); err != nil {
				t.Fatalf("%s: %v\n%s\n---- block ----\n%s", hn, err, out, script)
			}
			h.commands += len(b.lines)
		}
	}
	for _, h := range hosts {
		if h.commands > 10 {
			t.Errorf("%s takes %d commands; docs/install.md promises at most 10", h.name, h.commands)
		}
		t.Logf("%s: %d commands", h.name, h.commands)
	}
	if len(check.lines) != 2 || !strings.HasPrefix(check.lines[0], "cifhactl status") || !strings.HasPrefix(check.lines[1], "cifhactl switchover") {
		t.Fatalf("the check block must be cifhactl status, then a switchover: %q", check.lines)
	}
	cif1 := hosts["cif1"]
	// The operator sees a healthy cluster (exit 0) with both members once
	// db2 has cloned (before db2 registers, a healthy db1 alone is what
	// status truthfully shows).
	var status []byte
	testutil.Eventually(t, 3*time.Minute, "cifhactl status as alice exits 0 and shows db2", func() error {
		out, err := run(check, cif1, check.lines[0])
		status = out
		if err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		if !strings.Contains(string(out), "| db2 ") {
			return fmt.Errorf("db2 not listed yet: %s", out)
		}
		return nil
	})
	t.Logf("cifhactl status:\n%s", status)
	cifFile := cif1.path(cifHome)
	waitCIFHost := func(want string) {
		testutil.Eventually(t, 30*time.Second, "~cif/.cif [db] host = "+want, func() error {
			b, err := os.ReadFile(cifFile)
			if err != nil {
				return err
			}
			if got := cifsync.DBValues(b)["host"]; got != want {
				return fmt.Errorf("host = %q", got)
			}
			return nil
		})
	}
	waitCIFHost("127.0.0.11")
	// CIF logs in from cif1 with ~/.cif's values and writes.
	cifWrite(t, cifFile, "127.0.0.13", "before the switchover")
	if out, err := run(check, cif1, check.lines[1]); err != nil {
		t.Fatalf("%s: %v\n%s", check.lines[1], err, out)
	}
	waitCIFHost("127.0.0.12")
	n := cifWrite(t, cifFile, "127.0.0.13", "after the switchover")
	if n != 2 {
		t.Fatalf("CIF's table has %d rows after the switchover, want 2", n)
	}
	b, _ := os.ReadFile(apacheLog)
	if strings.Count(string(b), "graceful") < 2 {
		t.Fatalf("apachectl calls: %q (want graceful after each change of ~/.cif)", b)
	}
	// The files the doc made are as it says.
	for _, f := range []struct {
		host, path string
		mode       os.FileMode
		owner      string
	}{
		{"db1", "/etc/cifha/superuser.password", 0o600, "postgres"},
		{"db2", "/etc/cifha/replication.password", 0o600, "postgres"},
		{"db1", "/etc/cifha/api.token", 0o600, "postgres"},
		{"cif1", "/etc/cifha/api.token", 0o640, "root"},
		{"db1", "/var/lib/cifha", 0o700, "postgres"},
	} {
		fi, err := os.Stat(hosts[f.host].path(f.path))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != f.mode {
			t.Errorf("%s:%s mode %04o, want %04o", f.host, f.path, fi.Mode().Perm(), f.mode)
		}
		cred, _ := testutil.PostgresCredential()
		uid := fi.Sys().(*syscall.Stat_t).Uid
		if (f.owner == "postgres") != (uid == cred.Uid) || (f.owner == "root") != (uid == 0) {
			t.Errorf("%s:%s owner uid %d, want %s", f.host, f.path, uid, f.owner)
		}
	}
}

// cifWrite connects as CIF does, from ~/.cif, out of the CIF node's address
// (pg_hba lets only it in), writes a row and returns the row count.
func cifWrite(t *testing.T, cifFile, from, note string) int {
	t.Helper()
	b, err := os.ReadFile(cifFile)
	if err != nil {
		t.Fatal(err)
	}
	v := cifsync.DBValues(b)
	cfg, err := pgx.ParseConfig(fmt.Sprintf("host=%s user=%s password='%s' dbname=%s sslmode=disable connect_timeout=3", v["host"], v["user"], v["password"], v["database"]))
	if err != nil {
		t.Fatal(err)
	}
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}, Timeout: 3 * time.Second}
	cfg.DialFunc = d.DialContext
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var n int
	testutil.Eventually(t, 20*time.Second, "CIF writes through ~/.cif", func() error {
		conn, err := pgx.ConnectConfig(ctx, cfg)
		if err != nil {
			return err
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, "CREATE TABLE IF NOT EXISTS install_check (note text PRIMARY KEY)"); err != nil {
			return err
		}
		if _, err := conn.Exec(ctx, "INSERT INTO install_check VALUES ($1) ON CONFLICT DO NOTHING", note); err != nil {
			return err
		}
		return conn.QueryRow(ctx, "SELECT count(*) FROM install_check").Scan(&n)
	})
	return n
}

// startInstallHost makes the host's directories (a copy of the machine's
// /etc without its PostgreSQL clusters, an empty /usr/local, /var/lib,
// /home) and the namespace that mounts them, and registers the cleanup:
// every process the host's units started, Debian's cluster if it still
// runs, then the namespace's holder, all by PID.
func startInstallHost(t *testing.T, h *installHost, tarball string) {
	t.Helper()
	cred, err := testutil.PostgresCredential()
	if err != nil {
		t.Fatal(err)
	}
	pgUID, pgGID := int(cred.Uid), int(cred.Gid)
	for _, m := range installMounts {
		if err := os.MkdirAll(filepath.Join(h.dir, m.dir), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, d := range []string{"work", "systemd", "usrlocal/bin", "usrlocal/sbin", "usrlocal/lib", "usrlocal/share", "varlib/postgresql"} {
		if err := os.MkdirAll(filepath.Join(h.dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if out, err := exec.Command("cp", "-a", "/etc/.", filepath.Join(h.dir, "etc")).CombinedOutput(); err != nil {
		t.Fatalf("copy /etc: %v: %s", err, out)
	}
	os.RemoveAll(filepath.Join(h.dir, "etc", "postgresql"))
	os.RemoveAll(filepath.Join(h.dir, "etc", "cifha"))
	if err := os.Mkdir(filepath.Join(h.dir, "etc", "postgresql"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, o := range []struct {
		dir  string
		mode os.FileMode
		gid  int
	}{{"varlib/postgresql", 0o755, pgGID}, {"runpg", 0o2775, pgGID}, {"logpg", 0o1775, pgGID}} {
		p := filepath.Join(h.dir, o.dir)
		if err := os.Chown(p, pgUID, o.gid); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, o.mode); err != nil {
			t.Fatal(err)
		}
	}
	if out, err := exec.Command("cp", tarball, filepath.Join(h.dir, "work")).CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	var mounts []string
	for _, m := range installMounts {
		mounts = append(mounts, fmt.Sprintf("mount --bind %s %s", filepath.Join(h.dir, m.dir), m.target))
	}
	ready := filepath.Join(h.dir, "ready")
	h.holder = exec.Command("unshare", "-m", "--propagation", "private", "--", "/bin/sh", "-c",
		strings.Join(mounts, " && ")+" && touch "+ready+" && exec sleep 100000")
	h.holder.Stdout, h.holder.Stderr = os.Stderr, os.Stderr
	if err := h.holder.Start(); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, h.name+"'s namespace", func() error {
		if _, err := os.Stat(ready); err != nil {
			return err
		}
		return nil
	})
}

// stopInstallHosts ends what the hosts ran, by PID: first the agents and
// cif-sync on every host (cifha stops its postgres on SIGTERM; etcd stays
// up meanwhile so no agent fences on the way), then the rest (etcd, a
// Debian cluster still running, an orphaned postmaster), then the
// namespaces' holders.
func stopInstallHosts(t *testing.T, hosts map[string]*installHost) {
	if t.Failed() {
		for _, h := range hosts {
			logs, _ := filepath.Glob(filepath.Join(h.dir, "systemd", "*.log"))
			for _, l := range logs {
				b, _ := os.ReadFile(l)
				t.Logf("==== %s %s ====\n%s", h.name, filepath.Base(l), tail(string(b), 60))
			}
		}
	}
	pidsOf := func(files []string) []int {
		var pids []int
		for _, f := range files {
			b, err := os.ReadFile(f)
			if err != nil {
				continue
			}
			first, _, _ := strings.Cut(string(b), "\n")
			if pid, err := strconv.Atoi(strings.TrimSpace(first)); err == nil && pid > 1 {
				pids = append(pids, pid)
			}
		}
		return pids
	}
	var agents, rest []string
	for _, h := range hosts {
		a, _ := filepath.Glob(filepath.Join(h.dir, "systemd", "cifha*.pid"))
		agents = append(agents, a...)
		r, _ := filepath.Glob(filepath.Join(h.dir, "systemd", "*.pid"))
		r = append(r, filepath.Join(h.dir, "varlib", "cifha", "main", "postmaster.pid"))
		more, _ := filepath.Glob(filepath.Join(h.dir, "varlib", "postgresql", "*", "main", "postmaster.pid"))
		rest = append(rest, append(r, more...)...)
	}
	terminate(pidsOf(agents))
	terminate(pidsOf(rest))
	for _, h := range hosts {
		if h.holder != nil && h.holder.Process != nil {
			_ = h.holder.Process.Kill()
			_ = h.holder.Wait()
		}
	}
}

// terminate sends SIGTERM, waits up to 30 s, then SIGKILL.
func terminate(pids []int) {
	for _, pid := range pids {
		_ = syscall.Kill(pid, syscall.SIGTERM)
	}
	deadline := time.Now().Add(30 * time.Second)
	for _, pid := range pids {
		for processAlive(pid) && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond) // bounded by deadline
		}
		if processAlive(pid) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

// processAlive: the process exists and is not a zombie.
func processAlive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i > 0 && i+2 < len(s) && s[i+2] != 'Z'
}

// hostExec runs a bash script in the host's namespace, as root or as user,
// in the host's work directory, with the stand-ins first on PATH.
func hostExec(h *installHost, user, script, stdin, shim string) ([]byte, error) {
	path := shim + ":/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	wd := filepath.Join(h.dir, "work")
	if user != "" {
		wd = "/"
	}
	args := []string{"-t", strconv.Itoa(h.holder.Process.Pid), "-m", "--wd=" + wd, "--"}
	home := "/root"
	if user != "" {
		home = "/home/" + user
		args = append(args, "runuser", "-u", user, "--")
	}
	args = append(args, "env", "-i", "PATH="+path, "HOME="+home, "LANG=C.UTF-8", "FAKE_SYSTEMD_DIR="+filepath.Join(h.dir, "systemd"),
		"/bin/bash", "-c", script)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "nsenter", args...)
	cmd.Stdin = strings.NewReader(stdin)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.Bytes(), err
}

func hostRun(t *testing.T, h *installHost, user, script, stdin string) {
	t.Helper()
	if out, err := hostExec(h, user, script, stdin, "/nonexistent"); err != nil {
		t.Fatalf("%s: %s: %v\n%s", h.name, script, err, out)
	}
}

func writeScript(t *testing.T, path, text string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(text), 0o755); err != nil {
		t.Fatal(err)
	}
}

// writeEtcdTarball writes a gzipped tar holding bin as member (etcd's
// release layout).
func writeEtcdTarball(t *testing.T, path, bin, member string) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zw := gzip.NewWriter(f)
	tw := tar.NewWriter(zw)
	src, err := os.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	fi, _ := src.Stat()
	if err := tw.WriteHeader(&tar.Header{Name: member, Mode: 0o755, Size: fi.Size(), ModTime: fi.ModTime(), Typeflag: tar.TypeReg}); err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(tw, src); err != nil {
		t.Fatal(err)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
}

// goModVersion is the version go.mod requires of module.
func goModVersion(t *testing.T, module string) string {
	t.Helper()
	b, err := os.ReadFile("../go.mod")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^\s*` + regexp.QuoteMeta(module) + `\s+(v\S+)`).FindSubmatch(b)
	if m == nil {
		t.Fatalf("go.mod does not require %s", module)
	}
	return string(m[1])
}
