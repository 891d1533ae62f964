package cifsync

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

func seed(t testing.TB) []byte {
	b, err := os.ReadFile("testdata/seed.cif")
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// onlyHostChanged checks the editor's contract: out differs from in only in
// the [db] host value, or by the added host line (and [db] header).
func onlyHostChanged(in, out []byte, host string) string {
	if DBValues(out)["host"] != host {
		return "host not set"
	}
	a, b := splitLines(in), splitLines(out)
	switch {
	case len(a) == len(b):
		diff := 0
		for i := range a {
			if a[i] != b[i] {
				diff++
				k1, at1, ok1 := keyOf(a[i].text)
				k2, at2, ok2 := keyOf(b[i].text)
				if !ok1 || !ok2 || k1 != "host" || k2 != "host" || a[i].text[:at1] != b[i].text[:at2] || a[i].eol != b[i].eol {
					return "a line other than the host value changed: " + a[i].text + " -> " + b[i].text
				}
				if strings.HasSuffix(strings.TrimRight(a[i].text, " \t"), `"`) != strings.HasSuffix(strings.TrimRight(b[i].text, " \t"), `"`) {
					return "the quoting of the host value changed: " + a[i].text + " -> " + b[i].text
				}
			}
		}
		if diff > 1 {
			return "more than one line changed"
		}
	default:
		// Lines were added: removing every added "host = ..." / "[db]" line
		// must give back the input (up to a newline added at the very end).
		var kept bytes.Buffer
		for _, l := range b {
			if l.text == "host = "+host || l.text == "[db]" && !bytes.Contains(in, []byte("[db]")) {
				continue
			}
			kept.WriteString(l.text + l.eol)
		}
		got, want := kept.String(), string(in)
		if got != want && strings.TrimRight(got, "\r\n") != strings.TrimRight(want, "\r\n") {
			return "added more than the host line"
		}
	}
	return ""
}

func TestSetDBHostSeed(t *testing.T) {
	in := seed(t)
	out, changed, err := SetDBHost(in, "10.0.1.2")
	if err != nil || !changed {
		t.Fatal(err)
	}
	want := bytes.Replace(in, []byte("host = 10.0.1.1\n"), []byte("host = 10.0.1.2\n"), 1)
	if !bytes.Equal(out, want) {
		t.Fatalf("only [db] host may change:\n%s", out)
	}
	// [client_http] host is not [db] host.
	if !bytes.Contains(out, []byte("host = https://localhost:443/api")) {
		t.Error("[client_http] host changed")
	}
	if _, changed, _ := SetDBHost(out, "10.0.1.2"); changed {
		t.Error("setting the same host again changed the file")
	}
	if _, changed, _ := SetDBHost([]byte("[db]\nhost = \"10.0.1.2\"\n"), "10.0.1.2"); changed {
		t.Error("a quoted host equal to the target counted as a change")
	}
}

func TestSetDBHostCases(t *testing.T) {
	cases := []struct {
		name, in, want string
		err            bool
	}{
		{"spacing around = kept", "[db]\nhost=10.0.1.1\n", "[db]\nhost=h2\n", false},
		{"wide spacing kept", "[db]\n  host   =   10.0.1.1   \n", "[db]\n  host   =   h2   \n", false},
		{"CRLF kept", "[a]\r\nx = 1\r\n[db]\r\nhost = old\r\nuser = u\r\n", "[a]\r\nx = 1\r\n[db]\r\nhost = h2\r\nuser = u\r\n", false},
		{"no final newline", "[db]\nhost = old", "[db]\nhost = h2", false},
		{"comments ; and # and blank lines kept", "; top\n\n[db]\n# c\nhost = old\n; after\n", "; top\n\n[db]\n# c\nhost = h2\n; after\n", false},
		{"commented-out host is not the host", "[db]\n#host = x\nhost = old\n", "[db]\n#host = x\nhost = h2\n", false},
		{"host in another section untouched", "[client_http]\nhost = web\n[db]\nhost = old\n", "[client_http]\nhost = web\n[db]\nhost = h2\n", false},
		{"unknown sections kept", "[zz]\nq = 1\n[db]\nhost = old\n[yy]\n", "[zz]\nq = 1\n[db]\nhost = h2\n[yy]\n", false},
		{"missing host key added after [db]", "[db]\nuser = u\n", "[db]\nhost = h2\nuser = u\n", false},
		{"missing host, CRLF file", "[db]\r\nuser = u\r\n", "[db]\r\nhost = h2\r\nuser = u\r\n", false},
		{"missing [db] added at the end", "[client]\napikey = k\n", "[client]\napikey = k\n[db]\nhost = h2\n", false},
		{"missing [db], no final newline", "[client]\napikey = k", "[client]\napikey = k\n[db]\nhost = h2\n", false},
		{"empty file", "", "[db]\nhost = h2\n", false},
		{"empty host value", "[db]\nhost =\n", "[db]\nhost =h2\n", false},
		{"header with spaces", "[ db ]\nhost = old\n", "[ db ]\nhost = h2\n", false},
		{"double quotes kept", "[db]\nhost = \"old\"\n", "[db]\nhost = \"h2\"\n", false},
		{"two [db] sections refused", "[db]\nhost = a\n[db]\nhost = b\n", "", true},
		{"malformed section header refused (another reader may see [db] in it)", "[db]0\nx = 1\n", "", true},
		{"unclosed section header refused", "[db\nhost = a\n", "", true},
		{"two host keys refused", "[db]\nhost = a\nhost = b\n", "", true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			out, _, err := SetDBHost([]byte(tc.in), "h2")
			if tc.err {
				if !errors.Is(err, ErrAmbiguous) {
					t.Fatalf("want ErrAmbiguous, got %v", err)
				}
				return
			}
			if err != nil || string(out) != tc.want {
				t.Fatalf("got %q, %v\nwant %q", out, err, tc.want)
			}
			if why := onlyHostChanged([]byte(tc.in), out, "h2"); why != "" {
				t.Error(why)
			}
		})
	}
	for _, bad := range []string{"", "a b", "x\ny", "[db]", "h;rm"} {
		if _, _, err := SetDBHost([]byte("[db]\nhost = a\n"), bad); err == nil {
			t.Errorf("host %q accepted", bad)
		}
	}
}

func FuzzSetDBHost(f *testing.F) {
	f.Add(string(seed(f)), "10.0.1.2")
	f.Add("[db]\r\nhost = a\r\n", "b")
	f.Add("[db]\nhost = a\n[db]\n", "b")
	f.Add("x = 1", "db2.example.com")
	f.Add("[db]\nhost = \"a\"  \n", "b")
	f.Fuzz(func(t *testing.T, in, host string) {
		orig := []byte(in)
		copyIn := append([]byte(nil), orig...)
		out, changed, err := SetDBHost(orig, host)
		if !bytes.Equal(orig, copyIn) {
			t.Fatal("input modified")
		}
		if err != nil {
			return
		}
		if !changed {
			if !bytes.Equal(out, orig) {
				t.Fatal("unchanged but output differs")
			}
			return
		}
		if why := onlyHostChanged(orig, out, host); why != "" {
			t.Fatalf("%s\nin:  %q\nout: %q", why, in, out)
		}
	})
}

// failingTemp fails every write: a full disk.
type failingTemp struct{ *os.File }

func (f failingTemp) Write([]byte) (int, error) { return 0, syscall.ENOSPC }

func TestApplyBadSituations(t *testing.T) {
	orig := seed(t)
	mk := func(t *testing.T) (string, string) {
		dir := t.TempDir()
		p := filepath.Join(dir, ".cif")
		if err := os.WriteFile(p, orig, 0o640); err != nil {
			t.Fatal(err)
		}
		return dir, p
	}
	unchanged := func(t *testing.T, p string) {
		t.Helper()
		b, err := os.ReadFile(p)
		if err != nil || !bytes.Equal(b, orig) {
			t.Fatalf("file changed: %v", err)
		}
	}
	t.Run("success keeps mode and writes a backup", func(t *testing.T) {
		_, p := mk(t)
		changed, err := Apply(p, "10.0.1.2", p+".cifha-bak", false)
		if err != nil || !changed {
			t.Fatal(err)
		}
		fi, _ := os.Stat(p)
		if fi.Mode().Perm() != 0o640 {
			t.Errorf("mode %v", fi.Mode())
		}
		if b, _ := os.ReadFile(p + ".cifha-bak"); !bytes.Equal(b, orig) {
			t.Error("backup is not the previous version")
		}
	})
	t.Run("unreadable file", func(t *testing.T) {
		_, p := mk(t)
		// Root reads any file, so the permission error is injected.
		readFile = func(name string) ([]byte, error) {
			return nil, &os.PathError{Op: "open", Path: name, Err: syscall.EACCES}
		}
		defer func() { readFile = os.ReadFile }()
		if _, err := Apply(p, "10.0.1.2", "", false); err == nil || !strings.Contains(err.Error(), "permission denied") {
			t.Fatalf("error %v", err)
		}
		unchanged(t, p)
	})
	t.Run("missing file", func(t *testing.T) {
		if _, err := Apply(filepath.Join(t.TempDir(), "nope"), "x", "", false); err == nil || !strings.Contains(err.Error(), "nope") {
			t.Fatalf("error %v", err)
		}
	})
	t.Run("read-only directory", func(t *testing.T) {
		dir, p := mk(t)
		createTemp = func(string, string) (tempFile, error) {
			return nil, &os.PathError{Op: "open", Path: dir, Err: syscall.EROFS}
		}
		defer func() { createTemp = func(d, p string) (tempFile, error) { return os.CreateTemp(d, p) } }()
		if _, err := Apply(p, "10.0.1.2", "", false); err == nil || !strings.Contains(err.Error(), "read-only") {
			t.Fatalf("error %v", err)
		}
		unchanged(t, p)
	})
	t.Run("disk full during the write", func(t *testing.T) {
		dir, p := mk(t)
		createTemp = func(d, pat string) (tempFile, error) {
			f, err := os.CreateTemp(d, pat)
			return failingTemp{f}, err
		}
		defer func() { createTemp = func(d, p string) (tempFile, error) { return os.CreateTemp(d, p) } }()
		if _, err := Apply(p, "10.0.1.2", "", false); err == nil || !strings.Contains(err.Error(), "no space") {
			t.Fatalf("error %v", err)
		}
		unchanged(t, p)
		entries, _ := os.ReadDir(dir)
		if len(entries) != 1 {
			t.Errorf("temporary file left behind: %d entries", len(entries))
		}
	})
	t.Run("an edit made while rewriting is not overwritten", func(t *testing.T) {
		_, p := mk(t)
		read, _ := os.Stat(p)
		edited := append(append([]byte{}, orig...), []byte("# operator's edit\n")...)
		os.WriteFile(p, edited, 0o640)
		out, _, _ := SetDBHost(orig, "10.0.1.2")
		if err := WriteFile(p, out, "", read); !errors.Is(err, ErrChanged) {
			t.Fatalf("error %v", err)
		}
		if b, _ := os.ReadFile(p); !bytes.Equal(b, edited) {
			t.Fatal("the operator's edit was overwritten")
		}
	})
	t.Run("two [db] sections", func(t *testing.T) {
		dir := t.TempDir()
		p := filepath.Join(dir, ".cif")
		two := append(append([]byte{}, orig...), []byte("[db]\nhost = 10.9.9.9\n")...)
		os.WriteFile(p, two, 0o600)
		if _, err := Apply(p, "10.0.1.2", "", false); !errors.Is(err, ErrAmbiguous) {
			t.Fatalf("error %v", err)
		}
		if b, _ := os.ReadFile(p); !bytes.Equal(b, two) {
			t.Fatal("file changed")
		}
	})
	t.Run("symlink out of the directory refused unless allowed", func(t *testing.T) {
		_, target := mk(t)
		link := filepath.Join(t.TempDir(), ".cif")
		os.Symlink(target, link)
		if _, err := Apply(link, "10.0.1.2", "", false); err == nil || !strings.Contains(err.Error(), "symlink") {
			t.Fatalf("error %v", err)
		}
		unchanged(t, target)
		if _, err := Apply(link, "10.0.1.2", "", true); err != nil {
			t.Fatal(err)
		}
		if fi, _ := os.Lstat(link); fi.Mode()&os.ModeSymlink == 0 {
			t.Error("the symlink was replaced by a file")
		}
	})
}
