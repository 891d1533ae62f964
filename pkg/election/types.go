package election

import (
	"errors"

	"github.com/cifha/cifha/pkg/state"
)

// The cluster's value types live in pkg/state (pure, no I/O) so that the
// decision core can use them without linking the etcd client; these aliases
// keep election's callers unchanged.
type (
	Member            = state.Member
	ReplicaLag        = state.ReplicaLag
	LastLeader        = state.LastLeader
	Leader            = state.Leader
	Cluster           = state.Cluster
	HistoryRecord     = state.HistoryRecord
	SwitchoverRequest = state.SwitchoverRequest
	FailoverRequest   = state.FailoverRequest
	DynamicConfig     = state.DynamicConfig
	LeaseState        = state.LeaseState
	PromotionClaim    = state.PromotionClaim
	SyncState         = state.SyncState
)

// ValidName reports whether s can be a member name.
func ValidName(s string) bool { return state.ValidName(s) }

// ParseMember decodes a member key's value strictly.
func ParseMember(name string, b []byte) (Member, error) { return state.ParseMember(name, b) }

// ParseDynamicConfig decodes the config key strictly.
func ParseDynamicConfig(b []byte) (DynamicConfig, error) { return state.ParseDynamicConfig(b) }

// Errors callers branch on.
var (
	// ErrNoLease means the agent holds no live lease (etcd unreachable, or
	// the lease expired and a new one is not granted yet).
	ErrNoLease = errors.New("no etcd lease")
	// ErrNotLeader means a leader-only write was refused because this agent
	// does not hold the leader key.
	ErrNotLeader = errors.New("not the leader")
	// ErrRefused means etcd answered and a guarded transaction's condition
	// did not hold (as opposed to an unknown outcome).
	ErrRefused = errors.New("refused by etcd")
)
