package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cifha/cifha/internal/cluster"
	"github.com/cifha/cifha/internal/testutil"
	"github.com/cifha/cifha/pkg/ctl"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// watchPrimaries polls every node's /primary until stop is closed and
// returns the set of nodes that ever answered 200.
func watchPrimaries(t *testing.T, c *cluster.Cluster) (stop func() map[string]bool) {
	ctx := ctxT(t, 5*time.Minute)
	seen := map[string]bool{}
	var mu sync.Mutex
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		for {
			for _, n := range c.Nodes {
				if code, _, err := n.API(ctx, "/primary"); err == nil && code == 200 {
					mu.Lock()
					seen[n.Name] = true
					mu.Unlock()
				}
			}
			select {
			case <-done:
				return
			case <-time.After(50 * time.Millisecond):
			}
		}
	}()
	return func() map[string]bool {
		close(done)
		<-finished
		mu.Lock()
		defer mu.Unlock()
		return seen
	}
}

func timelines(t *testing.T, c *cluster.Cluster) map[string]int {
	out := map[string]int{}
	for _, n := range c.Nodes {
		out[n.Name] = status(t, n).Self.Timeline
	}
	return out
}

// TestCrashedPostmasterRestartsInPlace: kill -9 the primary's postmaster
// with its agent alive; the agent restarts it in place, it is primary again,
// and no standby is promoted. Then: restart every agent (clean stop,
// start); the same primary comes back and nothing is re-cloned.
func TestCrashedPostmasterRestartsInPlace(t *testing.T) {
	c := newCluster(t, 3, nil)
	p := waitHealthy(t, c, 60*time.Second)
	ctx := ctxT(t, 2*time.Minute)

	t.Run("kill -9 postmaster", func(t *testing.T) {
		pid := p.PostmasterPID()
		if pid == 0 {
			t.Fatal("no postmaster pid")
		}
		stop := watchPrimaries(t, c)
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		testutil.Eventually(t, 30*time.Second, "postmaster restarted in place", func() error {
			if np := p.PostmasterPID(); np == 0 || np == pid {
				return fmt.Errorf("postmaster pid %d", np)
			}
			got, err := c.Primary(ctx)
			if err != nil {
				return err
			}
			if got != p {
				return fmt.Errorf("primary is %s", got.Name)
			}
			return nil
		})
		waitHealthy(t, c, 30*time.Second)
		seen := stop()
		if len(seen) != 1 || !seen[p.Name] {
			t.Errorf("nodes seen as primary during the crash: %v", seen)
		}
		for name, tl := range timelines(t, c) {
			if tl != 1 {
				t.Errorf("%s on timeline %d: something was promoted", name, tl)
			}
		}
		if !strings.Contains(p.Log(), "starting it in place") {
			t.Error("agent log does not show the in-place restart")
		}
	})

	t.Run("restart every agent", func(t *testing.T) {
		inodes := map[string]uint64{}
		for _, n := range c.Nodes {
			inodes[n.Name] = inode(t, n.DataDir)
		}
		var wg sync.WaitGroup
		for _, n := range c.Nodes {
			wg.Add(1)
			go func(n *cluster.Node) {
				defer wg.Done()
				if err := n.Stop(30 * time.Second); err != nil {
					t.Error(err)
				}
			}(n)
		}
		wg.Wait()
		for _, n := range c.Nodes {
			if n.PostmasterPID() != 0 {
				t.Errorf("%s: postgres still running after its agent stopped", n.Name)
			}
		}
		logLen := map[string]int{}
		for _, n := range c.Nodes {
			logLen[n.Name] = len(n.Log())
		}
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		if got := waitHealthy(t, c, 60*time.Second); got != p {
			t.Errorf("primary after restart is %s, was %s", got.Name, p.Name)
		}
		for _, n := range c.Nodes {
			if got := inode(t, n.DataDir); got != inodes[n.Name] {
				t.Errorf("%s: data directory replaced (re-cloned)", n.Name)
			}
			if after := n.Log()[logLen[n.Name]:]; strings.Contains(after, "cloning") || strings.Contains(after, "initdb") {
				t.Errorf("%s re-cloned or re-initialised after restart", n.Name)
			}
		}
		for name, tl := range timelines(t, c) {
			if tl != 1 {
				t.Errorf("%s on timeline %d after restart", name, tl)
			}
		}
	})
}

func inode(t *testing.T, path string) uint64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Sys().(*syscall.Stat_t).Ino
}

func cifhactl(t *testing.T, c *cluster.Cluster, args ...string) (string, int) {
	t.Helper()
	args = append([]string{"--endpoints", strings.Join(c.Opt.EtcdEndpoints, ","), "--cluster", c.Opt.Cluster}, args...)
	cmd := exec.Command(filepath.Join(binDir, "cifhactl"), args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return out.String() + errb.String(), code
}

func statusJSON(t *testing.T, c *cluster.Cluster) (ctl.ClusterStatus, int) {
	t.Helper()
	out, code := cifhactl(t, c, "status", "--json")
	var st ctl.ClusterStatus
	// stderr (problems) follows the JSON document; decode the first value.
	if err := json.NewDecoder(strings.NewReader(out)).Decode(&st); err != nil {
		t.Fatalf("status --json does not parse: %v\n%s", err, out)
	}
	return st, code
}

// TestStatusAPIAndGarbage: cifhactl status (table and JSON, lag while a
// standby's replay is paused under writes and back to 0 after resume), the
// /primary /replica /health endpoints on each node, and garbage put by hand
// into member and leader keys.
func TestStatusAPIAndGarbage(t *testing.T) {
	c := newCluster(t, 3, nil)
	p := waitHealthy(t, c, 60*time.Second)
	ctx := ctxT(t, 2*time.Minute)

	t.Run("endpoints", func(t *testing.T) {
		for _, n := range c.Nodes {
			want := map[string]int{"/health": 200, "/primary": 503, "/replica": 200}
			if n == p {
				want["/primary"], want["/replica"] = 200, 503
			}
			for path, code := range want {
				got, body, err := n.API(ctx, path)
				if err != nil || got != code {
					t.Errorf("%s %s = %d (%v), want %d: %s", n.Name, path, got, err, code, body)
				}
			}
		}
	})

	t.Run("status table and json", func(t *testing.T) {
		out, code := cifhactl(t, c, "status")
		if code != 0 {
			t.Fatalf("status exit %d:\n%s", code, out)
		}
		for _, want := range []string{"Cluster: it", "Member", "Lag (bytes)", "Lag (MB)", p.Name + " *", "Leader", "Replica", "streaming", "127.0.0.11:5432"} {
			if !strings.Contains(out, want) {
				t.Errorf("status table lacks %q:\n%s", want, out)
			}
		}
		st, code := statusJSON(t, c)
		if code != 0 || st.Leader != p.Name || len(st.Members) != 3 {
			t.Fatalf("status --json: exit %d %+v", code, st)
		}
		if out, code := cifhactl(t, c, "list"); code != 0 || !strings.Contains(out, "Cluster: it") {
			t.Errorf("list alias: %d %s", code, out)
		}
	})

	t.Run("lag while replay is paused", func(t *testing.T) {
		var s *cluster.Node
		for _, n := range c.Nodes {
			if n != p {
				s = n
				break
			}
		}
		sc, err := s.Connect(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer sc.Close(ctx)
		pc, err := p.Connect(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer pc.Close(ctx)
		if _, err := sc.Exec(ctx, "SELECT pg_wal_replay_pause()"); err != nil {
			t.Fatal(err)
		}
		if _, err := pc.Exec(ctx, "CREATE TABLE IF NOT EXISTS lagprobe (x int)"); err != nil {
			t.Fatal(err)
		}
		lagOf := func(st ctl.ClusterStatus) *int64 {
			for _, m := range st.Members {
				if m.Name == s.Name {
					return m.LagBytes
				}
			}
			return nil
		}
		testutil.Eventually(t, 20*time.Second, "lag > 0 while replay is paused", func() error {
			if _, err := pc.Exec(ctx, "INSERT INTO lagprobe SELECT generate_series(1, 1000)"); err != nil {
				return err
			}
			st, _ := statusJSON(t, c)
			if l := lagOf(st); l == nil || *l == 0 {
				return fmt.Errorf("lag %v", l)
			}
			return nil
		})
		testutil.Eventually(t, 10*time.Second, "table shows the paused replay", func() error {
			if out, _ := cifhactl(t, c, "status"); !strings.Contains(out, "replay paused") {
				return fmt.Errorf("table:\n%s", out)
			}
			return nil
		})
		if _, err := sc.Exec(ctx, "SELECT pg_wal_replay_resume()"); err != nil {
			t.Fatal(err)
		}
		testutil.Eventually(t, 20*time.Second, "lag back to 0 after resume", func() error {
			st, _ := statusJSON(t, c)
			if l := lagOf(st); l == nil || *l != 0 {
				return fmt.Errorf("lag %v", l)
			}
			return nil
		})
	})

	t.Run("garbage in member and leader keys", func(t *testing.T) {
		cli, err := clientv3.New(clientv3.Config{Endpoints: c.Opt.EtcdEndpoints, DialTimeout: 2 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		defer cli.Close()
		var s *cluster.Node
		for _, n := range c.Nodes {
			if n != p {
				s = n
			}
		}
		prefix := "/cifha/" + c.Opt.Cluster + "/"
		if _, err := cli.Put(ctx, prefix+"members/"+s.Name, `{"name": "`+s.Name+`", "role": [`); err != nil {
			t.Fatal(err)
		}
		if _, err := cli.Put(ctx, prefix+"members/ghost", `not json at all`); err != nil {
			t.Fatal(err)
		}
		if _, err := cli.Put(ctx, prefix+"leader", `{"garbage": true}`); err != nil {
			t.Fatal(err)
		}
		testutil.Eventually(t, 20*time.Second, "agents ignore the garbage and repair what is theirs", func() error {
			for _, n := range c.Nodes {
				if !n.Running() {
					t.Fatalf("%s exited: %s", n.Name, tail(n.Log(), 20))
				}
			}
			if !strings.Contains(p.Log(), "ignoring invalid key") {
				return fmt.Errorf("not logged yet")
			}
			st, _ := statusJSON(t, c)
			if st.Leader != p.Name {
				return fmt.Errorf("leader %q", st.Leader)
			}
			for _, m := range st.Members {
				if m.Name == s.Name && m.State != "streaming" {
					return fmt.Errorf("%s member key not rewritten: %+v", s.Name, m)
				}
			}
			return nil
		})
		if got := waitHealthy(t, c, 20*time.Second); got != p {
			t.Errorf("primary changed to %s", got.Name)
		}
		out, _ := cifhactl(t, c, "status")
		if !strings.Contains(out, "ignored key") || !strings.Contains(out, "ghost") {
			t.Errorf("status does not list the ignored key:\n%s", out)
		}
	})
}

// TestPauseAndResume: `cifhactl pause` (through the token-protected control
// API): a killed postmaster is not restarted and no standby is promoted,
// status says PAUSED; `resume`: the agent restarts it. No token or a wrong
// one: 401 and nothing changes.
func TestPauseAndResume(t *testing.T) {
	var tokenFile string
	c := newCluster(t, 3, func(o *cluster.Options) {
		tokenFile = filepath.Join(o.Root, "secrets", "api.token")
		o.APIToken = "s3cret-token"
	})
	p := waitHealthy(t, c, 60*time.Second)
	ctx := ctxT(t, time.Minute)
	wrong := filepath.Join(t.TempDir(), "wrong")
	os.WriteFile(wrong, []byte("nope"), 0o600)
	if out, code := cifhactl(t, c, "--token-file", wrong, "pause"); code == 0 || !strings.Contains(out, "missing or wrong token") {
		t.Fatalf("wrong token: exit %d: %s", code, out)
	}
	if code, _, _ := postNoAuth(ctx, p.APIURL+"/pause"); code != 401 {
		t.Fatalf("no token: %d", code)
	}
	if st, _ := statusJSON(t, c); st.Paused {
		t.Fatal("paused by a refused request")
	}
	if out, code := cifhactl(t, c, "--token-file", tokenFile, "pause"); code != 0 {
		t.Fatalf("pause: exit %d: %s", code, out)
	}
	testutil.Eventually(t, 10*time.Second, "status shows PAUSED", func() error {
		out, _ := cifhactl(t, c, "status")
		if !strings.Contains(out, "PAUSED") {
			return fmt.Errorf("status:\n%s", out)
		}
		return nil
	})
	// The primary's own loop must have seen the pause (its watch may be a
	// moment behind what cifhactl read from etcd).
	testutil.Eventually(t, 10*time.Second, p.Name+" plans as paused", func() error {
		if pl := status(t, p).Plan; !strings.Contains(pl, "paused") {
			return fmt.Errorf("plan %q", pl)
		}
		return nil
	})
	pm := p.PostmasterPID()
	stopWatch := watchPrimaries(t, c)
	syscall.Kill(pm, syscall.SIGKILL)
	testutil.Eventually(t, 10*time.Second, "postmaster gone", func() error {
		if p.PostmasterPID() != 0 {
			return fmt.Errorf("still there")
		}
		return nil
	})
	time.Sleep(2 * c.Opt.TTL) // a window in which, unpaused, it would have been restarted
	if p.PostmasterPID() != 0 {
		t.Fatal("postmaster restarted while paused")
	}
	if seen := stopWatch(); len(seen) > 1 || (len(seen) == 1 && !seen[p.Name]) {
		t.Fatalf("failover while paused: %v", seen)
	}
	if out, code := cifhactl(t, c, "--token-file", tokenFile, "resume"); code != 0 {
		t.Fatalf("resume: exit %d: %s", code, out)
	}
	if got := waitHealthy(t, c, 30*time.Second); got != p {
		t.Fatalf("primary after resume is %s", got.Name)
	}
}

func postNoAuth(ctx context.Context, url string) (int, []byte, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b, nil
}
