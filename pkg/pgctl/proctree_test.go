package pgctl

import (
	"context"
	"os"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/cifha/cifha/internal/testutil"
	"github.com/jackc/pgx/v5"
)

// Hole 3: a stopped postgres is really stopped. Backends call setsid(), so
// killing the postmaster's process group misses them. With the postmaster
// frozen (it cannot relay the shutdown), an open transaction must not be
// able to commit once StopWithin has returned.
func TestStopKillsEveryBackendOfAFrozenPostmaster(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	root := testutil.Dir(t, "pgctl-frozen-")
	p := newTestInstance(t, ctx, root, "p")
	p.cfg.Port = 5439
	if err := p.InitDB(ctx, "pw"); err != nil {
		t.Fatal(err)
	}
	if err := WriteConfig(p.cfg.DataDir, settingsFor(p, 5439, "p")); err != nil {
		t.Fatal(err)
	}
	if err := p.Start(ctx, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	pm := p.PID()
	t.Cleanup(func() {
		_ = syscall.Kill(pm, syscall.SIGCONT)
		_ = p.StopWithin(context.Background(), Immediate, 2*time.Second)
	})
	if err := p.Exec(ctx, "CREATE TABLE t (x int)"); err != nil {
		t.Fatal(err)
	}
	cc, err := p.ConnConfig()
	if err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.ConnectConfig(ctx, cc)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var backend int
	if err := conn.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&backend); err != nil {
		t.Fatal(err)
	}
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "INSERT INTO t VALUES (1)"); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(pm, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	if err := p.StopWithin(ctx, Fast, 200*time.Millisecond); err != nil {
		t.Fatalf("stop: %v", err)
	}
	if _, err := os.Stat("/proc/" + strconv.Itoa(backend)); err == nil {
		if Self(backend).Alive() {
			t.Fatalf("backend %d still runs after the stop returned", backend)
		}
	}
	cctx, ccancel := context.WithTimeout(ctx, 2*time.Second)
	defer ccancel()
	if err := tx.Commit(cctx); err == nil {
		t.Fatal("a transaction committed after the stop returned")
	}
}

func TestProcStat(t *testing.T) {
	me := Self(os.Getpid())
	if !me.Alive() || me.Start == 0 {
		t.Fatalf("Self = %+v", me)
	}
	if (Proc{PID: os.Getpid(), Start: me.Start + 1}).Alive() {
		t.Fatal("a different start time counts as the same process")
	}
	found := false
	for _, c := range Children(os.Getppid()) {
		if c.PID == os.Getpid() {
			found = true
		}
	}
	if !found {
		t.Fatal("Children misses this process")
	}
}
