package state

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
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
	// Slots are the physical replication slots a primary keeps (for
	// `cifhactl status`: a slot of a member that is gone holds WAL).
	Slots  []string `json:"slots,omitempty"`
	APIURL string   `json:"api_url"`
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
	// LagSeconds is how far the standby's replay is behind in time: 0 when
	// it has replayed everything the primary wrote (an idle cluster is
	// not "behind" however long ago the last commit was), else the
	// primary's last measured replay_lag; absent when unknown.
	LagSeconds *float64 `json:"lag_seconds,omitempty"`
}

// LagOf is standby m's lag as leader (the leader's member record) shows
// it: bytes and seconds from the leader's own pg_stat_replication row for
// m, else bytes from the two published positions (leader's current LSN
// minus m's replay LSN) and seconds unknown. nil parts are unknown. The
// one rule for cifhactl status and the agent's /replica?lag=.
func (leader Member) LagOf(m Member) (bytes *int64, seconds *float64) {
	for _, r := range leader.Replicas {
		if r.Name == m.Name {
			v := r.LagBytes
			return &v, r.LagSeconds
		}
	}
	cur, err1 := ParseLSN(leader.CurrentLSN)
	rep, err2 := ParseLSN(m.ReplayLSN)
	if err1 != nil || err2 != nil {
		return nil, nil
	}
	v := cur.Sub(rep)
	return &v, nil
}

// ReplayLagSeconds is LagSeconds for a standby that has replayed up to
// replay while the primary is at current, with postgres' replay_lag
// (seconds, -1 when it shows none).
func ReplayLagSeconds(current, replay LSN, replayLag float64) *float64 {
	switch {
	case replay != 0 && replay >= current:
		zero := 0.0
		return &zero
	case replayLag >= 0:
		return &replayLag
	}
	return nil
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
	// SwitchoverID is the switchover request that handed the key over
	// (with From): the candidate claims its promotion under this ID.
	SwitchoverID string `json:"switchover_id,omitempty"`
	// TTL is the leader's lease ttl in seconds: once it is gone, its key
	// expires up to this long after its last renewal, and the candidates'
	// "streamed recently" window must cover that (members may run with
	// different ttls while a cluster-wide ttl change rolls out).
	TTL int `json:"ttl_seconds,omitempty"`
	// Term is the create revision of the leader key this record was
	// written under (0 before terms were kept): a sync record counts for
	// a failover only if it has the same term.
	Term int64 `json:"term,omitempty"`
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
	// Promotion is the last promotion claim (a lease-less key): a member
	// handed the key by a switchover claims its promotion there, in a
	// transaction that requires it to hold the key on its own lease, before
	// it promotes. PromotionRev is the key's mod revision (0: absent).
	Promotion    *PromotionClaim
	PromotionRev int64
	// LastLeaderRev is the last-leader key's mod revision (every Acquire
	// and Handoff writes it): a take-back is guarded by it.
	LastLeaderRev int64
	// Ignored lists keys that cannot belong to a live member (a member key
	// bound to no lease, or under a name that is not a member name), with
	// why: unlike Invalid, they never block a failover; `cifhactl remove`
	// deletes them.
	Ignored map[string]string
	// Config is the cluster-wide settings; ConfigRev its mod revision (0
	// when the key is absent).
	Config    DynamicConfig
	ConfigRev int64
	// Sync is the synchronous-replication record (nil: absent, the
	// cluster replicates asynchronously). An unreadable sync key is in
	// Invalid and blocks every failover.
	Sync *SyncState
	// Failsafe is the DCS failsafe member list (nil: absent or
	// unreadable; an unreadable one is in Invalid and blocks taking the
	// leader key). FailsafeRev is its key's mod revision (0: absent):
	// taking the leader key is guarded by it.
	Failsafe    *FailsafeState
	FailsafeRev int64
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
	// Its addresses go into other members' primary_conninfo and API
	// calls: a hostile value is refused here, where it enters.
	if m.ConnAddress != "" {
		if err := ValidConnAddress(m.ConnAddress); err != nil {
			return Member{}, fmt.Errorf("member %q: conn_address %v", name, err)
		}
	}
	if m.APIURL != "" {
		if err := ValidAPIURL(m.APIURL); err != nil {
			return Member{}, fmt.Errorf("member %q: api_url %v", name, err)
		}
	}
	return m, nil
}

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

// SwitchoverRequest asks the leader From to hand over to To, at At (zero:
// now). Only the leader named in From acts on it.
type SwitchoverRequest struct {
	ID          string    `json:"id"`
	From        string    `json:"from"`
	To          string    `json:"to"`
	At          time.Time `json:"at,omitzero"`
	RequestedAt time.Time `json:"requested_at"`
	// ModRev is the key's mod revision as read (not stored).
	ModRev int64 `json:"-"`
}

// FailoverRequest asks member To to take over a cluster without a leader,
// accepting that it may lack the last transactions.
type FailoverRequest struct {
	To          string    `json:"to"`
	RequestedAt time.Time `json:"requested_at"`
	ModRev      int64     `json:"-"`
}

// DynamicConfig is the cluster-wide settings kept in etcd. Every agent
// applies them over its file configuration. Nil or empty fields mean "the
// file's value".
type DynamicConfig struct {
	TTL                  string `json:"ttl,omitempty"`
	LoopInterval         string `json:"loop_interval,omitempty"`
	MaximumLagOnFailover *int64 `json:"maximum_lag_on_failover,omitempty"`
	// Synchronous replication, cluster-wide (override each member's
	// [ha] settings of the same names).
	SynchronousMode       *bool `json:"synchronous_mode,omitempty"`
	SynchronousModeStrict *bool `json:"synchronous_mode_strict,omitempty"`
	SynchronousNodeCount  *int  `json:"synchronous_node_count,omitempty"`
	// FailsafeMode: DCS failsafe mode, cluster-wide (overrides each
	// member's [ha] failsafe_mode).
	FailsafeMode *bool             `json:"failsafe_mode,omitempty"`
	Parameters   map[string]string `json:"parameters,omitempty"`
}

// ParseSwitchover decodes a switchover request key.
func ParseSwitchover(b []byte) (*SwitchoverRequest, error) {
	var r SwitchoverRequest
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("switchover request is not valid JSON: %v", err)
	}
	if !ValidName(r.From) || !ValidName(r.To) {
		return nil, errors.New("switchover request lacks valid from/to member names")
	}
	return &r, nil
}

// ParseFailover decodes a failover request key.
func ParseFailover(b []byte) (*FailoverRequest, error) {
	var r FailoverRequest
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("failover request is not valid JSON: %v", err)
	}
	if !ValidName(r.To) {
		return nil, errors.New("failover request lacks a valid member name")
	}
	return &r, nil
}

// ParseDynamicConfig decodes the config key strictly (unknown fields are an
// error: a typo must not be silently ignored).
func ParseDynamicConfig(b []byte) (DynamicConfig, error) {
	var c DynamicConfig
	if err := DecodeStrict(b, &c); err != nil {
		return DynamicConfig{}, fmt.Errorf("cluster config is not valid: %v", err)
	}
	return c, nil
}

// PromotionClaim records who promoted after which switchover. It is never
// bound to a lease: it outlives the member that wrote it, so an old leader
// can prove by transaction that a candidate never promoted before taking
// its key back.
type PromotionClaim struct {
	Name       string    `json:"name"`
	Switchover string    `json:"switchover"`
	At         time.Time `json:"at"`
	// TakenBack: written by the old leader that took the key back (the
	// candidate never promoted).
	TakenBack bool `json:"taken_back,omitempty"`
}

// LeaseState is the agent's lease as the agent itself knows it.
type LeaseState struct {
	// ID is the etcd lease ID (0: no lease).
	ID int64
	// ValidUntil is a lower bound on when etcd can expire the lease: the
	// send time of the last successful grant or renewal plus the TTL, on a
	// clock that counts suspended time (see pkg/election's Clock). etcd
	// starts the TTL no earlier than it receives the request, and only ever
	// extends lease timers across its own leader changes, so the lease
	// cannot expire before ValidUntil. Zero when there is no lease.
	ValidUntil time.Time
}

// Held reports whether the lease is known to be alive at now.
func (l LeaseState) Held(now time.Time) bool { return l.ID != 0 && now.Before(l.ValidUntil) }

// DecodeStrict decodes one JSON value into v strictly: unknown fields are
// refused (a misspelt option is never silently ignored), as are an empty
// input and trailing data. It is the one strict decoder of cifha's JSON:
// etcd values, control API requests and answers (pkg/api).
func DecodeStrict(b []byte, v any) error {
	if len(bytes.TrimSpace(b)) == 0 {
		return errors.New("empty; expected JSON")
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("invalid JSON: %v", err)
	}
	if dec.More() {
		return errors.New("invalid JSON: trailing data after the value")
	}
	return nil
}

// SyncState is the synchronous-replication record (the sync key), written
// only by the leader it names, guarded like the other leader-only keys.
// In synchronous mode it lists the standbys that have every commit the
// leader acknowledged: each was in synchronous_standby_names (which names
// exactly these and waits for all of them) and had flushed past the
// leader's position after that setting took effect before it was added;
// it is removed from here before it is removed from the setting. Only a
// member listed under the last leader's name may be promoted by a
// failover or a switchover. An empty list means no standby provably has
// everything: no automatic failover until one has.
type SyncState struct {
	Leader string `json:"leader"`
	// Term is the create revision of the leader key the record was
	// written under: the leader's term. A record counts only in its own
	// term (a leader that lost its key and took it again starts afresh;
	// a failover trusts it only if it is the last leader's latest term).
	// 0 in a record written before terms were kept.
	Term    int64    `json:"term,omitempty"`
	Members []string `json:"members"`
	// Strict: the leader keeps writes blocked rather than acknowledge
	// them without a synchronous standby (synchronous_mode_strict).
	Strict bool `json:"strict,omitempty"`
	// ModRev is the key's mod revision (not stored).
	ModRev int64 `json:"-"`
}

// Has reports whether name is listed.
func (s *SyncState) Has(name string) bool {
	return s != nil && slices.Contains(s.Members, name)
}

// Of reports whether the record was written by leader in the term term
// (the leader key's create revision). A record without a term (written
// before terms were kept) matches on the name alone when term is 0 too;
// any other mismatch means the record belongs to another term, and no
// standby it lists provably has that term's commits.
func (s *SyncState) Of(leader string, term int64) bool {
	return s != nil && s.Leader == leader && s.Term == term
}

// ParseSync decodes the sync key strictly: unknown fields, a bad leader
// or member name, or a name listed twice are refused (the record decides
// who may be promoted; a guess here could promote a member that lacks
// acknowledged commits).
func ParseSync(b []byte) (*SyncState, error) {
	var s SyncState
	if err := DecodeStrict(b, &s); err != nil {
		return nil, fmt.Errorf("sync record: %w", err)
	}
	if !ValidName(s.Leader) {
		return nil, fmt.Errorf("sync record: leader %q is not a member name", truncateName(s.Leader))
	}
	if s.Term < 0 {
		return nil, fmt.Errorf("sync record: term %d is negative", s.Term)
	}
	seen := map[string]bool{}
	for _, m := range s.Members {
		if !ValidName(m) || m == s.Leader || seen[m] {
			return nil, fmt.Errorf("sync record: member %q is not a valid, distinct standby name", truncateName(m))
		}
		seen[m] = true
	}
	return &s, nil
}

func truncateName(s string) string {
	if len(s) > 40 {
		return s[:40] + "..."
	}
	return s
}

// FailsafeState is the DCS failsafe member list (the failsafe key),
// written only by the leader it names, guarded like the other leader-only
// keys, while failsafe mode is on. It names every member the leader asks
// for a failsafe promise when etcd is unreachable (with the API URL it
// asks at). While it exists, a member not listed in it never takes the
// leader key: the leader cannot have asked it, so it cannot have promised
// (docs/fencing.md, "DCS failsafe mode").
type FailsafeState struct {
	Leader string `json:"leader"`
	// Members maps every member's name (the leader's too) to its API URL.
	Members map[string]string `json:"members"`
	// ModRev is the key's mod revision (not stored).
	ModRev int64 `json:"-"`
}

// Has reports whether name is listed.
func (f *FailsafeState) Has(name string) bool {
	if f == nil {
		return false
	}
	_, ok := f.Members[name]
	return ok
}

// ParseFailsafe decodes the failsafe key strictly: unknown fields, a bad
// member name or API URL, or a list without its leader are refused (it
// decides who may take the leader key; a guess could let a member that
// never promised anything take over).
func ParseFailsafe(b []byte) (*FailsafeState, error) {
	var f FailsafeState
	if err := DecodeStrict(b, &f); err != nil {
		return nil, fmt.Errorf("failsafe member list: %w", err)
	}
	if !ValidName(f.Leader) {
		return nil, fmt.Errorf("failsafe member list: leader %q is not a member name", truncateName(f.Leader))
	}
	if _, ok := f.Members[f.Leader]; !ok {
		return nil, fmt.Errorf("failsafe member list: does not list its leader %q", f.Leader)
	}
	for name, u := range f.Members {
		if !ValidName(name) {
			return nil, fmt.Errorf("failsafe member list: %q is not a member name", truncateName(name))
		}
		if err := ValidAPIURL(u); err != nil {
			return nil, fmt.Errorf("failsafe member list: member %q: api_url %v", name, err)
		}
	}
	return &f, nil
}
