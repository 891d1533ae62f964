package tuning

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden files of TestTuneGolden")

// TestTuneGolden: `cifha tune` for 4, 8 and 64 GiB and PostgreSQL 9.1, 9.6,
// 12, 15 and 17 (4 CPUs, 4 KiB pages), against testdata/tune-*.golden
// (go test -run TestTuneGolden -update rewrites them; review the diff).
func TestTuneGolden(t *testing.T) {
	for _, gib := range []int64{4, 8, 64} {
		for _, v := range []string{"9.1", "9.6", "12", "15", "17"} {
			name := fmt.Sprintf("tune-%dGiB-pg%s.golden", gib, v)
			t.Run(name, func(t *testing.T) {
				ver, err := ParseVersion(v)
				if err != nil {
					t.Fatal(err)
				}
				var b bytes.Buffer
				if err := Tune(&b, TuneOptions{RAM: gib << 30, CPUs: 4, PageSize: 4096, Version: ver, Profile: "cif"}); err != nil {
					t.Fatal(err)
				}
				path := filepath.Join("testdata", name)
				if *update {
					if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
						t.Fatal(err)
					}
					return
				}
				want, err := os.ReadFile(path)
				if err != nil {
					t.Fatalf("%v (run with -update to create it)", err)
				}
				if !bytes.Equal(b.Bytes(), want) {
					t.Fatalf("cifha tune output differs from %s:\n%s", path, b.String())
				}
			})
		}
	}
}

// The seed's postgressetup.sh on the 8 GiB host, value by value, and
// shmsetup.sh where it still applies.
func TestTuneReproducesTheSeed(t *testing.T) {
	var b bytes.Buffer
	if err := Tune(&b, TuneOptions{RAM: 8 << 30, CPUs: 4, PageSize: 4096, Version: 150000, Profile: "cif"}); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{"work_mem = 1024MB", "shared_buffers = 819MB", "effective_cache_size = 4914MB", "wal_buffers = 12MB",
		"max_connections = 11", "max_wal_size = 3GB", "vm.overcommit_memory = 2", "vm.swappiness = 1"} {
		if !strings.Contains(out, want) {
			t.Errorf("missing %q in:\n%s", want, out)
		}
	}
	for _, bad := range []string{"\ncheckpoint_segments =", "\nkernel.shmmax ="} {
		if strings.Contains(out, bad) {
			t.Errorf("%q on 15: removed in 9.5 / not needed since 9.3", bad)
		}
	}
	b.Reset()
	if err := Tune(&b, TuneOptions{RAM: 8 << 30, CPUs: 4, PageSize: 4096, Version: 90100, Profile: "cif"}); err != nil {
		t.Fatal(err)
	}
	// shmsetup.sh: shmall = pages/2, shmmax = shmall * page size.
	for _, want := range []string{"kernel.shmall = 1048576", "kernel.shmmax = 4294967296", "not supported", "\ncheckpoint_segments = 10"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("9.1: missing %q in:\n%s", want, b.String())
		}
	}
}

func TestParseVersion(t *testing.T) {
	for in, want := range map[string]int{"15": 150000, "9.6": 90600, "9.1": 90100, "17": 170000, "150004": 150004, " 12 ": 120000} {
		if got, err := ParseVersion(in); err != nil || got != want {
			t.Errorf("ParseVersion(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "x", "9", "9.7", "1.2", "-15", "15.1.2", "1e9", "9.-1"} {
		if got, err := ParseVersion(in); err == nil {
			t.Errorf("ParseVersion(%q) = %d, want an error", in, got)
		}
	}
	if err := SupportedVersion(90500); err == nil || !strings.Contains(err.Error(), "9.6") {
		t.Errorf("9.5 accepted: %v", err)
	}
	if err := SupportedVersion(90600); err != nil {
		t.Error(err)
	}
}

func FuzzParseVersion(f *testing.F) {
	for _, s := range []string{"15", "9.6", "150004", "9.x", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		v, err := ParseVersion(s)
		if err == nil && (v < 70000 || v >= 1000000) {
			t.Fatalf("ParseVersion(%q) = %d", s, v)
		}
	})
}
