package election

import (
	"context"
	"errors"
	"sync/atomic"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
)

// keepAliveStream renews leases over one long-lived LeaseKeepAlive stream,
// one request and its answer at a time.
//
// clientv3's KeepAliveOnce opens a new stream per renewal, and the client
// logs in again (etcd's Authenticate: a bcrypt hash on the server) for
// every new stream when a username and password are configured. A primary
// renews every 500 ms; against an etcd with authentication each renewal
// took 0.4-0.8 s on a loaded machine and the primary fenced (found by
// TestEtcdPasswordCluster). One stream logs in once, and saves the stream
// set-up's wake-ups without authentication too.
//
// An attempt that fails or times out closes the stream, so a late answer
// is never taken for a later request's; the next attempt opens a new one.
// Only the Session's goroutine uses it.
type keepAliveStream struct {
	cli    *clientv3.Client
	stream pb.Lease_LeaseKeepAliveClient
	cancel context.CancelFunc
}

// streamsOpened counts keepalive streams opened (tests).
var streamsOpened atomic.Int64

type keepAliveResult struct {
	resp *pb.LeaseKeepAliveResponse
	err  error
}

// renew sends one keepalive for id and waits for its answer until ctx is
// done. A lease etcd no longer has gives rpctypes.ErrLeaseNotFound, as
// KeepAliveOnce does.
func (k *keepAliveStream) renew(ctx context.Context, id clientv3.LeaseID) (*clientv3.LeaseKeepAliveResponse, error) {
	reused := k.stream != nil
	r, err := k.once(ctx, id)
	if err != nil && reused && ctx.Err() == nil && !errors.Is(err, rpctypes.ErrLeaseNotFound) {
		// The stream may have died while idle (its etcd member restarted,
		// lost the leader, or closed the connection): the request never
		// reached a live server. One fresh stream, within the same
		// attempt; the dead one is closed, so nothing on it is taken.
		r, err = k.once(ctx, id)
	}
	return r, err
}

func (k *keepAliveStream) once(ctx context.Context, id clientv3.LeaseID) (*clientv3.LeaseKeepAliveResponse, error) {
	if k.stream == nil {
		// The stream outlives this attempt, so it gets its own context;
		// setting it up is still bounded by the attempt's.
		sctx, cancel := context.WithCancel(clientv3.WithRequireLeader(context.Background()))
		stop := context.AfterFunc(ctx, cancel)
		// WaitForReady: while the connection is being (re)established the
		// stream waits for it within the attempt, as KeepAliveOnce does,
		// rather than fail at once.
		st, err := pb.NewLeaseClient(k.cli.ActiveConnection()).LeaseKeepAlive(sctx, grpc.WaitForReady(true))
		if !stop() {
			cancel()
			if err == nil {
				err = ctx.Err()
			}
			return nil, toErr(err)
		}
		if err != nil {
			cancel()
			return nil, toErr(err)
		}
		k.stream, k.cancel = st, cancel
		streamsOpened.Add(1)
	}
	st := k.stream
	ch := make(chan keepAliveResult, 1)
	go func() {
		if err := st.Send(&pb.LeaseKeepAliveRequest{ID: int64(id)}); err != nil {
			ch <- keepAliveResult{err: err}
			return
		}
		r, err := st.Recv()
		ch <- keepAliveResult{r, err}
	}()
	select {
	case r := <-ch:
		if r.err != nil {
			k.close()
			return nil, toErr(r.err)
		}
		if r.resp.TTL <= 0 {
			return nil, rpctypes.ErrLeaseNotFound
		}
		return &clientv3.LeaseKeepAliveResponse{ResponseHeader: r.resp.Header, ID: clientv3.LeaseID(r.resp.ID), TTL: r.resp.TTL}, nil
	case <-ctx.Done():
		k.close() // its answer may still come: never for the next request
		return nil, ctx.Err()
	}
}

// close ends the stream (its pending Recv returns).
func (k *keepAliveStream) close() {
	if k.cancel != nil {
		k.cancel()
	}
	k.stream, k.cancel = nil, nil
}

// toErr turns a gRPC status from etcd into its rpctypes error (as the
// client's own calls do), so errors.Is works on them.
func toErr(err error) error {
	if e := rpctypes.Error(err); e != nil {
		return e
	}
	return err
}
