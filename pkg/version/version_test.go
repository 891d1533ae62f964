package version

import (
	"strings"
	"testing"
)

func TestString(t *testing.T) {
	i := Info{Version: "1.2.0", Commit: "0123456789abcdef0123", BuildDate: "2026-11-29T12:00:00Z", GoVersion: "go1.26.8", Modified: true}
	if got, want := i.String(), "1.2.0 (commit 0123456789ab+changes, built 2026-11-29T12:00:00Z, go1.26.8)"; got != want {
		t.Fatalf("%q, want %q", got, want)
	}
	if s := (Info{Version: "dev", GoVersion: "go1.26.8"}).String(); !strings.Contains(s, "commit unknown") || !strings.Contains(s, "built unknown") {
		t.Fatalf("%q", s)
	}
	// The linker's values win over the embedded build information.
	Commit, BuildDate = "feedface", "2026-01-02T03:04:05Z"
	defer func() { Commit, BuildDate = "", "" }()
	if g := Get(); g.Commit != "feedface" || g.BuildDate != "2026-01-02T03:04:05Z" || g.GoVersion == "" {
		t.Fatalf("%+v", g)
	}
}
