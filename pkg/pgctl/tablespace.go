package pgctl

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"

	"github.com/jackc/pgx/v5"
)

// Tablespaces ([postgres.tablespaces]) live outside the data directory,
// linked from pg_tblspc/<oid>. cifha treats them like the WAL directory:
// checked (or created) before anything is written, filled only by
// initdb's primary (CREATE TABLESPACE) or a clone (pg_basebackup
// --tablespace-mapping to this member's own paths), emptied only after a
// failed clone that found them empty, and moved aside, never deleted.

// ErrTablespaceInUse: a configured tablespace directory has files in it.
var ErrTablespaceInUse = errors.New("tablespace directory is not empty")

// tablespaceNames returns the configured names, sorted (a stable order
// for commands and messages).
func (i *Instance) tablespaceNames() []string {
	names := make([]string, 0, len(i.cfg.Tablespaces))
	for n := range i.cfg.Tablespaces {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// CheckDir reports whether dir may receive a new cluster's files (a WAL
// directory or a tablespace): absent with an existing parent, or an empty
// directory owned by this user with mode 0700. kind names it in messages
// ("wal_dir", "tablespace archive"); every message says what to do.
func CheckDir(kind, dir string) error {
	fi, err := os.Lstat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		parent := filepath.Dir(dir)
		if _, err := os.Stat(parent); err != nil {
			return fmt.Errorf("%s %s: its parent %s: %w (create it: install -d -o postgres -g postgres -m 0700 %s)", kind, dir, parent, err, dir)
		}
		return nil
	case err != nil:
		return fmt.Errorf("%s %s: %w", kind, dir, err)
	case !fi.IsDir():
		return fmt.Errorf("%s %s is not a directory", kind, dir)
	}
	if err := checkOwnerMode(kind, dir, fi); err != nil {
		return err
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("%s %s: %w", kind, dir, err)
	}
	if len(ents) > 0 {
		inUse := ErrTablespaceInUse
		if kind == "wal_dir" {
			inUse = ErrWalDirInUse
		}
		return fmt.Errorf("%w: %s %s holds %d entries (files of an earlier cluster?); cifha never deletes them: move them aside or empty the directory", inUse, kind, dir, len(ents))
	}
	return nil
}

// checkOwnerMode: owned by this user, no access for group or others.
func checkOwnerMode(kind, dir string, fi fs.FileInfo) error {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && int(st.Uid) != os.Geteuid() {
		return fmt.Errorf("%s %s is owned by uid %d, not by this user (uid %d): chown it to the postgres user", kind, dir, st.Uid, os.Geteuid())
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return fmt.Errorf("%s %s has mode %04o: chmod 0700 it (its files must not be readable by others)", kind, dir, fi.Mode().Perm())
	}
	return nil
}

// CheckInUseDir checks a directory a running cluster uses (data, WAL,
// tablespace): it exists, is a directory, belongs to this user and is not
// open to others. Used by the preflight checks.
func CheckInUseDir(kind, dir string) error {
	fi, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("%s %s: %w", kind, dir, err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("%s %s is not a directory", kind, dir)
	}
	return checkOwnerMode(kind, dir, fi)
}

// prepareTablespaces checks every configured tablespace directory before a
// bootstrap or clone (all of them before any is touched) and creates the
// absent ones, mode 0700.
func (i *Instance) prepareTablespaces() error {
	for _, n := range i.tablespaceNames() {
		if err := CheckDir("tablespace "+n, i.cfg.Tablespaces[n]); err != nil {
			return err
		}
	}
	for _, n := range i.tablespaceNames() {
		dir := i.cfg.Tablespaces[n]
		if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("tablespace %s: create %s: %w (create it: install -d -o postgres -g postgres -m 0700 %s)", n, dir, err, dir)
		}
	}
	return nil
}

// emptyTablespaces removes what a failed clone left in the tablespace
// directories, which prepareTablespaces found empty before it began.
func (i *Instance) emptyTablespaces() {
	for _, dir := range i.cfg.Tablespaces {
		emptyDir(dir)
	}
}

func emptyDir(dir string) error {
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
			return err
		}
	}
	return nil
}

// TablespaceMapping returns pg_basebackup's --tablespace-mapping options
// that put each of the source's tablespaces (name -> its location there)
// at this member's configured directory for the same name. A tablespace
// this member does not configure keeps the source's path (pg_basebackup's
// default); it is returned in unmapped.
func (i *Instance) TablespaceMapping(source map[string]string) (args, unmapped []string) {
	names := make([]string, 0, len(source))
	for n := range source {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		old := source[n]
		mine, ok := i.cfg.Tablespaces[n]
		switch {
		case !ok:
			unmapped = append(unmapped, n)
		case filepath.Clean(mine) != filepath.Clean(old):
			args = append(args, "--tablespace-mapping="+escapeMapping(old)+"="+escapeMapping(mine))
		}
	}
	return args, unmapped
}

// escapeMapping escapes '=' as pg_basebackup's --tablespace-mapping wants.
func escapeMapping(p string) string { return strings.ReplaceAll(p, "=", `\=`) }

// SourceHasSlot reports whether the postgres at host:port has a
// replication slot named slot (connecting as SourceTablespaces does).
func (i *Instance) SourceHasSlot(ctx context.Context, host string, port int, slot string) (bool, error) {
	c, err := i.sourceConn(ctx, host, port)
	if err != nil {
		return false, err
	}
	defer c.Close(context.Background())
	var n int
	if err := c.QueryRow(ctx, "SELECT count(*)::int FROM pg_replication_slots WHERE slot_name = $1", slot).Scan(&n); err != nil {
		return false, fmt.Errorf("slots of %s:%d: %w", host, port, err)
	}
	return n > 0, nil
}

func (i *Instance) sourceConn(ctx context.Context, host string, port int) (*pgx.Conn, error) {
	cc, err := pgx.ParseConfig(fmt.Sprintf("host=%s port=%d user=%s dbname=postgres passfile=%s %s connect_timeout=3 application_name=cifha-clone",
		connQuote(host), port, connQuote(i.cfg.Superuser), connQuote(i.cfg.PassFile), strings.Join(i.cfg.TLS.ConnParams(), " ")))
	if err != nil {
		return nil, fmt.Errorf("connect to %s:%d: %w", host, port, err)
	}
	c, err := pgx.ConnectConfig(ctx, cc)
	if err != nil {
		return nil, fmt.Errorf("connect to %s:%d: %w", host, port, err)
	}
	return c, nil
}

// SourceTablespaces reads the tablespaces (name -> location) of the
// postgres at host:port, connecting as the superuser through the passfile
// (as pg_rewind does).
func (i *Instance) SourceTablespaces(ctx context.Context, host string, port int) (map[string]string, error) {
	c, err := i.sourceConn(ctx, host, port)
	if err != nil {
		return nil, fmt.Errorf("tablespaces: %w", err)
	}
	defer c.Close(context.Background())
	rows, err := c.Query(ctx, "SELECT spcname::text, pg_tablespace_location(oid) FROM pg_tablespace WHERE spcname NOT IN ('pg_default', 'pg_global')")
	if err != nil {
		return nil, fmt.Errorf("tablespaces of %s:%d: %w", host, port, err)
	}
	out := map[string]string{}
	for rows.Next() {
		var name, loc string
		if err := rows.Scan(&name, &loc); err != nil {
			return nil, fmt.Errorf("tablespaces of %s:%d: %w", host, port, err)
		}
		if loc != "" { // in-place tablespaces (allow_in_place_tablespaces) live inside the data directory
			out[name] = loc
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("tablespaces of %s:%d: %w", host, port, err)
	}
	return out, nil
}

// EnsureTablespaces creates each configured tablespace that does not exist
// yet (its directory first, mode 0700) and lets grantees create objects in
// it. An existing tablespace is left as it is.
func (i *Instance) EnsureTablespaces(ctx context.Context, grantees []string) error {
	for _, n := range i.tablespaceNames() {
		dir := i.cfg.Tablespaces[n]
		err := i.withConn(ctx, func(c *pgx.Conn) error {
			var loc *string
			err := c.QueryRow(ctx, "SELECT pg_tablespace_location(oid) FROM pg_tablespace WHERE spcname = $1", n).Scan(&loc)
			if err == nil {
				return nil // exists (at this member's path: a clone maps it there)
			}
			if !errors.Is(err, pgx.ErrNoRows) {
				return err
			}
			if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
				return fmt.Errorf("create %s: %w (create it: install -d -o postgres -g postgres -m 0700 %s)", dir, err, dir)
			}
			id := pgx.Identifier{n}.Sanitize()
			if _, err := c.Exec(ctx, "CREATE TABLESPACE "+id+" LOCATION "+quoteLiteral(dir)); err != nil {
				return err
			}
			for _, g := range grantees {
				if _, err := c.Exec(ctx, "GRANT CREATE ON TABLESPACE "+id+" TO "+pgx.Identifier{g}.Sanitize()); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("ensure tablespace %s (%s): %w", n, dir, err)
		}
	}
	return nil
}

// satellite is a directory outside the data directory that belongs to it
// (its WAL directory, a tablespace), linked from inside it at link.
type satellite struct{ link, target string }

// satellites lists dataDir's links to this member's configured WAL and
// tablespace directories. Links elsewhere are not this member's to move.
func (i *Instance) satellites(dataDir string) []satellite {
	var out []satellite
	if w := i.cfg.WalDir; w != "" {
		for _, name := range []string{"pg_wal", "pg_xlog"} {
			l := filepath.Join(dataDir, name)
			if t, err := os.Readlink(l); err == nil && filepath.Clean(t) == filepath.Clean(w) {
				out = append(out, satellite{l, filepath.Clean(w)})
			}
		}
	}
	mine := map[string]bool{}
	for _, d := range i.cfg.Tablespaces {
		mine[filepath.Clean(d)] = true
	}
	ents, _ := os.ReadDir(filepath.Join(dataDir, "pg_tblspc"))
	for _, e := range ents {
		l := filepath.Join(dataDir, "pg_tblspc", e.Name())
		if t, err := os.Readlink(l); err == nil && mine[filepath.Clean(t)] {
			out = append(out, satellite{l, filepath.Clean(t)})
		}
	}
	return out
}

// linkTargets is the set of directories dataDir links to (WAL and
// tablespaces), cleaned.
func linkTargets(dataDir string) map[string]bool {
	out := map[string]bool{}
	for _, name := range []string{"pg_wal", "pg_xlog"} {
		if t, err := os.Readlink(filepath.Join(dataDir, name)); err == nil {
			out[filepath.Clean(t)] = true
		}
	}
	ents, _ := os.ReadDir(filepath.Join(dataDir, "pg_tblspc"))
	for _, e := range ents {
		if t, err := os.Readlink(filepath.Join(dataDir, "pg_tblspc", e.Name())); err == nil {
			out[filepath.Clean(t)] = true
		}
	}
	return out
}
