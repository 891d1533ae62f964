package archive

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

const seg = "000000010000000000000003"

func write(t *testing.T, path, s string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
}

// entries lists dir, temporary files included.
func entries(t *testing.T, dir string) []string {
	t.Helper()
	es, _ := os.ReadDir(dir)
	var out []string
	for _, e := range es {
		out = append(out, e.Name())
	}
	return out
}

func TestStoreTwiceAndConflict(t *testing.T) {
	dir, src := t.TempDir(), filepath.Join(t.TempDir(), "wal")
	write(t, src, "segment one")
	if err := Store(dir, src, seg); err != nil {
		t.Fatal(err)
	}
	if err := Store(dir, src, seg); err != nil {
		t.Fatalf("the same segment twice: %v", err)
	}
	other := filepath.Join(t.TempDir(), "wal2")
	write(t, other, "segment two!")
	if err := Store(dir, other, seg); !errors.Is(err, ErrConflict) {
		t.Fatalf("a different segment under an existing name: %v", err)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, seg)); string(b) != "segment one" {
		t.Fatalf("original overwritten: %q", b)
	}
	write(t, other, "segment on") // a prefix of the original
	if err := Store(dir, other, seg); !errors.Is(err, ErrConflict) {
		t.Fatalf("a truncated segment under an existing name: %v", err)
	}
	if es := entries(t, dir); len(es) != 1 {
		t.Fatalf("archive holds %v", es)
	}
	// Fetch round trip, and a missing file.
	dst := filepath.Join(t.TempDir(), "RECOVERYXLOG")
	if err := Fetch(dir, seg, dst); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(dst); string(b) != "segment one" {
		t.Fatalf("fetched %q", b)
	}
	if err := Fetch(dir, "000000010000000000000004", dst); !errors.Is(err, ErrNotFound) {
		t.Fatalf("missing segment: %v", err)
	}
}

func TestStoreFailuresLeaveNoPartialFile(t *testing.T) {
	src := filepath.Join(t.TempDir(), "wal")
	write(t, src, "segment")
	// A full disk: the copy fails halfway.
	dir := t.TempDir()
	copyFn = func(w io.Writer, r io.Reader) (int64, error) {
		w.Write([]byte("seg"))
		return 3, syscall.ENOSPC
	}
	err := Store(dir, src, seg)
	copyFn = io.Copy
	if !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("full disk: %v", err)
	}
	if es := entries(t, dir); len(es) != 0 {
		t.Fatalf("a full disk left %v", es)
	}
	// A read-only destination (as root, permissions do not stop writes:
	// a directory that is not a directory stands in).
	ro := t.TempDir()
	if err := os.Chmod(ro, 0o500); err != nil {
		t.Fatal(err)
	}
	defer os.Chmod(ro, 0o700)
	if os.Geteuid() != 0 {
		if err := Store(ro, src, seg); err == nil {
			t.Fatal("stored into a read-only directory")
		}
		if es := entries(t, ro); len(es) != 0 {
			t.Fatalf("read-only destination holds %v", es)
		}
	}
	notDir := filepath.Join(t.TempDir(), "file")
	write(t, notDir, "x")
	if err := Store(notDir, src, seg); err == nil {
		t.Fatal("stored into a file")
	}
}

func TestValidName(t *testing.T) {
	for _, ok := range []string{seg, seg + ".partial", "00000002.history", seg + ".00000028.backup"} {
		if err := ValidName(ok); err != nil {
			t.Error(err)
		}
	}
	for _, bad := range []string{"", "../" + seg, seg + "/x", "00000001000000000000000g", "/etc/passwd", seg[:23], "x.history"} {
		if err := ValidName(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func FuzzValidName(f *testing.F) {
	f.Add(seg)
	f.Add("../x")
	f.Fuzz(func(t *testing.T, s string) {
		if ValidName(s) == nil && (filepath.Base(s) != s || s == "." || s == "..") {
			t.Fatalf("%q accepted but is a path", s)
		}
	})
}
