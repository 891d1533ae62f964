package config

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// exampleConfig returns docs/cifha.example.toml with its password files
// pointed at real files in a temporary directory.
func exampleConfig(t *testing.T) (string, string) {
	t.Helper()
	b, err := os.ReadFile("../../docs/cifha.example.toml")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for _, f := range []string{"superuser.password", "replication.password", "pg.crt", "pg.key", "ca.crt"} {
		if err := os.WriteFile(filepath.Join(dir, f), []byte("s3cret\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "open.key"), []byte("key\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return strings.ReplaceAll(string(b), "/etc/cifha/", dir+"/"), dir
}

func TestExampleConfigLoads(t *testing.T) {
	text, dir := exampleConfig(t)
	path := filepath.Join(dir, "cifha.toml")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := Load(path)
	if err != nil {
		t.Fatalf("example config: %v", err)
	}
	if cfg.Name != "db1" || cfg.Cluster != "cif" {
		t.Errorf("name/cluster = %q/%q", cfg.Name, cfg.Cluster)
	}
	if cfg.HA.TTL.Duration != DefaultTTL || cfg.HA.LoopInterval.Duration != time.Second ||
		cfg.HA.FenceMargin.Duration != 2*time.Second || cfg.HA.MaxLagBytes != 1<<20 || cfg.HA.PromoteMethod != "pg_ctl" {
		t.Errorf("ha = %+v", cfg.HA)
	}
	if cfg.Postgres.ConnectAddress != "10.0.1.1:5432" {
		t.Errorf("connect_address = %q", cfg.Postgres.ConnectAddress)
	}
	if cfg.API.AdvertiseURL != "http://10.0.1.1:8008" {
		t.Errorf("advertise_url = %q", cfg.API.AdvertiseURL)
	}
	if cfg.Postgres.SuperuserPassword != "s3cret" || cfg.Postgres.ReplicationPassword != "s3cret" {
		t.Errorf("passwords not read")
	}
	if len(cfg.Etcd.Endpoints) != 3 {
		t.Errorf("endpoints = %v", cfg.Etcd.Endpoints)
	}
}

// TestBrokenConfigs: every broken config is refused with an error that names
// the key (and the line, where the key is present in the file).
func TestBrokenConfigs(t *testing.T) {
	base, dir := exampleConfig(t)
	replace := func(old, new string) func(string) string {
		return func(s string) string {
			if !strings.Contains(s, old) {
				t.Fatalf("fixture lacks %q", old)
			}
			return strings.Replace(s, old, new, 1)
		}
	}
	cases := []struct {
		name    string
		mutate  func(string) string
		wantKey string
		wantMsg string
		line    bool // the error must carry a line number
	}{
		{"unknown top-level key", func(s string) string { return "colour = \"blue\"\n" + s }, "colour", "unknown key", true},
		{"unknown key in table", replace("dial_timeout = \"2s\"", "dial_timeout = \"2s\"\ndial_timeuot = \"3s\""), "etcd.dial_timeuot", "unknown key", true},
		{"wrong type for port", replace("port = 5432", "port = \"5432\""), "postgres.port", "incompatible types", true},
		{"wrong type for endpoints", replace(`endpoints = ["10.0.0.5:2379", "10.0.0.6:2379", "10.0.0.7:2379"]`, `endpoints = "10.0.0.5:2379"`), "etcd.endpoints", "incompatible types", true},
		{"ttl 0", replace(`ttl = "7s"`, `ttl = "0s"`), "ha.ttl", "below the minimum", true},
		{"ttl not a duration", replace(`ttl = "7s"`, `ttl = "ten"`), "ha.ttl", "invalid duration", true},
		{"ttl fractional", replace(`ttl = "7s"`, `ttl = "2500ms"`), "ha.ttl", "whole seconds", true},
		{"loop interval above ttl/3", replace(`loop_interval = "1s"`, `loop_interval = "5s"`), "ha.loop_interval", "ttl/3", true},
		{"dial timeout vs ttl", replace(`dial_timeout = "2s"`, `dial_timeout = "6s"`), "etcd.dial_timeout", "ttl/2", true},
		{"missing data dir", replace(`data_dir = "/var/lib/cifha/main"`, ``), "postgres.data_dir", "required", false},
		{"relative data dir", replace(`data_dir = "/var/lib/cifha/main"`, `data_dir = "main"`), "postgres.data_dir", "absolute", true},
		{"bootstrap role without password file", func(s string) string { return s + "\n[bootstrap]\nroles = [{ name = \"cif\" }]\n" }, "bootstrap.roles[0].password_file", "required", false},
		{"bootstrap bad role name", func(s string) string {
			return s + "\n[bootstrap]\nroles = [{ name = \"cif; drop\", password_file = \"/x\" }]\n"
		}, "bootstrap.roles[0].name", "plain role name", false},
		{"bootstrap owner unknown", func(s string) string {
			return s + "\n[bootstrap]\ndatabases = [{ name = \"cif\", owner = \"nobody\" }]\n"
		}, "bootstrap.databases[0].owner", "not one of", false},
		{"bootstrap template db", func(s string) string { return s + "\n[bootstrap]\ndatabases = [{ name = \"template1\" }]\n" }, "bootstrap.databases[0].name", "every cluster", false},
		{"relative wal dir", replace(`data_dir = "/var/lib/cifha/main"`, `data_dir = "/var/lib/cifha/main"`+"\nwal_dir = \"wal\""), "postgres.wal_dir", "absolute", true},
		{"wal dir inside data dir", replace(`data_dir = "/var/lib/cifha/main"`, `data_dir = "/var/lib/cifha/main"`+"\nwal_dir = \"/var/lib/cifha/main/pg_wal\""), "postgres.wal_dir", "outside", true},
		{"wal dir with cifha's temp name", replace(`data_dir = "/var/lib/cifha/main"`, `data_dir = "/var/lib/cifha/main"`+"\nwal_dir = \"/var/lib/cifha/main.cifha-new-wal\""), "postgres.wal_dir", "cifha's own names", true},
		{"wal dir holds data dir", replace(`data_dir = "/var/lib/cifha/main"`, `data_dir = "/var/lib/cifha/main"`+"\nwal_dir = \"/var/lib/cifha\""), "postgres.wal_dir", "outside", true},
		{"tablespace relative path", func(s string) string { return s + "\n[postgres.tablespaces]\narchive = \"mnt/archive\"\n" }, "postgres.tablespaces.archive", "absolute", false},
		{"tablespace inside data dir", func(s string) string { return s + "\n[postgres.tablespaces]\nindex = \"/var/lib/cifha/main/index\"\n" }, "postgres.tablespaces.index", "outside postgres.data_dir", false},
		{"tablespace reserved name", func(s string) string { return s + "\n[postgres.tablespaces]\npg_x = \"/mnt/x\"\n" }, "postgres.tablespaces.pg_x", "usable tablespace name", false},
		{"tablespace upper-case name", func(s string) string { return s + "\n[postgres.tablespaces]\nArchive = \"/mnt/x\"\n" }, "postgres.tablespaces.Archive", "usable tablespace name", false},
		{"tablespaces share a directory", func(s string) string {
			return s + "\n[postgres.tablespaces]\narchive = \"/mnt/a\"\nindex = \"/mnt/a/\"\n"
		}, "postgres.tablespaces.index", "also tablespace archive", false},
		{"tablespaces nested", func(s string) string {
			return s + "\n[postgres.tablespaces]\narchive = \"/mnt/a\"\nindex = \"/mnt/a/b\"\n"
		}, "postgres.tablespaces.index", "contain one another", false},
		{"tablespace path with quote", func(s string) string { return s + "\n[postgres.tablespaces]\narchive = \"/mnt/it's\"\n" }, "postgres.tablespaces.archive", "quote", false},
		{"duplicate etcd endpoint", replace(`"10.0.0.6:2379"`, `"http://10.0.0.5:2379"`), "etcd.endpoints", "duplicate", true},
		{"no etcd endpoints", replace(`endpoints = ["10.0.0.5:2379", "10.0.0.6:2379", "10.0.0.7:2379"]`, `endpoints = []`), "etcd.endpoints", "required", true},
		{"endpoint without port", replace(`"10.0.0.7:2379"`, `"10.0.0.7"`), "etcd.endpoints", "host:port", true},
		{"password file unreadable", replace(dir+"/superuser.password", dir+"/missing.password"), "postgres.superuser_password_file", "cannot read", true},
		{"missing cluster", replace(`cluster = "cif"`, ``), "cluster", "required", false},
		{"bad member name", replace(`name = "db1"`, `name = "DB 1"`), "name", "lowercase", true},
		{"port out of range", replace("port = 5432", "port = 70000"), "postgres.port", "out of range", true},
		{"api listen not host:port", replace(`listen = "10.0.1.1:8008"`, `listen = "10.0.1.1"`), "api.listen", "host:port", true},
		{"managed parameter", replace(`# log_min_duration_statement = "1s"`, `wal_level = "minimal"`), "postgres.parameters.wal_level", "set by cifha", true},
		{"bad hba line", replace(`"host all all 10.0.0.1/32 scram-sha-256",`, `"allow everyone",`), "postgres.hba", "pg_hba.conf", true},
		{"bad tuning profile", replace(`profile = "cif"`, `profile = "fast"`), "tuning.profile", "must be", true},
		{"bad memory", replace(`# memory = "8GB"`, `memory = "lots"`), "tuning.memory", "not a size", true},
		{"bad log format", replace(`format = "text"`, `format = "xml"`), "log.format", "must be", true},
		{"syntax error", func(s string) string { return s + "\n[ha\n" }, "", "toml", true},
		{"wildcard listen without connect_address", replace(`listen = "10.0.1.1"`, `listen = "0.0.0.0"`), "postgres.connect_address", "routable", false},
		{"wildcard api listen without advertise_url", replace(`listen = "10.0.1.1:8008"`, `listen = "0.0.0.0:8008"`), "api.advertise_url", "wildcard", false},
		{"fence margin above ttl/3", replace(`start_timeout = "30s"`, "start_timeout = \"30s\"\nfence_margin = \"5s\""), "ha.fence_margin", "ttl/3", true},
		{"fence margin too small", replace(`start_timeout = "30s"`, "start_timeout = \"30s\"\nfence_margin = \"10ms\""), "ha.fence_margin", "minimum", true},
		{"bad maximum lag", replace(`maximum_lag_on_failover = "1MB"`, `maximum_lag_on_failover = "a lot"`), "ha.maximum_lag_on_failover", "not a size", true},
		{"trigger file without path", replace(`promote_method = "pg_ctl"`, `promote_method = "trigger_file"`), "ha.trigger_file", "absolute", false},
		{"unknown promote method", replace(`promote_method = "pg_ctl"`, `promote_method = "touch"`), "ha.promote_method", "must be", true},
		{"postgres TLS without key", replace(`data_dir = "/var/lib/cifha/main"`, `data_dir = "/var/lib/cifha/main"`+"\nssl_cert_file = \""+dir+"/pg.crt\""), "postgres.ssl_cert_file", "together", true},
		{"postgres TLS without CA", replace(`data_dir = "/var/lib/cifha/main"`, `data_dir = "/var/lib/cifha/main"`+"\nssl_cert_file = \""+dir+"/pg.crt\"\nssl_key_file = \""+dir+"/pg.key\""), "postgres.ssl_ca_file", "required", true},
		{"postgres TLS bad mode", replace(`data_dir = "/var/lib/cifha/main"`, `data_dir = "/var/lib/cifha/main"`+"\nssl_cert_file = \""+dir+"/pg.crt\"\nssl_key_file = \""+dir+"/pg.key\"\nssl_ca_file = \""+dir+"/ca.crt\"\nssl_mode = \"require\""), "postgres.ssl_mode", "verify-full", true},
		{"postgres ssl_mode without TLS", replace(`data_dir = "/var/lib/cifha/main"`, `data_dir = "/var/lib/cifha/main"`+"\nssl_mode = \"verify-ca\""), "postgres.ssl_mode", "TLS is off", true},
		{"postgres key readable by others", replace(`data_dir = "/var/lib/cifha/main"`, `data_dir = "/var/lib/cifha/main"`+"\nssl_cert_file = \""+dir+"/pg.crt\"\nssl_key_file = \""+dir+"/open.key\"\nssl_ca_file = \""+dir+"/ca.crt\""), "postgres.ssl_key_file", "chmod", true},
		{"postgres certificate missing", replace(`data_dir = "/var/lib/cifha/main"`, `data_dir = "/var/lib/cifha/main"`+"\nssl_cert_file = \""+dir+"/none.crt\"\nssl_key_file = \""+dir+"/pg.key\"\nssl_ca_file = \""+dir+"/ca.crt\""), "postgres.ssl_cert_file", "cannot read", true},
		{"etcd CA missing", replace(`dial_timeout = "2s"`, `dial_timeout = "2s"`+"\nca_file = \""+dir+"/none.crt\""), "etcd.ca_file", "cannot read", true},
		{"half of api TLS", replace(`# cert_file = "`+dir+`/api.crt"`, `cert_file = "/x.crt"`), "api.cert_file", "together", true},
	}
	if len(cases) < 15 {
		t.Fatalf("want at least 15 cases")
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "cifha.toml")
			if err := os.WriteFile(path, []byte(tc.mutate(base)), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := Load(path)
			if err == nil {
				t.Fatalf("accepted")
			}
			msg := err.Error()
			if !strings.Contains(msg, path) {
				t.Errorf("error does not name the file: %s", msg)
			}
			if tc.wantKey != "" && !strings.Contains(msg, tc.wantKey) {
				t.Errorf("error does not name key %q: %s", tc.wantKey, msg)
			}
			if !strings.Contains(msg, tc.wantMsg) {
				t.Errorf("error lacks %q: %s", tc.wantMsg, msg)
			}
			if tc.line && !strings.Contains(msg, path+":") {
				t.Errorf("error has no line number: %s", msg)
			}
			if strings.Contains(msg, "s3cret") {
				t.Errorf("error leaks a password: %s", msg)
			}
		})
	}
}

// TestPostgresTLSDefaults: TLS on makes members verify each other fully,
// and the default client line TLS-only.
func TestPostgresTLSDefaults(t *testing.T) {
	base, dir := exampleConfig(t)
	text := strings.Replace(base, `data_dir = "/var/lib/cifha/main"`, `data_dir = "/var/lib/cifha/main"`+
		"\nssl_cert_file = \""+dir+"/pg.crt\"\nssl_key_file = \""+dir+"/pg.key\"\nssl_ca_file = \""+dir+"/ca.crt\"", 1)
	text = regexp.MustCompile(`(?s)\nhba = \[.*?\]\n`).ReplaceAllString(text, "\n")
	path := filepath.Join(dir, "tls.toml")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Postgres.SSLMode != "verify-full" {
		t.Errorf("ssl_mode = %q, want verify-full", cfg.Postgres.SSLMode)
	}
	if len(cfg.Postgres.HBA) != 1 || cfg.Postgres.HBA[0] != "hostssl all all all scram-sha-256" {
		t.Errorf("default hba with TLS = %q", cfg.Postgres.HBA)
	}
}

func TestParseBytes(t *testing.T) {
	for in, want := range map[string]int64{"8GB": 8 << 30, "512MB": 512 << 20, "1024kB": 1 << 20, "42": 42} {
		got, err := ParseBytes(in)
		if err != nil || got != want {
			t.Errorf("ParseBytes(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "-1GB", "GB", "1.5GB", "99999999999TB"} {
		if _, err := ParseBytes(in); err == nil {
			t.Errorf("ParseBytes(%q) accepted", in)
		}
	}
}

// FuzzParse: any input is either a valid config or a clear error; never a panic.
func FuzzParse(f *testing.F) {
	b, err := os.ReadFile("../../docs/cifha.example.toml")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(string(b))
	f.Add("cluster = \"x\"\n[ha]\nttl = \"3s\"\n")
	f.Add("[postgres.parameters]\nwork_mem = \"1MB\"\n")
	f.Fuzz(func(t *testing.T, s string) {
		cfg, err := Parse("fuzz.toml", []byte(s))
		if err == nil && cfg == nil {
			t.Fatal("nil config without error")
		}
		if err != nil && !strings.Contains(err.Error(), "fuzz.toml") {
			t.Fatalf("error does not name the file: %v", err)
		}
	})
}
