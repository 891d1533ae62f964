package agent

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cifha/cifha/pkg/agent/agenttest"
	"github.com/cifha/cifha/pkg/election"
	"github.com/cifha/cifha/pkg/ha"
)

// With a NOTIFY_SOCKET (a unixgram socket, as systemd's), the agent sends
// READY=1 only once it has its lease session and has observed postgres,
// then STATUS and WATCHDOG=1 while the loop runs, and no WATCHDOG=1 once
// the loop is stuck (a long clone still counts as running).
func TestSystemdNotify(t *testing.T) {
	dir, err := os.MkdirTemp("", "sdnotify-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	sock := filepath.Join(dir, "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	t.Setenv("NOTIFY_SOCKET", sock)
	t.Setenv("WATCHDOG_USEC", "300000") // 300 ms: pings every 100 ms
	t.Setenv("WATCHDOG_PID", "")

	clk := agenttest.NewClock(t0)
	a := New(Options{Name: "db1", PG: &agenttest.Postgres{Up: true}, DCS: agenttest.NewDCS("db1", election.LeaseState{}), Now: clk.Now, TTL: 3 * time.Second})
	n := newSDNotifier(a)
	if n.watchdog != 300*time.Millisecond {
		t.Fatalf("watchdog %s from WATCHDOG_USEC", n.watchdog)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { n.run(ctx); close(done) }()
	defer func() { cancel(); <-done }()

	msgs := make(chan string, 100)
	go func() {
		buf := make([]byte, 4096)
		for {
			k, err := conn.Read(buf)
			if err != nil {
				close(msgs)
				return
			}
			msgs <- string(buf[:k])
		}
	}()
	// Nothing while the agent has not observed with its session.
	select {
	case m := <-msgs:
		t.Fatalf("sent %q before the agent was up", m)
	case <-time.After(400 * time.Millisecond): // several notifier ticks: the absence of a message is the point
	}
	a.snap.Store(&Snapshot{Member: election.Member{Name: "db1", Role: "primary", State: "running"}, IsLeader: true, ObservedAt: t0,
		Plan: ha.Plan{Action: ha.None, Reason: "healthy"}})
	a.observedUp.Store(true)
	want := func(prefix string) string {
		t.Helper()
		deadline := time.After(5 * time.Second)
		for {
			select {
			case m := <-msgs:
				if strings.HasPrefix(m, prefix) {
					return m
				}
			case <-deadline:
				t.Fatalf("no %q", prefix)
			}
		}
	}
	want("READY=1")
	if s := want("STATUS="); !strings.Contains(s, "leader, primary") {
		t.Fatalf("status %q", s)
	}
	want("WATCHDOG=1")
	want("WATCHDOG=1")
	// The loop stops observing: past ttl on the leader, the pings stop.
	clk.Advance(4 * time.Second)
	drain := time.After(300 * time.Millisecond)
	for done := false; !done; {
		select {
		case <-msgs:
		case <-drain:
			done = true
		}
	}
	select {
	case m := <-msgs:
		if m == "WATCHDOG=1" {
			t.Fatal("still pinging with the loop stuck")
		}
	case <-time.After(500 * time.Millisecond): // five watchdog periods without a ping
	}
	// A long clone holds the loop: alive.
	a.acting.Store(&actingInfo{action: ha.Clone, since: clk.Now()})
	want("WATCHDOG=1")
}
