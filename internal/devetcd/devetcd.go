// Package devetcd runs a single-node etcd in-process (server/v3/embed) for
// tests and the local demo. It is never linked into the cifha agent.
package devetcd

import (
	"fmt"
	"net/url"
	"time"

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
	cfg := embed.NewConfig()
	cfg.Name = "devetcd"
	cfg.Dir = dir
	cfg.LogLevel = "error"
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	cfg.UnsafeNoFsync = true // tests and demo only: durability is not the point
	cu, err := url.Parse("http://" + clientAddr)
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
	return &Server{e: e, Endpoint: "http://" + e.Clients[0].Addr().String()}, nil
}

// Close stops etcd.
func (s *Server) Close() { s.e.Close() }
