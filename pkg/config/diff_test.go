package config

import (
	"reflect"
	"testing"
	"time"
)

func TestDiff(t *testing.T) {
	a := Default()
	a.Path = "/etc/cifha/cifha.toml"
	b := a
	b.Path = "/elsewhere.toml"
	if d := Diff(&a, &b); len(d) != 0 {
		t.Fatalf("only the path differs, Diff = %v", d)
	}
	b.API.Token = "new"
	b.Log.Level = "debug"
	b.HA.TTL = Duration{9 * time.Second}
	b.Postgres.Parameters = map[string]string{"work_mem": "8MB"}
	b.Postgres.ReplicationPassword = "x"
	want := []string{"api.token_file (contents)", "ha.ttl", "log.level", "postgres.parameters", "postgres.replication_password_file (contents)"}
	if d := Diff(&a, &b); !reflect.DeepEqual(d, want) {
		t.Fatalf("Diff = %v, want %v", d, want)
	}
}
