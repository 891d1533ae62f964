package checker

import (
	"os"
	"path/filepath"
	"testing"
)

// TestPruneToLogs: data directories and binaries go, logs and
// configuration stay.
func TestPruneToLogs(t *testing.T) {
	root := t.TempDir()
	files := map[string]bool{ // path -> kept
		"lane0/db1/cifha.log":                  true,
		"lane0/db1/cifha.toml":                 true,
		"lane0/db1/postgresql-db1.log":         true,
		"lane0/db1/data/pg_wal/000000010000":   false,
		"lane0/db1/data/postgresql.conf":       false,
		"lane0/etcd/etcd1/etcd.log":            true,
		"lane0/etcd/etcd1/data/member/wal/0.w": false,
		"lane0/bin/cifha":                      false,
		"secrets/api.token":                    true,
	}
	for p := range files {
		full := filepath.Join(root, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte("0123456789"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	freed, err := PruneToLogs(root)
	if err != nil {
		t.Fatal(err)
	}
	if freed != 40 {
		t.Errorf("freed %d bytes, want 40", freed)
	}
	for p, kept := range files {
		_, err := os.Stat(filepath.Join(root, p))
		if kept && err != nil {
			t.Errorf("%s removed", p)
		}
		if !kept && err == nil {
			t.Errorf("%s kept", p)
		}
	}
}
