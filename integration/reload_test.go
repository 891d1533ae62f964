package integration

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cifha/cifha/internal/cluster"
	"github.com/cifha/cifha/internal/testutil"
)

// postToken POSTs to url with a bearer token and returns the status code.
func postToken(t *testing.T, url, token string) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader("{}"))
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// TestSIGHUPReload (issue 13, acceptance 1): SIGHUP on the running leader
// rereads its file. A new api token and a postgres parameter take effect
// with no agent or postgres restart, no failover and no new timeline; a
// changed loop_interval is reported as needing a restart; an invalid file
// is refused and changes nothing.
func TestSIGHUPReload(t *testing.T) {
	c, p, tokenFile := controlCluster(t, nil)
	pid, leader := p.PostmasterPID(), leaderName(t, c)
	tl := queryInt(t, p, "SELECT timeline_id FROM pg_control_checkpoint()")
	orig, err := os.ReadFile(p.ConfigPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.WriteFile(tokenFile, "rotated-token\n"); err != nil {
		t.Fatal(err)
	}
	text := strings.Replace(string(orig), "[log]\n", "[postgres.parameters]\nwork_mem = \"7MB\"\n\n[log]\n", 1)
	text = strings.Replace(text, fmt.Sprintf("loop_interval = %q", c.Opt.LoopInterval.String()), `loop_interval = "400ms"`, 1)
	if err := c.WriteFile(p.ConfigPath, text); err != nil {
		t.Fatal(err)
	}
	if err := p.SignalAgent(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 20*time.Second, "work_mem reloaded on "+p.Name, func() error {
		var v string
		if err := queryRow(p, "SHOW work_mem", &v); err != nil || v != "7MB" {
			return fmt.Errorf("work_mem %q (%v)", v, err)
		}
		return nil
	})
	testutil.Eventually(t, 10*time.Second, "the new token works", func() error {
		if code := postToken(t, p.APIURL+"/pause", "rotated-token"); code != 200 {
			return fmt.Errorf("pause with the new token: %d", code)
		}
		return nil
	})
	if code := postToken(t, p.APIURL+"/resume", "rotated-token"); code != 200 {
		t.Errorf("resume with the new token: %d", code)
	}
	if code := postToken(t, p.APIURL+"/pause", "s3cret-token"); code != 401 {
		t.Errorf("pause with the old token: %d, want 401", code)
	}
	if rn := status(t, p).RestartNeeded; !slices.Contains(rn, "ha.loop_interval") || slices.Contains(rn, "postgres.parameters") {
		t.Errorf("restart_needed %v, want ha.loop_interval only", rn)
	}

	// An invalid file: refused, nothing changes.
	if err := c.WriteFile(p.ConfigPath, strings.Replace(text, `work_mem = "7MB"`, `work_mem = "9MB"`+"\n[nonsense", 1)); err != nil {
		t.Fatal(err)
	}
	if err := p.SignalAgent(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, "the invalid file refused", func() error {
		if !strings.Contains(p.Log(), "reload refused: the file is invalid") {
			return fmt.Errorf("not yet")
		}
		return nil
	})
	var v string
	if err := queryRow(p, "SHOW work_mem", &v); err != nil || v != "7MB" {
		t.Errorf("work_mem %q after the refused reload (%v)", v, err)
	}
	if code := postToken(t, p.APIURL+"/resume", "rotated-token"); code != 200 {
		t.Errorf("the token after the refused reload: %d", code)
	}

	// A value postgres would refuse: refused before any file changes.
	if err := c.WriteFile(p.ConfigPath, strings.Replace(text, `work_mem = "7MB"`, `work_mem = "lots"`, 1)); err != nil {
		t.Fatal(err)
	}
	if err := p.SignalAgent(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, "the bad value refused", func() error {
		if !strings.Contains(p.Log(), "reload refused: postgres configuration not applied") || !strings.Contains(p.Log(), "postgres.parameters.work_mem") {
			return fmt.Errorf("not yet")
		}
		return nil
	})
	if b, err := os.ReadFile(p.DataDir + "/postgresql.conf"); err == nil && strings.Contains(string(b), "'lots'") {
		t.Error("the refused value reached postgresql.conf")
	}

	// No restart, no failover, no new timeline.
	if got := p.PostmasterPID(); got != pid {
		t.Errorf("postmaster %d, was %d: postgres was restarted", got, pid)
	}
	if got := leaderName(t, c); got != leader {
		t.Errorf("leader %s, was %s", got, leader)
	}
	if got := queryInt(t, p, "SELECT timeline_id FROM pg_control_checkpoint()"); got != tl {
		t.Errorf("timeline %d, was %d", got, tl)
	}
	if strings.Contains(p.Log(), "rotated-token") {
		t.Error("the token is in the agent's log")
	}
}

// queryRow scans one row of sql on n into dst.
func queryRow(n *cluster.Node, sql string, dst ...any) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, err := n.Connect(ctx)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	return conn.QueryRow(ctx, sql).Scan(dst...)
}
