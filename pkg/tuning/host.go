package tuning

import (
	"fmt"
	"io"
	"strconv"
	"strings"
)

// Supported PostgreSQL versions (server_version_num): cifha needs
// pg_stat_wal_receiver, replication slots and pg_control_checkpoint (9.6)
// and is tested up to 17.
const (
	MinVersion = 90600
	MaxVersion = 179999
)

// SupportedVersion says why versionNum cannot be run, or nil.
func SupportedVersion(versionNum int) error {
	if versionNum < MinVersion {
		return fmt.Errorf("PostgreSQL %s is not supported: cifha needs 9.6 or later (pg_stat_wal_receiver, replication slots, pg_control_checkpoint); supported: 9.6 to 17", VersionString(versionNum))
	}
	return nil
}

// VersionString renders a server_version_num as "15" or "9.6".
func VersionString(v int) string {
	if v >= 100000 {
		return strconv.Itoa(v / 10000)
	}
	return fmt.Sprintf("%d.%d", v/10000, v/100%100)
}

// ParseVersion reads a major version as an operator writes it ("15",
// "9.6", "9.1", or a full server_version_num such as "150004") and returns
// the server_version_num of its first release.
func ParseVersion(s string) (int, error) {
	s = strings.TrimSpace(s)
	bad := fmt.Errorf("%q is not a PostgreSQL major version (like 15 or 9.6)", s)
	if maj, min, ok := strings.Cut(s, "."); ok {
		a, err1 := strconv.Atoi(maj)
		b, err2 := strconv.Atoi(min)
		if err1 != nil || err2 != nil || a < 7 || a > 9 || b < 0 || b > 6 {
			return 0, bad
		}
		return a*10000 + b*100, nil
	}
	n, err := strconv.Atoi(s)
	switch {
	case err != nil || n <= 0:
		return 0, bad
	case n >= 10 && n <= 99:
		return n * 10000, nil
	case n >= 90000 && n < 1000000:
		return n, nil
	}
	return 0, bad
}

// CPU returns the settings that follow the host's CPU count. Only settings
// a hot standby does not need to match its primary's are varied per host
// (max_worker_processes must be at least the primary's on a standby, so it
// stays at PostgreSQL's default on every member).
func CPU(cpus, versionNum int) []Param {
	if cpus < 1 || versionNum < 90600 {
		return nil
	}
	ps := []Param{{"max_parallel_workers_per_gather", strconv.Itoa(min(4, max(1, cpus/2))), "half the CPUs, at most 4"}}
	if versionNum >= 100000 {
		ps = append(ps, Param{"max_parallel_workers", strconv.Itoa(min(8, cpus)), "the CPUs, at most max_worker_processes (8)"})
	}
	return ps
}

// Sysctl returns the kernel settings of the seed's shmsetup.sh, made
// version-aware. pageSize is the host's page size in bytes.
func Sysctl(ramBytes, pageSize int64, versionNum int) []Param {
	var ps []Param
	if versionNum < 90300 && pageSize > 0 {
		// Before 9.3 shared_buffers lived in one System V segment, limited
		// by these; 9.3 and later use anonymous shared memory and need no
		// change here.
		shmall := ramBytes / pageSize / 2
		ps = append(ps,
			Param{"kernel.shmmax", strconv.FormatInt(shmall*pageSize, 10), "half the RAM in bytes (seed: shmsetup.sh); only before 9.3"},
			Param{"kernel.shmall", strconv.FormatInt(shmall, 10), "the same in pages"})
	}
	ps = append(ps,
		Param{"vm.overcommit_memory", "2", "seed: no overcommit, so the OOM killer does not pick the postmaster"},
		// The seed left vm.overcommit_ratio at the kernel's 50 (its 100
		// is commented "testing"): with little swap that refuses postgres
		// allocations at half the RAM.
		Param{"vm.overcommit_ratio", "80", "commit limit = swap + 80% of RAM; the kernel's 50 refuses allocations at half the RAM"},
		// Since Linux 3.5, 0 means "swap only to avoid OOM", which brings
		// the OOM killer sooner; 1 is the usual database value.
		Param{"vm.swappiness", "1", "seed: 0, which on Linux 3.5+ invites the OOM killer; 1 swaps only under real pressure"},
	)
	return ps
}

// Render writes params as postgresql.conf lines, each with its comment
// after it.
func Render(w io.Writer, ps []Param) error {
	width := 0
	for _, p := range ps {
		width = max(width, len(p.Name)+3+len(p.Value))
	}
	for _, p := range ps {
		line := p.Name + " = " + p.Value
		if p.Comment != "" {
			line += strings.Repeat(" ", width-len(line)) + "  # " + p.Comment
		}
		if _, err := fmt.Fprintln(w, line); err != nil {
			return err
		}
	}
	return nil
}

// RenderSysctl writes params as a sysctl.d file: sysctl reads comments
// only on lines of their own, so each comes above its setting.
func RenderSysctl(w io.Writer, ps []Param) error {
	for _, p := range ps {
		if p.Comment != "" {
			if _, err := fmt.Fprintf(w, "# %s\n", p.Comment); err != nil {
				return err
			}
		}
		if _, err := fmt.Fprintf(w, "%s = %s\n", p.Name, p.Value); err != nil {
			return err
		}
	}
	return nil
}

// TuneOptions describe the host `cifha tune` renders settings for.
type TuneOptions struct {
	RAM      int64 // bytes
	CPUs     int
	PageSize int64 // bytes
	Version  int   // server_version_num
	Profile  string
	// Only is "postgres", "sysctl" or "" (both).
	Only string
}

// Tune writes what `cifha tune` prints: the postgres settings cifha would
// write on such a host (the profile's, then the replication settings) and
// the sysctl.d file, each value with a comment.
func Tune(w io.Writer, o TuneOptions) error {
	if o.Profile != "cif" && o.Profile != "none" {
		return fmt.Errorf("profile %q: want cif or none", o.Profile)
	}
	if o.RAM <= 0 || o.CPUs <= 0 || o.Version <= 0 {
		return fmt.Errorf("ram, cpus and version must be positive")
	}
	gib := float64(o.RAM) / (1 << 30)
	fmt.Fprintf(w, "# cifha tune: PostgreSQL %s, %.4g GiB RAM, %d CPUs, profile %s\n", VersionString(o.Version), gib, o.CPUs, o.Profile)
	if o.Only != "sysctl" {
		fmt.Fprintf(w, "\n# ---- postgresql.conf: the agent writes these itself; [postgres.parameters] overrides any ----\n")
		if o.Profile == "cif" {
			fmt.Fprintf(w, "# profile cif (the seed's postgressetup.sh)\n")
			if err := Render(w, append(CIF(o.RAM, o.Version), CPU(o.CPUs, o.Version)...)); err != nil {
				return err
			}
		}
		if err := SupportedVersion(o.Version); err != nil {
			fmt.Fprintf(w, "# replication settings: not shown. %v\n", err)
		} else {
			fmt.Fprintf(w, "# replication and HA (every member)\n")
			if err := Render(w, HA(o.Version, HAOptions{})); err != nil {
				return err
			}
		}
	}
	if o.Only != "postgres" {
		fmt.Fprintf(w, "\n# ---- /etc/sysctl.d/30-cifha-postgresql.conf (the seed's shmsetup.sh); apply with: sysctl --system ----\n")
		if err := RenderSysctl(w, Sysctl(o.RAM, o.PageSize, o.Version)); err != nil {
			return err
		}
	}
	return nil
}
