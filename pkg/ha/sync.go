package ha

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/cifha/cifha/pkg/state"
)

// Synchronous mode. The leader keeps two things in step, one change per
// round: postgres' synchronous_standby_names (the standbys a commit waits
// for) and the sync record in etcd (state.SyncState: who may be promoted).
// The invariant, true at every moment:
//
//	every member in the record has every commit the leader acknowledged.
//
// synchronous_standby_names always names exactly the standbys it waits for
// ("FIRST n (a, b)" with n the number of names), so a commit is
// acknowledged only once each of them has flushed it. Then:
//
//   - a standby is added to the record only after it is in the effective
//     setting (as postgres applies it, read back) and has flushed past the
//     position the leader was at when that setting was first seen in
//     effect (Mark): it has every commit acknowledged before the mark, and
//     every later one waited for it;
//   - a standby is removed from the record before it is removed from the
//     setting, so a recorded member never misses a commit.
//
// Issue 10 phrased the order the other way round ("record before adding a
// name to postgres; remove from postgres before removing the record"), which
// keeps only "some recorded member has every commit": a failover would then
// need every recorded member reachable to find that one. This order keeps
// "every recorded member", so any reachable recorded standby is a safe
// candidate, and the ranking only prefers the most advanced.
//
// With no recorded standby, only the leader has every commit: no automatic
// failover (cifhactl failover --to is the operator's explicit choice).
// Strict mode never acknowledges a commit without a synchronous standby:
// while none is healthy, the setting keeps naming the recorded ones (or a
// name no standby has), and commits wait.

// SyncConfig is the effective synchronous-replication setting.
type SyncConfig struct {
	On     bool
	Strict bool
	// Count is how many standbys each commit waits for (at least 1).
	Count int
}

// SyncMark is what the agent remembers between rounds: the first position
// it read while the effective setting named exactly Names.
type SyncMark struct {
	Names []string
	LSN   state.LSN
}

// SyncInput is the leader's view for one synchronous-replication step.
type SyncInput struct {
	Self string
	// Term is this leader's tenure (Observation.Term).
	Term   int64
	Config SyncConfig
	// Record is the sync key as read (nil: absent).
	Record *state.SyncState
	// Effective is synchronous_standby_names as postgres applies it,
	// parsed: Names, Block (the placeholder no standby matches), OK false
	// when it is not a value cifha writes.
	Effective SyncNames
	Replicas  []state.Replica
	Members   map[string]state.Member
	Mark      SyncMark
	// MaxReplyAge: a standby whose last reply is older is not healthy
	// (Timing.SyncReplyTimeout; 0: not checked).
	MaxReplyAge time.Duration
}

// SyncNames is a parsed synchronous_standby_names.
type SyncNames struct {
	Names []string
	Block bool
	OK    bool
	Raw   string
}

// SyncStepKind is what the step changes.
type SyncStepKind int

// Kinds of step.
const (
	SyncNone SyncStepKind = iota
	// SyncRecord writes the record with Members.
	SyncRecord
	// SyncDeleteRecord removes the record (synchronous mode turned off).
	SyncDeleteRecord
	// SyncSetNames sets synchronous_standby_names to Names (Block: the
	// placeholder; neither: empty, asynchronous) and reloads.
	SyncSetNames
)

// SyncStep is one change, or none.
type SyncStep struct {
	Kind    SyncStepKind
	Members []string
	Names   []string
	Block   bool
	Strict  bool
	Reason  string
}

// DecideSync returns the next step towards the desired synchronous
// standbys, keeping the invariant above at every step.
func DecideSync(in SyncInput) SyncStep {
	cfg := in.Config
	if !cfg.On {
		switch {
		case len(in.Effective.Names) > 0 || in.Effective.Block || !in.Effective.OK:
			return SyncStep{Kind: SyncSetNames, Reason: "synchronous mode is off: replicating asynchronously"}
		case in.Record != nil:
			return SyncStep{Kind: SyncDeleteRecord, Reason: "synchronous mode is off: removing the sync record"}
		}
		return SyncStep{Reason: "asynchronous replication"}
	}
	count := max(cfg.Count, 1)
	rec := in.Record
	if rec == nil || !rec.Of(in.Self, in.Term) {
		// A new term (or a record someone else wrote, or this member's
		// own from an earlier tenure of the key): no standby
		// provably has this leader's commits yet. Writing an empty list
		// only narrows who may be promoted, so it is always safe first.
		return SyncStep{Kind: SyncRecord, Members: []string{}, Strict: cfg.Strict,
			Reason: "synchronous mode: recording this leader's term (no synchronous standby yet)"}
	}
	recorded := slices.Sorted(slices.Values(rec.Members))
	if rec.Strict != cfg.Strict {
		return SyncStep{Kind: SyncRecord, Members: recorded, Strict: cfg.Strict, Reason: fmt.Sprintf("synchronous mode: strict is now %v", cfg.Strict)}
	}
	want := Healthy(in.Replicas, in.Members, recorded, in.MaxReplyAge)
	if len(want) > count {
		want = want[:count]
	}
	slices.Sort(want)
	// 1. Remove from the record first: a standby that leaves the setting
	// stops receiving every commit.
	if drop := minus(recorded, want); len(drop) > 0 && !(cfg.Strict && len(want) == 0) {
		keep := minus(recorded, drop)
		return SyncStep{Kind: SyncRecord, Members: keep, Strict: cfg.Strict,
			Reason: fmt.Sprintf("synchronous mode: %s no longer a healthy synchronous standby; removed from the record before the setting", strings.Join(drop, ", "))}
	}
	// 2. The setting: the wanted standbys; in strict mode with none, the
	// recorded ones (or the placeholder), so that commits wait.
	names, block := want, false
	switch {
	case len(want) > 0:
	case cfg.Strict && len(recorded) > 0:
		names = recorded
	case cfg.Strict:
		names, block = nil, true
	}
	eff := in.Effective
	if !eff.OK || !slices.Equal(slices.Sorted(slices.Values(eff.Names)), names) || eff.Block != block {
		why := "synchronous mode: waiting for " + strings.Join(names, ", ")
		switch {
		case block:
			why = "synchronous mode (strict): no healthy standby; commits wait until one is synchronous"
		case len(names) == 0:
			why = "synchronous mode: no healthy standby; replicating asynchronously (no automatic failover until one is synchronous)"
		}
		return SyncStep{Kind: SyncSetNames, Names: names, Block: block, Reason: why}
	}
	// 3. Add to the record the standbys that have caught up under the
	// effective setting.
	mark := in.Mark
	if mark.LSN != 0 && slices.Equal(mark.Names, names) {
		var add []string
		for _, name := range minus(want, recorded) {
			r, ok := replica(in.Replicas, name)
			if ok && r.SyncState == "sync" && r.FlushLSN >= mark.LSN {
				add = append(add, name)
			}
		}
		if len(add) > 0 {
			return SyncStep{Kind: SyncRecord, Members: slices.Sorted(slices.Values(append(append([]string{}, recorded...), add...))), Strict: cfg.Strict,
				Reason: fmt.Sprintf("synchronous mode: %s caught up (flushed past %s); recorded as synchronous", strings.Join(add, ", "), mark.LSN)}
		}
	}
	switch {
	case len(want) == 0 && len(recorded) > 0 && cfg.Strict:
		return SyncStep{Reason: "synchronous mode (strict): synchronous standby " + strings.Join(recorded, ", ") + " is not healthy and no other is; commits wait"}
	case len(recorded) == 0 && len(want) == 0 && cfg.Strict:
		return SyncStep{Reason: "synchronous mode (strict): no healthy standby; commits wait"}
	case len(recorded) == 0 && len(want) == 0:
		return SyncStep{Reason: "synchronous mode: no healthy standby; replicating asynchronously"}
	case len(minus(want, recorded)) > 0:
		return SyncStep{Reason: "synchronous mode: waiting for " + strings.Join(minus(want, recorded), ", ") + " to catch up"}
	}
	return SyncStep{Reason: "synchronous standbys: " + strings.Join(recorded, ", ")}
}

// Healthy lists the standbys that can be synchronous, best first: streaming
// to this primary, with a live member key, not tagged nofailover (a
// synchronous standby exists to be promoted), and replying: its last reply
// no older than maxReplyAge (0: not checked; an age postgres does not show
// is not checked either). Recorded ones come first (no needless change),
// then the most advanced, then by name.
func Healthy(replicas []state.Replica, members map[string]state.Member, recorded []string, maxReplyAge time.Duration) []string {
	type cand struct {
		name     string
		recorded bool
		flush    state.LSN
	}
	seen := map[string]bool{}
	var cs []cand
	for _, r := range replicas {
		m, ok := members[r.Name]
		if !ok || seen[r.Name] || r.State != "streaming" || m.NoFailover || !state.ValidName(r.Name) {
			continue
		}
		if maxReplyAge > 0 && r.ReplyAgeSeconds > maxReplyAge.Seconds() {
			continue
		}
		seen[r.Name] = true
		cs = append(cs, cand{r.Name, slices.Contains(recorded, r.Name), r.FlushLSN})
	}
	slices.SortFunc(cs, func(a, b cand) int {
		switch {
		case a.recorded != b.recorded:
			if a.recorded {
				return -1
			}
			return 1
		case a.flush != b.flush:
			if a.flush > b.flush {
				return -1
			}
			return 1
		}
		return strings.Compare(a.name, b.name)
	})
	out := make([]string, len(cs))
	for i, c := range cs {
		out[i] = c.name
	}
	return out
}

func replica(rs []state.Replica, name string) (state.Replica, bool) {
	for _, r := range rs {
		if r.Name == name {
			return r, true
		}
	}
	return state.Replica{}, false
}

// minus returns the names of a not in b, sorted (never nil: a record step
// writes an empty list, not null).
func minus(a, b []string) []string {
	set := map[string]bool{}
	for _, x := range a {
		if !slices.Contains(b, x) {
			set[x] = true
		}
	}
	return append([]string{}, slices.Sorted(maps.Keys(set))...)
}
