package lab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
)

// Etcd is a real etcd cluster with one member process on each of some lab
// hosts, at etcd's default heartbeat and election timeout (as
// deploy/systemd/etcd.service runs it), with fsync on. The lab reaches the
// members from its observer host.
type Etcd struct {
	Members []*EtcdMember
	bin     string
	obs     *Host
}

// EtcdMember is one etcd process on Host (client port 2379, peer port 2380).
type EtcdMember struct {
	Name      string
	Host      *Host
	Dir       string
	ClientURL string
	initial   string

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{}
}

// StartEtcd starts a member named after each host (root/etcd-<host>) and
// waits for a healthy cluster. bin is etcd (cifha-devetcd: etcdmain).
func StartEtcd(bin, root string, hosts []*Host, obs *Host) (*Etcd, error) {
	e := &Etcd{bin: bin, obs: obs}
	var initial []string
	for _, h := range hosts {
		initial = append(initial, fmt.Sprintf("%s=http://%s:2380", h.Name, h.Addr))
	}
	for _, h := range hosts {
		m := &EtcdMember{Name: h.Name, Host: h, Dir: filepath.Join(root, "etcd-"+h.Name),
			ClientURL: "http://" + h.Addr + ":2379", initial: strings.Join(initial, ",")}
		e.Members = append(e.Members, m)
		if err := e.start(m, "new"); err != nil {
			e.Close()
			return nil, err
		}
	}
	if err := e.WaitHealthy(60 * time.Second); err != nil {
		e.Close()
		return nil, err
	}
	return e, nil
}

// Endpoints lists the members' client URLs.
func (e *Etcd) Endpoints() []string {
	var out []string
	for _, m := range e.Members {
		out = append(out, m.ClientURL)
	}
	return out
}

func (e *Etcd) start(m *EtcdMember, state string) error {
	if err := os.MkdirAll(m.Dir, 0o700); err != nil {
		return err
	}
	lf, err := os.OpenFile(filepath.Join(m.Dir, "etcd.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	cmd := m.Host.Command(nil, e.bin, "--name", m.Name, "--data-dir", filepath.Join(m.Dir, "data"),
		"--listen-client-urls", m.ClientURL, "--advertise-client-urls", m.ClientURL,
		"--listen-peer-urls", "http://"+m.Host.Addr+":2380", "--initial-advertise-peer-urls", "http://"+m.Host.Addr+":2380",
		"--initial-cluster", m.initial, "--initial-cluster-state", state, "--initial-cluster-token", "cifha-lab",
		"--log-level", "warn")
	cmd.Stdout, cmd.Stderr = lf, lf
	if err := cmd.Start(); err != nil {
		lf.Close()
		return fmt.Errorf("start etcd %s: %w", m.Name, err)
	}
	exited := make(chan struct{})
	m.mu.Lock()
	m.cmd, m.exited = cmd, exited
	m.mu.Unlock()
	go func() { _ = cmd.Wait(); lf.Close(); close(exited) }()
	return nil
}

// Running reports whether the member's process is alive.
func (m *EtcdMember) Running() bool {
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

// PID is the member's process ID (0 when not running).
func (m *EtcdMember) PID() int {
	if !m.Running() {
		return 0
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.cmd.Process.Pid
}

// Kill ends the member with SIGKILL and waits for it to exit.
func (m *EtcdMember) Kill() {
	m.mu.Lock()
	cmd, exited := m.cmd, m.exited
	m.cmd = nil
	m.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGCONT)
	_ = cmd.Process.Kill()
	select {
	case <-exited:
	case <-time.After(10 * time.Second):
	}
}

// Signal sends sig to the member (SIGSTOP freezes it, SIGCONT thaws it).
func (m *EtcdMember) Signal(sig syscall.Signal) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.cmd == nil {
		return errors.New(m.Name + " is not running")
	}
	return m.cmd.Process.Signal(sig)
}

// Restart starts a killed member again on its data directory.
func (e *Etcd) Restart(m *EtcdMember) error {
	if m.Running() {
		return errors.New(m.Name + " is running")
	}
	return e.start(m, "existing")
}

// Isolate cuts the member's host from the other members' peer port, both
// ways (its clients still reach it); Heal undoes it. It replaces the host's
// other fault rules.
func (e *Etcd) Isolate(m *EtcdMember) error {
	var peers []string
	for _, o := range e.Members {
		if o != m {
			peers = append(peers, o.Host.Addr)
		}
	}
	return m.Host.SetFilter(Rule{Dir: Both, Peers: peers, Port: 2380})
}

// Close kills every member.
func (e *Etcd) Close() {
	for _, m := range e.Members {
		m.Kill()
	}
}

// WaitHealthy waits until every running member answers /health with a
// leader (asked from the observer host).
func (e *Etcd) WaitHealthy(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	hc := http.Client{Timeout: time.Second, Transport: &http.Transport{DialContext: e.obs.DialContext, DisableKeepAlives: true}}
	var last error
	for time.Now().Before(deadline) {
		last = nil
		for _, m := range e.Members {
			if !m.Running() {
				continue
			}
			if err := health(&hc, m); err != nil {
				last = err
			}
		}
		if last == nil {
			return nil
		}
		time.Sleep(100 * time.Millisecond) // poll interval within the deadline
	}
	return fmt.Errorf("etcd not healthy after %s: %w", timeout, last)
}

func health(hc *http.Client, m *EtcdMember) error {
	resp, err := hc.Get(m.ClientURL + "/health")
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

// Leader returns the member that is the raft leader now.
func (e *Etcd) Leader(ctx context.Context) (*EtcdMember, error) {
	for _, m := range e.Members {
		if !m.Running() {
			continue
		}
		cli, err := clientv3.New(clientv3.Config{Endpoints: []string{m.ClientURL}, DialTimeout: time.Second, Logger: zap.NewNop(),
			DialOptions: []grpc.DialOption{grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
				return e.obs.DialContext(ctx, "tcp", addr)
			})}})
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
