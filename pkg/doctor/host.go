package doctor

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"golang.org/x/sys/unix"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/cifha/cifha/pkg/config"
	"github.com/cifha/cifha/pkg/election"
	"github.com/cifha/cifha/pkg/pgctl"
	"github.com/cifha/cifha/pkg/state"
	"github.com/cifha/cifha/pkg/tuning"
	"github.com/jackc/pgx/v5/pgconn"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// HostOptions are the inputs of CheckHost.
type HostOptions struct {
	Config *config.Config
	// UID and GID are the user the agent runs as (postgres), whose access
	// to the directories is checked; User is its name for messages.
	UID, GID int
	User     string
	// Timeout bounds each network check (default 3 s).
	Timeout time.Duration
	// HTTP reaches the peers' APIs (default: a plain client).
	HTTP *http.Client
	// ReadSysctl reads a kernel setting ("vm.swappiness"); default /proc/sys.
	ReadSysctl func(key string) (string, error)
}

// CheckHost runs every check of a DB host: binaries and version,
// directories, ports, etcd, the peers' APIs and clocks, the replication
// login to the leader, and the kernel settings.
func CheckHost(ctx context.Context, o HostOptions) Report {
	if o.Timeout <= 0 {
		o.Timeout = 3 * time.Second
	}
	if o.HTTP == nil {
		o.HTTP = &http.Client{Timeout: o.Timeout}
	}
	if o.ReadSysctl == nil {
		o.ReadSysctl = procSysctl
	}
	if o.User == "" {
		o.User = "postgres"
	}
	var r Report
	cfg := o.Config
	ver := checkBinaries(ctx, &r, cfg)
	checkDirs(&r, cfg, o)
	checkPorts(ctx, &r, cfg, o)
	if c, ok := checkEtcd(ctx, &r, cfg.Etcd, cfg.Cluster, o.Timeout); ok {
		checkPeers(ctx, &r, cfg.Name, c, o)
		checkReplication(ctx, &r, cfg, c, o.Timeout)
	}
	if ver > 0 {
		checkKernel(&r, ver, o.ReadSysctl)
	}
	return r
}

// checkBinaries finds the server programs cifha runs and their version.
func checkBinaries(ctx context.Context, r *Report, cfg *config.Config) pgctl.Version {
	binDir := cfg.Postgres.BinDir
	suggest := "/usr/lib/postgresql/<version>/bin"
	if d, err := pgctl.DetectBinDir(); err == nil {
		suggest = d
	}
	if binDir == "" {
		d, err := pgctl.DetectBinDir()
		if err != nil {
			r.fail("binaries", "install the PostgreSQL server (apt-get install postgresql), or set [postgres] bin_dir",
				"no PostgreSQL found under /usr/lib/postgresql: %v", err)
			return 0
		}
		binDir = d
	}
	var missing []string
	for _, b := range []string{"postgres", "initdb", "pg_basebackup", "pg_rewind", "pg_controldata"} {
		fi, err := os.Stat(filepath.Join(binDir, b))
		if err != nil || fi.IsDir() || fi.Mode().Perm()&0o111 == 0 {
			missing = append(missing, b)
		}
	}
	if len(missing) > 0 {
		r.fail("binaries", fmt.Sprintf("set [postgres] bin_dir to the directory that holds postgres (here: %s), or install the server package", suggest),
			"bin_dir %s lacks %s", binDir, strings.Join(missing, ", "))
		return 0
	}
	ver, err := pgctl.DetectVersion(ctx, binDir)
	if err != nil {
		r.fail("binaries", "check that "+filepath.Join(binDir, "postgres")+" runs (postgres --version)", "%v", err)
		return 0
	}
	if err := tuning.SupportedVersion(int(ver)); err != nil {
		r.fail("binaries", "install PostgreSQL 9.6 to 17 and point [postgres] bin_dir at it", "%v", err)
		return 0
	}
	r.ok("binaries", "PostgreSQL %s in %s", ver, binDir)
	if dv, err := pgctl.DataDirVersion(cfg.Postgres.DataDir); err == nil && dv != "" && dv != ver.Major() {
		r.fail("binaries", fmt.Sprintf("point [postgres] bin_dir at PostgreSQL %s's binaries (/usr/lib/postgresql/%s/bin), or upgrade the data directory with pg_upgrade", dv, dv),
			"the data directory %s is PostgreSQL %s, the binaries are %s", cfg.Postgres.DataDir, dv, ver.Major())
	}
	return ver
}

// checkDirs checks the directories the agent writes: present ones belong
// to the agent's user and are closed to others, absent ones can be made.
func checkDirs(r *Report, cfg *config.Config, o HostOptions) {
	pc := cfg.Postgres
	install := func(dir, mode string) string {
		return fmt.Sprintf("install -d -o %s -g %s -m %s %s", o.User, o.User, mode, dir)
	}
	// The data directory's parent must be writable: initdb and clones
	// work in a temporary directory beside it, reinit moves it aside there.
	parent := filepath.Dir(filepath.Clean(pc.DataDir))
	if anc, fi, err := existingAncestor(parent); err != nil {
		r.fail("data_dir", install(parent, "0700"), "%v", err)
	} else if readOnly(anc) {
		r.fail("data_dir", readWritePathsFix(anc), "%s is on a read-only file system here: cifha creates and moves %s there", anc, filepath.Base(pc.DataDir))
	} else if !canWrite(fi, o.UID, o.GID) {
		r.fail("data_dir", install(parent, "0700")+" (or chown "+o.User+" "+anc+")",
			"%s is not writable by %s (owner uid %d, mode %04o): cifha creates and moves %s there", anc, o.User, owner(fi), fi.Mode().Perm(), filepath.Base(pc.DataDir))
	} else {
		checkOwned(r, "data_dir", pc.DataDir, false, o, "created by cifha (initdb or clone)")
	}
	// Without a data directory, bootstrap or a clone is next: the WAL and
	// tablespace directories must then be empty, as the agent requires.
	st, _ := pgctl.InspectDataDir(pc.DataDir)
	fresh := st == pgctl.DataDirMissing
	if pc.WalDir != "" {
		checkOwned(r, "wal_dir", pc.WalDir, false, o, "created by initdb or pg_basebackup")
		checkEmpty(r, "wal_dir", pc.WalDir, fresh)
	}
	for _, name := range sortedKeys(pc.Tablespaces) {
		checkOwned(r, "tablespace", pc.Tablespaces[name], false, o, "created by cifha (tablespace "+name+")")
		checkEmpty(r, "tablespace", pc.Tablespaces[name], fresh)
	}
	if cfg.Archive.Mode == "directory" || cfg.Archive.Mode == "peers" {
		checkOwned(r, "archive", cfg.Archive.Dir, true, o, "")
	}
	if cfg.HA.PromoteMethod == "trigger_file" && cfg.HA.TriggerFile != "" {
		dir := filepath.Dir(cfg.HA.TriggerFile)
		fi, err := os.Stat(dir)
		switch {
		case err != nil:
			r.fail("trigger_file", install(dir, "0700"), "the trigger file's directory: %v", err)
		case readOnly(dir):
			r.fail("trigger_file", readWritePathsFix(dir), "%s is on a read-only file system here: cifha creates %s there to promote", dir, cfg.HA.TriggerFile)
		case !canWrite(fi, o.UID, o.GID):
			r.fail("trigger_file", "chown "+o.User+" "+dir, "%s is not writable by %s: cifha creates %s there to promote", dir, o.User, cfg.HA.TriggerFile)
		case dir == "/tmp" || strings.HasPrefix(dir, "/tmp/") || dir == "/var/tmp" || strings.HasPrefix(dir, "/var/tmp/"):
			r.warn("trigger_file", "use /var/lib/cifha/pgsql.trigger", "%s is in /tmp, which the cifha unit makes private (PrivateTmp=yes): it works for cifha and postgres, but a file touched there by hand, as the seed's manual failover did, is never seen", cfg.HA.TriggerFile)
		default:
			r.ok("trigger_file", "%s writable by %s", dir, o.User)
		}
	}
	if pc.SocketDir != "" {
		fi, err := os.Stat(pc.SocketDir)
		switch {
		case err != nil:
			r.fail("socket_dir", install(pc.SocketDir, "2775"), "%s: %v", pc.SocketDir, err)
		case readOnly(pc.SocketDir):
			r.fail("socket_dir", readWritePathsFix(pc.SocketDir), "%s is on a read-only file system here", pc.SocketDir)
		case !canWrite(fi, o.UID, o.GID):
			r.fail("socket_dir", "chown "+o.User+" "+pc.SocketDir, "%s is not writable by %s", pc.SocketDir, o.User)
		default:
			r.ok("socket_dir", "%s writable by %s", pc.SocketDir, o.User)
		}
	}
}

// checkOwned: dir exists, is the agent user's and closed to others (the
// archive: writable by it); or it is absent, must exist is false, and the
// nearest existing ancestor lets the agent create it.
func checkOwned(r *Report, check, dir string, mustExist bool, o HostOptions, absentNote string) {
	install := fmt.Sprintf("install -d -o %s -g %s -m 0700 %s", o.User, o.User, dir)
	fi, err := os.Stat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist) && mustExist:
		r.fail(check, install, "%s does not exist", dir)
		return
	case errors.Is(err, fs.ErrNotExist):
		anc, afi, aerr := existingAncestor(filepath.Dir(dir))
		if aerr != nil {
			r.fail(check, install, "%v", aerr)
		} else if readOnly(anc) {
			r.fail(check, readWritePathsFixAbsent(dir, o.User), "%s does not exist and cannot be created: %s is on a read-only file system here", dir, anc)
		} else if !canWrite(afi, o.UID, o.GID) {
			r.fail(check, install, "%s does not exist and %s cannot create it: %s is not writable by it", dir, o.User, anc)
		} else {
			r.ok(check, "%s absent; %s", dir, absentNote)
		}
		return
	case err != nil:
		r.fail(check, install, "%s: %v", dir, err)
		return
	case !fi.IsDir():
		r.fail(check, "move it away and "+install, "%s is not a directory", dir)
		return
	case readOnly(dir):
		r.fail(check, readWritePathsFix(dir), "%s is on a read-only file system here", dir)
		return
	}
	if owner(fi) != o.UID && check != "archive" {
		r.fail(check, fmt.Sprintf("chown -R %s:%s %s", o.User, o.User, dir), "%s is owned by uid %d, not by %s (uid %d)", dir, owner(fi), o.User, o.UID)
		return
	}
	if check == "archive" {
		if !canWrite(fi, o.UID, o.GID) {
			r.fail(check, fmt.Sprintf("chown %s %s (or make it group-writable for %s)", o.User, dir, o.User), "%s is not writable by %s", dir, o.User)
			return
		}
		r.ok(check, "%s writable by %s", dir, o.User)
		return
	}
	// The data directory may be 0750 (group access, PostgreSQL 11+); the
	// WAL and tablespace directories must be 0700, as the agent checks.
	mask := os.FileMode(0o077)
	if check == "data_dir" {
		mask = 0o027
	}
	if fi.Mode().Perm()&mask != 0 {
		r.fail(check, "chmod 0700 "+dir, "%s has mode %04o: postgres' files must not be open to others", dir, fi.Mode().Perm())
		return
	}
	r.ok(check, "%s owned by %s, mode %04o", dir, o.User, fi.Mode().Perm())
}

// readOnly: is dir on a file system mounted read-only, as the cifha unit's
// ProtectSystem=strict makes everything outside its ReadWritePaths= and
// StateDirectory=? Mode bits cannot show it.
func readOnly(dir string) bool {
	var st unix.Statfs_t
	return unix.Statfs(dir, &st) == nil && st.Flags&unix.ST_RDONLY != 0
}

// readWritePathsFix is the fix for a directory the agent must write that
// is read-only: under the systemd unit, a drop-in that allows it.
func readWritePathsFix(dir string) string {
	return fmt.Sprintf("if cifha runs under systemd (ProtectSystem=strict), allow it: systemctl edit cifha, add [Service] ReadWritePaths=%s, restart; otherwise remount it read-write", dir)
}

// readWritePathsFixAbsent is readWritePathsFix for a directory that does
// not exist under a read-only ancestor: make it, then allow only it.
func readWritePathsFixAbsent(dir, user string) string {
	return fmt.Sprintf("install -d -o %s -g %s -m 0700 %s (as root, outside the service), then %s", user, user, dir, readWritePathsFix(dir))
}

func existingAncestor(dir string) (string, fs.FileInfo, error) {
	for d := filepath.Clean(dir); ; d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		if err == nil {
			if !fi.IsDir() {
				return d, fi, fmt.Errorf("%s is not a directory", d)
			}
			return d, fi, nil
		}
		if !errors.Is(err, fs.ErrNotExist) || d == "/" {
			return d, nil, err
		}
	}
}

func owner(fi fs.FileInfo) int {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return int(st.Uid)
	}
	return -1
}

// canWrite: may uid (primary group gid) create entries in the directory
// fi describes? Supplementary groups are not considered.
func canWrite(fi fs.FileInfo, uid, gid int) bool {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return false
	}
	m := fi.Mode().Perm()
	switch {
	case uid == 0:
		return true
	case int(st.Uid) == uid:
		return m&0o300 == 0o300
	case int(st.Gid) == gid:
		return m&0o030 == 0o030
	}
	return m&0o003 == 0o003
}

// checkPorts: postgres' port on each listen address, its socket, and the
// API's port are free, or held by this member's own postgres and agent.
func checkPorts(ctx context.Context, r *Report, cfg *config.Config, o HostOptions) {
	pc := cfg.Postgres
	ours := ownPostmaster(pc.DataDir)
	for _, addr := range listenAddrs(pc.Listen) {
		hp := net.JoinHostPort(addr, strconv.Itoa(pc.Port))
		l, err := net.Listen("tcp", hp)
		if err == nil {
			l.Close()
			r.ok("port", "%s free", hp)
			continue
		}
		if !errors.Is(err, syscall.EADDRINUSE) {
			// Not on this host (yet): a VIP, or the network comes up
			// late. Postgres starts if one listen address binds.
			r.warn("port", "check [postgres] listen: the address must be on this host", "%s cannot be bound: %v", hp, err)
			continue
		}
		pid, cmd := portHolder(addr, pc.Port)
		if ours != 0 && (pid == 0 || pid == ours) {
			r.ok("port", "%s in use by this member's postgres (pid %d)", hp, ours)
			continue
		}
		r.fail("port", holderFix(cmd, pc.Port), "%s is in use%s", hp, describeHolder(pid, cmd))
	}
	if pc.SocketDir != "" {
		lock := filepath.Join(pc.SocketDir, fmt.Sprintf(".s.PGSQL.%d.lock", pc.Port))
		if b, err := os.ReadFile(lock); err == nil {
			lines := strings.Split(string(b), "\n")
			pid, _ := strconv.Atoi(strings.TrimSpace(lines[0]))
			dir := ""
			if len(lines) > 1 {
				dir = strings.TrimSpace(lines[1])
			}
			switch {
			case pid != 0 && pid == ours:
				r.ok("socket", "%s is this member's postgres", lock)
			case pid > 0 && pid != os.Getpid() && pid != os.Getppid() && syscall.Kill(pid, 0) == nil:
				// As postgres judges it: ESRCH or EPERM (another user's
				// process under a reused pid) means stale.
				r.fail("socket", holderFix("-D "+dir, pc.Port), "%s is held by postmaster %d of data directory %s: cifha's postgres cannot start (lock file already exists)", lock, pid, dir)
			default:
				r.ok("socket", "%s is stale (postgres removes it at start)", lock)
			}
		} else {
			r.ok("socket", "%s/.s.PGSQL.%d free", pc.SocketDir, pc.Port)
		}
	}
	if a := cfg.API.Listen; a != "" {
		l, err := net.Listen("tcp", a)
		if err == nil {
			l.Close()
			r.ok("api port", "%s free", a)
			return
		}
		// A cifha agent answering there is this host's running service.
		url := cfg.API.AdvertiseURL
		if url == "" {
			url = "http://" + a
		}
		if resp, herr := get(ctx, o.HTTP, url+"/health", o.Timeout); herr == nil && resp.Header.Get("X-Cifha-Member") == cfg.Name {
			r.ok("api port", "%s in use by this member's agent", a)
			return
		}
		h, _, _ := net.SplitHostPort(a)
		pid, cmd := portHolder(h, portOf(a))
		r.fail("api port", "stop what holds it, or choose another [api] listen", "%s is in use%s", a, describeHolder(pid, cmd))
	}
}

func portOf(hp string) int {
	_, p, _ := net.SplitHostPort(hp)
	n, _ := strconv.Atoi(p)
	return n
}

// listenAddrs turns listen_addresses into addresses to bind ("*": all).
func listenAddrs(listen string) []string {
	var out []string
	for _, a := range strings.Split(listen, ",") {
		switch a = strings.TrimSpace(a); a {
		case "":
		case "*":
			out = append(out, "")
		case "localhost":
			out = append(out, "127.0.0.1")
		default:
			out = append(out, a)
		}
	}
	return out
}

// ownPostmaster is the live postmaster of dataDir, or 0.
func ownPostmaster(dataDir string) int {
	b, err := os.ReadFile(filepath.Join(dataDir, "postmaster.pid"))
	if err != nil {
		return 0
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(strings.SplitN(string(b), "\n", 2)[0]))
	if pid <= 0 || syscall.Kill(pid, 0) == syscall.ESRCH {
		return 0
	}
	return pid
}

var debianCluster = regexp.MustCompile(`(?:/etc/postgresql|/var/lib/postgresql)/([0-9][0-9.]*)/([^/\s]+)`)

// holderFix says what to do about a port or socket held by another
// program, naming Debian's own cluster when it is that.
func holderFix(cmd string, port int) string {
	if m := debianCluster.FindStringSubmatch(cmd); m != nil {
		return fmt.Sprintf("this is Debian's own cluster %s/%s: pg_ctlcluster %s %s stop && systemctl disable postgresql@%s-%s (or set create_main_cluster = false in /etc/postgresql-common/createcluster.conf before installing postgresql)",
			m[1], m[2], m[1], m[2], m[1], m[2])
	}
	return fmt.Sprintf("stop the program that holds it, or choose another [postgres] port than %d", port)
}

func describeHolder(pid int, cmd string) string {
	switch {
	case pid != 0 && cmd != "":
		return fmt.Sprintf(" by pid %d (%s)", pid, cmd)
	case pid != 0:
		return fmt.Sprintf(" by pid %d", pid)
	}
	return " (run as root to see by which process)"
}

// portHolder finds the process listening on TCP addr:port, or on the
// port for every address (best effort: the sockets of other users'
// processes are visible to root only).
func portHolder(addr string, port int) (int, string) {
	want := net.ParseIP(addr)
	inodes := map[string]bool{}
	for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n")[1:] {
			fs := strings.Fields(line)
			if len(fs) < 10 || fs[3] != "0A" { // LISTEN
				continue
			}
			i := strings.LastIndexByte(fs[1], ':')
			ip := procIP(fs[1][:i])
			if want != nil && ip != nil && !ip.IsUnspecified() && !ip.Equal(want) {
				continue
			}
			if p, err := strconv.ParseUint(fs[1][i+1:], 16, 16); err == nil && int(p) == port {
				inodes["socket:["+fs[9]+"]"] = true
			}
		}
	}
	if len(inodes) == 0 {
		return 0, ""
	}
	procs, _ := os.ReadDir("/proc")
	for _, p := range procs {
		pid, err := strconv.Atoi(p.Name())
		if err != nil {
			continue
		}
		fds, _ := os.ReadDir(filepath.Join("/proc", p.Name(), "fd"))
		for _, fd := range fds {
			if l, err := os.Readlink(filepath.Join("/proc", p.Name(), "fd", fd.Name())); err == nil && inodes[l] {
				b, _ := os.ReadFile(filepath.Join("/proc", p.Name(), "cmdline"))
				return pid, strings.TrimSpace(strings.ReplaceAll(string(b), "\x00", " "))
			}
		}
	}
	return 0, ""
}

// checkEtcd asks every endpoint for its status and version, then reads
// the cluster's keys. ok is false when no endpoint answered.
func checkEtcd(ctx context.Context, r *Report, ec config.Etcd, cluster string, timeout time.Duration) (state.Cluster, bool) {
	fix := "start etcd there, or correct [etcd] endpoints and its TLS (ca_file, cert_file, key_file) and username/password_file"
	cli, err := election.NewClient(ec)
	if err != nil {
		r.fail("etcd", fix, "%v", err)
		return state.Cluster{}, false
	}
	defer cli.Close()
	answered := 0
	var down []string
	for _, ep := range cli.Endpoints() {
		sctx, cancel := context.WithTimeout(ctx, timeout)
		st, err := cli.Status(sctx, ep)
		cancel()
		if err != nil {
			down = append(down, fmt.Sprintf("%s: %v (%s)", ep, err, election.Probe(ec, ep)))
			continue
		}
		answered++
		if ok, why := election.ServerVersionSafe(st.Version); !ok {
			r.fail("etcd", "upgrade etcd to 3.4.31, 3.5.13, 3.6 or later", "%s: %s", ep, why)
		} else {
			r.ok("etcd", "%s answers, etcd %s", ep, st.Version)
		}
	}
	switch {
	case answered == 0:
		r.fail("etcd", fix, "no etcd endpoint answers: %s", strings.Join(down, "; "))
		return state.Cluster{}, false
	case len(down) > 0:
		r.warn("etcd", "restart the member or fix the endpoint: the cluster keeps working while a majority answers",
			"%d of %d endpoints do not answer: %s", len(down), len(cli.Endpoints()), strings.Join(down, "; "))
	}
	keys := election.KeysFor(cluster)
	gctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	resp, err := cli.Get(gctx, keys.Prefix, clientv3.WithPrefix())
	if err != nil {
		r.fail("etcd", "check the etcd user's read permission on "+keys.Prefix, "read %s: %v", keys.Prefix, err)
		return state.Cluster{}, false
	}
	c := election.ParseCluster(keys, resp.Header.Revision, resp.Kvs)
	for k, why := range c.Invalid {
		r.warn("etcd", "inspect it with etcdctl get "+k+"; cifha ignores it", "invalid key %s: %s", k, why)
	}
	leader := "none"
	if c.Leader != nil {
		leader = c.Leader.Name
	}
	r.ok("cluster", "cluster %q: %d member(s) registered, leader %s", cluster, len(c.Members), leader)
	return c, true
}

// checkPeers reaches every other member's API and compares clocks
// through the responses' Date headers.
func checkPeers(ctx context.Context, r *Report, self string, c state.Cluster, o HostOptions) {
	for _, name := range sortedKeys(c.Members) {
		if name == self {
			continue
		}
		m := c.Members[name]
		t0 := time.Now()
		resp, err := get(ctx, o.HTTP, strings.TrimRight(m.APIURL, "/")+"/health", o.Timeout)
		t1 := time.Now()
		if err != nil {
			r.fail("peer api", fmt.Sprintf("check that cifha runs on %s and that %s is reachable from this host (firewall; [api] listen and advertise_url there)", name, m.APIURL),
				"%s's API at %s does not answer: %v", name, m.APIURL, err)
			continue
		}
		r.ok("peer api", "%s answers at %s", name, m.APIURL)
		if d, err := http.ParseTime(resp.Header.Get("Date")); err == nil {
			// Date has one-second resolution: the peer's clock read
			// somewhere in [d, d+1s) while we were between t0 and t1.
			lo, hi := d.Sub(t1), d.Add(time.Second).Sub(t0)
			const limit = 2 * time.Second
			if lo > limit || hi < -limit {
				skew := lo
				if hi < -limit {
					skew = hi
				}
				r.fail("clock", "run NTP (chrony or systemd-timesyncd) on every member: fencing does not rely on clocks, but logs, history and scheduled switchovers do",
					"%s's clock is %s off this host's", name, skew.Round(100*time.Millisecond))
			} else {
				r.ok("clock", "%s within about %s of this host", name, max(lo.Abs(), hi.Abs()).Round(100*time.Millisecond))
			}
		}
	}
}

func get(ctx context.Context, hc *http.Client, url string, timeout time.Duration) (*http.Response, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, err
	}
	resp.Body.Close()
	return resp, nil
}

// checkReplication logs in to the leader's postgres as the replication
// user, as a clone and the standby's walreceiver will.
func checkReplication(ctx context.Context, r *Report, cfg *config.Config, c state.Cluster, timeout time.Duration) {
	switch {
	case c.Leader == nil:
		r.warn("replication", "start the first member's agent; the others clone from it", "no leader yet: nothing to log in to")
		return
	case c.Leader.Name == cfg.Name:
		r.ok("replication", "this member is the leader")
		return
	}
	m, ok := c.Members[c.Leader.Name]
	if !ok || m.ConnAddress == "" {
		r.warn("replication", "", "the leader %s has not published its address", c.Leader.Name)
		return
	}
	host, port, err := net.SplitHostPort(m.ConnAddress)
	if err != nil {
		r.fail("replication", "", "the leader's address %q: %v", m.ConnAddress, err)
		return
	}
	// As the standbys connect: under TLS the password goes only to a
	// verified member.
	tlsParams := strings.Join(pgctl.TLSFor(cfg.Postgres).ConnParams(), " ")
	pc, err := pgconn.ParseConfig(fmt.Sprintf("host=%s port=%s dbname=replication %s connect_timeout=%d", host, port, tlsParams, max(1, int(timeout.Seconds()))))
	if err != nil {
		r.fail("replication", "", "%v", err)
		return
	}
	pc.User, pc.Password = cfg.Postgres.ReplicationUser, cfg.Postgres.ReplicationPassword
	pc.RuntimeParams["replication"] = "true"
	cctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	conn, err := pgconn.ConnectConfig(cctx, pc)
	if err != nil {
		r.fail("replication", "replication_password_file must hold the same password on every member, and the leader's pg_hba must allow replication from this host (cifha writes that line; see [postgres] hba)",
			"replication login as %s to the leader %s (%s) failed: %v", pc.User, c.Leader.Name, m.ConnAddress, err)
		return
	}
	conn.Close(context.Background())
	r.ok("replication", "replication login as %s to the leader %s (%s) works", pc.User, c.Leader.Name, m.ConnAddress)
}

// checkKernel compares the kernel settings with `cifha tune --only sysctl`.
func checkKernel(r *Report, ver pgctl.Version, read func(string) (string, error)) {
	for _, p := range tuning.Sysctl(0, 0, int(ver)) {
		got, err := read(p.Name)
		switch {
		case err != nil:
			r.warn("kernel", "", "%s: %v", p.Name, err)
		case strings.Join(strings.Fields(got), " ") != p.Value:
			r.warn("kernel", fmt.Sprintf("sysctl -w %s=%s, and keep it: cifha tune --only sysctl > /etc/sysctl.d/60-cifha.conf", p.Name, p.Value),
				"%s is %s, cifha tune recommends %s (%s)", p.Name, strings.TrimSpace(got), p.Value, p.Comment)
		default:
			r.ok("kernel", "%s = %s", p.Name, p.Value)
		}
	}
}

func procSysctl(key string) (string, error) {
	b, err := os.ReadFile(filepath.Join("/proc/sys", strings.ReplaceAll(key, ".", "/")))
	return strings.TrimSpace(string(b)), err
}

// procIP decodes an address of /proc/net/tcp{,6}: hex, each 32-bit word
// in host (little-endian) byte order.
func procIP(h string) net.IP {
	b, err := hex.DecodeString(h)
	if err != nil || (len(b) != 4 && len(b) != 16) {
		return nil
	}
	for i := 0; i < len(b); i += 4 {
		b[i], b[i+1], b[i+2], b[i+3] = b[i+3], b[i+2], b[i+1], b[i]
	}
	return net.IP(b)
}

// checkEmpty: before bootstrap or a clone (fresh), a WAL or tablespace
// directory that exists must be empty; cifha never deletes what is there.
func checkEmpty(r *Report, check, dir string, fresh bool) {
	if !fresh {
		return
	}
	ents, err := os.ReadDir(dir)
	if err == nil && len(ents) > 0 {
		r.fail(check, "move its contents aside (an earlier cluster's files?) or empty it", "%s holds %d entries, and this member has no data directory yet: bootstrap and clones need it empty", dir, len(ents))
	}
}

// Preflight is the part of CheckHost the agent runs at start, before it
// claims anything in etcd: the directories (their parents only when
// initdb or a clone is next) and postgres' port and socket. Local and
// quick; no network beyond binding the port.
func Preflight(cfg *config.Config, uid, gid int, user string) Report {
	o := HostOptions{Config: cfg, UID: uid, GID: gid, User: user, Timeout: time.Second, HTTP: &http.Client{Timeout: time.Second}}
	var r Report
	checkDirs(&r, cfg, o)
	if st, _ := pgctl.InspectDataDir(cfg.Postgres.DataDir); st != pgctl.DataDirMissing {
		// An existing data directory is the agent's to judge (a foreign
		// one is refused and left alone, whoever owns it), and its parent
		// only matters to a later reinit, which refuses cleanly: advice
		// here, not a reason to wait.
		for i, x := range r.Results {
			if x.Check == "data_dir" && x.Status == Fail {
				r.Results[i].Status = Warn
			}
		}
	}
	cfg2 := *cfg
	cfg2.API.Listen = "" // the agent binds its API itself, with its own error
	checkPorts(context.Background(), &r, &cfg2, o)
	return r
}
