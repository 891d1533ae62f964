package cifsync

import (
	"context"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cifha/cifha/internal/testutil"
)

// TestCloseConnections: a client blocked reading from a server that never
// answers (a black-holed primary, as CIF sees it) gets an error at once
// when its connection is closed; a connection to another port is left
// alone. Real sockets, real ss -K (needs root: CAP_NET_ADMIN).
func TestCloseConnections(t *testing.T) {
	testutil.NeedRoot(t, "ss -K")
	listen := func() (net.Listener, int) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ln.Close() })
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				t.Cleanup(func() { c.Close() }) // held open, never answered
			}
		}()
		return ln, ln.Addr().(*net.TCPAddr).Port
	}
	_, port := listen()
	_, other := listen()
	dial := func(p int) (net.Conn, chan error) {
		c, err := net.Dial("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		read := make(chan error, 1)
		go func() {
			_, err := c.Read(make([]byte, 1))
			read <- err
		}()
		return c, read
	}
	_, blocked := dial(port)
	_, untouched := dial(other)
	n, err := CloseConnections(context.Background(), "127.0.0.1", port)
	if err != nil {
		t.Fatal(err)
	}
	if n != 1 {
		t.Errorf("closed %d connections to :%d, want 1 (the client's; the server's accepted end has the port as its source)", n, port)
	}
	select {
	case err := <-blocked:
		if err == nil {
			t.Fatal("the blocked read returned no error")
		}
		t.Logf("blocked read: %v", err)
	case <-time.After(5 * time.Second):
		t.Fatal("the blocked read was not ended")
	}
	select {
	case err := <-untouched:
		t.Fatalf("a connection to another port was closed: %v", err)
	case <-time.After(200 * time.Millisecond):
	}
	if n, err := CloseConnections(context.Background(), "", port); n != 0 || err != nil {
		t.Errorf("empty host: %d, %v", n, err)
	}
}

// TestCloseConnectionsWithoutPrivilege: without CAP_NET_ADMIN, ss -K
// destroys nothing and exits 0; that is an error, not "0 closed".
func TestCloseConnectionsWithoutPrivilege(t *testing.T) {
	testutil.NeedRoot(t, "running ss as another user")
	cred, err := testutil.PostgresCredential()
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, err = closeConnections(context.Background(), "127.0.0.1", ln.Addr().(*net.TCPAddr).Port, cred)
	if err == nil || !strings.Contains(err.Error(), "CAP_NET_ADMIN") {
		t.Fatalf("err %v, want one that names CAP_NET_ADMIN", err)
	}
}
