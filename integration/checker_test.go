package integration

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cifha/cifha/internal/checker"
	"github.com/cifha/cifha/internal/cluster"
	"github.com/cifha/cifha/pkg/config"
)

// TestCheckerShort is the CI run of the fault checker (issue 10, acceptance
// 1): synchronous mode, three members, a 3-member etcd, one round of every
// fault in turn under client writes. Zero acknowledged rows lost, zero
// overlapping write intervals, healthy again within the bound after each.
// `make soak` runs the same checker for 1,000 seeded random rounds.
func TestCheckerShort(t *testing.T) {
	e := etcd3(t)
	var tok string
	c := newCluster(t, 3, func(o *cluster.Options) {
		tok = filepath.Join(o.Root, "secrets", "api.token")
		o.APIToken = "s3cret-token"
		o.EtcdEndpoints = e.Endpoints()
		o.EtcdProxies = true
		o.PeerProxies = true
		o.TTL = config.DefaultTTL
		o.LoopInterval = time.Second
		o.Extra = "synchronous_mode = true\n"
	})
	ctx := ctxT(t, 10*time.Minute)
	switcher := func(ctx context.Context, to string) error {
		out, err := exec.CommandContext(ctx, filepath.Join(binDir, "cifhactl"), "--endpoints", strings.Join(e.Endpoints(), ","),
			"--cluster", c.Opt.Cluster, "--token-file", tok, "switchover", "--force", "--to", to).CombinedOutput()
		if err != nil {
			t.Logf("switchover to %s: %v: %s", to, err, out)
		}
		return err
	}
	faults := checker.AllFaults
	// CIFHA_CHECK_FAULTS (comma-separated) runs only those faults, to
	// replay one.
	if v := os.Getenv("CIFHA_CHECK_FAULTS"); v != "" {
		faults = nil
		for _, f := range strings.Split(v, ",") {
			faults = append(faults, checker.Fault(f))
		}
	}
	rep, err := checker.Run(ctx, c, checker.Options{Seed: 1, Rounds: len(faults), Faults: faults, EachInTurn: true,
		Bound: 60 * time.Second, Etcd: e, Switch: switcher, Logf: t.Logf, OutageHold: 15 * time.Second})
	var b strings.Builder
	rep.Table(&b)
	t.Logf("\n%s", b.String())
	if err != nil {
		t.Fatal(err)
	}
	if !rep.OK() {
		t.Fatal("the checker found a violation (table above)")
	}
	for _, f := range faults {
		if s := rep.ByFault[f]; s == nil || s.Rounds != 1 || s.Acked == 0 {
			t.Errorf("%s: %+v", f, s)
		}
	}
}
