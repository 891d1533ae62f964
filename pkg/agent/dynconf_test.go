package agent

import (
	"errors"
	"github.com/cifha/cifha/pkg/agent/agenttest"
	"strings"
	"testing"
	"time"

	"github.com/cifha/cifha/pkg/election"
	"github.com/cifha/cifha/pkg/pgctl"
)

func f(v float64) *float64 { return &v }

var testSettings = agenttest.Settings

func TestApplySet(t *testing.T) {
	lim := Limits{FenceMargin: time.Second, LoopInterval: time.Second, TTL: 10 * time.Second}
	good := []map[string]string{
		{"maximum_lag_on_failover": "64MB"},
		{"postgresql.parameters.work_mem": "8MB"},
		{"parameters.work_mem": "4096"},
		{"postgresql.parameters.shared_buffers": "256MB"},
		{"postgresql.parameters.log_min_duration_statement": "250ms"},
		{"postgresql.parameters.synchronous_commit": "off"},
		{"postgresql.parameters.log_connections": "on"},
		{"postgresql.parameters.random_page_cost": "1.1"},
		{"postgresql.parameters.pg_stat_statements.max": "1000"},
		{"ttl": "6s", "loop_interval": "500ms"},
		{"synchronous_mode": "true", "synchronous_mode_strict": "false", "synchronous_node_count": "2"},
		{"synchronous_mode": ""},
		{"failsafe_mode": "true"},
		{"failsafe_mode": ""},
	}
	for _, set := range good {
		if _, err := ApplySet(election.DynamicConfig{}, set, testSettings, lim); err != nil {
			t.Errorf("%v: %v", set, err)
		}
	}
	bad := []struct {
		set map[string]string
		key string
	}{
		{map[string]string{"maximum_lag_on_failover": "lots"}, "maximum_lag_on_failover"},
		{map[string]string{"postgresql.parameters.work_mem": "8XB"}, "postgresql.parameters.work_mem"},
		{map[string]string{"postgresql.parameters.work_mem": "1kB"}, "postgresql.parameters.work_mem"},
		{map[string]string{"postgresql.parameters.shared_buffers": "1kB"}, "postgresql.parameters.shared_buffers"},
		{map[string]string{"postgresql.parameters.synchronous_commit": "sometimes"}, "postgresql.parameters.synchronous_commit"},
		{map[string]string{"postgresql.parameters.log_connections": "maybe"}, "postgresql.parameters.log_connections"},
		{map[string]string{"postgresql.parameters.no_such_thing": "1"}, "postgresql.parameters.no_such_thing"},
		{map[string]string{"postgresql.parameters.listen_addresses": "*"}, "postgresql.parameters.listen_addresses"},
		{map[string]string{"postgresql.parameters.work_mem": "1\nport=1"}, "postgresql.parameters.work_mem"},
		{map[string]string{"ttl": "1s"}, "ttl"},
		{map[string]string{"ttl": "2.5s"}, "ttl"},
		{map[string]string{"ttl": "soon"}, "ttl"},
		{map[string]string{"loop_interval": "8s"}, "loop_interval"},
		{map[string]string{"colour": "blue"}, "colour"},
		{map[string]string{"synchronous_mode": "yes please"}, "synchronous_mode"},
		{map[string]string{"synchronous_mode_strict": "2"}, "synchronous_mode_strict"},
		{map[string]string{"failsafe_mode": "sometimes"}, "failsafe_mode"},
		{map[string]string{"synchronous_node_count": "0"}, "synchronous_node_count"},
		{map[string]string{"synchronous_node_count": "many"}, "synchronous_node_count"},
		{map[string]string{"postgresql.parameters.synchronous_standby_names": "*"}, "postgresql.parameters.synchronous_standby_names"},
		{map[string]string{"postgresql.parameters.wal_level": "minimal"}, "postgresql.parameters.wal_level"},
		{map[string]string{"postgresql.parameters.fsync": "off"}, "postgresql.parameters.fsync"},
		{map[string]string{"postgresql.parameters.fsync": "of"}, "postgresql.parameters.fsync"},
		{map[string]string{"postgresql.parameters.full_page_writes": "F"}, "postgresql.parameters.full_page_writes"},
		{map[string]string{"postgresql.parameters.wal_log_hints": "n"}, "postgresql.parameters.wal_log_hints"},
		{map[string]string{"postgresql.parameters.max_wal_senders": "0"}, "postgresql.parameters.max_wal_senders"},
		{map[string]string{"postgresql.parameters.recovery_target_time": "2026-01-01"}, "postgresql.parameters.recovery_target_time"},
	}
	for _, b := range bad {
		cur := election.DynamicConfig{Parameters: map[string]string{"work_mem": "4MB"}}
		got, err := ApplySet(cur, b.set, testSettings, lim)
		var ce *ConfigError
		if !errors.As(err, &ce) || ce.Key != b.key {
			t.Errorf("%v: error %v, want one naming %s", b.set, err, b.key)
		}
		if got.Parameters["work_mem"] != "4MB" || len(got.Parameters) != 1 {
			t.Errorf("%v: refused change altered the config: %+v", b.set, got)
		}
	}
	// "" removes a key.
	got, err := ApplySet(election.DynamicConfig{Parameters: map[string]string{"work_mem": "4MB"}}, map[string]string{"postgresql.parameters.work_mem": ""}, testSettings, lim)
	if err != nil || got.Parameters != nil {
		t.Fatalf("remove: %+v %v", got, err)
	}
	if _, err := ApplySet(election.DynamicConfig{}, nil, testSettings, lim); err == nil || !strings.Contains(err.Error(), "nothing") {
		t.Fatalf("empty set: %v", err)
	}
}

// TestStoredConfigChecked: a config written into etcd by hand is checked
// without a server: managed parameters, line breaks and unsafe values are
// refused even though there is no pg_settings to ask.
func TestStoredConfigChecked(t *testing.T) {
	lim := Limits{FenceMargin: time.Second, TTL: 10 * time.Second, LoopInterval: time.Second}
	for _, c := range []election.DynamicConfig{
		{Parameters: map[string]string{"port": "1"}},
		{Parameters: map[string]string{"work_mem": "1\nport = 1"}},
		{Parameters: map[string]string{"Bad Name": "1"}},
		{Parameters: map[string]string{"wal_level": "minimal"}},
		{LoopInterval: "30s"},
	} {
		if err := ValidateDynamic(c, nil, lim); err == nil {
			t.Errorf("%+v accepted", c)
		}
	}
	if err := ValidateDynamic(election.DynamicConfig{Parameters: map[string]string{"work_mem": "8MB"}}, nil, lim); err != nil {
		t.Fatal(err)
	}
}

func FuzzParseDynamicConfig(f *testing.F) {
	f.Add([]byte(`{"ttl":"10s","parameters":{"work_mem":"4MB"}}`))
	f.Add([]byte(`{"maximum_lag_on_failover":1048576}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := election.ParseDynamicConfig(b)
		if err != nil {
			return
		}
		// Whatever parses is validated without panicking.
		_ = ValidateDynamic(c, testSettings, Limits{FenceMargin: time.Second, TTL: 10 * time.Second, LoopInterval: time.Second})
	})
}

// FuzzParseControlData lives here rather than in pkg/pgctl, whose tests
// re-execute as the postgres user (the fuzz cache belongs to root).
func FuzzParseControlData(f *testing.F) {
	f.Add("Database cluster state: shut down\nLatest checkpoint location: 0/3000028\nLatest checkpoint's TimeLineID: 2\n")
	f.Add("Database cluster state: shut down\nLatest checkpoint location: 0/1\nLatest checkpoint's TimeLineID: x\n")
	f.Fuzz(func(t *testing.T, out string) {
		c, err := pgctl.ParseControlData(out)
		if err == nil && (c.State == "" && !strings.Contains(out, "state")) {
			t.Fatalf("parsed without a state line: %+v", c)
		}
	})
}
