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

// ErrRewindNotStarted wraps (with ErrRewindFailed) a pg_rewind that could
// not connect to its source: it changed nothing in the data directory, and
// may simply be run again (a lossy link, a source still starting). The
// lab saw one connect timeout under 28 % packet loss leave a former
// primary waiting for an operator for good.
var ErrRewindNotStarted = errors.New("pg_rewind could not reach its source; nothing was changed")

// rewindNotStarted reports whether pg_rewind's output shows it failed at
// its first connection to the source, before it looked at the target:
// pg_rewind connects first, and prints "servers diverged" (or "no rewind
// required") before it changes anything.
func rewindNotStarted(out string) bool {
	return strings.Contains(out, "connection to server") && strings.Contains(out, "failed") &&
		!strings.Contains(out, "servers diverged") && !strings.Contains(out, "rewinding from") && !strings.Contains(out, "no rewind required")
}

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
	src := fmt.Sprintf("host=%s port=%d user=%s dbname=postgres passfile=%s %s connect_timeout=3 application_name=cifha-rewind",
		connQuote(host), port, connQuote(i.cfg.Superuser), connQuote(i.cfg.PassFile), strings.Join(i.cfg.TLS.ConnParams(), " "))
	cmd := exec.CommandContext(ctx, filepath.Join(i.cfg.BinDir, "pg_rewind"), "--target-pgdata="+i.cfg.DataDir, "--source-server="+src)
	cmd.Env = i.cleanEnv()
	out, err := cmd.CombinedOutput()
	if err != nil {
		if rewindNotStarted(string(out)) {
			return fmt.Errorf("%w: %w: %v: %s", ErrRewindFailed, ErrRewindNotStarted, err, lastLines(string(out), 4))
		}
		return fmt.Errorf("%w: %v: %s", ErrRewindFailed, err, lastLines(string(out), 4))
	}
	return nil
}

// MoveAside renames the data directory to <data_dir>.cifha-old-<time> and
// returns the new path. cifha never deletes a data directory that may hold
// the only copy of committed data; the operator removes it when sure.
//
// The configured WAL directory and tablespace directories the data
// directory links to go with it (<dir>.cifha-old-<time>, relinked from the
// moved copy, which stays a whole cluster): a re-clone needs them empty,
// and the old files belong with the old data. All of them move or none:
// a failed rename puts back what moved.
func (i *Instance) MoveAside(now time.Time) (string, error) {
	if i.Running() {
		return "", ErrRunning
	}
	stamp := now.UTC().Format("20060102T150405Z")
	dst := fmt.Sprintf("%s.cifha-old-%s", filepath.Clean(i.cfg.DataDir), stamp)
	sats := i.satellites(i.cfg.DataDir)
	for _, s := range sats {
		if err := unix.Access(filepath.Dir(s.target), unix.W_OK); err != nil {
			return "", fmt.Errorf("%s cannot be moved aside with the data directory (its parent is not writable: %v); make the parent writable by postgres, or move it by hand", s.target, err)
		}
	}
	if err := os.Rename(i.cfg.DataDir, dst); err != nil {
		return "", fmt.Errorf("move data directory aside: %w", err)
	}
	type move struct{ from, to, link string }
	var moved []move
	undo := func(cause error) error {
		for j := len(moved) - 1; j >= 0; j-- {
			if uerr := os.Rename(moved[j].to, moved[j].from); uerr != nil {
				return fmt.Errorf("data directory moved aside to %s, but %v, and %s could not be put back (%v): move them by hand", dst, cause, moved[j].to, uerr)
			}
		}
		if uerr := os.Rename(dst, i.cfg.DataDir); uerr != nil {
			return fmt.Errorf("data directory moved aside to %s, but %v, and it could not be put back (%v): move it by hand", dst, cause, uerr)
		}
		return fmt.Errorf("%w (the data directory was put back)", cause)
	}
	for _, s := range sats {
		to := fmt.Sprintf("%s.cifha-old-%s", s.target, stamp)
		if err := os.Rename(s.target, to); err != nil {
			return "", undo(fmt.Errorf("move %s aside: %w", s.target, err))
		}
		rel, _ := filepath.Rel(i.cfg.DataDir, s.link)
		moved = append(moved, move{s.target, to, filepath.Join(dst, rel)})
	}
	// The moved data directory keeps pointing at its own WAL and tablespaces.
	for _, m := range moved {
		if err := os.Remove(m.link); err != nil {
			return dst, fmt.Errorf("relink %s: %w", m.link, err)
		}
		if err := os.Symlink(m.to, m.link); err != nil {
			return dst, fmt.Errorf("relink %s to %s: %w", m.link, m.to, err)
		}
	}
	dirs := []string{filepath.Dir(dst)}
	for _, m := range moved {
		dirs = append(dirs, filepath.Dir(m.to))
	}
	for _, d := range dirs {
		if err := syncDir(d); err != nil {
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
