package ctl

import (
	"bytes"
	"strings"
	"testing"

	"github.com/cifha/cifha/pkg/election"
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
	if s.Healthy() {
		t.Error("a status with problems is healthy")
	}
}
