package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/cifha/cifha/internal/cluster"
	"github.com/cifha/cifha/internal/testutil"
	"github.com/cifha/cifha/pkg/agent"
)

// waitHealthy waits for exactly one primary and every other node streaming.
func waitHealthy(t *testing.T, c *cluster.Cluster, timeout time.Duration) *cluster.Node {
	t.Helper()
	ctx := ctxT(t, timeout+5*time.Second)
	var primary *cluster.Node
	_ = ctx
	testutil.Eventually(t, timeout, "one primary, all others streaming", func() error {
		p, err := healthy(c)
		primary = p
		return err
	})
	return primary
}

// healthy returns the only primary if every other node is a streaming standby.
func healthy(c *cluster.Cluster) (*cluster.Node, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	p, err := c.Primary(ctx)
	if err != nil {
		return nil, err
	}
	for _, n := range c.Nodes {
		if n == p {
			continue
		}
		code, body, err := n.API(ctx, "/replica")
		if err != nil || code != 200 {
			return nil, fmt.Errorf("%s /replica: %d %v %s", n.Name, code, err, body)
		}
	}
	return p, nil
}

func status(t *testing.T, n *cluster.Node) agent.StatusResponse {
	t.Helper()
	_, body, err := n.API(ctxT(t, 5*time.Second), "/status")
	if err != nil {
		t.Fatal(err)
	}
	var s agent.StatusResponse
	if err := json.Unmarshal(body, &s); err != nil {
		t.Fatalf("status JSON: %v: %s", err, body)
	}
	return s
}

// TestBootstrap: three agents on an empty etcd and empty data dirs make
// exactly one primary and two streaming standbys; a row written on the
// primary is read on both standbys.
func TestBootstrap(t *testing.T) {
	c := newCluster(t, 3, nil)
	p := waitHealthy(t, c, 60*time.Second)
	ctx := ctxT(t, 30*time.Second)
	conn, err := p.Connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE TABLE probe (v text); INSERT INTO probe VALUES ('hello from '||current_setting('cluster_name'))"); err != nil {
		t.Fatal(err)
	}
	for _, n := range c.Nodes {
		if n == p {
			continue
		}
		testutil.Eventually(t, 10*time.Second, n.Name+" has the row", func() error {
			sc, err := n.Connect(ctx)
			if err != nil {
				return err
			}
			defer sc.Close(ctx)
			var v string
			var inRecovery bool
			if err := sc.QueryRow(ctx, "SELECT v, pg_is_in_recovery() FROM probe").Scan(&v, &inRecovery); err != nil {
				return err
			}
			if !inRecovery || v != "hello from "+p.Name {
				return fmt.Errorf("got %q in recovery %v", v, inRecovery)
			}
			return nil
		})
	}
}
