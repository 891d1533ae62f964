package agent

import (
	"context"
	"github.com/cifha/cifha/pkg/ha"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/cifha/cifha/internal/testutil"
	"github.com/cifha/cifha/pkg/pgctl"
	"github.com/hashicorp/go-hclog"
)

// TestHooksFireOnTransitionsAndNeverBlock: on_start, on_role_change and
// on_stop fire from consecutive observations, get action, role and cluster
// as arguments, and a hook slower than its timeout is killed without the
// loop ever waiting for it.
func TestHooksFireOnTransitionsAndNeverBlock(t *testing.T) {
	log := filepath.Join(t.TempDir(), "hooks.log")
	argv := []string{"sh", "-c", `echo "$0 $1 $2" >> ` + log + `; sleep 10`}
	a := New(Options{Name: "db1", Hooks: Hooks{OnStart: argv, OnStop: argv, OnRoleChange: argv, Timeout: 200 * time.Millisecond, Cluster: "cif"},
		Log: hclog.NewNullLogger()})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { a.hooks.run(ctx); close(done) }()
	defer func() { cancel(); <-done }()

	standby := ha.Observation{Running: true, PG: &pgctl.Status{InRecovery: true}}
	primary := ha.Observation{Running: true, PG: &pgctl.Status{}, HoldsLeader: true}
	stopped := ha.Observation{}
	start := time.Now()
	for _, o := range []ha.Observation{standby, standby, primary, primary, stopped} {
		a.hooksAfter(o)
	}
	// Each hook outlives its 200 ms timeout (killed, then a 1 s wait delay):
	// had the loop waited for them, these five calls would take seconds.
	if d := time.Since(start); d > time.Second {
		t.Errorf("firing hooks took %s: the loop waited for them", d)
	}
	testutil.Eventually(t, 5*time.Second, "three hooks ran, in order", func() error {
		b, _ := os.ReadFile(log)
		want := "on_start replica cif\non_role_change primary cif\non_stop primary cif\n"
		if string(b) != want {
			return &strErr{string(b)}
		}
		return nil
	})
}

type strErr struct{ s string }

func (e *strErr) Error() string { return "hooks.log: " + e.s }
