package election

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"io"
	"net"
	"net/url"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/cifha/cifha/pkg/config"
	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// NewClient connects to etcd as configured (TLS and auth included).
func NewClient(c config.Etcd) (*clientv3.Client, error) {
	cc := clientv3.Config{
		Endpoints:   c.Endpoints,
		DialTimeout: c.DialTimeout.Duration,
		Username:    c.Username,
		Password:    c.Password,
		Logger:      zap.NewNop(),
		// Keepalive on the gRPC connection notices a dead etcd member
		// when nothing else is sent. grpc-go raises any client ping
		// interval below 10 s to 10 s; an agent sends a lease renewal every
		// ttl/4 anyway, each bounded by its own timeout.
		DialKeepAliveTime:    10 * time.Second,
		DialKeepAliveTimeout: 2 * time.Second,
		// A fixed flow-control window turns off grpc-go's bandwidth
		// estimation, which answers every response with an extra PING
		// round trip: a wake-up of both ends for nothing on an idle
		// cluster whose messages are a few hundred bytes. 1 MiB is far
		// above any value cifha reads.
		//
		// Reconnects back off to at most a second: grpc-go's default
		// grows to two minutes, so after an outage of all of etcd (30 s)
		// an agent could stay away for many seconds after etcd is back,
		// and the leader lose its key to a member that happened to
		// reconnect first (TestEtcdOutage found it).
		DialOptions: []grpc.DialOption{grpc.WithInitialWindowSize(1 << 20), grpc.WithInitialConnWindowSize(1 << 20),
			grpc.WithConnectParams(grpc.ConnectParams{
				Backoff:           backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: time.Second},
				MinConnectTimeout: max(c.DialTimeout.Duration, time.Second),
			})},
	}
	tc, err := tlsConfig(c)
	if err != nil {
		return nil, err
	}
	cc.TLS = tc
	cli, err := clientv3.New(cc)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			// With a username the client logs in while connecting: a
			// refused certificate or a TLS mismatch is only a timeout,
			// and so is an etcd that is down (ErrUnreachable).
			why, transient := diagnose(c)
			if transient {
				return nil, fmt.Errorf("etcd client: %w (%w): %s", err, ErrUnreachable, why)
			}
			return nil, fmt.Errorf("etcd client: %w (%s)", err, why)
		}
		return nil, fmt.Errorf("etcd client: %w", err)
	}
	return cli, nil
}

// tlsConfig is the client's TLS configuration, nil without TLS.
func tlsConfig(c config.Etcd) (*tls.Config, error) {
	if c.CAFile == "" && c.CertFile == "" {
		return nil, nil
	}
	ti := transport.TLSInfo{TrustedCAFile: c.CAFile, CertFile: c.CertFile, KeyFile: c.KeyFile}
	tc, err := ti.ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("etcd TLS (ca_file, cert_file, key_file): %w", err)
	}
	return tc, nil
}

// Check is CheckServers, and when no endpoint answers it says why for
// each: gRPC reports a refused certificate or a TLS mismatch only as a
// timeout, so every endpoint is probed directly (Probe).
//
// When every endpoint was down or silent (nothing says the settings are
// wrong), the error also wraps ErrUnreachable: a caller may wait for etcd
// rather than give up.
func Check(ctx context.Context, cli *clientv3.Client, c config.Etcd) error {
	err := CheckServers(ctx, cli)
	if !errors.Is(err, ErrNoEndpoint) {
		return err
	}
	if errors.Is(ctx.Err(), context.Canceled) {
		return ctx.Err() // stopping: no probes
	}
	why, transient := diagnose(c)
	if transient {
		return fmt.Errorf("%w (%w): %s", err, ErrUnreachable, why)
	}
	return fmt.Errorf("%w: %s", err, why)
}

// ErrUnreachable: no etcd endpoint could be reached, or none answered in
// time, and none refused this client's settings (TLS, certificates).
var ErrUnreachable = errors.New("etcd unreachable")

// Diagnose probes every endpoint (Probe) and joins what it found.
func Diagnose(c config.Etcd) string {
	why, _ := diagnose(c)
	return why
}

// diagnose is Diagnose, and whether every endpoint was only down or silent.
func diagnose(c config.Etcd) (string, bool) {
	why := make([]string, len(c.Endpoints))
	down := make([]bool, len(c.Endpoints))
	var wg sync.WaitGroup
	for i, ep := range c.Endpoints {
		wg.Add(1)
		go func() {
			defer wg.Done()
			msg, transient := probe(c, ep)
			why[i], down[i] = ep+": "+msg, transient
		}()
	}
	wg.Wait()
	transient := len(c.Endpoints) > 0
	for _, d := range down {
		transient = transient && d
	}
	return strings.Join(why, "; "), transient
}

// Probe connects to one endpoint the way the client would and says what
// stands in the way, in terms of the [etcd] settings: a refused
// connection, a server certificate that ca_file does not verify, a client
// certificate the server refuses, or TLS on one side only. It sends
// nothing but a TLS handshake.
func Probe(c config.Etcd, ep string) string {
	msg, _ := probe(c, ep)
	return msg
}

// probe is Probe, and whether the endpoint was only down or silent (not
// refusing this client's settings).
func probe(c config.Etcd, ep string) (string, bool) {
	tc, err := tlsConfig(c)
	if err != nil {
		return err.Error(), false
	}
	// As clientv3 chooses: https:// always TLS, http:// never (even with
	// ca_file), no scheme when TLS is configured.
	addr, secure := ep, tc != nil
	if u, err := url.Parse(ep); err == nil && u.Host != "" {
		addr, secure = u.Host, u.Scheme == "https"
	}
	timeout := max(c.DialTimeout.Duration, time.Second)
	conn, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		return fmt.Sprintf("cannot connect: %v", inner(err)), true
	}
	defer conn.Close()
	if !secure {
		// Does it speak TLS? Then the endpoint wants https:// and ca_file.
		tconn := tls.Client(conn, &tls.Config{InsecureSkipVerify: true}) //nolint:gosec // only asks whether TLS is spoken
		tconn.SetDeadline(time.Now().Add(timeout))
		if tconn.Handshake() == nil {
			return "the server speaks TLS: use an https:// endpoint and set etcd.ca_file (and cert_file, key_file if it requires client certificates)", false
		}
		return "connects without TLS, but etcd did not answer in time (overloaded, or not an etcd client port?)", true
	}
	if tc == nil {
		tc = &tls.Config{}
	}
	tc = tc.Clone()
	if tc.ServerName == "" {
		if h, _, err := net.SplitHostPort(addr); err == nil {
			tc.ServerName = h
		}
	}
	tconn := tls.Client(conn, tc)
	tconn.SetDeadline(time.Now().Add(timeout))
	if err := tconn.Handshake(); err != nil {
		var uerr x509.UnknownAuthorityError
		var herr x509.HostnameError
		switch {
		case errors.As(err, &uerr):
			return fmt.Sprintf("the server's certificate is not signed by etcd.ca_file (%v)", err), false
		case errors.As(err, &herr):
			return fmt.Sprintf("the server's certificate does not name this endpoint's host (%v)", err), false
		case strings.Contains(err.Error(), "first record does not look like a TLS handshake"):
			return "the server does not speak TLS: use an http:// endpoint without etcd.ca_file", false
		case strings.Contains(err.Error(), "remote error") && c.CertFile == "":
			return fmt.Sprintf("the server refused the TLS handshake; it may require a client certificate (etcd.cert_file, key_file): %v", err), false
		case strings.Contains(err.Error(), "remote error"):
			return fmt.Sprintf("the server refused this client's certificate (etcd.cert_file): %v", err), false
		case isTimeout(err), errors.Is(err, io.EOF), errors.Is(err, syscall.ECONNRESET):
			// A plain etcd port does not answer a ClientHello either: it
			// closes the connection or waits. Ask it in plain HTTP.
			if speaksHTTP(addr, timeout) {
				return "the server does not speak TLS: use an http:// endpoint without etcd.ca_file", false
			}
			if isTimeout(err) {
				return fmt.Sprintf("connects, but the TLS handshake did not finish in time (overloaded?): %v", inner(err)), true
			}
			return fmt.Sprintf("connects, but the connection was closed during the TLS handshake (a member down behind a proxy?): %v", inner(err)), true
		}
		return fmt.Sprintf("TLS handshake failed: %v", err), false
	}
	// With TLS 1.3 a server refuses the client's certificate after the
	// handshake: its alert is the first thing read.
	tconn.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
	var b [1]byte
	_, err = tconn.Read(b[:])
	var nerr net.Error
	switch {
	case err == nil, errors.As(err, &nerr) && nerr.Timeout():
		return "TLS is accepted, but etcd did not answer in time (overloaded, or a wrong port?)", true
	case errors.Is(err, io.EOF), errors.Is(err, syscall.ECONNRESET):
		// Go servers refuse a certificate with an alert (above); a bare
		// close is a member going away (a rolling restart).
		return fmt.Sprintf("the server closed the connection after the TLS handshake (restarting?): %v", inner(err)), true
	case strings.Contains(err.Error(), "remote error"):
		if c.CertFile == "" {
			return fmt.Sprintf("the server requires a client certificate: set etcd.cert_file and key_file (%v)", err), false
		}
		return fmt.Sprintf("the server refused this client's certificate (etcd.cert_file is not signed by the CA etcd trusts): %v", err), false
	}
	return fmt.Sprintf("the server closed the connection after the TLS handshake (client certificate refused?): %v", err), false
}

// speaksHTTP reports whether addr answers a plain HTTP request (an etcd
// client port without TLS does).
func speaksHTTP(addr string, timeout time.Duration) bool {
	conn, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		return false
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(timeout))
	if _, err := io.WriteString(conn, "GET /version HTTP/1.1\r\nHost: etcd\r\nConnection: close\r\n\r\n"); err != nil {
		return false
	}
	b := make([]byte, 5)
	_, err = io.ReadFull(conn, b)
	return err == nil && string(b) == "HTTP/"
}

// inner drops a network error's addresses (the local port differs on every
// attempt, and the agent logs a wait only when its message changes).
func inner(err error) error {
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Err != nil {
		return oe.Err
	}
	return err
}

func isTimeout(err error) bool {
	var nerr net.Error
	return errors.As(err, &nerr) && nerr.Timeout()
}
