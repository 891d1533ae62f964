package pgctl

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// ErrRewindFailed wraps every pg_rewind failure.
var ErrRewindFailed = errors.New("pg_rewind failed")

// Rewind makes a stopped former primary's data directory consistent with
// the primary at host:port (connecting as the superuser through the
// passfile), so it can stream from it. postgres must not be running.
// Before 13, a data directory that was not shut down cleanly first goes
// through crash recovery in single-user mode; 13+ pg_rewind does that itself.
func (i *Instance) Rewind(ctx context.Context, host string, port int) error {
	if i.Running() {
		return ErrRunning
	}
	if i.version < 130000 {
		cmd := exec.CommandContext(ctx, filepath.Join(i.cfg.BinDir, "postgres"), "--single", "-F", "-D", i.cfg.DataDir,
			"-c", "archive_mode=off", "template1")
		cmd.Env = i.cleanEnv()
		cmd.Stdin = strings.NewReader("")
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("%w: crash recovery before rewind: %v: %s", ErrRewindFailed, err, lastLines(string(out), 3))
		}
	}
	src := fmt.Sprintf("host=%s port=%d user=%s dbname=postgres passfile=%s sslmode=prefer connect_timeout=3 application_name=cifha-rewind",
		connQuote(host), port, connQuote(i.cfg.Superuser), connQuote(i.cfg.PassFile))
	cmd := exec.CommandContext(ctx, filepath.Join(i.cfg.BinDir, "pg_rewind"), "--target-pgdata="+i.cfg.DataDir, "--source-server="+src)
	cmd.Env = i.cleanEnv()
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("%w: %v: %s", ErrRewindFailed, err, lastLines(string(out), 4))
	}
	return nil
}

// MoveAside renames the data directory to <data_dir>.cifha-old-<time> and
// returns the new path. cifha never deletes a data directory that may hold
// the only copy of committed data; the operator removes it when sure.
func (i *Instance) MoveAside(now time.Time) (string, error) {
	if i.Running() {
		return "", ErrRunning
	}
	stamp := now.UTC().Format("20060102T150405Z")
	dst := fmt.Sprintf("%s.cifha-old-%s", filepath.Clean(i.cfg.DataDir), stamp)
	// The WAL directory goes too when the data directory links to it:
	// a re-clone needs it empty, and the old WAL belongs with the old data.
	walLink := ""
	if w := i.cfg.WalDir; w != "" {
		for _, name := range []string{"pg_wal", "pg_xlog"} {
			if t, err := os.Readlink(filepath.Join(i.cfg.DataDir, name)); err == nil && filepath.Clean(t) == filepath.Clean(w) {
				walLink = name
			}
		}
	}
	if walLink != "" {
		// Both renames or neither: a data directory moved without its WAL
		// would leave a wal_dir that blocks every re-clone.
		if err := unix.Access(filepath.Dir(filepath.Clean(i.cfg.WalDir)), unix.W_OK); err != nil {
			return "", fmt.Errorf("wal_dir %s cannot be moved aside (its parent is not writable: %v); make the parent writable by postgres, or move it by hand", i.cfg.WalDir, err)
		}
	}
	if err := os.Rename(i.cfg.DataDir, dst); err != nil {
		return "", fmt.Errorf("move data directory aside: %w", err)
	}
	if err := syncDir(filepath.Dir(dst)); err != nil {
		return dst, err
	}
	if walLink != "" {
		wdst := fmt.Sprintf("%s.cifha-old-%s", filepath.Clean(i.cfg.WalDir), stamp)
		if err := os.Rename(i.cfg.WalDir, wdst); err != nil {
			if uerr := os.Rename(dst, i.cfg.DataDir); uerr != nil {
				return dst, fmt.Errorf("data directory moved aside to %s, but its WAL directory %s could not be (%v) nor the data directory put back (%v): move both by hand", dst, i.cfg.WalDir, err, uerr)
			}
			return "", fmt.Errorf("move WAL directory %s aside: %w (the data directory was put back)", i.cfg.WalDir, err)
		}
		// The moved data directory keeps pointing at its own WAL.
		link := filepath.Join(dst, walLink)
		if err := os.Remove(link); err != nil {
			return dst, fmt.Errorf("relink %s: %w", link, err)
		}
		if err := os.Symlink(wdst, link); err != nil {
			return dst, fmt.Errorf("relink %s to %s: %w", link, wdst, err)
		}
		if err := syncDir(filepath.Dir(wdst)); err != nil {
			return dst, err
		}
	}
	return dst, nil
}

// Checkpoint runs CHECKPOINT (a new primary does this so that pg_rewind on
// the old one sees the new timeline in the control file).
func (i *Instance) Checkpoint(ctx context.Context) error { return i.Exec(ctx, "CHECKPOINT") }

// PromoteByTriggerFile creates path, the standby's promote_trigger_file
// (trigger_file before 12); postgres polls it every 5 s. Not available from 16.
func (i *Instance) PromoteByTriggerFile(path string) error {
	if i.version >= 160000 {
		return fmt.Errorf("promote_trigger_file was removed in PostgreSQL 16 (this is %s): use promote_method = \"pg_ctl\"", i.version)
	}
	return os.WriteFile(path, []byte(strconv.FormatInt(time.Now().Unix(), 10)+"\n"), 0o600)
}

// RemoveTriggerFile removes a promote trigger file if present.
func (i *Instance) RemoveTriggerFile(path string) { _ = os.Remove(path) }
