// Package cluster starts a local cifha cluster: one cifha process per
// "host", each on its own loopback address (127.0.0.11, .12, ...) with
// postgres on port 5432, running as the postgres OS user. The integration
// tests and the demo both use it, so the demo is what the tests test.
package cluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/cifha/cifha/internal/tcpproxy"
	"github.com/jackc/pgx/v5"
)

// Options describe a cluster.
type Options struct {
	// BinDir holds the cifha and cifhactl binaries.
	BinDir string
	// Root is a directory the postgres user can write; each node gets a subdirectory.
	Root          string
	EtcdEndpoints []string
	Cluster       string
	// Addrs are the nodes' loopback addresses; names are db1, db2, ...
	Addrs        []string
	TTL          time.Duration
	LoopInterval time.Duration
	// Tuning is the [tuning] section body ("profile = \"none\"" by default).
	Tuning string
	// Extra is appended to every node's configuration, inside [ha]: ha keys
	// first, then any further [sections].
	Extra string
	// SuperuserPassword is used for the postgres superuser (default "cifha-test").
	SuperuserPassword string
	// EtcdProxies puts a cuttable proxy between each node and etcd (the
	// first endpoint), for partition tests.
	EtcdProxies bool
	// PeerProxies puts a cuttable proxy in front of each node's postgres
	// port and API for its peers: the node advertises the proxies
	// (connect_address, advertise_url), so replication, clones, rewinds and
	// member-to-member API calls go through them, while clients and the
	// tests still reach Addr directly. CutPeers partitions the node from
	// the other members.
	PeerProxies bool
	// Files are written (mode 0600, owned by the postgres user) before the
	// nodes' configurations: path -> content (password files of Extra).
	Files map[string]string
	// WalDirs gives every node its own [postgres] wal_dir (Node.WalDir).
	WalDirs bool
	// Tablespaces gives every node a directory of its own for each named
	// tablespace ([postgres.tablespaces]; Node.Tablespaces).
	Tablespaces []string
	// APIToken, when set, is written to secrets/api.token and configured as
	// every agent's api.token_file (enables the control API).
	APIToken string
	// HBA replaces the default pg_hba lines for clients (scram from 127/8).
	HBA []string
	// NoStart is read by test helpers: prepare the cluster but start no node.
	NoStart bool
	// NodeExtra is appended to one node's configuration (by name: db1...)
	// after Extra; start it with a [section] header.
	NodeExtra map[string]string
	// EtcdExtra is added to every node's [etcd] section (TLS, username).
	EtcdExtra string
	// PostgresExtra is added to one node's [postgres] section (by name).
	PostgresExtra map[string]string
	// DialTimeout is [etcd] dial_timeout (default 1s).
	DialTimeout time.Duration
	// MemberNetworks is [postgres] member_networks (default 127.0.0.0/8);
	// HBA's default client line allows the first one.
	MemberNetworks []string
	// Command, when set, makes the agent's command (the fault lab runs
	// each agent inside its host's network namespace): it must run path
	// with args as cred's user. Default: exec.Command with cred.
	Command func(n *Node, cred *syscall.Credential, path string, args ...string) *exec.Cmd
	// Dial, when set, is how the tests reach the nodes' postgres and API
	// (the lab's observer host). Default: the local network.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
}

// Cluster is a set of nodes.
type Cluster struct {
	Opt      Options
	Nodes    []*Node
	cred     *syscall.Credential
	httpOnce sync.Once
	http     *http.Client
}

// Node is one cifha process and its postgres.
type Node struct {
	Name, Addr, Dir, DataDir, ConfigPath, LogPath string
	APIURL                                        string
	// EtcdProxy is this node's link to etcd when Options.EtcdProxies is set
	// (the first endpoint's; EtcdProxies has one per endpoint).
	EtcdProxy   *tcpproxy.Proxy
	EtcdProxies []*tcpproxy.Proxy
	// WalDir is the node's wal_dir when Options.WalDirs is set.
	WalDir string
	// Tablespaces are the node's tablespace directories (name -> path)
	// when Options.Tablespaces is set.
	Tablespaces map[string]string
	// PeerProxies (postgres, API) when Options.PeerProxies is set.
	PeerProxies []*tcpproxy.Proxy
	c           *Cluster
	cmd         *exec.Cmd
	done        chan struct{}
	exitErr     error
}

// New prepares the directories and configuration files of every node.
func New(opt Options) (*Cluster, error) {
	if opt.TTL == 0 {
		opt.TTL = 3 * time.Second
	}
	if opt.LoopInterval == 0 {
		opt.LoopInterval = 500 * time.Millisecond
	}
	if opt.Tuning == "" {
		opt.Tuning = `profile = "none"`
	}
	if opt.SuperuserPassword == "" {
		opt.SuperuserPassword = "cifha-test"
	}
	if opt.DialTimeout == 0 {
		opt.DialTimeout = time.Second
	}
	if len(opt.MemberNetworks) == 0 {
		opt.MemberNetworks = []string{"127.0.0.0/8"}
	}
	c := &Cluster{Opt: opt}
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			return nil, fmt.Errorf("postgres OS user: %w", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		c.cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
	}
	secrets := filepath.Join(opt.Root, "secrets")
	if err := c.mkdir(secrets); err != nil {
		return nil, err
	}
	files := map[string]string{"superuser.password": opt.SuperuserPassword, "replication.password": "repl-" + opt.SuperuserPassword}
	if opt.APIToken != "" {
		files["api.token"] = opt.APIToken
	}
	for f, pw := range files {
		if err := c.writeFile(filepath.Join(secrets, f), pw+"\n"); err != nil {
			return nil, err
		}
	}
	for path, text := range opt.Files {
		if err := c.writeFile(path, text); err != nil {
			return nil, err
		}
	}
	for i, addr := range opt.Addrs {
		n := &Node{Name: fmt.Sprintf("db%d", i+1), Addr: addr, c: c}
		n.Dir = filepath.Join(opt.Root, n.Name)
		n.DataDir = filepath.Join(n.Dir, "data")
		n.ConfigPath = filepath.Join(n.Dir, "cifha.toml")
		n.LogPath = filepath.Join(n.Dir, "cifha.log")
		n.APIURL = "http://" + addr + ":8008"
		if opt.WalDirs {
			n.WalDir = filepath.Join(n.Dir, "wal-"+n.Name)
		}
		if len(opt.Tablespaces) > 0 {
			n.Tablespaces = map[string]string{}
			for _, ts := range opt.Tablespaces {
				n.Tablespaces[ts] = filepath.Join(n.Dir, "ts-"+ts+"-"+n.Name)
			}
		}
		if err := c.mkdir(n.Dir); err != nil {
			return nil, err
		}
		endpoints := opt.EtcdEndpoints
		if opt.EtcdProxies {
			// One proxy per etcd endpoint: cutting them all partitions
			// this node from etcd (CutEtcd).
			endpoints = nil
			for _, ep := range opt.EtcdEndpoints {
				target := strings.TrimPrefix(strings.TrimPrefix(ep, "http://"), "https://")
				px, err := tcpproxy.Start("127.0.0.1:0", target)
				if err != nil {
					c.Close(time.Second)
					return nil, err
				}
				n.EtcdProxies = append(n.EtcdProxies, px)
				endpoints = append(endpoints, "http://"+px.Addr())
			}
			n.EtcdProxy = n.EtcdProxies[0]
		}
		if opt.PeerProxies {
			for _, target := range []string{addr + ":5432", addr + ":8008"} {
				px, err := tcpproxy.Start("127.0.0.1:0", target)
				if err != nil {
					c.Close(time.Second)
					return nil, err
				}
				n.PeerProxies = append(n.PeerProxies, px)
			}
		}
		if err := c.writeFile(n.ConfigPath, c.config(n, secrets, endpoints)); err != nil {
			return nil, err
		}
		c.Nodes = append(c.Nodes, n)
	}
	return c, nil
}

func (c *Cluster) config(n *Node, secrets string, endpoints []string) string {
	tokenLine := ""
	if c.Opt.APIToken != "" {
		tokenLine = fmt.Sprintf("token_file = %q\n", filepath.Join(secrets, "api.token"))
	}
	pgPeer := ""
	if n.WalDir != "" {
		pgPeer += fmt.Sprintf("wal_dir = %q\n", n.WalDir)
	}
	if len(n.PeerProxies) == 2 {
		tokenLine += fmt.Sprintf("advertise_url = %q\n", "http://"+n.PeerProxies[1].Addr())
		pgPeer += fmt.Sprintf("connect_address = %q\n", n.PeerProxies[0].Addr())
	}
	tsSection := ""
	if len(n.Tablespaces) > 0 {
		tsSection = "[postgres.tablespaces]\n"
		for _, ts := range c.Opt.Tablespaces {
			tsSection += fmt.Sprintf("%s = %q\n", ts, n.Tablespaces[ts])
		}
	}
	hba := c.Opt.HBA
	if len(hba) == 0 {
		hba = []string{"host all all " + c.Opt.MemberNetworks[0] + " scram-sha-256"}
	}
	q := func(ss []string) string {
		var out []string
		for _, s := range ss {
			out = append(out, strconv.Quote(s))
		}
		return strings.Join(out, ", ")
	}
	pgExtra := c.Opt.PostgresExtra[n.Name]
	if pgExtra != "" && !strings.HasSuffix(pgExtra, "\n") {
		pgExtra += "\n"
	}
	return fmt.Sprintf(`cluster = %q
name = %q

[api]
listen = "%s:8008"
%s
[etcd]
endpoints = [%s]
dial_timeout = %q
%s

[postgres]
data_dir = %q
listen = %q
port = 5432
member_networks = [%s]
%s%ssocket_dir = %q
superuser_password_file = %q
replication_password_file = %q
hba = [%s]

[tuning]
%s

[ha]
ttl = %q
loop_interval = %q
start_timeout = "10s"

%s
%s
%s
[log]
level = "debug"
`, c.Opt.Cluster, n.Name, n.Addr, tokenLine, q(endpoints), c.Opt.DialTimeout.String(), c.Opt.EtcdExtra, n.DataDir, n.Addr, q(c.Opt.MemberNetworks), pgPeer, pgExtra, n.Dir,
		filepath.Join(secrets, "superuser.password"), filepath.Join(secrets, "replication.password"),
		q(hba), c.Opt.Tuning, c.Opt.TTL.String(), c.Opt.LoopInterval.String(), c.Opt.Extra, c.Opt.NodeExtra[n.Name], tsSection)
}

func (c *Cluster) mkdir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	return c.chown(dir)
}

// WriteFile writes path (mode 0600) owned by the postgres user, as the
// nodes' own files are (tests that change a node's file).
func (c *Cluster) WriteFile(path, text string) error { return c.writeFile(path, text) }

func (c *Cluster) writeFile(path, text string) error {
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		return err
	}
	return c.chown(path)
}

func (c *Cluster) chown(path string) error {
	if c.cred == nil {
		return nil
	}
	return os.Chown(path, int(c.cred.Uid), int(c.cred.Gid))
}

// ClusterName is the name of the cluster n belongs to.
func (n *Node) ClusterName() string { return n.c.Opt.Cluster }

// Node returns the node called name.
func (c *Cluster) Node(name string) *Node {
	for _, n := range c.Nodes {
		if n.Name == name {
			return n
		}
	}
	return nil
}

// Start starts every node's agent.
func (c *Cluster) Start() error {
	for _, n := range c.Nodes {
		if err := n.Start(); err != nil {
			return err
		}
	}
	return nil
}

// Close stops every agent (SIGTERM, then SIGKILL after timeout) and any
// postmaster they left, by PID.
func (c *Cluster) Close(timeout time.Duration) {
	for _, n := range c.Nodes {
		n.Stop(timeout)
	}
	for _, n := range c.Nodes {
		n.killPostmaster()
		for _, px := range append(n.EtcdProxies, n.PeerProxies...) {
			px.Close()
		}
	}
}

// KillHost simulates losing the host: SIGKILL to the agent and to the
// postmaster's whole process group at once.
func (n *Node) KillHost() {
	pm := n.PostmasterPID()
	if n.Running() {
		_ = n.cmd.Process.Kill()
	}
	if pm != 0 {
		_ = syscall.Kill(-pm, syscall.SIGKILL)
		_ = syscall.Kill(pm, syscall.SIGKILL)
	}
	n.Wait(5 * time.Second)
}

// Start runs this node's cifha process as the postgres OS user. Its output
// is appended to LogPath.
func (n *Node) Start() error {
	if n.Running() {
		return fmt.Errorf("%s already running", n.Name)
	}
	logf, err := os.OpenFile(n.LogPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	var cmd *exec.Cmd
	if n.c.Opt.Command != nil {
		cmd = n.c.Opt.Command(n, n.c.cred, filepath.Join(n.c.Opt.BinDir, "cifha"), "--config", n.ConfigPath)
	} else {
		cmd = exec.Command(filepath.Join(n.c.Opt.BinDir, "cifha"), "--config", n.ConfigPath)
		// Own process group: a Ctrl-C in the demo's terminal is handled
		// by the demo, which stops the agents in order.
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Credential: n.c.cred}
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Dir = n.Dir
	cmd.Env = []string{"PATH=/usr/local/bin:/usr/bin:/bin", "HOME=" + n.Dir, "LANG=C.UTF-8"}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("start %s: %w", n.Name, err)
	}
	n.cmd, n.done = cmd, make(chan struct{})
	go func(done chan struct{}) {
		n.exitErr = cmd.Wait()
		logf.Close()
		close(done)
	}(n.done)
	return nil
}

// Running reports whether the agent process is alive.
func (n *Node) Running() bool {
	if n.done == nil {
		return false
	}
	select {
	case <-n.done:
		return false
	default:
		return true
	}
}

// PID is the agent's PID (0 when not running).
func (n *Node) PID() int {
	if !n.Running() {
		return 0
	}
	return n.cmd.Process.Pid
}

// Wait waits up to timeout for the agent to exit and returns its exit error.
func (n *Node) Wait(timeout time.Duration) (error, bool) {
	if n.done == nil {
		return nil, true
	}
	select {
	case <-n.done:
		return n.exitErr, true
	case <-time.After(timeout):
		return nil, false
	}
}

// Stop sends SIGTERM and waits; after timeout it sends SIGKILL.
func (n *Node) Stop(timeout time.Duration) error {
	if !n.Running() {
		return nil
	}
	_ = n.cmd.Process.Signal(syscall.SIGTERM)
	if err, ok := n.Wait(timeout); ok {
		return err
	}
	_ = n.cmd.Process.Kill()
	n.Wait(5 * time.Second)
	return fmt.Errorf("%s did not stop within %s; killed", n.Name, timeout)
}

// Kill sends SIGKILL to the agent only.
func (n *Node) Kill() {
	if n.Running() {
		_ = n.cmd.Process.Kill()
		n.Wait(5 * time.Second)
	}
}

// PostmasterPID reads the postmaster's PID from postmaster.pid (0 if none).
func (n *Node) PostmasterPID() int {
	b, err := os.ReadFile(filepath.Join(n.DataDir, "postmaster.pid"))
	if err != nil {
		return 0
	}
	line, _, _ := bytes.Cut(b, []byte("\n"))
	pid, _ := strconv.Atoi(strings.TrimSpace(string(line)))
	if pid <= 0 || syscall.Kill(pid, 0) != nil {
		return 0
	}
	return pid
}

// killPostmaster kills a postmaster left running on this node's data
// directory (only if it is a postgres process).
func (n *Node) killPostmaster() {
	pid := n.PostmasterPID()
	if pid == 0 {
		return
	}
	if comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid)); !bytes.HasPrefix(comm, []byte("postgres")) {
		return
	}
	_ = syscall.Kill(pid, syscall.SIGQUIT)
	for i := 0; i < 100 && syscall.Kill(pid, 0) == nil; i++ {
		time.Sleep(50 * time.Millisecond) // bounded wait for a process we do not parent
	}
	_ = syscall.Kill(pid, syscall.SIGKILL)
}

// DSN is a libpq connection string to this node as the superuser over TCP.
func (n *Node) DSN() string {
	return fmt.Sprintf("host=%s port=5432 user=postgres password=%s dbname=postgres sslmode=disable connect_timeout=2",
		n.Addr, n.c.Opt.SuperuserPassword)
}

// Connect opens a connection to this node's postgres.
func (n *Node) Connect(ctx context.Context) (*pgx.Conn, error) {
	return n.c.ConnectDSN(ctx, n.DSN())
}

// ConnectDSN connects to dsn the way the tests reach the nodes
// (Options.Dial).
func (c *Cluster) ConnectDSN(ctx context.Context, dsn string) (*pgx.Conn, error) {
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		return nil, err
	}
	if c.Opt.Dial != nil {
		cfg.DialFunc = c.Opt.Dial
	}
	return pgx.ConnectConfig(ctx, cfg)
}

// HTTPClient is how the tests reach the agents' APIs (Options.Dial).
func (c *Cluster) HTTPClient() *http.Client {
	if c.Opt.Dial == nil {
		return http.DefaultClient
	}
	c.httpOnce.Do(func() {
		c.http = &http.Client{Transport: &http.Transport{DialContext: c.Opt.Dial, MaxIdleConnsPerHost: 4, IdleConnTimeout: 30 * time.Second}}
	})
	return c.http
}

// API performs GET path on this node's agent API and returns the status code and body.
func (n *Node) API(ctx context.Context, path string) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, n.APIURL+path, nil)
	if err != nil {
		return 0, nil, err
	}
	resp, err := n.c.HTTPClient().Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

// Log returns the agent's log so far.
func (n *Node) Log() string {
	b, _ := os.ReadFile(n.LogPath)
	return string(b)
}

// ErrNoPrimary is returned by Primary when no node answers /primary with 200.
var ErrNoPrimary = errors.New("no primary")

// Primary returns the only node whose /primary answers 200; an error if none
// or several do.
func (c *Cluster) Primary(ctx context.Context) (*Node, error) {
	var found []*Node
	for _, n := range c.Nodes {
		if code, _, err := n.API(ctx, "/primary"); err == nil && code == 200 {
			found = append(found, n)
		}
	}
	switch len(found) {
	case 0:
		return nil, ErrNoPrimary
	case 1:
		return found[0], nil
	}
	return nil, fmt.Errorf("%d nodes claim to be primary", len(found))
}

// CutEtcd partitions this node's agent from etcd (every endpoint's proxy
// becomes a black hole); RestoreEtcd reconnects it. Needs EtcdProxies.
func (n *Node) CutEtcd() {
	for _, px := range n.EtcdProxies {
		px.Cut()
	}
}

// RestoreEtcd undoes CutEtcd.
func (n *Node) RestoreEtcd() {
	for _, px := range n.EtcdProxies {
		px.Restore()
	}
}

// CutPeers partitions this node from the other members: its postgres port
// and API become black holes for them (replication, clones, API calls),
// while its clients and etcd still reach it. RestorePeers undoes it. Needs
// PeerProxies.
func (n *Node) CutPeers() {
	for _, px := range n.PeerProxies {
		px.Cut()
	}
}

// RestorePeers undoes CutPeers.
func (n *Node) RestorePeers() {
	for _, px := range n.PeerProxies {
		px.Restore()
	}
}

// SignalAgent sends sig to this node's agent process (SIGSTOP freezes it).
func (n *Node) SignalAgent(sig syscall.Signal) error {
	if !n.Running() {
		return fmt.Errorf("%s is not running", n.Name)
	}
	return n.cmd.Process.Signal(sig)
}

// CopyAgentBinaries copies cifha and cifhactl from src into root/bin (mode
// 0755) and returns that directory: the postgres user, which runs the
// agents, may not be able to reach a build directory under root's home.
func CopyAgentBinaries(src, root string) (string, error) {
	dst := filepath.Join(root, "bin")
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return "", err
	}
	for _, b := range []string{"cifha", "cifhactl"} {
		data, err := os.ReadFile(filepath.Join(src, b))
		if err != nil {
			return "", fmt.Errorf("%w (run `make build` first)", err)
		}
		if err := os.WriteFile(filepath.Join(dst, b), data, 0o755); err != nil {
			return "", err
		}
	}
	return dst, nil
}
