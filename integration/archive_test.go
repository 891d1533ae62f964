package integration

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cifha/cifha/internal/cluster"
	"github.com/cifha/cifha/internal/testutil"
)

// TestArchiveCatchUp (issue 11, acceptance 1, directory mode): the members
// archive to one directory with `cifha archive-wal`. A standby is stopped
// while the primary writes and recycles far more WAL than its slot may
// keep (max_slot_wal_keep_size 16MB: the slot is lost). Restarted, the
// standby catches up from the archive with `cifha restore-wal`, without a
// reinit, and streams again.
func TestArchiveCatchUp(t *testing.T) {
	var dir string
	c := newCluster(t, 2, func(o *cluster.Options) {
		dir = filepath.Join(o.Root, "archive")
		if err := os.MkdirAll(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		if cred, err := testutil.PostgresCredential(); err == nil && os.Geteuid() == 0 {
			if err := os.Chown(dir, int(cred.Uid), int(cred.Gid)); err != nil {
				t.Fatal(err)
			}
		}
		o.Extra += fmt.Sprintf("\n[archive]\nmode = \"directory\"\ndir = %q\n\n[postgres.parameters]\nmax_slot_wal_keep_size = \"16MB\"\nwal_keep_size = \"0\"\nmax_wal_size = \"32MB\"\nmin_wal_size = \"32MB\"\n", dir)
	})
	p := waitHealthy(t, c, 60*time.Second)
	s := others(c, p)[0]
	exec1(t, p, "CREATE TABLE arch_probe (id int, pad text)")
	exec1(t, p, "SELECT pg_switch_wal()")
	testutil.Eventually(t, 20*time.Second, "the first segments archived", func() error {
		if m, _ := filepath.Glob(filepath.Join(dir, "0000000*")); len(m) == 0 {
			return fmt.Errorf("archive %s empty", dir)
		}
		return nil
	})
	testutil.Eventually(t, 20*time.Second, "archive metrics on the primary", func() error {
		code, body, err := p.API(context.Background(), "/metrics")
		if err != nil || code != 200 || !strings.Contains(string(body), "cifha_archive_archived_total{") || !strings.Contains(string(body), "cifha_archive_last_archived_timestamp_seconds{") {
			return fmt.Errorf("/metrics %d %v: no archive metrics", code, err)
		}
		return nil
	})
	inode0 := inode(t, s.DataDir)
	if err := s.Stop(30 * time.Second); err != nil {
		t.Fatal(err)
	}
	// About 100 MB of WAL, checkpointed: the stopped standby's slot is lost
	// and its segments are recycled on the primary.
	for i := 0; i < 5; i++ {
		exec1(t, p, "INSERT INTO arch_probe SELECT g, repeat('x', 200) FROM generate_series(1, 60000) g")
		exec1(t, p, "CHECKPOINT")
	}
	exec1(t, p, "INSERT INTO arch_probe VALUES (-1, 'marker')")
	exec1(t, p, "SELECT pg_switch_wal()")
	// The standby's first segments are gone from the primary (its slot
	// was lost, or dropped with its member key): only the archive has them.
	if n := queryInt(t, p, "SELECT count(*)::int FROM pg_ls_waldir() WHERE name = '000000010000000000000003'"); n != 0 {
		t.Fatal("the primary still has the standby's old WAL: the test proves nothing")
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 60*time.Second, s.Name+" caught up", rowsAtLeast(s, "SELECT count(*)::int FROM arch_probe WHERE id = -1", 1))
	testutil.Eventually(t, 30*time.Second, s.Name+" streams again", func() error { return followsFrom(t, s, p) })
	if inode(t, s.DataDir) != inode0 {
		t.Fatalf("%s was re-cloned, not caught up", s.Name)
	}
	if b, _ := os.ReadFile(filepath.Join(s.Dir, "postgresql-"+s.Name+".log")); !strings.Contains(string(b), "restored log file") {
		t.Errorf("%s's postgres log shows no segment restored from the archive", s.Name)
	}
}
