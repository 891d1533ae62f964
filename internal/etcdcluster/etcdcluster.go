// Package etcdcluster runs a real multi-member etcd cluster for tests and
// the local demo: each member is a separate cifha-devetcd process (etcd's own
// etcdmain, built from this module), so that one member can be killed,
// frozen with SIGSTOP, or cut off from its peers while its clients still
// reach it. Loopback only.
//
// Peer isolation: every member's peer traffic goes through a proxy in this
// process (its advertised peer URL is the proxy's). etcd's peer requests
// carry the sender's advertised peer URLs in the X-PeerURLs header, so the
// proxies can drop the isolated member's connections in both directions:
// everything arriving at its own proxy, and everything it opens to the
// others'.
package etcdcluster

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// Cluster is the running members.
type Cluster struct {
	Members []*Member
	bin     string
}

// Member is one etcd process.
type Member struct {
	Name       string
	Dir        string
	ClientURL  string
	peerURL    string // the proxy, as advertised
	peerListen string // etcd's own peer listener
	proxy      *peerProxy
	initial    string
	log        *os.File

	mu  sync.Mutex
	cmd *exec.Cmd
	// exited is closed when cmd's process has exited (its Wait returned;
	// cmd.ProcessState is written by Wait and must not be read for this).
	exited chan struct{}
}

// Endpoints lists the members' client URLs.
func (c *Cluster) Endpoints() []string {
	var out []string
	for _, m := range c.Members {
		out = append(out, m.ClientURL)
	}
	return out
}

// Start starts n members under root (each in root/<name>) and waits until
// the cluster has a leader. bin is the cifha-devetcd binary.
func Start(bin, root string, n int) (*Cluster, error) {
	c := &Cluster{bin: bin}
	var initial []string
	for i := 0; i < n; i++ {
		name := fmt.Sprintf("etcd%d", i+1)
		clientPort, err := pickPort()
		if err != nil {
			return nil, err
		}
		peerPort, err := pickPort()
		if err != nil {
			return nil, err
		}
		m := &Member{Name: name, Dir: filepath.Join(root, name), ClientURL: fmt.Sprintf("http://127.0.0.1:%d", clientPort),
			peerListen: fmt.Sprintf("127.0.0.1:%d", peerPort)}
		m.proxy, err = startPeerProxy(m.peerListen)
		if err != nil {
			c.Close()
			return nil, err
		}
		m.peerURL = "http://" + m.proxy.addr()
		c.Members = append(c.Members, m)
		initial = append(initial, name+"="+m.peerURL)
	}
	for _, m := range c.Members {
		m.initial = strings.Join(initial, ",")
		if err := c.start(m, "new"); err != nil {
			c.Close()
			return nil, err
		}
	}
	// A port picked free can be taken before the member binds it (another
	// process on the machine, or a test beside this one). Such a member
	// exits at once, and WaitHealthy, which skips stopped members, would
	// hand out a cluster short of a member (seen in CI: every agent's
	// first etcd endpoint was dead). A member that exits at start gets
	// new ports and starts again; the others have formed the cluster by
	// then, and it joins them under the same peer URL (its proxy's). This
	// needs the others to have a quorum without it: with two members, or
	// two of three dead, WaitHealthy times out instead.
	for attempt := 1; ; attempt++ {
		if err := c.WaitHealthy(30 * time.Second); err != nil {
			c.Close()
			return nil, err
		}
		var dead []*Member
		for _, m := range c.Members {
			if !m.Running() {
				dead = append(dead, m)
			}
		}
		if len(dead) == 0 {
			return c, nil
		}
		if attempt == 3 {
			c.Close()
			return nil, fmt.Errorf("%s exited at start: %s", dead[0].Name, dead[0].logTail())
		}
		for _, m := range dead {
			if err := c.rebind(m); err != nil {
				c.Close()
				return nil, err
			}
		}
	}
}

// rebind starts a member that exited at start again, on new client and
// peer ports, with an empty data directory.
func (c *Cluster) rebind(m *Member) error {
	clientPort, err := pickPort()
	if err != nil {
		return err
	}
	peerPort, err := pickPort()
	if err != nil {
		return err
	}
	m.mu.Lock()
	if m.log != nil {
		m.log.Close()
		m.log = nil
	}
	m.mu.Unlock()
	if err := os.RemoveAll(filepath.Join(m.Dir, "data")); err != nil {
		return err
	}
	m.ClientURL = fmt.Sprintf("http://127.0.0.1:%d", clientPort)
	m.peerListen = fmt.Sprintf("127.0.0.1:%d", peerPort)
	m.proxy.setTarget(m.peerListen)
	return c.start(m, "new")
}

// logTail returns the end of the member's log, for an error message.
func (m *Member) logTail() string {
	b, err := os.ReadFile(filepath.Join(m.Dir, "etcd.log"))
	if err != nil {
		return err.Error()
	}
	if len(b) > 600 {
		b = b[len(b)-600:]
	}
	return strings.TrimSpace(string(b))
}

func (c *Cluster) start(m *Member, state string) error {
	if err := os.MkdirAll(m.Dir, 0o700); err != nil {
		return err
	}
	lf, err := os.OpenFile(filepath.Join(m.Dir, "etcd.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	cmd := exec.Command(c.bin, "--name", m.Name, "--data-dir", filepath.Join(m.Dir, "data"),
		"--listen-client-urls", m.ClientURL, "--advertise-client-urls", m.ClientURL,
		"--listen-peer-urls", "http://"+m.peerListen, "--initial-advertise-peer-urls", m.peerURL,
		"--initial-cluster", m.initial, "--initial-cluster-state", state, "--initial-cluster-token", "cifha-test",
		// Test and demo only: no fsync, quick elections.
		"--unsafe-no-fsync", "--heartbeat-interval", "100", "--election-timeout", "1000", "--log-level", "warn")
	cmd.Stdout, cmd.Stderr = lf, lf
	if err := cmd.Start(); err != nil {
		lf.Close()
		return fmt.Errorf("start %s: %w", m.Name, err)
	}
	exited := make(chan struct{})
	m.mu.Lock()
	m.cmd, m.log, m.exited = cmd, lf, exited
	m.mu.Unlock()
	go func() { _ = cmd.Wait(); close(exited) }()
	return nil
}

// WaitHealthy waits until every running member answers /health with a
// leader.
func (c *Cluster) WaitHealthy(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	var last error
	for time.Now().Before(deadline) {
		last = nil
		for _, m := range c.Members {
			if !m.Running() {
				continue
			}
			if err := m.health(); err != nil {
				last = err
			}
		}
		if last == nil {
			return nil
		}
		time.Sleep(50 * time.Millisecond) // poll interval within the deadline
	}
	return fmt.Errorf("etcd cluster not healthy after %s: %w", timeout, last)
}

func (m *Member) health() error {
	cl := http.Client{Timeout: time.Second}
	resp, err := cl.Get(m.ClientURL + "/health")
	if err != nil {
		return fmt.Errorf("%s: %w", m.Name, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != 200 || !strings.Contains(string(b), `"health":"true"`) {
		return fmt.Errorf("%s: %d %s", m.Name, resp.StatusCode, b)
	}
	return nil
}

// Running reports whether the member's process was started and not killed.
func (m *Member) Running() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.cmd == nil {
		return false
	}
	select {
	case <-m.exited:
		return false
	default:
		return true
	}
}

// Kill ends the member with SIGKILL.
func (m *Member) Kill() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.cmd != nil && m.cmd.Process != nil {
		_ = m.cmd.Process.Signal(syscall.SIGCONT) // a frozen process dies too
		_ = m.cmd.Process.Kill()
	}
	m.cmd = nil
}

// Freeze stops the member with SIGSTOP (its sockets stay open, nothing
// answers); Thaw resumes it.
func (m *Member) Freeze() error { return m.signal(syscall.SIGSTOP) }

// Thaw resumes a frozen member.
func (m *Member) Thaw() error { return m.signal(syscall.SIGCONT) }

func (m *Member) signal(s syscall.Signal) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.cmd == nil || m.cmd.Process == nil {
		return errors.New(m.Name + " is not running")
	}
	return m.cmd.Process.Signal(s)
}

// Restart starts a killed member again with its data directory.
func (c *Cluster) Restart(m *Member) error {
	if m.Running() {
		return errors.New(m.Name + " is running")
	}
	return c.start(m, "existing")
}

// Isolate cuts the member off from its peers, both ways; its clients still
// reach it. Heal undoes it.
func (c *Cluster) Isolate(m *Member) {
	for _, o := range c.Members {
		if o == m {
			o.proxy.setBlockAll(true)
		} else {
			o.proxy.block(m.peerURL, true)
		}
	}
}

// Heal reconnects an isolated member.
func (c *Cluster) Heal(m *Member) {
	for _, o := range c.Members {
		if o == m {
			o.proxy.setBlockAll(false)
		} else {
			o.proxy.block(m.peerURL, false)
		}
	}
}

// Close kills every member and stops the proxies.
func (c *Cluster) Close() {
	for _, m := range c.Members {
		m.Kill()
		if m.proxy != nil {
			m.proxy.close()
		}
		m.mu.Lock()
		if m.log != nil {
			m.log.Close()
		}
		m.mu.Unlock()
	}
}

// pickPort is freePort; a test replaces it to hand out a taken port.
var pickPort = freePort

// Ports freePort has handed out in this process: a member keeps its ports
// across restarts, so none is handed out twice.
var (
	portsMu    sync.Mutex
	portsGiven = map[int]bool{}
)

// freePort picks a free port below the kernel's ephemeral range: a member's
// port must still be free when the member is restarted after being
// stopped, and a port from the ephemeral range (":0") can meanwhile become
// the source port of any outgoing connection on the machine (seen when
// several checker lanes ran side by side: a restarted member could not
// bind, and the cluster never became healthy again).
func freePort() (int, error) {
	low := 32768
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if n, err := strconv.Atoi(f[0]); err == nil && n > 12000 {
				low = n
			}
		}
	}
	portsMu.Lock()
	defer portsMu.Unlock()
	for i := 0; i < 200; i++ {
		port := low - 10000 + rand.IntN(10000)
		if portsGiven[port] {
			continue // free now, but handed to a member that may not have bound it yet
		}
		ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			continue
		}
		ln.Close()
		portsGiven[port] = true
		return port, nil
	}
	return 0, fmt.Errorf("no free port in [%d, %d)", low-10000, low)
}

// peerProxy forwards one member's peer port and drops the connections of
// blocked senders (by their X-PeerURLs header) or of everyone.
type peerProxy struct {
	ln net.Listener

	mu      sync.Mutex
	target  string // the member's peer listener
	all     bool
	blocked map[string]bool
	conns   map[net.Conn]string // -> sender's peer URLs
	closed  bool
	wg      sync.WaitGroup
}

func startPeerProxy(target string) (*peerProxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &peerProxy{ln: ln, target: target, blocked: map[string]bool{}, conns: map[net.Conn]string{}}
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

func (p *peerProxy) addr() string { return p.ln.Addr().String() }

func (p *peerProxy) setTarget(target string) {
	p.mu.Lock()
	p.target = target
	p.mu.Unlock()
}

func (p *peerProxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.wg.Add(1)
		go p.serve(c)
	}
}

func (p *peerProxy) serve(c net.Conn) {
	defer p.wg.Done()
	defer c.Close()
	// The first request's headers name the sender.
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(c)
	req, err := http.ReadRequest(br)
	if err != nil {
		return
	}
	_ = c.SetReadDeadline(time.Time{})
	from := req.Header.Get("X-PeerURLs")
	if !p.track(c, from) {
		return
	}
	defer p.untrack(c)
	p.mu.Lock()
	target := p.target
	p.mu.Unlock()
	up, err := net.DialTimeout("tcp", target, 2*time.Second)
	if err != nil {
		return
	}
	defer up.Close()
	if !p.track(up, from) {
		return
	}
	defer p.untrack(up)
	if err := req.Write(up); err != nil {
		return
	}
	done := make(chan struct{}, 2)
	go func() { _, _ = io.Copy(up, br); done <- struct{}{} }()
	go func() { _, _ = io.Copy(c, up); done <- struct{}{} }()
	<-done
}

func (p *peerProxy) isBlocked(from string) bool {
	if p.all || p.closed {
		return true
	}
	for _, u := range strings.Split(from, ",") {
		if p.blocked[strings.TrimSpace(u)] {
			return true
		}
	}
	return false
}

func (p *peerProxy) track(c net.Conn, from string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.isBlocked(from) {
		return false
	}
	p.conns[c] = from
	return true
}

func (p *peerProxy) untrack(c net.Conn) {
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
}

// dropBlocked closes the tracked connections that are now blocked.
func (p *peerProxy) dropBlocked() {
	for c, from := range p.conns {
		if p.isBlocked(from) {
			c.Close()
			delete(p.conns, c)
		}
	}
}

func (p *peerProxy) setBlockAll(on bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.all = on
	p.dropBlocked()
}

func (p *peerProxy) block(peerURL string, on bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if on {
		p.blocked[peerURL] = true
	} else {
		delete(p.blocked, peerURL)
	}
	p.dropBlocked()
}

func (p *peerProxy) close() {
	p.mu.Lock()
	p.closed = true
	p.dropBlocked()
	p.mu.Unlock()
	p.ln.Close()
	p.wg.Wait()
}

// Follower returns a running member that is not the raft leader.
func (c *Cluster) Follower(ctx context.Context) (*Member, error) {
	l, err := c.Leader(ctx)
	if err != nil {
		return nil, err
	}
	for _, m := range c.Members {
		if m != l && m.Running() {
			return m, nil
		}
	}
	return nil, errors.New("no running follower")
}

// Leader returns the member that is the raft leader now.
func (c *Cluster) Leader(ctx context.Context) (*Member, error) {
	for _, m := range c.Members {
		if !m.Running() {
			continue
		}
		cli, err := clientv3.New(clientv3.Config{Endpoints: []string{m.ClientURL}, DialTimeout: time.Second, Logger: zap.NewNop()})
		if err != nil {
			continue
		}
		sctx, cancel := context.WithTimeout(ctx, time.Second)
		st, err := cli.Status(sctx, m.ClientURL)
		cancel()
		cli.Close()
		if err == nil && st.Leader != 0 && st.Leader == st.Header.MemberId {
			return m, nil
		}
	}
	return nil, errors.New("no member reports itself as the etcd leader")
}
