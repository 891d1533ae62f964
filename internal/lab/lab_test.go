package lab

import (
	"context"
	"io"
	"net"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cifha/cifha/internal/testutil"
)

func needRoot(t *testing.T) { t.Helper(); testutil.NeedRoot(t, "the lab tests") }

// echo serves one line back on ln until it is closed.
func echo(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() { defer c.Close(); _, _ = io.Copy(c, c) }()
	}
}

// reach reports whether a dial from a to b's echo server on port works
// both ways within a short timeout.
func reach(a, b *Host, port string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 700*time.Millisecond)
	defer cancel()
	c, err := a.DialContext(ctx, "tcp", net.JoinHostPort(b.Addr, port))
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(700 * time.Millisecond))
	if _, err := c.Write([]byte("x")); err != nil {
		return err
	}
	buf := make([]byte, 1)
	_, err = io.ReadFull(c, buf)
	return err
}

// TestLabNetwork: hosts reach each other only inside the lab, rules drop
// what they say (both ways, one way, one port), and Close leaves nothing.
func TestLabNetwork(t *testing.T) {
	needRoot(t)
	id := NewID()
	l, err := New(id, []HostSpec{{"a", 1}, {"b", 2}, {"c", 3}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	a, b, c := l.Host("a"), l.Host("b"), l.Host("c")
	for _, h := range []*Host{b, c} {
		for _, port := range []string{"7000", "7001"} {
			ln, err := h.Listen("tcp", net.JoinHostPort(h.Addr, port))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { ln.Close() })
			go echo(ln)
		}
	}
	if err := reach(a, b, "7000"); err != nil {
		t.Fatalf("a to b: %v", err)
	}
	// The root namespace has no address or route of the lab's (checked
	// by listing, never by sending: the root namespace's default route
	// leads off this machine).
	out, _ := exec.Command("ip", "-4", "addr", "show").Output()
	if strings.Contains(string(out), Subnet+".") {
		t.Fatalf("the root namespace has a lab address: %s", out)
	}
	// No default route in a host.
	out, _ = exec.Command("ip", "-n", a.NS, "route", "show", "default").Output()
	if strings.TrimSpace(string(out)) != "" {
		t.Fatalf("default route in %s: %s", a.NS, out)
	}

	if err := b.SetFilter(Rule{Dir: Both, Peers: []string{a.Addr}}); err != nil {
		t.Fatal(err)
	}
	if reach(a, b, "7000") == nil {
		t.Fatal("a reaches b through a both-ways cut")
	}
	if err := reach(c, b, "7000"); err != nil {
		t.Fatalf("c no longer reaches b: %v", err)
	}
	if err := b.SetFilter(Rule{Dir: In, Peers: []string{a.Addr}, Port: 7001}); err != nil {
		t.Fatal(err)
	}
	if err := reach(a, b, "7000"); err != nil {
		t.Fatalf("a to b's other port: %v", err)
	}
	if reach(a, b, "7001") == nil {
		t.Fatal("a reaches b's cut port")
	}
	if err := b.Heal(); err != nil {
		t.Fatal(err)
	}
	if err := reach(a, b, "7001"); err != nil {
		t.Fatalf("after heal: %v", err)
	}

	// Processes started in a host are its processes, and Close ends them.
	cmd := b.Command(&syscall.Credential{Uid: 65534, Gid: 65534}, "sleep", "600")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	deadline := time.Now().Add(5 * time.Second)
	for !contains(b.PIDs(), cmd.Process.Pid) {
		if time.Now().After(deadline) {
			t.Fatalf("pid %d not among %s's %v", cmd.Process.Pid, b.Name, b.PIDs())
		}
		time.Sleep(20 * time.Millisecond) // poll within the deadline
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("the host's process survived Close")
	}
	if left, _ := Namespaces(id); len(left) > 0 {
		t.Fatalf("left behind: %v", left)
	}
}

func contains(s []int, v int) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// roundTrip sends one byte on c and waits for its echo.
func roundTrip(t *testing.T, c net.Conn) time.Duration {
	t.Helper()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	start := time.Now()
	if _, err := c.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	return time.Since(start)
}

// TestLabDelay: SetDelay holds what a host sends, on a connection made
// before the delay too (a relay would miss it), and 0 removes it. Only
// lower bounds are asserted: a delayed packet can never arrive early.
func TestLabDelay(t *testing.T) {
	needRoot(t)
	l, err := New(NewID(), []HostSpec{{"a", 1}, {"b", 2}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	a, b := l.Host("a"), l.Host("b")
	ln, err := b.Listen("tcp", net.JoinHostPort(b.Addr, "7000"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go echo(ln)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := a.DialContext(ctx, "tcp", net.JoinHostPort(b.Addr, "7000"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	roundTrip(t, c)
	if err := l.SetDelay(150*time.Millisecond, a, b); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		if rt := roundTrip(t, c); rt < 300*time.Millisecond {
			t.Fatalf("round trip %s on a link delayed 150ms each way", rt)
		}
	}
	// A bulk transfer crosses the delayed switch whole (large segments
	// included).
	big := make([]byte, 1<<20)
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	go func() { _, _ = c.Write(big) }()
	if _, err := io.ReadFull(c, make([]byte, len(big))); err != nil {
		t.Fatalf("1 MiB through the delayed switch: %v", err)
	}
	if err := l.SetDelay(0); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("ip", "-n", l.sw, "link", "show", "master", "br0").CombinedOutput()
	if err != nil || !strings.Contains(string(out), a.port+"@") || !strings.Contains(string(out), b.port+"@") {
		t.Fatalf("ports not back on the bridge: %s %v", out, err)
	}
	roundTrip(t, c)
	if err := l.SetDelay(2*time.Minute, a); err == nil {
		t.Fatal("a 2m delay was accepted")
	}
}
