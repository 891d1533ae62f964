package api

import (
	"time"

	"github.com/cifha/cifha/pkg/state"
)

// StatusResponse is the body of GET /status (and of /health, /primary,
// /replica, whose status code is what load balancers read).
type StatusResponse struct {
	Self     state.Member   `json:"self"`
	IsLeader bool           `json:"is_leader"`
	Leader   string         `json:"leader"`
	Members  []state.Member `json:"members"`
	// Invalid lists keys in etcd the agent ignores, with why.
	Invalid map[string]string `json:"invalid,omitempty"`
	DCSErr  string            `json:"dcs_error,omitempty"`
	// LeaseValidFor is how long this agent's lease is known to be valid.
	LeaseValidFor string    `json:"lease_valid_for,omitempty"`
	Plan          string    `json:"plan"`
	ObservedAt    time.Time `json:"observed_at"`
	// Effective cluster-wide settings on this member.
	MaxLagOnFailover int64  `json:"maximum_lag_on_failover"`
	LoopInterval     string `json:"loop_interval"`
	// FenceWatchdogError says why the fence watchdog does not work ("":
	// it does); while it is set no step makes postgres writable.
	FenceWatchdogError string `json:"fence_watchdog_error,omitempty"`
	// RestartNeeded lists configuration keys changed in the file (and
	// read by a SIGHUP) that take effect only when the agent restarts.
	RestartNeeded []string `json:"restart_needed,omitempty"`
	// SynchronousMode is this member's effective setting: "off", "on" or
	// "strict"; Sync the leader's record (who has every acknowledged
	// commit), nil when absent.
	SynchronousMode string           `json:"synchronous_mode"`
	Sync            *state.SyncState `json:"sync,omitempty"`
	// FailsafeMode is this member's effective DCS failsafe mode;
	// FailsafeCoverFor, on a leader writable on its peers' promises
	// beyond its lease (etcd unreachable), how much longer;
	// FailsafePromise, on a standby, whom it promised not to take over
	// from, and for how long.
	FailsafeMode     bool   `json:"failsafe_mode"`
	FailsafeCoverFor string `json:"failsafe_cover_for,omitempty"`
	FailsafePromise  string `json:"failsafe_promise,omitempty"`
	// Failsafe is the failsafe member list in etcd (nil: absent).
	Failsafe *state.FailsafeState `json:"failsafe,omitempty"`
}

// FailsafeRequest is the body of POST /failsafe: leader Leader, cut off
// from etcd, asks this member to promise that it is a standby following
// it and will not take the leader key for a while.
type FailsafeRequest struct {
	Leader string `json:"leader"`
	// Member is who the leader believes it asks: a member answering for
	// another's address refuses.
	Member string `json:"member"`
	// LSN is the leader's current WAL position as it last saw it ("":
	// unknown).
	LSN string `json:"lsn,omitempty"`
}

// FailsafeResponse answers a FailsafeRequest. OK: promised for
// DurationMS milliseconds from when the request arrived; otherwise
// Message says why not.
type FailsafeResponse struct {
	OK         bool   `json:"ok"`
	DurationMS int64  `json:"duration_ms,omitempty"`
	Message    string `json:"message,omitempty"`
}

// WALResponse is the body of GET /wal.
type WALResponse struct {
	Running          bool   `json:"running"`
	InRecovery       bool   `json:"in_recovery"`
	Timeline         int    `json:"timeline"`
	ReceiveLSN       string `json:"receive_lsn"`
	ReplayLSN        string `json:"replay_lsn"`
	ReplayPaused     bool   `json:"replay_paused"`
	NoFailover       bool   `json:"nofailover"`
	FailoverPriority int    `json:"failover_priority"`
	// StreamedAgoMS is how long ago this standby last streamed from a
	// primary, in ms (-1: never since the agent started).
	StreamedAgoMS int64  `json:"streamed_ago_ms"`
	Error         string `json:"error,omitempty"`
}

// ControlResponse is the body of every control endpoint's answer. Message
// is for people; the CLI prints it as is.
type ControlResponse struct {
	OK      bool   `json:"ok"`
	Message string `json:"message"`
}

// SwitchoverBody is POST /switchover's request.
type SwitchoverBody struct {
	// To is the candidate member.
	To string `json:"to"`
	// At schedules the switchover (RFC 3339); empty: now.
	At string `json:"at,omitempty"`
	// Cancel removes a pending (scheduled) switchover instead.
	Cancel bool `json:"cancel,omitempty"`
}

// MaxSchedule bounds how far ahead a switchover can be scheduled.
const MaxSchedule = 7 * 24 * time.Hour

// FailoverBody is POST /failover's request.
type FailoverBody struct {
	To string `json:"to"`
}

// RemoveBody is POST /remove's request.
type RemoveBody struct {
	Name string `json:"name"`
}

// ConfigBody is POST /config's request: Set changes keys, Replace stores a
// whole config (edit-config).
type ConfigBody struct {
	Set     map[string]string    `json:"set,omitempty"`
	Replace *state.DynamicConfig `json:"replace,omitempty"`
	// ModRev, with Replace, is the revision the edit started from: a
	// concurrent change makes it fail instead of being overwritten.
	ModRev *int64 `json:"mod_rev,omitempty"`
}
