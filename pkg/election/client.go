package election

import (
	"fmt"
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
		// Keepalive on the gRPC connection notices a dead etcd member quickly.
		DialKeepAliveTime:    2 * time.Second,
		DialKeepAliveTimeout: 2 * time.Second,
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
