package ha

import (
	"slices"
	"strings"
	"testing"

	"github.com/cifha/cifha/pkg/state"
)

func rep(name string, flush state.LSN, sync string) state.Replica {
	return state.Replica{Name: name, State: "streaming", FlushLSN: flush, SyncState: sync}
}

func members(names ...string) map[string]state.Member {
	m := map[string]state.Member{}
	for _, n := range names {
		m[n] = state.Member{Name: n, Role: "replica", State: "streaming"}
	}
	return m
}

func rec(leader string, strict bool, ms ...string) *state.SyncState {
	return &state.SyncState{Leader: leader, Members: ms, Strict: strict}
}

func eff(names ...string) SyncNames { return SyncNames{Names: names, OK: true} }

// TestDecideSync steps the leader's synchronous-replication state one change
// at a time; the order is the safety property (sync.go).
func TestDecideSync(t *testing.T) {
	on := SyncConfig{On: true, Count: 1}
	strict := SyncConfig{On: true, Strict: true, Count: 1}
	two := SyncConfig{On: true, Count: 2}
	tests := []struct {
		name string
		in   SyncInput
		want SyncStep // Kind, Members, Names, Block compared; Reason by substring
		why  string
	}{
		{"off, nothing set", SyncInput{Effective: eff()}, SyncStep{Kind: SyncNone}, "asynchronous"},
		{"off, names still set: clear them first", SyncInput{Effective: eff("db2"), Record: rec("db1", false, "db2")}, SyncStep{Kind: SyncSetNames}, "off"},
		{"off, then the record goes", SyncInput{Effective: eff(), Record: rec("db1", false, "db2")}, SyncStep{Kind: SyncDeleteRecord}, "off"},
		{"on, no record: this term starts empty", SyncInput{Config: on, Effective: eff()}, SyncStep{Kind: SyncRecord, Members: []string{}}, "term"},
		{"on, another leader's record: this term starts empty", SyncInput{Config: on, Record: rec("db9", false, "db1", "db2"), Effective: eff(), Replicas: []state.Replica{rep("db2", 100, "async")}, Members: members("db2")},
			SyncStep{Kind: SyncRecord, Members: []string{}}, "term"},
		{"record mine, a healthy standby: set it first", SyncInput{Config: on, Record: rec("db1", false), Effective: eff(), Replicas: []state.Replica{rep("db2", 100, "async")}, Members: members("db2")},
			SyncStep{Kind: SyncSetNames, Names: []string{"db2"}}, "waiting for db2"},
		{"set, but no mark yet: not recorded", SyncInput{Config: on, Record: rec("db1", false), Effective: eff("db2"), Replicas: []state.Replica{rep("db2", 100, "sync")}, Members: members("db2")},
			SyncStep{Kind: SyncNone}, "catch up"},
		{"set, flushed below the mark: not recorded", SyncInput{Config: on, Record: rec("db1", false), Effective: eff("db2"), Replicas: []state.Replica{rep("db2", 99, "sync")}, Members: members("db2"), Mark: SyncMark{[]string{"db2"}, 100}},
			SyncStep{Kind: SyncNone}, "catch up"},
		{"set, not yet sync in pg_stat_replication: not recorded", SyncInput{Config: on, Record: rec("db1", false), Effective: eff("db2"), Replicas: []state.Replica{rep("db2", 200, "potential")}, Members: members("db2"), Mark: SyncMark{[]string{"db2"}, 100}},
			SyncStep{Kind: SyncNone}, "catch up"},
		{"mark for another setting: not recorded", SyncInput{Config: on, Record: rec("db1", false), Effective: eff("db2"), Replicas: []state.Replica{rep("db2", 200, "sync")}, Members: members("db2"), Mark: SyncMark{[]string{"db3"}, 100}},
			SyncStep{Kind: SyncNone}, "catch up"},
		{"flushed past the mark, sync: recorded", SyncInput{Config: on, Record: rec("db1", false), Effective: eff("db2"), Replicas: []state.Replica{rep("db2", 100, "sync")}, Members: members("db2"), Mark: SyncMark{[]string{"db2"}, 100}},
			SyncStep{Kind: SyncRecord, Members: []string{"db2"}}, "recorded"},
		{"steady", SyncInput{Config: on, Record: rec("db1", false, "db2"), Effective: eff("db2"), Replicas: []state.Replica{rep("db2", 100, "sync")}, Members: members("db2"), Mark: SyncMark{[]string{"db2"}, 100}},
			SyncStep{Kind: SyncNone}, "synchronous standbys: db2"},
		{"recorded standby gone: out of the record before the setting", SyncInput{Config: on, Record: rec("db1", false, "db2"), Effective: eff("db2"), Members: members()},
			SyncStep{Kind: SyncRecord, Members: []string{}}, "removed from the record"},
		{"then out of the setting: asynchronous", SyncInput{Config: on, Record: rec("db1", false), Effective: eff("db2"), Members: members()},
			SyncStep{Kind: SyncSetNames}, "asynchronously"},
		{"recorded standby not streaming any more (member key still there)", SyncInput{Config: on, Record: rec("db1", false, "db2"), Effective: eff("db2"), Replicas: []state.Replica{{Name: "db2", State: "catchup"}}, Members: members("db2")},
			SyncStep{Kind: SyncRecord, Members: []string{}}, "removed"},
		{"replace: the old one leaves the record first", SyncInput{Config: on, Record: rec("db1", false, "db2"), Effective: eff("db2"), Replicas: []state.Replica{rep("db3", 100, "async")}, Members: members("db2", "db3")},
			SyncStep{Kind: SyncRecord, Members: []string{}}, "db2 no longer"},
		{"recorded one preferred over a more advanced one", SyncInput{Config: on, Record: rec("db1", false, "db2"), Effective: eff("db2"), Replicas: []state.Replica{rep("db3", 500, "potential"), rep("db2", 100, "sync")}, Members: members("db2", "db3"), Mark: SyncMark{[]string{"db2"}, 50}},
			SyncStep{Kind: SyncNone}, "db2"},
		{"nofailover standby never synchronous", SyncInput{Config: on, Record: rec("db1", false), Effective: eff(), Replicas: []state.Replica{rep("db2", 100, "async")},
			Members: map[string]state.Member{"db2": {Name: "db2", NoFailover: true}}}, SyncStep{Kind: SyncNone}, "asynchronously"},
		{"strict, nobody ever: the placeholder blocks commits", SyncInput{Config: strict, Record: rec("db1", true), Effective: eff()},
			SyncStep{Kind: SyncSetNames, Block: true}, "commits wait"},
		{"strict, recorded standby gone, none other: kept (commits wait)", SyncInput{Config: strict, Record: rec("db1", true, "db2"), Effective: eff("db2"), Members: members()},
			SyncStep{Kind: SyncNone}, "db2 is not healthy and no other is; commits wait"},
		{"strict, another standby comes: the dead one leaves the record first", SyncInput{Config: strict, Record: rec("db1", true, "db2"), Effective: eff("db2"), Replicas: []state.Replica{rep("db3", 100, "async")}, Members: members("db3")},
			SyncStep{Kind: SyncRecord, Members: []string{}}, "removed"},
		{"strict, then the setting names the new one", SyncInput{Config: strict, Record: rec("db1", true), Effective: eff("db2"), Replicas: []state.Replica{rep("db3", 100, "async")}, Members: members("db3")},
			SyncStep{Kind: SyncSetNames, Names: []string{"db3"}}, "db3"},
		{"strict flag changed: rewritten with the same members", SyncInput{Config: strict, Record: rec("db1", false, "db2"), Effective: eff("db2")},
			SyncStep{Kind: SyncRecord, Members: []string{"db2"}}, "strict"},
		{"two wanted: both named", SyncInput{Config: two, Record: rec("db1", false, "db2"), Effective: eff("db2"), Replicas: []state.Replica{rep("db2", 100, "sync"), rep("db3", 90, "async"), rep("db4", 80, "async")}, Members: members("db2", "db3", "db4")},
			SyncStep{Kind: SyncSetNames, Names: []string{"db2", "db3"}}, "db2, db3"},
		{"unreadable setting (someone's ALTER SYSTEM): rewritten", SyncInput{Config: on, Record: rec("db1", false, "db2"), Effective: SyncNames{Raw: "ANY 1 (x)"}, Replicas: []state.Replica{rep("db2", 100, "sync")}, Members: members("db2")},
			SyncStep{Kind: SyncSetNames, Names: []string{"db2"}}, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.in.Self = "db1"
			got := DecideSync(tc.in)
			if got.Kind != tc.want.Kind || !slices.Equal(got.Members, tc.want.Members) || !slices.Equal(got.Names, tc.want.Names) || got.Block != tc.want.Block || !strings.Contains(got.Reason, tc.why) {
				t.Fatalf("got %+v\nwant %+v (reason containing %q)", got, tc.want, tc.why)
			}
			if (got.Kind == SyncRecord) != (got.Members != nil) {
				t.Fatalf("a record step needs a member list (empty, not nil): %+v", got)
			}
		})
	}
}

// TestSyncInvariantRandomWalk drives DecideSync through random standby
// comings and goings, applying each step to a model of postgres and etcd,
// and checks after every step that each recorded standby has every
// acknowledged commit (the model acknowledges a commit only once every
// standby named in the effective setting has flushed it).
func TestSyncInvariantRandomWalk(t *testing.T) {
	for seed := uint64(1); seed <= 200; seed++ {
		walk(t, seed)
	}
}

func walk(t *testing.T, seed uint64) {
	rnd := seed
	next := func(n int) int {
		rnd = rnd*6364136223846793005 + 1442695040888963407
		return int((rnd >> 33) % uint64(n))
	}
	names := []string{"db2", "db3", "db4"}
	cfg := SyncConfig{On: true, Strict: seed%2 == 0, Count: 1 + int(seed%3)%2}
	up := map[string]bool{}
	flushed := map[string]state.LSN{} // what each standby has flushed
	var lsn state.LSN = 100           // the primary's position
	var acked state.LSN               // highest acknowledged commit
	var record *state.SyncState
	var setting SyncNames = SyncNames{OK: true}
	var mark SyncMark
	for step := 0; step < 300; step++ {
		switch next(4) {
		case 0: // a standby comes or goes
			n := names[next(len(names))]
			up[n] = !up[n]
		case 1: // standbys stream
			for _, n := range names {
				if up[n] && next(2) == 0 {
					flushed[n] = lsn
				}
			}
		case 2: // a commit: acknowledged only if every named standby is up and has flushed it
			lsn += 10
			if setting.Block {
				break
			}
			ok := true
			for _, n := range setting.Names {
				if !up[n] {
					ok = false
				}
			}
			if ok {
				for _, n := range setting.Names {
					flushed[n] = lsn
				}
				acked = lsn
			}
		}
		var reps []state.Replica
		ms := map[string]state.Member{}
		for _, n := range names {
			if up[n] {
				ss := "async"
				if slices.Contains(setting.Names, n) {
					ss = "sync"
				}
				reps = append(reps, state.Replica{Name: n, State: "streaming", FlushLSN: flushed[n], SyncState: ss})
				ms[n] = state.Member{Name: n}
			}
		}
		if !slices.Equal(mark.Names, setting.Names) {
			mark = SyncMark{Names: slices.Clone(setting.Names), LSN: lsn}
		}
		s := DecideSync(SyncInput{Self: "db1", Config: cfg, Record: record, Effective: setting, Replicas: reps, Members: ms, Mark: mark})
		switch s.Kind {
		case SyncRecord:
			record = &state.SyncState{Leader: "db1", Members: s.Members, Strict: s.Strict}
		case SyncSetNames:
			setting = SyncNames{Names: s.Names, Block: s.Block, OK: true}
		}
		if record != nil {
			for _, m := range record.Members {
				if flushed[m] < acked {
					t.Fatalf("seed %d step %d: recorded %s has flushed %s, but %s was acknowledged (record %v, setting %v, last step %+v)",
						seed, step, m, flushed[m], acked, record.Members, setting.Names, s)
				}
			}
			if cfg.Strict && len(record.Members) == 0 && !setting.Block && len(setting.Names) == 0 && step > 5 {
				t.Fatalf("seed %d step %d: strict mode left commits unguarded", seed, step)
			}
		}
	}
}

func syncRec(leader string, ms ...string) func(*Observation) {
	return func(o *Observation) { o.Cluster.Sync = &state.SyncState{Leader: leader, Members: ms} }
}

// TestFailoverSynchronous: with a sync record, only a standby recorded under
// the last leader's term is promoted, whatever its lag; others wait.
func TestFailoverSynchronous(t *testing.T) {
	tests := []struct {
		name string
		o    Observation
		want Action
		why  string
	}{
		{"recorded: promoted despite lag", failover(0x10, syncRec("db9", "db1"), func(o *Observation) {
			o.Cluster.LastLeader.LSN = "0/10000000" // far more than maximum_lag_on_failover ahead
		}), TakeOver, "most advanced"},
		{"not recorded: waits even when caught up", failover(0x1000, syncRec("db9", "db2")), Wait, "not a recorded synchronous standby"},
		{"empty record: nobody", failover(0x1000, syncRec("db9")), Wait, "recorded: none"},
		{"record of an older term: nobody", failover(0x1000, syncRec("db8", "db1")), Wait, "not the last leader db9"},
		{"unreadable sync key: nobody", failover(0x1000, func(o *Observation) { o.Cluster.Invalid["/cifha/c/sync"] = "bad" }), Wait, "sync record"},
		{"a more advanced recorded peer wins", failover(0x900, syncRec("db9", "db1", "db2"), peer("db2", 0x1000, 0)), Wait, "db2 is a better candidate"},
		{"a more advanced unrecorded peer does not block", failover(0x900, syncRec("db9", "db1"), peer("db2", 0x1000, 0)), TakeOver, ""},
		{"an unreachable unrecorded peer does not block", failover(0x900, syncRec("db9", "db1"), peer("db2", 0, 0, "unreachable")), TakeOver, ""},
		{"an unreachable recorded peer blocks", failover(0x900, syncRec("db9", "db1", "db2"), peer("db2", 0, 0, "unreachable")), Wait, "cannot read member db2"},
		{"recorded, but on an older timeline: not a candidate", failover(0x1000, syncRec("db9", "db1"), func(o *Observation) { o.Cluster.LastLeader.Timeline = 2 }), Wait, "timeline"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := Decide(tc.o)
			if p.Action != tc.want || !strings.Contains(p.Reason, tc.why) {
				t.Fatalf("got %s (%s), want %s with %q", p.Action, p.Reason, tc.want, tc.why)
			}
		})
	}
}

// TestCheckCandidateSynchronous: a switchover goes only to a recorded
// synchronous standby of this leader.
func TestCheckCandidateSynchronous(t *testing.T) {
	base := CandidateCheck{Self: "db1", Candidate: "db2", LeaderLSN: 0x1000, MaxLag: 1 << 20, RecentWindow: 6e9,
		Live:    Candidate{Running: true, InRecovery: true, ReceiveLSN: 0x1000, ReplayLSN: 0x1000, StreamedAgo: 1e9},
		Cluster: state.Cluster{Members: members("db2")}}
	for _, tc := range []struct {
		sync *state.SyncState
		err  string
	}{
		{nil, ""},
		{&state.SyncState{Leader: "db1", Members: []string{"db2"}}, ""},
		{&state.SyncState{Leader: "db1", Members: []string{"db3"}}, "not a recorded synchronous standby (synchronous mode; recorded: db3)"},
		{&state.SyncState{Leader: "db1"}, "recorded: none yet"},
		{&state.SyncState{Leader: "db9", Members: []string{"db2"}}, "recorded: none yet"},
	} {
		c := base
		c.Cluster.Sync = tc.sync
		err := CheckCandidate(c)
		if (err == nil) != (tc.err == "") || (err != nil && !strings.Contains(err.Error(), tc.err)) {
			t.Errorf("sync %+v: got %v, want %q", tc.sync, err, tc.err)
		}
	}
}

// TestSyncRecordTerm: a sync record counts only in the leader term it was
// written in. A leader that lost its key and took it again (a new term,
// same name) starts from an empty record; a failover does not trust a
// record from an earlier term of the last leader; a switchover from the
// leader goes only to a standby recorded in its current term. Before terms
// were kept, the name alone matched and the stale record was taken as
// current (issue 22, "close the known hole").
func TestSyncRecordTerm(t *testing.T) {
	on := SyncConfig{On: true, Count: 1}
	stale := &state.SyncState{Leader: "db1", Term: 5, Members: []string{"db2"}}
	current := &state.SyncState{Leader: "db1", Term: 9, Members: []string{"db2"}}
	in := SyncInput{Self: "db1", Term: 9, Config: on, Effective: eff("db2"),
		Replicas: []state.Replica{rep("db2", 100, "sync")}, Members: members("db2"), Mark: SyncMark{[]string{"db2"}, 100}}

	t.Run("leader: a record of its earlier term is rewritten empty first", func(t *testing.T) {
		in := in
		in.Record = stale
		s := DecideSync(in)
		if s.Kind != SyncRecord || len(s.Members) != 0 {
			t.Fatalf("got %+v, want an empty record for term 9", s)
		}
	})
	t.Run("leader: its current term's record stands", func(t *testing.T) {
		in := in
		in.Record = current
		if s := DecideSync(in); s.Kind != SyncNone {
			t.Fatalf("got %+v, want no change", s)
		}
	})

	// failover(): db1 is a standby of the lost last leader db9.
	term := func(recTerm, llTerm int64) func(*Observation) {
		return func(o *Observation) {
			o.Cluster.LastLeader.Term = llTerm
			o.Cluster.Sync = &state.SyncState{Leader: "db9", Term: recTerm, Members: []string{"db1"}}
		}
	}
	t.Run("failover: a record of the last leader's earlier term promotes nobody", func(t *testing.T) {
		if p := Decide(failover(0x1000, term(5, 9))); p.Action != Wait || !strings.Contains(p.Reason, "term 5, not its last term 9") {
			t.Fatalf("got %s (%s), want Wait on the stale term", p.Action, p.Reason)
		}
	})
	t.Run("failover: a last-leader without a term falls back to the name", func(t *testing.T) {
		if p := Decide(failover(0x1000, term(5, 0))); p.Action != TakeOver {
			t.Fatalf("got %s (%s), want TakeOver", p.Action, p.Reason)
		}
	})
	t.Run("failover: a record of the last leader's last term promotes", func(t *testing.T) {
		if p := Decide(failover(0x1000, term(9, 9))); p.Action != TakeOver {
			t.Fatalf("got %s (%s), want TakeOver", p.Action, p.Reason)
		}
	})

	chk := CandidateCheck{Self: "db1", Term: 9, Candidate: "db2", LeaderLSN: 0x1000, MaxLag: 1 << 20, RecentWindow: 6e9,
		Live:    Candidate{Running: true, InRecovery: true, ReceiveLSN: 0x1000, ReplayLSN: 0x1000, StreamedAgo: 1e9},
		Cluster: state.Cluster{Members: members("db2")}}
	t.Run("switchover: refused to a standby recorded in an earlier term", func(t *testing.T) {
		c := chk
		c.Cluster.Sync = stale
		if err := CheckCandidate(c); err == nil || !strings.Contains(err.Error(), "not a recorded synchronous standby") {
			t.Fatalf("got %v, want a refusal", err)
		}
	})
	t.Run("switchover: allowed to a standby recorded in this term", func(t *testing.T) {
		c := chk
		c.Cluster.Sync = current
		if err := CheckCandidate(c); err != nil {
			t.Fatalf("got %v, want nil", err)
		}
	})
}

// TestSyncStandbySilent: a recorded synchronous standby whose last reply
// is older than MaxReplyAge is no longer healthy, though postgres still
// shows it streaming (a standby cut from the primary's postgres port keeps
// its member key): it leaves the record first, and another standby that
// replies is chosen. The fault lab found commits stalled for 60 s
// (wal_sender_timeout) without this.
func TestSyncStandbySilent(t *testing.T) {
	on := SyncConfig{On: true, Count: 1}
	silent := rep("db2", 100, "sync")
	silent.ReplyAgeSeconds = 5
	fresh := rep("db3", 100, "potential")
	fresh.ReplyAgeSeconds = 0.4
	in := SyncInput{Self: "db1", Config: on, Record: rec("db1", false, "db2"), Effective: eff("db2"),
		Replicas: []state.Replica{silent, fresh}, Members: members("db2", "db3"), Mark: SyncMark{[]string{"db2"}, 100}, MaxReplyAge: 2e9}
	s := DecideSync(in)
	if s.Kind != SyncRecord || len(s.Members) != 0 {
		t.Fatalf("got %+v, want db2 removed from the record first", s)
	}
	in.Record = rec("db1", false)
	if s := DecideSync(in); s.Kind != SyncSetNames || !slices.Equal(s.Names, []string{"db3"}) {
		t.Fatalf("got %+v, want the setting moved to db3", s)
	}
	// Unknown age (before 12, or none shown) is not held against it, and
	// 0 turns the check off.
	silent.ReplyAgeSeconds = -1
	in.Replicas[0] = silent
	in.Record, in.Effective = rec("db1", false, "db2"), eff("db2")
	if s := DecideSync(in); s.Kind != SyncNone {
		t.Fatalf("got %+v with an unknown reply age, want no change", s)
	}
}
