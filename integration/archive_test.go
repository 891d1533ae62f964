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
func TestArchiveCatchUp(t *testing.T) { archiveCatchUp(t, "directory") }

// TestArchivePeersCatchUp: the same in mode "peers": every member has its
// own archive directory; the primary stores each segment in its own and
// sends it over the agents' API to the others. The stopped standby misses
// the segments sent while it was down and fetches them from the primary's
// archive through the API when it restores.
func TestArchivePeersCatchUp(t *testing.T) { archiveCatchUp(t, "peers") }

const lowWALKeep = "\n[postgres.parameters]\nmax_slot_wal_keep_size = \"16MB\"\nwal_keep_size = \"0\"\nmax_wal_size = \"32MB\"\nmin_wal_size = \"32MB\"\n"

func archiveCatchUp(t *testing.T, mode string) {
	cred, credErr := testutil.PostgresCredential()
	mkArchive := func(dir string) {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		if credErr == nil && os.Geteuid() == 0 {
			if err := os.Chown(dir, int(cred.Uid), int(cred.Gid)); err != nil {
				t.Fatal(err)
			}
		}
	}
	archiveOf := map[string]string{}
	c := newCluster(t, 2, func(o *cluster.Options) {
		if mode == "directory" {
			dir := filepath.Join(o.Root, "archive")
			mkArchive(dir)
			o.Extra += fmt.Sprintf("\n[archive]\nmode = \"directory\"\ndir = %q\n", dir) + lowWALKeep
			archiveOf["db1"], archiveOf["db2"] = dir, dir
			return
		}
		o.APIToken = "archive-peers-token"
		o.Extra += lowWALKeep
		o.NodeExtra = map[string]string{}
		for _, n := range []string{"db1", "db2"} {
			dir := filepath.Join(o.Root, "archive-"+n)
			mkArchive(dir)
			archiveOf[n] = dir
			o.NodeExtra[n] = fmt.Sprintf("\n[archive]\nmode = \"peers\"\ndir = %q\n", dir)
		}
	})
	p := waitHealthy(t, c, 60*time.Second)
	s := others(c, p)[0]
	exec1(t, p, "CREATE TABLE arch_probe (id int, pad text)")
	exec1(t, p, "SELECT pg_switch_wal()")
	// In both modes the standby's archive gets the segments (in "peers"
	// mode: sent over the API by the primary's archive-wal).
	for _, n := range []*cluster.Node{p, s} {
		testutil.Eventually(t, 20*time.Second, "the first segments archived for "+n.Name, func() error {
			if m, _ := filepath.Glob(filepath.Join(archiveOf[n.Name], "0000000*")); len(m) == 0 {
				return fmt.Errorf("archive %s empty", archiveOf[n.Name])
			}
			return nil
		})
	}
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

// TestArchiveReadOnlyDestination (issue 11, acceptance 2): archive-wal, as
// postgres runs it, into a directory it may not write fails with a
// non-zero exit (postgres retries) and leaves no file, partial or not.
func TestArchiveReadOnlyDestination(t *testing.T) {
	requireEnv(t)
	// As root (CI): run as postgres into root's 0755 directory; as anyone
	// else: into one's own 0555 directory. Either way: not writable.
	cred, _ := testutil.PostgresCredential()
	mode := os.FileMode(0o755)
	if os.Geteuid() != 0 {
		cred, mode = nil, 0o555
	}
	root := testutil.Dir(t, "cifha-archive-ro-")
	seg := filepath.Join(root, "000000010000000000000001")
	if err := os.WriteFile(seg, []byte(strings.Repeat("w", 1<<16)), 0o644); err != nil {
		t.Fatal(err)
	}
	ro := filepath.Join(root, "ro")
	if err := os.Mkdir(ro, mode); err != nil {
		t.Fatal(err)
	}
	os.Chmod(ro, mode)
	t.Cleanup(func() { os.Chmod(ro, 0o755) })
	out, code := runCifha(t, cred, "archive-wal", "--dir", ro, seg, "000000010000000000000001")
	if code == 0 || !strings.Contains(out, "permission denied") {
		t.Errorf("archive-wal into a read-only directory: exit %d: %s", code, out)
	}
	if ents, _ := os.ReadDir(ro); len(ents) != 0 {
		t.Errorf("left behind in the read-only archive: %v", ents)
	}
	out, code = runCifha(t, cred, "restore-wal", "--dir", ro, "000000010000000000000001", filepath.Join(root, "dst"))
	if code == 0 {
		t.Errorf("restore-wal of a missing segment: exit 0: %s", out)
	}
}
