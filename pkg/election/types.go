package election

import (
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"time"
)

// Member is the state each agent publishes under members/<name> every loop.
type Member struct {
	Name string `json:"name"`
	// Role is "primary", "replica" or "" (no postgres yet).
	Role string `json:"role"`
	// State is postgres' state: "running", "streaming", "starting",
	// "stopped", "crashed", "cloning", "bootstrapping", "unknown".
	State    string `json:"state"`
	Timeline int    `json:"timeline,omitempty"`
	// LSNs as PostgreSQL prints them ("0/3000148"); empty when unknown.
	CurrentLSN string `json:"current_lsn,omitempty"`
	ReceiveLSN string `json:"receive_lsn,omitempty"`
	ReplayLSN  string `json:"replay_lsn,omitempty"`
	// ReplayPaused is true when pg_wal_replay_pause() is in effect.
	ReplayPaused bool `json:"replay_paused,omitempty"`
	// Replicas is the leader's view of its standbys (pg_stat_replication).
	Replicas []ReplicaLag `json:"replicas,omitempty"`
	APIURL   string       `json:"api_url"`
	// ConnAddress is host:port of this member's postgres.
	ConnAddress      string `json:"conn_address"`
	Version          string `json:"version,omitempty"`
	AgentVersion     string `json:"agent_version,omitempty"`
	NoFailover       bool   `json:"nofailover,omitempty"`
	FailoverPriority int    `json:"failover_priority,omitempty"`
	Reason           string `json:"reason,omitempty"`
	// PendingRestart lists parameters that take effect only after a
	// restart of this member's postgres (cifhactl restart).
	PendingRestart []string `json:"pending_restart,omitempty"`
	// TTL is the lease ttl this agent runs with (a cluster config change
	// of ttl applies when the agent next starts).
	TTL       string    `json:"ttl,omitempty"`
	UpdatedAt time.Time `json:"updated_at"`
}

// ReplicaLag is one standby as its primary sees it.
type ReplicaLag struct {
	Name      string `json:"name"`
	State     string `json:"state"`
	ReplayLSN string `json:"replay_lsn"`
	// LagBytes is the primary's current LSN minus the standby's replay LSN.
	LagBytes int64 `json:"lag_bytes"`
}

// LastLeader is the record of the most recent leadership, kept after the
// leader key is gone so a returning primary can tell whether it is stale.
type LastLeader struct {
	Name     string    `json:"name"`
	Timeline int       `json:"timeline"`
	LSN      string    `json:"lsn,omitempty"`
	At       time.Time `json:"at"`
	// From is set when the key was handed over by a switchover: the old
	// leader, which stopped cleanly at LSN.
	From string `json:"switchover_from,omitempty"`
	// TTL is the leader's lease ttl in seconds: once it is gone, its key
	// expires up to this long after its last renewal, and the candidates'
	// "streamed recently" window must cover that (members may run with
	// different ttls while a cluster-wide ttl change rolls out).
	TTL int `json:"ttl_seconds,omitempty"`
}

// Leader is the leader key as read.
type Leader struct {
	// Name is the value; meaningful only when Valid.
	Name string
	// Valid is false when the value is not a member name (garbage put by hand).
	Valid     bool
	CreateRev int64
	ModRev    int64
	Lease     int64
}

// Cluster is one consistent read of everything under the cluster prefix.
type Cluster struct {
	Revision   int64
	Leader     *Leader // nil when no leader key
	Initialize string  // "" when not claimed
	LastLeader *LastLeader
	Members    map[string]Member
	// Invalid lists keys whose contents could not be parsed, with why. They
	// are ignored, never trusted.
	Invalid map[string]string
	// Paused is set by `cifhactl pause` (maintenance mode): agents keep
	// reporting but take no automatic action.
	Paused bool
	// MemberLease is the lease each member key is bound to (the member's
	// session lease): a switchover binds the leader key to the candidate's.
	MemberLease map[string]int64
	Switchover  *SwitchoverRequest
	Failover    *FailoverRequest
	// Config is the cluster-wide settings; ConfigRev its mod revision (0
	// when the key is absent).
	Config    DynamicConfig
	ConfigRev int64
}

var memberNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,62}$`)

// ValidName reports whether s can be a member name.
func ValidName(s string) bool { return memberNameRE.MatchString(s) }

// ParseMember decodes a member key's value strictly.
func ParseMember(name string, b []byte) (Member, error) {
	var m Member
	if err := json.Unmarshal(b, &m); err != nil {
		return Member{}, fmt.Errorf("member %q: invalid JSON: %w", name, err)
	}
	if m.Name != name {
		return Member{}, fmt.Errorf("member %q: record names %q", name, m.Name)
	}
	return m, nil
}

// Errors callers branch on.
var (
	// ErrNoLease means the agent holds no live lease (etcd unreachable, or
	// the lease expired and a new one is not granted yet).
	ErrNoLease = errors.New("no etcd lease")
	// ErrNotLeader means a leader-only write was refused because this agent
	// does not hold the leader key.
	ErrNotLeader = errors.New("not the leader")
)

// HistoryRecord is one leader change, appended under history/ by the new
// leader.
type HistoryRecord struct {
	At        time.Time `json:"at"`
	OldLeader string    `json:"old_leader"`
	NewLeader string    `json:"new_leader"`
	Timeline  int       `json:"timeline"`
	LSN       string    `json:"lsn"`
	Reason    string    `json:"reason"`
}
