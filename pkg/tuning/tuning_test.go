package tuning

import "testing"

func get(ps []Param, name string) (string, bool) {
	for _, p := range ps {
		if p.Name == name {
			return p.Value, true
		}
	}
	return "", false
}

func TestCIFProfile(t *testing.T) {
	ps := CIF(8<<30, 150004) // the seed's tested 8 GB host
	for name, want := range map[string]string{
		"shared_buffers": "819MB", "effective_cache_size": "4914MB", "work_mem": "1024MB", "wal_buffers": "12MB",
	} {
		if got, _ := get(ps, name); got != want {
			t.Errorf("%s = %q, want %q", name, got, want)
		}
	}
	if got, _ := get(CIF(64<<30, 150004), "work_mem"); got != "2048MB" {
		t.Errorf("work_mem not capped: %s", got)
	}
	if got, _ := get(ps, "max_connections"); got != "11" {
		t.Errorf("max_connections on 15 = %s", got)
	}
	if got, _ := get(CIF(8<<30, 110005), "max_connections"); got != "21" {
		t.Errorf("max_connections on 11 = %s (WAL senders count against it)", got)
	}
	if _, ok := get(ps, "checkpoint_segments"); ok {
		t.Error("checkpoint_segments is gone since 9.5")
	}
}

func TestHAByVersion(t *testing.T) {
	cases := []struct {
		version int
		want    map[string]string
		absent  []string
	}{
		{90124, map[string]string{"wal_level": "hot_standby", "wal_keep_segments": "128", "checkpoint_segments": "64"}, []string{"wal_keep_size", "max_wal_size"}},
		{90600, map[string]string{"wal_level": "replica", "max_wal_size": "3GB", "wal_keep_segments": "128"}, []string{"wal_keep_size"}},
		{120000, map[string]string{"wal_keep_segments": "128"}, []string{"wal_keep_size", "max_slot_wal_keep_size"}},
		{150004, map[string]string{"wal_level": "replica", "wal_keep_size": "2GB", "wal_log_hints": "on", "archive_mode": "off"}, []string{"wal_keep_segments", "checkpoint_segments"}},
	}
	for _, c := range cases {
		ps := HA(c.version, HAOptions{})
		for k, v := range c.want {
			if got, _ := get(ps, k); got != v {
				t.Errorf("v%d %s = %q, want %q", c.version, k, got, v)
			}
		}
		for _, k := range c.absent {
			if _, ok := get(ps, k); ok {
				t.Errorf("v%d has %s", c.version, k)
			}
		}
	}
	ps := HA(150004, HAOptions{ArchiveCommand: "cp %p '/arch/%f'"})
	if got, _ := get(ps, "archive_command"); got != `'cp %p ''/arch/%f'''` {
		t.Errorf("archive_command = %s", got)
	}
}
