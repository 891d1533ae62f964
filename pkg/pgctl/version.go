package pgctl

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// Version is a server version as server_version_num (150018, 90124).
type Version int

var versionRE = regexp.MustCompile(`\(PostgreSQL\)\s+(\d+)(?:\.(\d+))?(?:\.(\d+))?`)

// ParseVersion parses the output of `postgres --version`.
func ParseVersion(out string) (Version, error) {
	m := versionRE.FindStringSubmatch(out)
	if m == nil {
		return 0, fmt.Errorf("parse version from %q", strings.TrimSpace(out))
	}
	a, _ := strconv.Atoi(m[1])
	b, _ := strconv.Atoi(m[2])
	c, _ := strconv.Atoi(m[3])
	if a >= 10 {
		return Version(a*10000 + b), nil // 15.18 -> 150018
	}
	return Version(a*10000 + b*100 + c), nil // 9.6.24 -> 90624
}

// Major is the major version as PostgreSQL names it ("15", "9.6").
func (v Version) Major() string {
	if v >= 100000 {
		return strconv.Itoa(int(v) / 10000)
	}
	return fmt.Sprintf("%d.%d", int(v)/10000, int(v)/100%100)
}

func (v Version) String() string {
	if v >= 100000 {
		return fmt.Sprintf("%d.%d", int(v)/10000, int(v)%10000)
	}
	return fmt.Sprintf("%d.%d.%d", int(v)/10000, int(v)/100%100, int(v)%100)
}

// UsesRecoveryConf reports whether standby settings live in recovery.conf
// (before 12) rather than in the configuration plus standby.signal.
func (v Version) UsesRecoveryConf() bool { return v < 120000 }

// ErrNoBinaries is returned when no PostgreSQL installation is found.
var ErrNoBinaries = errors.New("no PostgreSQL binaries found under /usr/lib/postgresql/*/bin (apt-get install postgresql, or set postgres.bin_dir)")

// DetectBinDir returns the newest /usr/lib/postgresql/<major>/bin holding
// a postgres binary.
func DetectBinDir() (string, error) { return detectBinDir("/usr/lib/postgresql") }

func detectBinDir(root string) (string, error) {
	matches, _ := filepath.Glob(filepath.Join(root, "*", "bin", "postgres"))
	type cand struct {
		dir string
		key float64
	}
	var cs []cand
	for _, m := range matches {
		dir := filepath.Dir(m)
		f, err := strconv.ParseFloat(filepath.Base(filepath.Dir(dir)), 64)
		if err != nil {
			continue
		}
		cs = append(cs, cand{dir, f})
	}
	if len(cs) == 0 {
		return "", ErrNoBinaries
	}
	sort.Slice(cs, func(i, j int) bool { return cs[i].key > cs[j].key })
	return cs[0].dir, nil
}

// DetectVersion runs `postgres --version` from binDir.
func DetectVersion(ctx context.Context, binDir string) (Version, error) {
	bin := filepath.Join(binDir, "postgres")
	if _, err := os.Stat(bin); err != nil {
		return 0, fmt.Errorf("detect version: %w", err)
	}
	out, err := exec.CommandContext(ctx, bin, "--version").Output()
	if err != nil {
		return 0, fmt.Errorf("detect version: %s --version: %w", bin, err)
	}
	return ParseVersion(string(out))
}

// DataDirVersion reads PG_VERSION from a data directory ("15", "9.6").
func DataDirVersion(dataDir string) (string, error) {
	b, err := os.ReadFile(filepath.Join(dataDir, "PG_VERSION"))
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(b)), nil
}
