package cifsync

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"syscall"
)

// createTemp is how WriteFile makes its temporary file; tests replace it to
// simulate a full disk.
type tempFile interface {
	io.Writer
	Name() string
	Chmod(os.FileMode) error
	Chown(uid, gid int) error
	Sync() error
	Close() error
}

var createTemp = func(dir, pattern string) (tempFile, error) { return os.CreateTemp(dir, pattern) }

// readFile reads the file to edit; tests replace it to simulate an
// unreadable file even when they run as root.
var readFile = os.ReadFile

// ResolvePath follows a symlink at path. It refuses a link that leads out of
// path's directory unless allowOutside, so a planted link cannot make
// cif-sync write elsewhere without the operator saying so.
func ResolvePath(path string, allowOutside bool) (string, error) {
	fi, err := os.Lstat(path)
	if err != nil {
		return "", err
	}
	if fi.Mode()&os.ModeSymlink == 0 {
		return path, nil
	}
	real, err := filepath.EvalSymlinks(path)
	if err != nil {
		return "", fmt.Errorf("resolve %s: %w", path, err)
	}
	if filepath.Dir(real) != filepath.Dir(filepath.Clean(path)) && !allowOutside {
		return "", fmt.Errorf("%s is a symlink to %s, outside its directory; set follow_symlinks = true to write there", path, real)
	}
	return real, nil
}

// ErrChanged means the file changed on disk while cif-sync was rewriting it
// (an operator's edit): nothing was written, the next reconcile retries.
var ErrChanged = errors.New("file changed while being rewritten")

// WriteFile replaces path with data without ever leaving a partial file:
// it writes a temporary file in the same directory with the original's mode
// and owner, fsyncs it, copies the previous version to backup (if set),
// renames the temporary file over path and fsyncs the directory. On any
// error path is unchanged. If read (the stat of the file when its contents
// were read) is given and the file changed since, nothing is written.
func WriteFile(path string, data []byte, backup string, read ...os.FileInfo) error {
	fi, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	unchanged := func() error {
		if len(read) == 0 || read[0] == nil {
			return nil
		}
		now, err := os.Stat(path)
		if err != nil {
			return fmt.Errorf("write %s: %w", path, err)
		}
		if now.Size() != read[0].Size() || !now.ModTime().Equal(read[0].ModTime()) {
			return fmt.Errorf("write %s: %w", path, ErrChanged)
		}
		return nil
	}
	dir := filepath.Dir(path)
	tmp, err := createTemp(dir, "."+filepath.Base(path)+".cifha-")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	name := tmp.Name()
	ok := false
	defer func() {
		if !ok {
			tmp.Close()
			os.Remove(name)
		}
	}()
	if _, err := tmp.Write(data); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Chmod(fi.Mode().Perm()); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		if err := tmp.Chown(int(st.Uid), int(st.Gid)); err != nil && !errors.Is(err, os.ErrPermission) {
			return fmt.Errorf("write %s: keep owner: %w", path, err)
		}
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := unchanged(); err != nil {
		return err
	}
	if backup != "" {
		if err := copyFile(path, backup, fi); err != nil {
			return fmt.Errorf("backup %s to %s: %w", path, backup, err)
		}
	}
	if err := os.Rename(name, path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	ok = true
	d, err := os.Open(dir)
	if err != nil {
		return nil // written; the directory sync is best effort
	}
	defer d.Close()
	_ = d.Sync()
	return nil
}

func copyFile(src, dst string, fi os.FileInfo) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(dst), "."+filepath.Base(dst)+".tmp-")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return err
	}
	_ = tmp.Chmod(fi.Mode().Perm())
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		_ = tmp.Chown(int(st.Uid), int(st.Gid))
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), dst)
}

// Apply edits the [db] host of the file at path to host and writes it
// safely. It returns whether the file changed. The file is untouched on
// every error.
func Apply(path, host, backup string, followSymlinks bool) (bool, error) {
	_, changed, err := ApplyFrom(path, host, backup, followSymlinks)
	return changed, err
}

// ApplyFrom is Apply that also returns the [db] host the file named before
// ("" when it had none).
func ApplyFrom(path, host, backup string, followSymlinks bool) (previous string, changed bool, err error) {
	real, err := ResolvePath(path, followSymlinks)
	if err != nil {
		return "", false, err
	}
	before, err := os.Stat(real)
	if err != nil {
		return "", false, fmt.Errorf("read %s: %w", real, err)
	}
	in, err := readFile(real)
	if err != nil {
		return "", false, fmt.Errorf("read %s: %w", real, err)
	}
	previous = DBValues(in)["host"]
	out, changed, err := SetDBHost(in, host)
	if err != nil {
		return previous, false, fmt.Errorf("%s: %w", real, err)
	}
	if !changed {
		return previous, false, nil
	}
	return previous, true, WriteFile(real, out, backup, before)
}
