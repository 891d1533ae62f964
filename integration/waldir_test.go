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

// diskLayout reports whether n's WAL and both tablespaces are in n's own
// directories (the paths differ between members), with files in them.
func diskLayout(n *cluster.Node) error {
	if err := walLink(n); err != nil {
		return err
	}
	ents, err := os.ReadDir(filepath.Join(n.DataDir, "pg_tblspc"))
	if err != nil {
		return err
	}
	got := map[string]bool{}
	for _, e := range ents {
		l, _ := os.Readlink(filepath.Join(n.DataDir, "pg_tblspc", e.Name()))
		got[l] = true
	}
	for name, dir := range n.Tablespaces {
		if !got[dir] {
			return fmt.Errorf("%s: no pg_tblspc link to its %s directory %s (links: %v)", n.Name, name, dir, got)
		}
		if ents, err := os.ReadDir(dir); err != nil || len(ents) == 0 {
			return fmt.Errorf("%s: tablespace %s directory %s empty (%v)", n.Name, name, dir, err)
		}
	}
	if len(got) != len(n.Tablespaces) {
		return fmt.Errorf("%s: pg_tblspc links %v, want one per configured tablespace %v", n.Name, got, n.Tablespaces)
	}
	return nil
}

// TestWalDir (issue 11): every member has its own wal_dir and its own
// directories for CIF's tablespaces "archive" and "index" (the paths
// differ). The primary's initdb and the standbys' clones put the WAL
// there, bootstrap creates the tablespaces, clones map them to their own
// paths; tables in both are on every member. After a host loss the old
// primary is rewound and keeps its directories; `cifhactl reinit` moves a
// standby's WAL and tablespace directories aside with its data directory
// (never deleted) and the re-clone gets fresh ones. Every row is intact.
func TestWalDir(t *testing.T) {
	c, p, tok := controlCluster(t, func(o *cluster.Options) {
		o.WalDirs = true
		o.Tablespaces = []string{"archive", "index"}
	})
	exec1(t, p, `CREATE TABLE fence_probe (node text, at timestamptz DEFAULT clock_timestamp()); CREATE TABLE wal_probe (id int);
INSERT INTO wal_probe SELECT generate_series(1, 1000);
CREATE TABLE archive_probe (id int) TABLESPACE archive; INSERT INTO archive_probe SELECT generate_series(1, 500);
CREATE TABLE index_probe (id int) TABLESPACE "index"; CREATE INDEX ON index_probe (id) TABLESPACE "index"; INSERT INTO index_probe SELECT generate_series(1, 500)`)
	for _, n := range c.Nodes {
		testutil.Eventually(t, 30*time.Second, n.Name+" WAL and tablespaces in its own directories", func() error { return diskLayout(n) })
	}
	rows := func(n *cluster.Node, want int) {
		t.Helper()
		testutil.Eventually(t, 10*time.Second, n.Name+" has every row", rowsAtLeast(n, "SELECT count(*)::int FROM wal_probe", want))
		for _, tbl := range []string{"archive_probe", "index_probe"} {
			if got := queryInt(t, n, "SELECT count(*)::int FROM "+tbl); got != 500 {
				t.Errorf("%s: %s has %d rows, want 500", n.Name, tbl, got)
			}
		}
	}
	for _, s := range others(c, p) {
		rows(s, 1000)
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
	if err := diskLayout(p); err != nil {
		t.Error(err)
	}
	rows(p, 2000)

	out, code := cifhactl(t, c, "--token-file", tok, "reinit", "--force", p.Name)
	if code != 0 {
		t.Fatalf("reinit %s: exit %d: %s", p.Name, code, out)
	}
	testutil.Eventually(t, 60*time.Second, p.Name+" re-cloned and streaming", func() error {
		if err := followsFrom(t, p, q); err != nil {
			return err
		}
		return diskLayout(p)
	})
	moved, _ := filepath.Glob(p.WalDir + ".cifha-old-*")
	if len(moved) != 1 {
		t.Fatalf("moved-aside WAL directories %v, want one", moved)
	}
	if ents, _ := os.ReadDir(moved[0]); len(ents) == 0 {
		t.Errorf("moved-aside WAL directory %s is empty", moved[0])
	}
	for _, dir := range p.Tablespaces {
		if m, _ := filepath.Glob(dir + ".cifha-old-*"); len(m) != 1 {
			t.Errorf("moved-aside tablespace directories %v, want one", m)
		}
	}
	rows(p, 2000)
	if n := queryInt(t, q, "SELECT count(*)::int FROM wal_probe"); n != 2000 {
		t.Errorf("primary has %d rows, want 2000", n)
	}
}
