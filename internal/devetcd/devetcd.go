// Package devetcd runs a single-node etcd in-process (server/v3/embed) for
// tests and the local demo. It is never linked into the cifha agent.
package devetcd

import (
	"context"
	"fmt"
	"net/url"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// Server is a running embedded etcd.
type Server struct {
	e *embed.Etcd
	// Endpoint is the client URL, e.g. http://127.0.0.1:40123.
	Endpoint string
}

// Start starts etcd with its data in dir, serving clients on clientAddr
// (host:port; port 0 picks a free one). Loopback only.
func Start(dir, clientAddr string) (*Server, error) {
	return StartWith(dir, clientAddr, Options{})
}

// Options make the embedded etcd ask what a production one asks.
type Options struct {
	// CertFile and KeyFile serve clients over TLS (https://).
	CertFile, KeyFile string
	// ClientCAFile, with TLS, requires every client to present a
	// certificate signed by it (etcd's --client-cert-auth).
	ClientCAFile string
}

// StartWith is Start with TLS and client-certificate authentication.
func StartWith(dir, clientAddr string, o Options) (*Server, error) {
	cfg := embed.NewConfig()
	cfg.Name = "devetcd"
	cfg.Dir = dir
	cfg.LogLevel = "error"
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	cfg.UnsafeNoFsync = true // tests and demo only: durability is not the point
	// Password logins hash at bcrypt's minimum cost: each costs a
	// fraction of a second at etcd's default, many seconds under the race
	// detector on a loaded machine (tests and demo only).
	cfg.BcryptCost = 4
	scheme := "http"
	if o.CertFile != "" {
		scheme = "https"
		cfg.ClientTLSInfo.CertFile, cfg.ClientTLSInfo.KeyFile = o.CertFile, o.KeyFile
		if o.ClientCAFile != "" {
			cfg.ClientTLSInfo.TrustedCAFile = o.ClientCAFile
			cfg.ClientTLSInfo.ClientCertAuth = true
		}
	}
	cu, err := url.Parse(scheme + "://" + clientAddr)
	if err != nil {
		return nil, err
	}
	pu, _ := url.Parse("http://127.0.0.1:0")
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{*cu}, []url.URL{*cu}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{*pu}, []url.URL{*pu}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, fmt.Errorf("start embedded etcd: %w", err)
	}
	select {
	case <-e.Server.ReadyNotify():
	case <-time.After(20 * time.Second):
		e.Close()
		return nil, fmt.Errorf("embedded etcd not ready after 20s")
	}
	return &Server{e: e, Endpoint: scheme + "://" + e.Clients[0].Addr().String()}, nil
}

// Close stops etcd.
func (s *Server) Close() { s.e.Close() }

// EnableAuth turns on etcd's authentication: a root user with rootPassword,
// and user with password and a role that may read and write keys under
// prefix (what a cifha cluster needs; lease grants need only a login).
func EnableAuth(ctx context.Context, endpoint, rootPassword, user, password, prefix string) error {
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{endpoint}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		return err
	}
	defer cli.Close()
	steps := []func() error{
		func() error { _, err := cli.UserAdd(ctx, "root", rootPassword); return err },
		func() error { _, err := cli.UserGrantRole(ctx, "root", "root"); return err },
		func() error { _, err := cli.RoleAdd(ctx, "cifha"); return err },
		func() error {
			_, err := cli.RoleGrantPermission(ctx, "cifha", prefix, clientv3.GetPrefixRangeEnd(prefix), clientv3.PermissionType(clientv3.PermReadWrite))
			return err
		},
		func() error { _, err := cli.UserAdd(ctx, user, password); return err },
		func() error { _, err := cli.UserGrantRole(ctx, user, "cifha"); return err },
		func() error { _, err := cli.AuthEnable(ctx); return err },
	}
	for i, s := range steps {
		if err := s(); err != nil {
			return fmt.Errorf("enable etcd auth (step %d): %w", i+1, err)
		}
	}
	return nil
}
