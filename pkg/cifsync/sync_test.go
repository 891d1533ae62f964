package cifsync

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cifha/cifha/internal/testutil"
	"github.com/cifha/cifha/pkg/election"
	"github.com/hashicorp/go-hclog"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

type env struct {
	cli     *clientv3.Client
	keys    election.Keys
	file    string
	orig    []byte
	primary *httptest.Server
	s       *Syncer
	lease   clientv3.LeaseID
}

func newEnv(t *testing.T, command []string, timeout time.Duration) *env {
	ep := testutil.Etcd(t)
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{ep}, DialTimeout: 2 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	dir := t.TempDir()
	e := &env{cli: cli, keys: election.KeysFor("c"), file: filepath.Join(dir, ".cif"), orig: seed(t)}
	os.WriteFile(e.file, e.orig, 0o600)
	// One fake agent API per member name: /<name>/primary answers as that
	// member's agent does when it is the read-write leader.
	e.primary = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		name, path, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/"), "/")
		if path == "primary" {
			w.WriteHeader(200)
			fmt.Fprintf(w, `{"self": {"name": %q}, "is_leader": true}`, name)
			return
		}
		w.WriteHeader(503)
	}))
	t.Cleanup(e.primary.Close)
	cfg := &Config{Cluster: "c", CIFFile: e.file, BackupFile: e.file + ".bak"}
	cfg.PostChange.Command = command
	cfg.PostChange.Timeout.Duration = timeout
	e.s = New(cfg, cli, hclog.New(&hclog.LoggerOptions{Output: testWriter{t}, Level: hclog.Debug}))
	return e
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

func (e *env) lead(t *testing.T, name, addr string) {
	t.Helper()
	ctx := context.Background()
	m, _ := json.Marshal(election.Member{Name: name, Role: "primary", State: "running", ConnAddress: addr, APIURL: e.primary.URL + "/" + name})
	// As an agent does: both keys on its session lease (a lease-less
	// member key is ignored as hand-written).
	g, err := e.cli.Grant(ctx, 60)
	if err != nil {
		t.Fatal(err)
	}
	e.lease = g.ID
	if _, err := e.cli.Put(ctx, e.keys.Member(name), string(m), clientv3.WithLease(g.ID)); err != nil {
		t.Fatal(err)
	}
	if _, err := e.cli.Put(ctx, e.keys.Leader(), name, clientv3.WithLease(g.ID)); err != nil {
		t.Fatal(err)
	}
}

func TestLeaderWithoutAddressLeavesFileAlone(t *testing.T) {
	e := newEnv(t, nil, time.Second)
	e.lead(t, "db1", "")
	err := e.s.Reconcile(context.Background())
	if err == nil || !strings.Contains(err.Error(), "no usable address") {
		t.Fatalf("error %v", err)
	}
	if b, _ := os.ReadFile(e.file); !bytes.Equal(b, e.orig) {
		t.Fatal("file changed")
	}
	if e.s.Stats().Failures != 1 {
		t.Errorf("failure not counted: %+v", e.s.Stats())
	}
	// A leader on a port other than 5432: CIF cannot reach it; untouched.
	e.lead(t, "db1", "127.0.0.11:5433")
	if err := e.s.Reconcile(context.Background()); err == nil || !strings.Contains(err.Error(), "5432") {
		t.Fatalf("error %v", err)
	}
	// An agent answering /primary for another member does not confirm.
	m, _ := json.Marshal(election.Member{Name: "db1", Role: "primary", State: "running", ConnAddress: "127.0.0.11:5432", APIURL: e.primary.URL + "/db9"})
	e.cli.Put(context.Background(), e.keys.Member("db1"), string(m), clientv3.WithLease(e.lease))
	if err := e.s.Reconcile(context.Background()); !errors.Is(err, errNotYet) {
		t.Fatalf("wrong agent confirmed: %v", err)
	}
	// No leader at all, and garbage in the leader key: untouched too.
	e.cli.Put(context.Background(), e.keys.Leader(), "{garbage")
	if err := e.s.Reconcile(context.Background()); err == nil {
		t.Fatal("garbage leader accepted")
	}
	if b, _ := os.ReadFile(e.file); !bytes.Equal(b, e.orig) {
		t.Fatal("file changed")
	}
}

// TestPostChangeCommand: once per change, bounded by its timeout; a failing
// or hanging command never blocks the next rewrite.
func TestPostChangeCommand(t *testing.T) {
	dir := t.TempDir()
	log := filepath.Join(dir, "ran")
	e := newEnv(t, []string{"sh", "-c", `echo "$CIFHA_DB_HOST $CIFHA_LEADER" >> ` + log + `; sleep 30; exit 1`}, 3*time.Second)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { e.s.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()

	e.lead(t, "db1", "127.0.0.11:5432")
	testutil.Eventually(t, 5*time.Second, "file names db1", func() error {
		if DBValues(mustRead(t, e.file))["host"] != "127.0.0.11" {
			return fmt.Errorf("not yet")
		}
		return nil
	})
	// While db1's command hangs (until its 3 s timeout), the next change is
	// written: within 2 s, so it cannot have waited for the command.
	e.lead(t, "db2", "127.0.0.12:5432")
	testutil.Eventually(t, 2*time.Second, "file names db2", func() error {
		if DBValues(mustRead(t, e.file))["host"] != "127.0.0.12" {
			return fmt.Errorf("not yet")
		}
		return nil
	})
	testutil.Eventually(t, 10*time.Second, "command ran once per change", func() error {
		b, _ := os.ReadFile(log)
		if string(b) != "127.0.0.11 db1\n127.0.0.12 db2\n" {
			return fmt.Errorf("ran: %q", b)
		}
		return nil
	})
	if st := e.s.Stats(); st.Target != "127.0.0.12" || st.Leader != "db2" || st.LastSync.IsZero() {
		t.Errorf("stats %+v", st)
	}
}

func mustRead(t *testing.T, p string) []byte {
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestClosesConnectionsToTheOldPrimary: each change of [db] host aborts
// this node's connections to the previous host, before the next reconcile
// and whatever the post-change command does; no change, no abort.
func TestClosesConnectionsToTheOldPrimary(t *testing.T) {
	e := newEnv(t, []string{"sleep", "30"}, 20*time.Second)
	e.s.cfg.CloseOldConnections = true
	var mu sync.Mutex
	var closed []string
	e.s.closeConns = func(_ context.Context, host string, port int) (int, error) {
		mu.Lock()
		defer mu.Unlock()
		closed = append(closed, fmt.Sprintf("%s:%d", host, port))
		return 1, nil
	}
	before := DBValues(e.orig)["host"]
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { e.s.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	got := func() []string { mu.Lock(); defer mu.Unlock(); return slices.Clone(closed) }
	e.lead(t, "db1", "127.0.0.11:5432")
	testutil.Eventually(t, 5*time.Second, "connections to the seed's host closed", func() error {
		if g := got(); !slices.Equal(g, []string{before + ":5432"}) {
			return fmt.Errorf("closed %v", g)
		}
		return nil
	})
	// The post-change command for db1 is still running (sleep 30): the
	// next change closes db1's connections all the same.
	e.lead(t, "db2", "127.0.0.12:5432")
	testutil.Eventually(t, 5*time.Second, "connections to db1 closed", func() error {
		if g := got(); !slices.Equal(g, []string{before + ":5432", "127.0.0.11:5432"}) {
			return fmt.Errorf("closed %v", g)
		}
		return nil
	})
	// Reconciling again changes nothing and closes nothing.
	if err := e.s.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	if g := got(); len(g) != 2 {
		t.Errorf("closed %v after a reconcile that changed nothing", g)
	}
}
