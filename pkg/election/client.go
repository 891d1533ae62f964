package election

import (
	"fmt"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
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
	if c.CAFile != "" || c.CertFile != "" {
		ti := transport.TLSInfo{TrustedCAFile: c.CAFile, CertFile: c.CertFile, KeyFile: c.KeyFile}
		tc, err := ti.ClientConfig()
		if err != nil {
			return nil, fmt.Errorf("etcd TLS: %w", err)
		}
		cc.TLS = tc
	}
	cli, err := clientv3.New(cc)
	if err != nil {
		return nil, fmt.Errorf("etcd client: %w", err)
	}
	return cli, nil
}
