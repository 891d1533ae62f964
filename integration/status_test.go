package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cifha/cifha/internal/testutil"
)

// TestStatusExitCodes (issue 13, acceptance 4): `cifhactl status` exits 0
// on a healthy cluster and 1, with the reason, when a member's postgres
// is stopped, when a standby is not streaming, and when a member whose
// agent is gone still has a slot on the leader.
func TestStatusExitCodes(t *testing.T) {
	c, p, tok := controlCluster(t, nil)
	healthy := func(what string) {
		t.Helper()
		testutil.Eventually(t, 60*time.Second, "status exits 0 "+what, func() error {
			st, code := statusJSON(t, c)
			if code != 0 || !st.Healthy {
				return fmt.Errorf("exit %d, healthy %v, problems %v", code, st.Healthy, st.Problems)
			}
			return nil
		})
	}
	unhealthy := func(what, reason string) {
		t.Helper()
		testutil.Eventually(t, 30*time.Second, "status exits 1: "+what, func() error {
			st, code := statusJSON(t, c)
			if code != 1 || st.Healthy || !strings.Contains(strings.Join(st.Problems, "\n"), reason) {
				return fmt.Errorf("exit %d, healthy %v, problems %v", code, st.Healthy, st.Problems)
			}
			return nil
		})
	}
	ctl := func(args ...string) {
		t.Helper()
		if out, code := cifhactl(t, c, append([]string{"--token-file", tok}, args...)...); code != 0 {
			t.Fatalf("cifhactl %v: exit %d: %s", args, code, out)
		}
	}
	healthy("on a healthy cluster")
	s1, s2 := others(c, p)[0], others(c, p)[1]

	// A stopped postgres (paused: the agent does not restart it).
	ctl("pause")
	if err := syscall.Kill(s1.PostmasterPID(), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	unhealthy("a stopped postgres", "member "+s1.Name+": not streaming")
	ctl("resume")
	healthy("after " + s1.Name + " restarted")

	// A standby that cannot stream: its replication login no longer works.
	pw, err := os.ReadFile(filepath.Join(c.Opt.Root, "secrets", "replication.password"))
	if err != nil {
		t.Fatal(err)
	}
	ctl("pause")
	exec1(t, p, "ALTER ROLE replicator PASSWORD 'not-the-one-in-the-file'")
	exec1(t, p, fmt.Sprintf("SELECT pg_terminate_backend(pid) FROM pg_stat_replication WHERE application_name = '%s'", s2.Name))
	unhealthy("a standby that does not stream", "member "+s2.Name+": not streaming")
	exec1(t, p, fmt.Sprintf("ALTER ROLE replicator PASSWORD '%s'", strings.ReplaceAll(strings.TrimSpace(string(pw)), "'", "''")))
	ctl("resume")
	healthy("after " + s2.Name + " streams again")

	// A member whose agent is gone: its key expires, its slot stays.
	if err := s1.Stop(30 * time.Second); err != nil {
		t.Fatal(err)
	}
	unhealthy("a gone member's slot", "replication slot")
}
