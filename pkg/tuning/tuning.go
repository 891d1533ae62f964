package tuning

import (
	"fmt"
	"syscall"
)

// Param is one postgresql.conf setting. Value is written as is, so string
// values carry their own quotes (see Quote).
type Param struct {
	Name    string
	Value   string
	Comment string
}

// Quote renders s as a postgresql.conf string literal.
func Quote(s string) string {
	out := []byte{'\''}
	for i := 0; i < len(s); i++ {
		if s[i] == '\'' || s[i] == '\\' {
			out = append(out, s[i])
		}
		out = append(out, s[i])
	}
	return string(append(out, '\''))
}

// HostMemory returns the host's total RAM in bytes.
func HostMemory() (int64, error) {
	var si syscall.Sysinfo_t
	if err := syscall.Sysinfo(&si); err != nil {
		return 0, fmt.Errorf("sysinfo: %w", err)
	}
	return int64(si.Totalram) * int64(si.Unit), nil
}

func mb(n int64) string { return fmt.Sprintf("%dMB", n) }

// CIF is the seed's postgressetup.sh made version-aware: shared_buffers 10%
// of RAM, effective_cache_size 60%, work_mem RAM/8 ("minimum 512MB needed for
// cif_feed", capped at 2GB), wal_buffers 12MB, and max_connections 8 for
// clients. checkpoint_segments (removed in 9.5) becomes max_wal_size.
// versionNum is server_version_num (e.g. 150004 or 90124).
func CIF(ramBytes int64, versionNum int) []Param {
	ramMB := ramBytes >> 20
	if ramMB < 64 {
		ramMB = 64
	}
	work := ramMB / 8
	if work > 2048 {
		work = 2048
	}
	ps := []Param{
		{"shared_buffers", mb(ramMB / 10), "10% of RAM (seed: postgressetup.sh)"},
		{"effective_cache_size", mb(ramMB / 10 * 6), "60% of RAM"},
		{"work_mem", mb(work), "RAM/8, at most 2GB; cif_feed wants 512MB or more"},
		{"wal_buffers", "12MB", "seed: 2-16MB"},
		{"superuser_reserved_connections", "3", "the cifha agent and an operator"},
	}
	// The seed limits clients to 8 because of the large work_mem; the agent
	// connects as superuser and uses the reserved slots on top. Before 12,
	// WAL senders also come out of max_connections (and postgres refuses to
	// start unless reserved + max_wal_senders < max_connections).
	maxConn := 8 + 3
	if versionNum < 120000 {
		maxConn += 10
	}
	ps = append(ps, Param{"max_connections", fmt.Sprint(maxConn), "8 for CIF + reserved (+ WAL senders before 12)"})
	if versionNum < 90500 {
		// Removed in 9.5; HA's max_wal_size replaces it (cifha itself
		// runs 9.6 and later, so only `cifha tune` shows this).
		ps = append(ps, Param{"checkpoint_segments", "10", "seed: postgressetup.sh (its replication steps raise it to 64); max_wal_size from 9.5"})
	}
	return ps
}

// HAOptions are the inputs of the replication settings.
type HAOptions struct {
	ArchiveCommand string
	// TriggerFile is promote_trigger_file (12-15); before 12 it goes in recovery.conf.
	TriggerFile string
}

// HA returns the settings every member needs to be a primary or a hot
// standby, and to be rewound after a failover. The seed's checkpoint_segments
// = 64 and wal_keep_segments = 128 map to max_wal_size and wal_keep_size.
func HA(versionNum int, o HAOptions) []Param {
	var ps []Param
	if versionNum >= 90600 {
		ps = append(ps, Param{"wal_level", "replica", ""})
	} else {
		ps = append(ps, Param{"wal_level", "hot_standby", ""})
	}
	ps = append(ps,
		Param{"hot_standby", "on", ""},
		Param{"max_wal_senders", "10", ""},
		Param{"max_replication_slots", "10", "one slot per member, created by the leader"},
		Param{"wal_log_hints", "on", "needed by pg_rewind"},
		// Standbys report their replay position every second, so the lag
		// cifha shows falls back to 0 promptly once a standby catches up.
		Param{"wal_receiver_status_interval", "1s", ""},
		// A replication connection whose peer went silent (a cut link, a
		// frozen host) is ended after 10 s instead of postgres' 60 s, so
		// the standby reconnects soon after the network heals instead of
		// waiting out TCP's retransmission backoff (the fault lab: a 10 s
		// cut kept a standby away for about 50 s). Both ends ping at half
		// of it, so an idle but healthy link is never ended.
		Param{"wal_sender_timeout", "10s", ""},
		Param{"wal_receiver_timeout", "10s", ""},
	)
	if versionNum >= 90500 {
		// A standby whose slot is not there yet (a new leader creates it
		// within a loop) retries after 1 s instead of 5 s.
		ps = append(ps, Param{"wal_retrieve_retry_interval", "1s", ""})
	}
	if o.TriggerFile != "" && versionNum >= 120000 && versionNum < 160000 {
		ps = append(ps, Param{"promote_trigger_file", Quote(o.TriggerFile), "the seed's trigger file; polled every 5 s"})
	}
	if versionNum >= 90500 {
		ps = append(ps, Param{"max_wal_size", "3GB", "seed: checkpoint_segments = 64 (about 3 x 64 x 16MB)"})
	} else {
		ps = append(ps, Param{"checkpoint_segments", "64", "seed"})
	}
	if versionNum >= 130000 {
		ps = append(ps,
			Param{"wal_keep_size", "2GB", "seed: wal_keep_segments = 128"},
			// A dead member's slot must not fill the primary's disk.
			Param{"max_slot_wal_keep_size", "8GB", "bounds WAL kept for absent members"},
		)
	} else {
		ps = append(ps, Param{"wal_keep_segments", "128", "seed"})
	}
	if o.ArchiveCommand != "" {
		ps = append(ps,
			Param{"archive_mode", "on", ""},
			Param{"archive_command", Quote(o.ArchiveCommand), ""},
		)
	} else {
		ps = append(ps, Param{"archive_mode", "off", "set postgres.archive_command to archive WAL"})
	}
	return ps
}
