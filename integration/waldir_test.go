package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cifha/cifha/internal/cluster"
	"github.com/cifha/cifha/internal/testutil"
)

// walLink reports whether n's data directory links its WAL to n.WalDir.
func walLink(n *cluster.Node) error {
	l, err := os.Readlink(filepath.Join(n.DataDir, "pg_wal"))
	if err != nil || l != n.WalDir {
		return fmt.Errorf("%s: pg_wal links to %q (%v), want %s", n.Name, l, err, n.WalDir)
	}
	if ents, err := os.ReadDir(n.WalDir); err != nil || len(ents) == 0 {
		return fmt.Errorf("%s: wal_dir %s empty (%v)", n.Name, n.WalDir, err)
	}
	return nil
}

// TestWalDir (issue 11): every member has its own wal_dir (the paths
// differ). The primary's initdb and the standbys' clones put the WAL there;
// after a host loss the old primary is rewound and keeps its wal_dir;
// `cifhactl reinit` moves a standby's WAL directory aside with its data
// directory (never deleted) and the re-clone gets a fresh one. Every row
// is intact.
func TestWalDir(t *testing.T) {
	c, p, tok := controlCluster(t, func(o *cluster.Options) { o.WalDirs = true })
	for _, n := range c.Nodes {
		testutil.Eventually(t, 30*time.Second, n.Name+" WAL in its wal_dir", func() error { return walLink(n) })
	}
	exec1(t, p, "CREATE TABLE fence_probe (node text, at timestamptz DEFAULT clock_timestamp()); CREATE TABLE wal_probe (id int); INSERT INTO wal_probe SELECT generate_series(1, 1000)")
	for _, s := range others(c, p) {
		testutil.Eventually(t, 10*time.Second, s.Name+" has the rows", rowsAtLeast(s, "SELECT count(*)::int FROM wal_probe", 1000))
	}

	p.KillHost()
	q := waitWritable(t, c, p, c.Opt.TTL+5*time.Second)
	exec1(t, q, "INSERT INTO wal_probe SELECT generate_series(1001, 2000)")
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 60*time.Second, p.Name+" rejoins as a standby of "+q.Name, func() error { return followsFrom(t, p, q) })
	if !strings.Contains(p.Log(), "rewound; starting as standby") {
		t.Errorf("%s was not rewound", p.Name)
	}
	if err := walLink(p); err != nil {
		t.Error(err)
	}
	testutil.Eventually(t, 10*time.Second, p.Name+" has every row", rowsAtLeast(p, "SELECT count(*)::int FROM wal_probe", 2000))

	out, code := cifhactl(t, c, "--token-file", tok, "reinit", "--force", p.Name)
	if code != 0 {
		t.Fatalf("reinit %s: exit %d: %s", p.Name, code, out)
	}
	testutil.Eventually(t, 60*time.Second, p.Name+" re-cloned and streaming", func() error {
		if err := followsFrom(t, p, q); err != nil {
			return err
		}
		return walLink(p)
	})
	moved, _ := filepath.Glob(p.WalDir + ".cifha-old-*")
	if len(moved) != 1 {
		t.Fatalf("moved-aside WAL directories %v, want one", moved)
	}
	if ents, _ := os.ReadDir(moved[0]); len(ents) == 0 {
		t.Errorf("moved-aside WAL directory %s is empty", moved[0])
	}
	testutil.Eventually(t, 10*time.Second, p.Name+" has every row after reinit", rowsAtLeast(p, "SELECT count(*)::int FROM wal_probe", 2000))
	if n := queryInt(t, q, "SELECT count(*)::int FROM wal_probe"); n != 2000 {
		t.Errorf("primary has %d rows, want 2000", n)
	}
}
