package state

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// LSN is a WAL position.
type LSN uint64

// ParseLSN parses "16/B374D848".
func ParseLSN(s string) (LSN, error) {
	hi, lo, ok := strings.Cut(s, "/")
	if !ok {
		return 0, fmt.Errorf("parse lsn %q", s)
	}
	h, err1 := strconv.ParseUint(hi, 16, 32)
	l, err2 := strconv.ParseUint(lo, 16, 32)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("parse lsn %q", s)
	}
	return LSN(h<<32 | l), nil
}

func (l LSN) String() string { return fmt.Sprintf("%X/%X", uint64(l)>>32, uint64(l)&0xffffffff) }

// Sub returns l - o in bytes, or 0 when o is ahead.
func (l LSN) Sub(o LSN) int64 {
	if o >= l {
		return 0
	}
	return int64(l - o)
}

// Status is one observation of a running postgres.
type Status struct {
	InRecovery bool
	Timeline   int
	// CurrentLSN is pg_current_wal_lsn() on a primary, 0 on a standby.
	CurrentLSN LSN
	// ReceiveLSN and ReplayLSN are a standby's positions (0 on a primary).
	ReceiveLSN   LSN
	ReplayLSN    LSN
	ReplayPaused bool
	// WalReceiver is pg_stat_wal_receiver.status ("streaming", ...) or "".
	WalReceiver string
	// Replication lists the standbys connected to a primary.
	Replication []Replica
	// Slots lists physical replication slots.
	Slots []Slot
	// ArchiverKnown: the fields below were read (best effort, for metrics).
	// Archiving is archive_mode != off; ArchivedCount and ArchiveFailed
	// are pg_stat_archiver's counters, LastArchived its last success
	// (zero if none).
	ArchiverKnown                bool
	Archiving                    bool
	ArchivedCount, ArchiveFailed int64
	LastArchived                 time.Time
	// PendingRestart lists parameters changed in the files that take
	// effect only after a restart (pg_settings.pending_restart, 9.5+).
	PendingRestart []string
	// SyncNames is synchronous_standby_names as postgres applies it now
	// (after the last reload).
	SyncNames string
}

// Replica is one row of pg_stat_replication.
type Replica struct {
	Name      string `json:"name"`
	State     string `json:"state"`
	SentLSN   LSN    `json:"-"`
	ReplayLSN LSN    `json:"-"`
	// FlushLSN is how far the standby has flushed WAL to its disk (what a
	// synchronous commit with synchronous_commit = on waits for).
	FlushLSN  LSN    `json:"-"`
	SyncState string `json:"sync_state"`
	// ReplayLagSeconds is pg_stat_replication.replay_lag (10+): the time
	// between the primary flushing recent WAL and the standby applying
	// it, as last measured; -1 when postgres shows none (not measured
	// lately, or before 10).
	ReplayLagSeconds float64 `json:"-"`
	// ReplyAgeSeconds is how long ago the standby last replied
	// (now() - pg_stat_replication.reply_time, 12+); -1 when postgres
	// shows none.
	ReplyAgeSeconds float64 `json:"-"`
}

// Slot is one physical replication slot.
type Slot struct {
	Name   string
	Active bool
	// Lost: its WAL was removed past max_slot_wal_keep_size (13+); it can
	// no longer serve and is made again.
	Lost bool
}

// DataDirState classifies a data directory before cifha touches it.
type DataDirState int

// Data directory states.
const (
	// DataDirMissing: absent or empty; cifha may create it.
	DataDirMissing DataDirState = iota
	// DataDirValid: has PG_VERSION and global/pg_control.
	DataDirValid
	// DataDirForeign: not empty and not a data directory; never touched.
	DataDirForeign
)

func (s DataDirState) String() string {
	return [...]string{"missing", "valid", "foreign"}[s]
}

// StandbyState is what the files in a data directory say about its role.
type StandbyState struct {
	// Standby is true when postgres would start in standby mode.
	Standby bool
	// Target is the recorded "<leader> <host>:<port>" ("" if unknown).
	Target string
}
