// Package archive is cifha's managed WAL archive in a directory (local or
// mounted): the archive_command side (Store) and the restore_command side
// (Fetch), run by postgres as `cifha archive-wal` and `cifha restore-wal`.
//
// Storing is atomic and never overwrites: a segment is written to a
// temporary file in the archive directory, fsynced, and linked to its name
// (link(2) fails if the name exists), then the directory is fsynced. The
// same segment stored twice succeeds (postgres retries after a crash
// between the copy and its own bookkeeping); a different file under an
// existing name is an error and the original is kept. A full or read-only
// destination fails with no partial file left under the segment's name.
package archive

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
)

// ErrConflict: a different file is already archived under the name.
var ErrConflict = errors.New("a different file is already archived under this name")

// ErrNotFound: the archive has no such file (restore_command's normal
// "not there" answer at the end of the archive).
var ErrNotFound = errors.New("not in the archive")

// walName matches what postgres archives: segments (24 hex digits),
// partial segments, backup history files and timeline history files.
var walName = regexp.MustCompile(`^([0-9A-F]{24}(\.partial|\.[0-9A-F]{8}\.backup)?|[0-9A-F]{8}\.history)$`)

// ValidName reports whether name is a WAL file name (never a path).
func ValidName(name string) error {
	if !walName.MatchString(name) {
		return fmt.Errorf("%q is not a WAL file name", name)
	}
	return nil
}

// copyFn is io.Copy, replaced by tests to simulate a full disk.
var copyFn = io.Copy

// Store archives the file at src under name in dir.
func Store(dir, src, name string) error {
	if err := ValidName(name); err != nil {
		return err
	}
	dst := filepath.Join(dir, name)
	if same, err := sameContent(src, dst); err == nil {
		if same {
			// Perhaps stored by a run that died before its directory
			// fsync: sync before postgres may recycle the segment.
			return syncDir(dir)
		}
		return fmt.Errorf("%s: %w", dst, ErrConflict)
	} else if !errors.Is(err, os.ErrNotExist) {
		return err
	}
	in, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("archive %s: %w", name, err)
	}
	defer in.Close()
	tmp, err := os.CreateTemp(dir, ".cifha-"+name+"-")
	if err != nil {
		return fmt.Errorf("archive %s: %w", name, err)
	}
	done := false
	defer func() {
		if !done {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if _, err := copyFn(tmp, in); err != nil {
		return fmt.Errorf("archive %s: write: %w", name, err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("archive %s: fsync: %w", name, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("archive %s: %w", name, err)
	}
	// link, not rename: it fails if another writer got there first.
	if err := os.Link(tmp.Name(), dst); err != nil {
		if errors.Is(err, os.ErrExist) {
			os.Remove(tmp.Name())
			done = true
			if same, err := sameContent(src, dst); err == nil && same {
				return syncDir(dir)
			}
			return fmt.Errorf("%s: %w", dst, ErrConflict)
		}
		return fmt.Errorf("archive %s: %w", name, err)
	}
	os.Remove(tmp.Name())
	done = true
	return syncDir(dir)
}

// Fetch copies name from the archive dir to dst (postgres' %p), through a
// temporary file beside dst renamed into place.
func Fetch(dir, name, dst string) error {
	if err := ValidName(name); err != nil {
		return err
	}
	in, err := os.Open(filepath.Join(dir, name))
	if errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("%s: %w", name, ErrNotFound)
	}
	if err != nil {
		return fmt.Errorf("restore %s: %w", name, err)
	}
	defer in.Close()
	tmp, err := os.CreateTemp(filepath.Dir(dst), ".cifha-restore-")
	if err != nil {
		return fmt.Errorf("restore %s: %w", name, err)
	}
	defer os.Remove(tmp.Name())
	if _, err := copyFn(tmp, in); err != nil {
		tmp.Close()
		return fmt.Errorf("restore %s: %w", name, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("restore %s: %w", name, err)
	}
	if err := os.Rename(tmp.Name(), dst); err != nil {
		return fmt.Errorf("restore %s: %w", name, err)
	}
	return nil
}

// sameContent compares two files; an absent b is os.ErrNotExist.
func sameContent(a, b string) (bool, error) {
	fb, err := os.Open(b)
	if err != nil {
		return false, err
	}
	defer fb.Close()
	fa, err := os.Open(a)
	if err != nil {
		return false, fmt.Errorf("archive: %w", err)
	}
	defer fa.Close()
	ba, bb := make([]byte, 64<<10), make([]byte, 64<<10)
	for {
		na, ea := io.ReadFull(fa, ba)
		nb, eb := io.ReadFull(fb, bb)
		if na != nb || !bytes.Equal(ba[:na], bb[:nb]) {
			return false, nil
		}
		aEnd := ea == io.EOF || ea == io.ErrUnexpectedEOF
		bEnd := eb == io.EOF || eb == io.ErrUnexpectedEOF
		switch {
		case ea != nil && !aEnd:
			return false, ea
		case eb != nil && !bEnd:
			return false, eb
		case aEnd || bEnd:
			return aEnd && bEnd, nil
		}
	}
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// StoreFrom is Store for a segment that arrives as a stream (a peer's
// PUT): written to a temporary file in dir and fsynced first, then linked
// under name; identical content already there succeeds, different
// content is ErrConflict and the original stays. Nothing partial is
// ever visible under name.
func StoreFrom(dir, name string, r io.Reader) error {
	if err := ValidName(name); err != nil {
		return err
	}
	dst := filepath.Join(dir, name)
	tmp, err := os.CreateTemp(dir, ".cifha-"+name+"-")
	if err != nil {
		return fmt.Errorf("archive %s: %w", name, err)
	}
	defer os.Remove(tmp.Name())
	if _, err := copyFn(tmp, r); err != nil {
		tmp.Close()
		return fmt.Errorf("archive %s: write: %w", name, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("archive %s: fsync: %w", name, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("archive %s: %w", name, err)
	}
	if err := os.Link(tmp.Name(), dst); err != nil {
		if errors.Is(err, os.ErrExist) {
			if same, err := sameContent(tmp.Name(), dst); err == nil && same {
				return syncDir(dir)
			}
			return fmt.Errorf("%s: %w", dst, ErrConflict)
		}
		return fmt.Errorf("archive %s: %w", name, err)
	}
	return syncDir(dir)
}
