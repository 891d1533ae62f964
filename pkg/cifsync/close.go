package cifsync

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

// Why cif-sync closes connections to the old primary.
//
// CIF v1 connects with DBI/DBD::Pg and a DSN of database and host only: no
// port, no connect_timeout, no keepalives. When the old primary is black-
// holed (its host isolated, a one-way cut, a paused VM), a CIF process in a
// query, or in a connect, to it waits for TCP: about 15 minutes of
// retransmissions for an open connection (tcp_retries2), two minutes for a
// connect (tcp_syn_retries). Rewriting ~/.cif does not reach it: it reads
// the file again only when it reconnects, and it will not reconnect until
// its socket fails.
//
// So, after every change of [db] host, cif-sync aborts this node's TCP
// connections to the previous host's port 5432, the kernel's SOCK_DESTROY
// (what `ss -K` does). A blocked read or connect fails at once with
// "Software caused connection abort"; the client reconnects, reads the new
// host, and commits on the new primary well within a second. Timeouts in
// the client (PGCONNECT_TIMEOUT, keepalives) are the second line, for
// clients on other hosts (docs/cif.md): they bound the wait, but only by
// seconds, and only for connects and idle sockets.
//
// Only connections to the previous [db] host on 5432 are aborted, and only
// when the value changed: a connection there belongs to a CIF process
// that was talking to the old primary, which is now fenced or demoted. A
// sound old primary (a switchover) has closed them itself already.
//
// It needs CAP_NET_ADMIN (cif-sync runs as root, deploy/systemd). The
// kernel needs CONFIG_INET_DIAG_DESTROY, which Debian's kernels have.

// CIFPort is where CIF connects: its [db] block has no port key.
const CIFPort = 5432

// CloseConnections aborts this host's TCP connections to host:port (every
// address the name resolves to), with iproute2's `ss -K`. It returns how
// many it aborted.
func CloseConnections(ctx context.Context, host string, port int) (int, error) {
	return closeConnections(ctx, host, port, nil)
}

// closeConnections runs ss as cred (nil: as this process; tests run it
// unprivileged).
func closeConnections(ctx context.Context, host string, port int, cred *syscall.Credential) (int, error) {
	if host == "" {
		return 0, nil
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	addrs := []string{host}
	if net.ParseIP(host) == nil {
		var err error
		if addrs, err = net.DefaultResolver.LookupHost(ctx, host); err != nil {
			return 0, fmt.Errorf("close connections to the old primary %s: %w", host, err)
		}
	}
	ss, err := exec.LookPath("ss")
	if err != nil {
		return 0, fmt.Errorf("close connections to the old primary %s: %w (apt-get install iproute2)", host, err)
	}
	n := 0
	for _, a := range addrs {
		ip := net.ParseIP(a)
		if ip == nil {
			continue
		}
		dst := ip.String()
		if ip.To4() == nil {
			dst = "[" + dst + "]"
		}
		// -K prints each socket it destroyed (with -H, no header line).
		// Without CAP_NET_ADMIN it exits 0, destroys nothing and says so
		// on stderr ("SOCK_DESTROY answers: Operation not permitted").
		cmd := exec.CommandContext(ctx, ss, "-K", "-H", "-t", "-n", "dst", dst, "dport", "=", fmt.Sprintf(":%d", port))
		if cred != nil {
			cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
		}
		var stderr strings.Builder
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err == nil && stderr.Len() > 0 {
			err = errors.New("destroyed nothing (cif-sync needs CAP_NET_ADMIN: run it as root, as deploy/systemd does)")
		}
		if err != nil {
			return n, fmt.Errorf("close connections to the old primary %s: ss -K: %w: %s", host, err, strings.TrimSpace(stderr.String()))
		}
		for _, l := range strings.Split(string(out), "\n") {
			if strings.TrimSpace(l) != "" {
				n++
			}
		}
	}
	return n, nil
}

// CanCloseConnections checks, on loopback, that this process can abort a
// connection the way cif-sync does after a change (`cifha doctor
// --cif-sync`): a connection to a listener of its own, blocked in a read,
// must fail at once.
func CanCloseConnections(ctx context.Context) error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		if c, err := ln.Accept(); err == nil {
			accepted <- c
		}
	}()
	c, err := net.DialTimeout("tcp", ln.Addr().String(), time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	select {
	case s := <-accepted:
		defer s.Close()
	case <-time.After(time.Second):
		return errors.New("loopback accept timed out")
	}
	read := make(chan error, 1)
	go func() {
		_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
		_, err := c.Read(make([]byte, 1))
		read <- err
	}()
	n, err := CloseConnections(ctx, "127.0.0.1", ln.Addr().(*net.TCPAddr).Port)
	if err != nil {
		return err
	}
	if n != 1 {
		return fmt.Errorf("ss -K closed %d loopback connections, want 1 (does the kernel have CONFIG_INET_DIAG_DESTROY?)", n)
	}
	if err := <-read; err == nil || os.IsTimeout(err) {
		return fmt.Errorf("a blocked read was not ended (%v)", err)
	}
	return nil
}
