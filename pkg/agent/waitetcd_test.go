package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/cifha/cifha/pkg/election"
	"github.com/hashicorp/go-hclog"
)

// TestWaitEtcd: an unreachable etcd is waited out (and said once); a
// wrong setting is returned at once; a stop ends the wait.
func TestWaitEtcd(t *testing.T) {
	unreachable := fmt.Errorf("no endpoint answered (%w): http://127.0.0.1:1: cannot connect", election.ErrUnreachable)
	wrong := errors.New("the server refused this client's certificate")
	for _, tc := range []struct {
		name    string
		results []error
		want    error
		calls   int
	}{
		{"reachable", []error{nil}, nil, 1},
		{"unreachable, then up", []error{unreachable, unreachable, nil}, nil, 3},
		{"wrong setting", []error{wrong}, wrong, 1},
		{"unreachable, then a wrong setting", []error{unreachable, wrong}, wrong, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			log := hclog.New(&hclog.LoggerOptions{Output: &buf})
			calls := 0
			err := waitEtcd(context.Background(), log, func(context.Context) error {
				r := tc.results[calls]
				calls++
				return r
			}, time.Millisecond)
			if !errors.Is(err, tc.want) || (tc.want == nil && err != nil) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
			if calls != tc.calls {
				t.Errorf("%d checks, want %d", calls, tc.calls)
			}
			if n := strings.Count(buf.String(), "waiting for etcd"); tc.calls > 1 && errors.Is(tc.results[0], election.ErrUnreachable) && n != 1 {
				t.Errorf("said %d times that it waits, want once:\n%s", n, buf.String())
			}
		})
	}
	t.Run("stopped", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		calls := 0
		err := waitEtcd(ctx, hclog.NewNullLogger(), func(context.Context) error {
			calls++
			if calls == 3 {
				cancel()
			}
			return unreachable
		}, time.Millisecond)
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("got %v, want context.Canceled", err)
		}
	})
}
