package pgctl

import (
	"context"
	"errors"
	"fmt"
	"github.com/cifha/cifha/pkg/state"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
)

// DataDirState classifies a data directory (see state.DataDirState).
type DataDirState = state.DataDirState

// Data directory states.
const (
	DataDirMissing = state.DataDirMissing
	DataDirValid   = state.DataDirValid
	DataDirForeign = state.DataDirForeign
)

// InspectDataDir tells whether dataDir is missing/empty, a data directory,
// or something else that must not be touched.
func InspectDataDir(dataDir string) (DataDirState, error) {
	d, err := os.Open(dataDir)
	if errors.Is(err, os.ErrNotExist) {
		return DataDirMissing, nil
	}
	if err != nil {
		return DataDirForeign, fmt.Errorf("inspect data dir: %w", err)
	}
	// One name tells "empty" from "not empty"; the agent looks every
	// round, so the full listing would be work for nothing.
	_, err = d.Readdirnames(1)
	d.Close()
	if errors.Is(err, io.EOF) {
		return DataDirMissing, nil
	}
	if err != nil {
		return DataDirForeign, fmt.Errorf("inspect data dir: %w", err)
	}
	if _, err := os.Stat(filepath.Join(dataDir, "PG_VERSION")); err != nil {
		return DataDirForeign, nil
	}
	if _, err := os.Stat(filepath.Join(dataDir, "global", "pg_control")); err != nil {
		return DataDirForeign, nil
	}
	return DataDirValid, nil
}

// newTempDataDir makes an empty 0700 directory beside dataDir, so that a
// finished initdb or clone is moved into place by one rename.
func newTempDataDir(dataDir string) (string, error) {
	parent := filepath.Dir(filepath.Clean(dataDir))
	if err := os.MkdirAll(parent, 0o700); err != nil {
		return "", err
	}
	return os.MkdirTemp(parent, filepath.Base(dataDir)+".cifha-new-")
}

// install moves a complete temporary data directory into place. dataDir
// must be absent or empty; anything else is refused (never deleted).
func install(tmp, dataDir string) error {
	st, err := InspectDataDir(dataDir)
	if err != nil {
		return err
	}
	if st != DataDirMissing {
		return fmt.Errorf("install data dir: %s is not empty; refusing to replace it", dataDir)
	}
	if err := os.Remove(dataDir); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("install data dir: %w", err)
	}
	if err := os.Rename(tmp, dataDir); err != nil {
		return fmt.Errorf("install data dir: %w", err)
	}
	return syncDir(filepath.Dir(dataDir))
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// InitDB creates a new cluster in dataDir (which must be absent or empty)
// with the superuser and its password. initdb runs in a temporary directory
// that is renamed into place only once it succeeded.
func (i *Instance) InitDB(ctx context.Context, superuserPassword string) error {
	if _, err := i.walDirArgs(); err != nil {
		return fmt.Errorf("initdb: %w", err)
	}
	if err := i.prepareTablespaces(); err != nil {
		return fmt.Errorf("initdb: %w", err)
	}
	tmp, err := newTempDataDir(i.cfg.DataDir)
	if err != nil {
		return fmt.Errorf("initdb: %w", err)
	}
	pw, err := os.CreateTemp(filepath.Dir(tmp), ".cifha-pw-")
	if err != nil {
		os.RemoveAll(tmp)
		return fmt.Errorf("initdb: %w", err)
	}
	defer os.Remove(pw.Name())
	_, err = pw.WriteString(superuserPassword + "\n")
	if cerr := pw.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.RemoveAll(tmp)
		return fmt.Errorf("initdb: write password file: %w", err)
	}
	method := "scram-sha-256"
	if i.version < 100000 {
		method = "md5"
	}
	args := []string{"-D", tmp, "-U", i.cfg.Superuser, "--pwfile=" + pw.Name(), "-E", "UTF8",
		"--auth-local=peer", "--auth-host=" + method}
	walArgs, err := i.walDirArgs()
	if err != nil {
		os.RemoveAll(tmp)
		return fmt.Errorf("initdb: %w", err)
	}
	if err := i.run(ctx, "initdb", append(args, walArgs...)...); err != nil {
		os.RemoveAll(tmp) // our own fresh, empty-of-data directory
		i.emptyWalDir()   // checked empty before: only initdb's leftovers
		return err
	}
	if err := install(tmp, i.cfg.DataDir); err != nil {
		os.RemoveAll(tmp) // a fresh initdb: no data of anyone's
		i.emptyWalDir()   // its WAL
		return err
	}
	return nil
}

// Clone copies the primary at host:port into dataDir (absent or empty) with
// pg_basebackup (streaming WAL through slot when given), lets prepare write
// its files into the copy (the standby settings, so that the directory is
// never in place without them), then moves it into place.
//
// tsArgs are --tablespace-mapping options (TablespaceMapping); every
// configured tablespace directory is checked empty (or created) first,
// with the WAL directory, before anything is written.
//
// slot, if set, is streamed through; createSlot makes it on the source
// first (pg_basebackup --create-slot, 11+; the caller has checked that the
// source has no such slot).
func (i *Instance) Clone(ctx context.Context, host string, port int, user, slot, appName string, createSlot bool, tsArgs []string, prepare func(dir string) error) error {
	if _, err := i.walDirArgs(); err != nil {
		return fmt.Errorf("clone: %w", err)
	}
	if err := i.prepareTablespaces(); err != nil {
		return fmt.Errorf("clone: %w", err)
	}
	tmp, err := newTempDataDir(i.cfg.DataDir)
	if err != nil {
		return fmt.Errorf("clone: %w", err)
	}
	args := []string{"-D", tmp, "-X", "stream", "-c", "fast", "-h", host, "-p", strconv.Itoa(port),
		"-U", user, "-w"}
	walArgs, err := i.walDirArgs()
	if err != nil {
		os.RemoveAll(tmp)
		return fmt.Errorf("clone: %w", err)
	}
	args = append(append(args, walArgs...), tsArgs...)
	run := func(extra ...string) ([]byte, error) {
		cmd := exec.CommandContext(ctx, filepath.Join(i.cfg.BinDir, "pg_basebackup"), append(append([]string{}, args...), extra...)...)
		cmd.Env = append(append(i.cleanEnv(), "PGAPPNAME="+appName+"-clone", "PGCONNECT_TIMEOUT=3"), i.cfg.TLS.env()...)
		return cmd.CombinedOutput()
	}
	var out []byte
	switch {
	case slot == "":
		out, err = run()
	case createSlot:
		// The clone streams its WAL through this member's slot, made now
		// because the source has none yet (--create-slot, 11+): it exists
		// before the standby's first start, WAL kept from the first byte.
		out, err = run("-C", "-S", slot)
	default:
		out, err = run("-S", slot)
	}
	if err != nil {
		os.RemoveAll(tmp) // a partial copy of the primary, not the only copy of anything
		i.emptyWalDir()   // checked empty before: only the partial copy's WAL
		i.emptyTablespaces()
		return fmt.Errorf("pg_basebackup from %s:%d: %w: %s", host, port, err, strings.TrimSpace(lastLines(string(out), 3)))
	}
	if prepare != nil {
		if err := prepare(tmp); err != nil {
			os.RemoveAll(tmp)
			i.emptyWalDir() // the copy's WAL
			i.emptyTablespaces()
			return fmt.Errorf("clone: prepare: %w", err)
		}
	}
	if err := install(tmp, i.cfg.DataDir); err != nil {
		os.RemoveAll(tmp) // a copy of the primary; the original is untouched
		i.emptyWalDir()   // the copy's WAL
		i.emptyTablespaces()
		return err
	}
	return nil
}

// CleanTemp removes temporary data directories (<data_dir>.cifha-new-*)
// left by an initdb or clone that was interrupted (agent killed, host
// lost). They are partial copies that were never moved into place, so
// they are never the only copy of anything. Call it before the agent's
// loop starts: nothing else creates them then. It returns what it removed.
func CleanTemp(dataDir string) ([]string, error) { return CleanTempWal(dataDir, "") }

// CleanTempWal is CleanTempDirs without tablespaces.
func CleanTempWal(dataDir, walDir string) ([]string, error) {
	return CleanTempDirs(dataDir, walDir, nil)
}

// CleanTempDirs is CleanTemp for a member with a wal_dir or tablespaces: a
// stale temporary directory that links to one of them (pg_wal, pg_xlog,
// pg_tblspc/<oid>) left its partial files there, which are emptied too
// when the data directory does not link to that directory (it then holds
// nobody's files: the clone checked it empty before it began).
func CleanTempDirs(dataDir, walDir string, tablespaces map[string]string) ([]string, error) {
	pattern := filepath.Clean(dataDir) + ".cifha-new-*"
	matches, err := filepath.Glob(pattern)
	if err != nil {
		return nil, err
	}
	mine := map[string]bool{}
	if walDir != "" {
		mine[filepath.Clean(walDir)] = true
	}
	for _, d := range tablespaces {
		mine[filepath.Clean(d)] = true
	}
	var removed []string
	for _, m := range matches {
		fi, err := os.Lstat(m)
		if err != nil || !fi.IsDir() {
			continue
		}
		live := linkTargets(dataDir)
		for t := range linkTargets(m) {
			if mine[t] && !live[t] {
				if err := emptyDir(t); err != nil {
					return removed, fmt.Errorf("empty %s after an interrupted clone: %w", t, err)
				}
			}
		}
		if err := os.RemoveAll(m); err != nil {
			return removed, fmt.Errorf("remove stale %s: %w", m, err)
		}
		removed = append(removed, m)
	}
	return removed, nil
}

// walDirArgs returns initdb's and pg_basebackup's option for the WAL
// directory (--waldir, --xlogdir before 10), after checking that the
// directory may be used: absent, or an empty directory owned by this user.
// A non-empty one may hold an earlier cluster's WAL and is never touched.
func (i *Instance) walDirArgs() ([]string, error) {
	w := i.cfg.WalDir
	if w == "" {
		return nil, nil
	}
	if err := checkWalDir(w); err != nil {
		return nil, err
	}
	if i.version < 100000 {
		return []string{"--xlogdir=" + w}, nil
	}
	return []string{"--waldir=" + w}, nil
}

// ErrWalDirInUse: the configured WAL directory has files in it.
var ErrWalDirInUse = errors.New("wal_dir is not empty")

func checkWalDir(w string) error { return CheckDir("wal_dir", w) }

// emptyWalDir removes what a failed initdb or clone left in the WAL
// directory, which was checked empty before it began.
func (i *Instance) emptyWalDir() {
	if i.cfg.WalDir == "" {
		return
	}
	ents, _ := os.ReadDir(i.cfg.WalDir)
	for _, e := range ents {
		os.RemoveAll(filepath.Join(i.cfg.WalDir, e.Name()))
	}
}
