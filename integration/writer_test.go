package integration

import (
	"testing"

	"context"
	"fmt"
	"github.com/cifha/cifha/internal/testutil"
	"strings"
	"sync"
	"time"

	"github.com/cifha/cifha/internal/cluster"
	"github.com/jackc/pgx/v5"
)

// clientWriter is a CIF-like client: every 50 ms it inserts a row through a
// libpq multi-host connection string with target_session_attrs=read-write
// and records which rows were acknowledged, and when.
type clientWriter struct {
	c    *cluster.Cluster
	dsn  string
	stop chan struct{}
	done chan struct{}

	mu     sync.Mutex
	acked  []int
	ackAt  []time.Time
	lastEr error
	// errs are the failed attempts, for diagnosis.
	errs []string
}

// startClientWriter creates the table and starts writing.
func startClientWriter(ctx context.Context, c *cluster.Cluster, p *cluster.Node) (*clientWriter, error) {
	conn, err := p.Connect(ctx)
	if err != nil {
		return nil, err
	}
	_, err = conn.Exec(ctx, "CREATE TABLE IF NOT EXISTS client_rows (id int primary key)")
	if err != nil {
		conn.Close(ctx)
		return nil, err
	}
	// Ids continue after an earlier writer's (benchmarks reuse the table).
	var first int
	err = conn.QueryRow(ctx, "SELECT coalesce(max(id), 0) FROM client_rows").Scan(&first)
	conn.Close(ctx)
	if err != nil {
		return nil, err
	}
	var hosts []string
	for _, n := range c.Nodes {
		hosts = append(hosts, n.Addr)
	}
	w := &clientWriter{c: c, stop: make(chan struct{}), done: make(chan struct{}),
		dsn: fmt.Sprintf("host=%s port=5432 user=postgres password=%s dbname=postgres sslmode=disable connect_timeout=1 target_session_attrs=read-write",
			strings.Join(hosts, ","), c.Opt.SuperuserPassword)}
	go w.run(first)
	return w, nil
}

func (w *clientWriter) run(next int) {
	defer close(w.done)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	var conn *pgx.Conn
	defer func() {
		if conn != nil {
			conn.Close(context.Background())
		}
	}()
	for {
		select {
		case <-w.stop:
			return
		case <-tick.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		if conn == nil {
			t0 := time.Now()
			c, err := pgx.Connect(ctx, w.dsn)
			if err != nil {
				cancel()
				w.mu.Lock()
				w.errs = append(w.errs, fmt.Sprintf("%s connect (%s): %v", t0.UTC().Format("15:04:05.000"), time.Since(t0).Round(time.Millisecond), err))
				w.mu.Unlock()
				continue
			}
			conn = c
		}
		t0 := time.Now()
		next++
		_, err := conn.Exec(ctx, "INSERT INTO client_rows VALUES ($1)", next)
		cancel()
		w.mu.Lock()
		if err == nil {
			w.acked, w.ackAt = append(w.acked, next), append(w.ackAt, time.Now())
		} else {
			w.lastEr = err
			w.errs = append(w.errs, fmt.Sprintf("%s insert (%s): %v", t0.UTC().Format("15:04:05.000"), time.Since(t0).Round(time.Millisecond), err))
		}
		w.mu.Unlock()
		if err != nil {
			conn.Close(context.Background())
			conn = nil
		}
	}
}

// count is the number of acknowledged rows so far.
func (w *clientWriter) count() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.acked)
}

// ackedSince reports whether a row was acknowledged after t.
func (w *clientWriter) ackedSince(t time.Time) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.ackAt) > 0 && w.ackAt[len(w.ackAt)-1].After(t)
}

// finish stops writing and returns the longest gap between two
// acknowledgements (the write unavailability as the client saw it).
func (w *clientWriter) finish() time.Duration {
	close(w.stop)
	<-w.done
	w.mu.Lock()
	defer w.mu.Unlock()
	var gap time.Duration
	for i := 1; i < len(w.ackAt); i++ {
		gap = max(gap, w.ackAt[i].Sub(w.ackAt[i-1]))
	}
	return gap
}

// maxGapSince is the longest time without an acknowledgement since t:
// between two acknowledgements the later of which came after t, and from
// the last one until now.
func (w *clientWriter) maxGapSince(t time.Time) time.Duration {
	w.mu.Lock()
	defer w.mu.Unlock()
	var gap time.Duration
	for i := 1; i < len(w.ackAt); i++ {
		if w.ackAt[i].After(t) {
			gap = max(gap, w.ackAt[i].Sub(w.ackAt[i-1]))
		}
	}
	if n := len(w.ackAt); n > 0 {
		gap = max(gap, time.Since(w.ackAt[n-1]))
	}
	return gap
}

// missing counts acknowledged rows that node n does not have. The
// acknowledged ids are taken before the query: the writer may still be
// running, and a row acknowledged after the query's snapshot is not
// missing (reading the list afterwards counted one as lost in a CI run).
func (w *clientWriter) missing(ctx context.Context, n *cluster.Node) (int, error) {
	w.mu.Lock()
	acked := append([]int(nil), w.acked...)
	w.mu.Unlock()
	conn, err := n.Connect(ctx)
	if err != nil {
		return 0, err
	}
	defer conn.Close(ctx)
	have := map[int]bool{}
	rows, err := conn.Query(ctx, "SELECT id FROM client_rows")
	if err != nil {
		return 0, err
	}
	for rows.Next() {
		var id int
		if err := rows.Scan(&id); err != nil {
			return 0, err
		}
		have[id] = true
	}
	if err := rows.Err(); err != nil {
		return 0, err
	}
	lost := 0
	for _, id := range acked {
		if !have[id] {
			lost++
		}
	}
	return lost, nil
}

// waitRows waits until at least n rows were acknowledged.
func (w *clientWriter) waitRows(t *testing.T, n int) {
	t.Helper()
	testutil.Eventually(t, 10*time.Second, "client writes", func() error {
		if c := w.count(); c < n {
			return fmt.Errorf("%d rows acknowledged", c)
		}
		return nil
	})
}
