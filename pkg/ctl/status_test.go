package ctl

import (
	"bytes"
	"strings"
	"testing"

	"github.com/cifha/cifha/pkg/election"
	"github.com/cifha/cifha/pkg/state"
)

func TestLag(t *testing.T) {
	leader := election.Member{Name: "db1", CurrentLSN: "0/3000000",
		Replicas: []election.ReplicaLag{{Name: "db2", LagBytes: 4096}}}
	if l := lag(leader, election.Member{Name: "db2", ReplayLSN: "0/1000000"}); l == nil || *l != 4096 {
		t.Errorf("pg_stat_replication view not preferred: %v", l)
	}
	if l := lag(leader, election.Member{Name: "db3", ReplayLSN: "0/2000000"}); l == nil || *l != 0x1000000 {
		t.Errorf("fallback from published positions: %v", l)
	}
	if l := lag(leader, election.Member{Name: "db3"}); l != nil {
		t.Errorf("unknown replay position gave lag %d", *l)
	}
}

func TestRenderTable(t *testing.T) {
	zero, big := int64(0), int64(3<<20)
	s := ClusterStatus{Cluster: "cif", Leader: "db1", Members: []MemberStatus{
		{Name: "db1", Host: "10.0.1.1:5432", Role: "Leader", State: "running", Timeline: 1, Reachable: true},
		{Name: "db2", Host: "10.0.1.2:5432", Role: "Replica", State: "streaming", Timeline: 1, LagBytes: &big, ReplayPaused: true, Reachable: true},
		{Name: "db3", Host: "10.0.1.3:5432", Role: "Replica", State: "streaming", Timeline: 1, LagBytes: &zero},
		{Name: "db4", Host: "10.0.1.4:5432", Role: "Replica", State: "stopped", Reachable: true},
	}, Problems: []string{"member db3 unreachable: timeout"}}
	var b bytes.Buffer
	RenderTable(&b, s)
	out := b.String()
	for _, want := range []string{"+ Cluster: cif ", "| db1 *  |", "3145728 |      3.0 |", "(replay paused)", "(unreachable)", "unknown", "problem: member db3 unreachable"} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines[1]) != len(lines[2]) || len(lines[2]) != len(lines[3]) {
		t.Errorf("columns not aligned:\n%s", out)
	}
	if s.IsHealthy() {
		t.Error("a status with problems is healthy")
	}
}

// replicationProblems: healthy only with the leader running, every other
// member streaming, and no slot kept for an unregistered member.
func TestReplicationProblems(t *testing.T) {
	leader := election.Member{Name: "db1", State: "running", Slots: []string{state.SlotName("db2"), state.SlotName("db3")}}
	members := map[string]election.Member{
		"db1": leader,
		"db2": {Name: "db2", State: "streaming"},
		"db3": {Name: "db3", State: "streaming"},
	}
	names := []string{"db1", "db2", "db3"}
	if p := replicationProblems("db1", true, leader, names, members); len(p) != 0 {
		t.Fatalf("healthy cluster: %v", p)
	}
	members["db2"] = election.Member{Name: "db2", State: "stopped"}
	members["db1"] = election.Member{Name: "db1", State: "stopped", Slots: leader.Slots}
	delete(members, "db3")
	p := replicationProblems("db1", true, members["db1"], []string{"db1", "db2"}, members)
	want := []string{"leader db1: postgres is stopped", "member db2: not streaming (stopped)", "replication slot " + state.SlotName("db3")}
	if len(p) != len(want) {
		t.Fatalf("problems %v", p)
	}
	for i, w := range want {
		if !strings.Contains(p[i], w) {
			t.Errorf("problem %d = %q, want %q", i, p[i], w)
		}
	}
}
