package election

import (
	"context"
	"testing"
	"time"

	"github.com/cifha/cifha/internal/testutil"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// BenchmarkRenew compares a renewal by KeepAliveOnce (a stream each) with
// one on the long-lived keepalive stream (client and in-process server
// together).
func BenchmarkRenew(b *testing.B) {
	ep := testutil.Etcd(b)
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{ep}, DialTimeout: 2 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		b.Fatal(err)
	}
	defer cli.Close()
	ctx := context.Background()
	l, err := cli.Grant(ctx, 60)
	if err != nil {
		b.Fatal(err)
	}
	b.Run("KeepAliveOnce", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := cli.KeepAliveOnce(ctx, l.ID); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("stream", func(b *testing.B) {
		k := &keepAliveStream{cli: cli}
		defer k.close()
		b.ReportAllocs()
		for b.Loop() {
			if _, err := k.renew(ctx, l.ID); err != nil {
				b.Fatal(err)
			}
		}
	})
}
