package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/cifha/cifha/internal/cluster"
	"github.com/cifha/cifha/internal/testutil"
	"github.com/cifha/cifha/pkg/election"
	"github.com/cifha/cifha/pkg/pgctl"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// TestLagGate: with maximum_lag_on_failover small, (a) a standby whose
// replay is paused loses to the caught-up one; (b) when every standby lags
// in received WAL, nobody is promoted and status says why.
func TestLagGate(t *testing.T) {
	small := func(o *cluster.Options) { o.Extra = `maximum_lag_on_failover = "64kB"` }

	t.Run("paused replay loses to the caught-up standby", func(t *testing.T) {
		c := newCluster(t, 3, small)
		p := waitHealthy(t, c, 60*time.Second)
		s := others(c, p)
		paused, caughtUp := s[0], s[1]
		exec1(t, p, "CREATE TABLE fence_probe (node text, at timestamptz DEFAULT clock_timestamp())")
		testutil.Eventually(t, 10*time.Second, "table replicated", rowsAtLeast(paused, "SELECT count(*)::int FROM fence_probe", 0))
		exec1(t, paused, "SELECT pg_wal_replay_pause()")
		exec1(t, p, "INSERT INTO fence_probe SELECT 'bulk' FROM generate_series(1, 20000)")
		testutil.Eventually(t, 10*time.Second, "caught-up standby has replayed everything", rowsAtLeast(caughtUp, "SELECT count(*)::int FROM fence_probe", 20000))
		p.KillHost()
		q := waitWritable(t, c, p, 3*c.Opt.TTL)
		if q != caughtUp {
			t.Fatalf("%s was promoted; want the caught-up %s", q.Name, caughtUp.Name)
		}
		exec1(t, paused, "SELECT pg_wal_replay_resume()")
	})

	t.Run("every standby lags: nobody is promoted, status says why", func(t *testing.T) {
		c := newCluster(t, 3, small)
		p := waitHealthy(t, c, 60*time.Second)
		exec1(t, p, "CREATE TABLE fence_probe (node text, at timestamptz DEFAULT clock_timestamp())")
		cutReplication(t, p)
		exec1(t, p, "INSERT INTO fence_probe SELECT repeat('x', 100) FROM generate_series(1, 20000)")
		// Wait until the leader has republished its position (every loop)
		// past the bulk insert.
		want := queryInt(t, p, "SELECT (pg_current_wal_lsn() - '0/0')::bigint::int")
		testutil.Eventually(t, 10*time.Second, "leader published its position", func() error {
			lsn, err := lastLeaderLSN(c)
			if err != nil {
				return err
			}
			if lsn < int64(want) {
				return fmt.Errorf("published %d < %d", lsn, want)
			}
			return nil
		})
		stopWatch := watchPrimaries(t, c)
		p.KillHost()
		testutil.Eventually(t, 3*c.Opt.TTL, "status explains why there is no leader", func() error {
			out, code := cifhactl(t, c, "status")
			if code == 0 || !strings.Contains(out, "no leader (") || !strings.Contains(out, "maximum_lag_on_failover") {
				return fmt.Errorf("exit %d:\n%s", code, out)
			}
			return nil
		})
		time.Sleep(c.Opt.TTL) // a further ttl in which nobody may promote
		if seen := stopWatch(); len(seen) > 1 || (len(seen) == 1 && !seen[p.Name]) {
			t.Errorf("a lagging standby was promoted: %v", seen)
		}
	})
}

// TestNoFailoverTag: the only standby is tagged nofailover: when the
// leader's host is lost it stays a standby and says why.
func TestNoFailoverTag(t *testing.T) {
	c2 := newClusterStartingFirst(t, 2, func(o *cluster.Options) {
		o.NodeExtra = map[string]string{"db2": "[tags]\nnofailover = true\n"}
	})
	p := c2.Node("db1")
	s := c2.Node("db2")
	stopWatch := watchPrimaries(t, c2)
	p.KillHost()
	testutil.Eventually(t, 3*c2.Opt.TTL, "status says nofailover", func() error {
		out, code := cifhactl(t, c2, "status")
		if code == 0 || !strings.Contains(out, "nofailover") {
			return fmt.Errorf("exit %d:\n%s", code, out)
		}
		return nil
	})
	time.Sleep(c2.Opt.TTL) // a further ttl in which nobody may promote
	if seen := stopWatch(); seen[s.Name] {
		t.Errorf("the nofailover member %s was promoted", s.Name)
	}
}

// TestTwoNodeFailoverAndFailback: the seed's db1/db2. db1 leads; its host
// is lost; db2 takes over; db1 comes back, is rewound and streams; then db2
// is lost and db1 takes over again; db2 is rewound. history shows it all.
func TestTwoNodeFailoverAndFailback(t *testing.T) {
	c := newClusterStartingFirst(t, 2, nil)
	db1, db2 := c.Node("db1"), c.Node("db2")
	exec1(t, db1, "CREATE TABLE fence_probe (node text, at timestamptz DEFAULT clock_timestamp()); INSERT INTO fence_probe VALUES ('one')")

	db1.KillHost()
	if q := waitWritable(t, c, db1, 3*c.Opt.TTL); q != db2 {
		t.Fatalf("promoted %s", q.Name)
	}
	if err := db1.Start(); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 30*time.Second, "db1 rejoins db2", func() error { return followsFrom(t, db1, db2) })
	exec1(t, db2, "INSERT INTO fence_probe VALUES ('two')")
	testutil.Eventually(t, 10*time.Second, "db1 has db2's row", rowsAtLeast(db1, "SELECT count(*)::int FROM fence_probe WHERE node IN ('one','two')", 2))

	db2.KillHost()
	if q := waitWritable(t, c, db2, 3*c.Opt.TTL); q != db1 {
		t.Fatalf("promoted %s", q.Name)
	}
	if err := db2.Start(); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 30*time.Second, "db2 rejoins db1", func() error { return followsFrom(t, db2, db1) })
	for _, n := range c.Nodes {
		if !strings.Contains(n.Log(), "rewound; starting as standby") {
			t.Errorf("%s was not rewound", n.Name)
		}
	}
	out, _ := cifhactl(t, c, "history", "--json")
	if strings.Count(out, `"new_leader"`) != 3 {
		t.Errorf("want 3 leader changes (bootstrap, failover, failback):\n%s", out)
	}
}

// lastLeaderLSN reads last-leader's LSN from etcd, in bytes.
func lastLeaderLSN(c *cluster.Cluster) (int64, error) {
	cli, err := clientv3.New(clientv3.Config{Endpoints: c.Opt.EtcdEndpoints, DialTimeout: 2 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		return 0, err
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	resp, err := cli.Get(ctx, election.KeysFor(c.Opt.Cluster).LastLeader())
	if err != nil || len(resp.Kvs) == 0 {
		return 0, fmt.Errorf("no last-leader: %v", err)
	}
	var ll election.LastLeader
	if err := json.Unmarshal(resp.Kvs[0].Value, &ll); err != nil {
		return 0, err
	}
	l, err := pgctl.ParseLSN(ll.LSN)
	return int64(l), err
}

// TestTriggerFilePromotion: promote_method = "trigger_file" (the seed's
// `touch /tmp/pgsql.trigger`, PostgreSQL <= 15): the standby is promoted by
// the file, which postgres polls every 5 s.
func TestTriggerFilePromotion(t *testing.T) {
	c := newClusterStartingFirst(t, 2, func(o *cluster.Options) {
		o.Extra = fmt.Sprintf("promote_method = \"trigger_file\"\ntrigger_file = %q\n", o.Root+"/pgsql.trigger")
	})
	db1, db2 := c.Node("db1"), c.Node("db2")
	exec1(t, db1, "CREATE TABLE fence_probe (node text, at timestamptz DEFAULT clock_timestamp())")
	testutil.Eventually(t, 10*time.Second, "table replicated", rowsAtLeast(db2, "SELECT count(*)::int FROM fence_probe", 0))
	db1.KillHost()
	// The lease, then up to two 5 s polls of the trigger file.
	if q := waitWritable(t, c, db1, c.Opt.TTL+10*time.Second+3*time.Second); q != db2 {
		t.Fatalf("promoted %s", q.Name)
	}
	if !strings.Contains(db2.Log(), "took the leader key; promoting") {
		t.Error("no take-over logged")
	}
}
