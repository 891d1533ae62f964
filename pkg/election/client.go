package election

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"net"
	"net/url"
	"strings"
	"sync"
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
			// refused certificate or a TLS mismatch is only a timeout.
			return nil, fmt.Errorf("etcd client: %w (%s)", err, Diagnose(c))
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
func Check(ctx context.Context, cli *clientv3.Client, c config.Etcd) error {
	err := CheckServers(ctx, cli)
	if !errors.Is(err, ErrNoEndpoint) {
		return err
	}
	return fmt.Errorf("%w: %s", err, Diagnose(c))
}

// Diagnose probes every endpoint (Probe) and joins what it found.
func Diagnose(c config.Etcd) string {
	why := make([]string, len(c.Endpoints))
	var wg sync.WaitGroup
	for i, ep := range c.Endpoints {
		wg.Add(1)
		go func() {
			defer wg.Done()
			why[i] = ep + ": " + Probe(c, ep)
		}()
	}
	wg.Wait()
	return strings.Join(why, "; ")
}

// Probe connects to one endpoint the way the client would and says what
// stands in the way, in terms of the [etcd] settings: a refused
// connection, a server certificate that ca_file does not verify, a client
// certificate the server refuses, or TLS on one side only. It sends
// nothing but a TLS handshake.
func Probe(c config.Etcd, ep string) string {
	tc, err := tlsConfig(c)
	if err != nil {
		return err.Error()
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
		return fmt.Sprintf("cannot connect: %v", err)
	}
	defer conn.Close()
	if !secure {
		// Does it speak TLS? Then the endpoint wants https:// and ca_file.
		tconn := tls.Client(conn, &tls.Config{InsecureSkipVerify: true}) //nolint:gosec // only asks whether TLS is spoken
		tconn.SetDeadline(time.Now().Add(timeout))
		if tconn.Handshake() == nil {
			return "the server speaks TLS: use an https:// endpoint and set etcd.ca_file (and cert_file, key_file if it requires client certificates)"
		}
		return "connects without TLS, but etcd did not answer in time (overloaded, or not an etcd client port?)"
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
			return fmt.Sprintf("the server's certificate is not signed by etcd.ca_file (%v)", err)
		case errors.As(err, &herr):
			return fmt.Sprintf("the server's certificate does not name this endpoint's host (%v)", err)
		case strings.Contains(err.Error(), "first record does not look like a TLS handshake"):
			return "the server does not speak TLS: use an http:// endpoint without etcd.ca_file"
		case strings.Contains(err.Error(), "remote error") && c.CertFile == "":
			return fmt.Sprintf("the server refused the TLS handshake; it may require a client certificate (etcd.cert_file, key_file): %v", err)
		case strings.Contains(err.Error(), "remote error"):
			return fmt.Sprintf("the server refused this client's certificate (etcd.cert_file): %v", err)
		}
		return fmt.Sprintf("TLS handshake failed: %v", err)
	}
	// With TLS 1.3 a server refuses the client's certificate after the
	// handshake: its alert is the first thing read.
	tconn.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
	var b [1]byte
	_, err = tconn.Read(b[:])
	var nerr net.Error
	switch {
	case err == nil, errors.As(err, &nerr) && nerr.Timeout():
		return "TLS is accepted, but etcd did not answer in time (overloaded, or a wrong port?)"
	case strings.Contains(err.Error(), "remote error"):
		if c.CertFile == "" {
			return fmt.Sprintf("the server requires a client certificate: set etcd.cert_file and key_file (%v)", err)
		}
		return fmt.Sprintf("the server refused this client's certificate (etcd.cert_file is not signed by the CA etcd trusts): %v", err)
	}
	return fmt.Sprintf("the server closed the connection after the TLS handshake (client certificate refused?): %v", err)
}
