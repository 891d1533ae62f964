package pgctl

import (
	"context"
	"crypto/md5"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cifha/cifha/internal/testutil"
	"github.com/cifha/cifha/pkg/tuning"
	"github.com/jackc/pgx/v5"
)

func TestMain(m *testing.M) { os.Exit(testutil.RunAsPostgres(m)) }

func TestParseVersion(t *testing.T) {
	cases := map[string]Version{
		"postgres (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)": 150018,
		"postgres (PostgreSQL) 9.1.24":                         90124,
		"postgres (PostgreSQL) 9.6.24":                         90624,
		"postgres (PostgreSQL) 12.1":                           120001,
		"postgres (PostgreSQL) 17beta1":                        170000,
	}
	for in, want := range cases {
		got, err := ParseVersion(in)
		if err != nil || got != want {
			t.Errorf("ParseVersion(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	if _, err := ParseVersion("garbage"); err == nil {
		t.Error("garbage accepted")
	}
	if Version(90124).Major() != "9.1" || Version(150018).Major() != "15" {
		t.Error("Major")
	}
}

func TestLSN(t *testing.T) {
	l, err := ParseLSN("16/B374D848")
	if err != nil || l.String() != "16/B374D848" || uint64(l) != 0x16B374D848 {
		t.Fatalf("ParseLSN: %v %v", l, err)
	}
	if LSN(100).Sub(40) != 60 || LSN(40).Sub(100) != 0 {
		t.Error("Sub")
	}
	for _, bad := range []string{"", "1", "x/1", "1/y"} {
		if _, err := ParseLSN(bad); err == nil {
			t.Errorf("ParseLSN(%q) accepted", bad)
		}
	}
}

var testStandby = Standby{Leader: "db1", Host: "10.0.1.1", Port: 5432, User: "replicator",
	PassFile: "/var/lib/cifha/.cifha.pgpass", AppName: "db2", SlotName: "db2"}

// TestRecoveryConf: 9.x-11 get recovery.conf (standby_mode, primary_conninfo
// with the password left in the passfile); only 15 runs here, so the text is
// asserted.
func TestRecoveryConf(t *testing.T) {
	sb := testStandby
	sb.TriggerFile = "/tmp/pgsql.trigger"
	got := RenderRecoveryConf(sb)
	for _, want := range []string{
		"standby_mode = 'on'\n",
		"primary_conninfo = 'host=10.0.1.1 port=5432 user=replicator passfile=/var/lib/cifha/.cifha.pgpass application_name=db2 ",
		"primary_slot_name = 'db2'\n",
		"recovery_target_timeline = 'latest'\n",
		"# cifha-target: db1 10.0.1.1:5432\n",
		"trigger_file = '/tmp/pgsql.trigger'\n",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("recovery.conf lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "password=") {
		t.Error("password in recovery.conf")
	}
	got12 := RenderStandby12(testStandby)
	if strings.Contains(got12, "standby_mode") || !strings.Contains(got12, "primary_conninfo") {
		t.Errorf("12+ include file:\n%s", got12)
	}
}

func TestStandbyFilesByVersion(t *testing.T) {
	for _, v := range []Version{90624, 110005, 150018} {
		dir := t.TempDir()
		if err := WriteStandby(dir, v, testStandby); err != nil {
			t.Fatal(err)
		}
		st, err := ReadStandby(dir)
		if err != nil || !st.Standby || st.Target != "db1 10.0.1.1:5432" {
			t.Errorf("v%s: %+v %v", v, st, err)
		}
		_, errSignal := os.Stat(filepath.Join(dir, "standby.signal"))
		_, errRecovery := os.Stat(filepath.Join(dir, "recovery.conf"))
		if v.UsesRecoveryConf() != (errRecovery == nil) || v.UsesRecoveryConf() == (errSignal == nil) {
			t.Errorf("v%s: standby.signal %v, recovery.conf %v", v, errSignal, errRecovery)
		}
		if err := ClearStandby(dir, v); err != nil {
			t.Fatal(err)
		}
		if st, _ := ReadStandby(dir); st.Standby {
			t.Errorf("v%s: still standby after ClearStandby", v)
		}
	}
}

func TestQueriesByVersion(t *testing.T) {
	q9 := QueriesFor(90624)
	for _, want := range []string{"pg_current_xlog_location()", "pg_last_xlog_replay_location()", "replay_location"} {
		if !strings.Contains(q9.Status+q9.Replication, want) {
			t.Errorf("9.6 queries lack %s", want)
		}
	}
	q15 := QueriesFor(150018)
	if strings.Contains(q15.Status, "xlog") || !strings.Contains(q15.Status, "pg_current_wal_lsn()") {
		t.Error("15 queries use old names")
	}
}

func TestRenderConf(t *testing.T) {
	s := Settings{Version: 150018, ClusterName: "db1", Listen: "127.0.0.11", Port: 5432, SocketDir: "/run/x",
		OSUser: "postgres", Superuser: "postgres", ReplicationUser: "replicator",
		Params: tuning.HA(150018, tuning.HAOptions{}), HBA: []string{"host all all 10.0.0.1/32 scram-sha-256"}}
	conf := RenderConf(s)
	for _, want := range []string{"include_if_exists = 'postgresql.base.conf'", "listen_addresses = '127.0.0.11'",
		"wal_level = replica", "include_if_exists = 'cifha.recovery.conf'"} {
		if !strings.Contains(conf, want) {
			t.Errorf("postgresql.conf lacks %q", want)
		}
	}
	s.Version = 110005
	if strings.Contains(RenderConf(s), RecoveryIncludeFile) {
		t.Error("11 must not include the 12+ standby file")
	}
	hba := RenderHBA(s)
	if !strings.Contains(hba, "host    replication  replicator  all  scram-sha-256") || !strings.Contains(hba, "host    all          postgres  all  scram-sha-256\n") ||
		!strings.Contains(hba, "host all all 10.0.0.1/32 scram-sha-256\n") {
		t.Errorf("pg_hba.conf:\n%s", hba)
	}
	// member_networks: the replication and superuser lines only from there.
	s.MemberNetworks = []string{"10.0.1.0/24", "10.0.2.0/24"}
	hba = RenderHBA(s)
	for _, want := range []string{"host    replication  replicator  10.0.1.0/24  scram-sha-256", "host    replication  replicator  10.0.2.0/24  scram-sha-256",
		"host    all          postgres  10.0.1.0/24  scram-sha-256", "host    all          postgres  10.0.2.0/24  scram-sha-256"} {
		if !strings.Contains(hba, want) {
			t.Errorf("pg_hba.conf lacks %q:\n%s", want, hba)
		}
	}
	if strings.Contains(hba, "  all  scram") {
		t.Errorf("a line from anywhere remains:\n%s", hba)
	}
}

// TestRenderTLS: with [postgres] ssl_* set, postgres serves TLS, the
// members' own pg_hba lines accept TLS only, and every connection a member
// makes to a peer (streaming, pg_rewind, pg_basebackup) verifies it.
func TestRenderTLS(t *testing.T) {
	tlsOn := TLS{CertFile: "/etc/cifha/db1.crt", KeyFile: "/etc/cifha/db1.key", CAFile: "/etc/cifha/ca.crt"}
	s := Settings{Version: 150018, ClusterName: "db1", Listen: "127.0.0.11", Port: 5432, SocketDir: "/run/x",
		OSUser: "postgres", Superuser: "postgres", ReplicationUser: "replicator", TLS: tlsOn}
	conf := RenderConf(s)
	for _, want := range []string{"ssl = on", "ssl_cert_file = '/etc/cifha/db1.crt'", "ssl_key_file = '/etc/cifha/db1.key'", "ssl_ca_file = '/etc/cifha/ca.crt'"} {
		if !strings.Contains(conf, want) {
			t.Errorf("postgresql.conf lacks %q:\n%s", want, conf)
		}
	}
	hba := RenderHBA(s)
	for _, want := range []string{"hostssl replication  replicator  all  scram-sha-256", "hostssl all          postgres  all  scram-sha-256"} {
		if !strings.Contains(hba, want) {
			t.Errorf("pg_hba.conf lacks %q:\n%s", want, hba)
		}
	}
	if strings.Contains(hba, "\nhost ") {
		t.Errorf("a member line accepts plain TCP:\n%s", hba)
	}
	sb := Standby{Leader: "db2", Host: "127.0.0.12", Port: 5432, User: "replicator", PassFile: "/p", AppName: "db1", TLS: tlsOn}
	if ci := sb.Conninfo(); !strings.Contains(ci, "sslmode=verify-full sslrootcert=/etc/cifha/ca.crt") {
		t.Errorf("primary_conninfo does not verify the upstream: %s", ci)
	}
	sb.TLS.Mode = "verify-ca"
	if ci := sb.Conninfo(); !strings.Contains(ci, "sslmode=verify-ca ") {
		t.Errorf("ssl_mode verify-ca not used: %s", ci)
	}
	if e := strings.Join(tlsOn.env(), " "); e != "PGSSLMODE=verify-full PGSSLROOTCERT=/etc/cifha/ca.crt" {
		t.Errorf("pg_basebackup environment = %q", e)
	}
	// Off: nothing about TLS is written, and peers are reached as before.
	s.TLS = TLS{}
	if conf := RenderConf(s); strings.Contains(conf, "ssl") {
		t.Errorf("TLS off, yet postgresql.conf has:\n%s", conf)
	}
	if hba := RenderHBA(s); strings.Contains(hba, "hostssl") {
		t.Errorf("TLS off, yet pg_hba.conf has hostssl:\n%s", hba)
	}
	sb.TLS = TLS{}
	if ci := sb.Conninfo(); !strings.Contains(ci, "sslmode=prefer") || strings.Contains(ci, "sslrootcert") {
		t.Errorf("TLS off: %s", ci)
	}
}

func TestInspectDataDir(t *testing.T) {
	dir := t.TempDir()
	if st, _ := InspectDataDir(filepath.Join(dir, "nope")); st != DataDirMissing {
		t.Error("missing")
	}
	if st, _ := InspectDataDir(dir); st != DataDirMissing {
		t.Error("empty")
	}
	os.WriteFile(filepath.Join(dir, "important.txt"), []byte("x"), 0o600)
	if st, _ := InspectDataDir(dir); st != DataDirForeign {
		t.Error("foreign")
	}
	if err := install(t.TempDir(), dir); err == nil {
		t.Error("install over a non-empty directory")
	}
	if _, err := os.Stat(filepath.Join(dir, "important.txt")); err != nil {
		t.Error("install touched a foreign directory")
	}
}

// newTestInstance initialises a real cluster listening only on its socket.
func newTestInstance(t *testing.T, ctx context.Context, root, name string) *Instance {
	t.Helper()
	bin := testutil.PGBinDir(t)
	v, err := DetectVersion(ctx, bin)
	if err != nil {
		t.Fatal(err)
	}
	return New(Config{BinDir: bin, DataDir: filepath.Join(root, name), SocketDir: root, Port: 5432,
		Superuser: "postgres", LogFile: filepath.Join(root, name+".log"), PassFile: filepath.Join(root, "pgpass")}, v)
}

func settingsFor(inst *Instance, port int, name string) Settings {
	return Settings{Version: inst.Version(), ClusterName: name, Listen: "", Port: port, SocketDir: inst.cfg.SocketDir,
		OSUser: "postgres", Superuser: "postgres", ReplicationUser: "replicator",
		Params: tuning.HA(int(inst.Version()), tuning.HAOptions{}), HBA: []string{"local all all scram-sha-256"}}
}

// TestRealPrimaryAndClone: initdb, start, status, clone through a slot
// over the socket, standby status, stop. Real postgres 15.
func TestRealPrimaryAndClone(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	root := testutil.Dir(t, "pgctl-")
	p := newTestInstance(t, ctx, root, "p")
	if err := p.InitDB(ctx, "pw"); err != nil {
		t.Fatal(err)
	}
	if err := WriteConfig(p.cfg.DataDir, settingsFor(p, 5432, "p")); err != nil {
		t.Fatal(err)
	}
	if err := WritePassFile(p.cfg.PassFile, map[string]string{"replicator": "rpw:x"}); err != nil {
		t.Fatal(err)
	}
	if err := p.Start(ctx, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.StopWithin(context.Background(), Fast, 5*time.Second) })
	if err := p.Start(ctx, time.Second); err != ErrRunning {
		t.Errorf("second start: %v", err)
	}
	st, err := p.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.InRecovery || st.Timeline != 1 || st.CurrentLSN == 0 {
		t.Errorf("primary status %+v", st)
	}
	if err := p.EnsureRole(ctx, "replicator", "rpw:x", true); err != nil {
		t.Fatal(err)
	}
	if err := p.CreateSlot(ctx, "s"); err != nil {
		t.Fatal(err)
	}
	if err := p.CreateSlot(ctx, "s"); err != nil {
		t.Fatalf("existing slot: %v", err)
	}
	if err := p.Exec(ctx, "CREATE TABLE t (x int); INSERT INTO t VALUES (42)"); err != nil {
		t.Fatal(err)
	}

	// The clone connects over the socket (host = socket dir) as replicator
	// with the passfile: the hba line above requires the password.
	s := newTestInstance(t, ctx, root, "s")
	s.cfg.Port = 5433
	sb := Standby{Leader: "p", Host: root, Port: 5432, User: "replicator", PassFile: p.cfg.PassFile, AppName: "s", SlotName: "s"}
	prepare := func(dir string) error {
		if err := WriteConfig(dir, settingsFor(s, 5433, "s")); err != nil {
			return err
		}
		return WriteStandby(dir, s.Version(), sb)
	}
	if err := s.Clone(ctx, root, 5432, "replicator", "s", "s", false, nil, prepare); err != nil {
		t.Fatal(err)
	}
	if st, err := ReadStandby(s.cfg.DataDir); err != nil || !st.Standby {
		t.Fatalf("clone in place without standby settings: %+v %v", st, err)
	}
	if err := s.Start(ctx, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.StopWithin(context.Background(), Fast, 5*time.Second) })
	testutil.Eventually(t, 10*time.Second, "standby streaming", func() error {
		st, err := s.Status(ctx)
		if err != nil {
			return err
		}
		if !st.InRecovery || st.WalReceiver != "streaming" || st.ReplayLSN == 0 {
			return fmt.Errorf("standby status %+v", st)
		}
		pst, err := p.Status(ctx)
		if err != nil {
			return err
		}
		if len(pst.Replication) != 1 || pst.Replication[0].Name != "s" {
			return fmt.Errorf("pg_stat_replication %+v", pst.Replication)
		}
		return nil
	})
	if err := s.Stop(ctx, Fast); err != nil {
		t.Fatal(err)
	}
	if s.Running() {
		t.Error("running after stop")
	}
	if err := s.Stop(ctx, Fast); err != nil {
		t.Errorf("stopping a stopped postgres is not an error: %v", err)
	}
}

// TestSCRAMVerifier checks the verifier against RFC 7677's test vector
// (user "user", password "pencil", salt W22ZaJ0SNY7soEsUEjb6gQ==, 4096).
func TestSCRAMVerifier(t *testing.T) {
	salt, _ := base64.StdEncoding.DecodeString("W22ZaJ0SNY7soEsUEjb6gQ==")
	v, ok, err := scramVerifier("pencil", salt, 4096)
	if err != nil || !ok {
		t.Fatal(err)
	}
	// StoredKey and ServerKey derived from the RFC's SaltedPassword.
	want := "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU="
	if v != want {
		t.Errorf("verifier\n got %s\nwant %s", v, want)
	}
	if _, ok, _ := PasswordVerifier(150000, "u", "pässword"); ok {
		t.Error("non-ASCII password must fall back")
	}
	if v, _, _ := PasswordVerifier(90600, "user", "pencil"); v != "md5"+md5hex("penciluser") {
		t.Errorf("md5 verifier %s", v)
	}
}

func md5hex(s string) string { h := md5.Sum([]byte(s)); return hex.EncodeToString(h[:]) }

func TestCleanTemp(t *testing.T) {
	root := t.TempDir()
	data := filepath.Join(root, "main")
	os.MkdirAll(data, 0o700)
	os.WriteFile(filepath.Join(data, "PG_VERSION"), []byte("15"), 0o600)
	stale, _ := os.MkdirTemp(root, "main.cifha-new-")
	os.WriteFile(filepath.Join(stale, "base"), []byte("partial"), 0o600)
	old := filepath.Join(root, "main.cifha-old-20260101T000000Z") // moved aside: kept
	os.MkdirAll(old, 0o700)
	other := filepath.Join(root, "mainx.cifha-new-1") // another data dir's: kept
	os.MkdirAll(other, 0o700)
	removed, err := CleanTemp(data)
	if err != nil || len(removed) != 1 || removed[0] != stale {
		t.Fatalf("removed %v, %v", removed, err)
	}
	for _, keep := range []string{data, old, other} {
		if _, err := os.Stat(keep); err != nil {
			t.Errorf("%s removed", keep)
		}
	}
}

// TestTuneOutputStartsPostgres: `cifha tune`'s postgres settings (4 GiB,
// 4 CPUs, this PostgreSQL) appended to a fresh cluster's postgresql.conf;
// the real server starts with them and shows them (issue 11, acceptance 5).
func TestTuneOutputStartsPostgres(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	root := testutil.Dir(t, "pgctl-tune-")
	p := newTestInstance(t, ctx, root, "p")
	if err := p.InitDB(ctx, "pw"); err != nil {
		t.Fatal(err)
	}
	s := settingsFor(p, 5432, "p")
	s.Params = nil
	if err := WriteConfig(p.cfg.DataDir, s); err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	if err := tuning.Tune(&b, tuning.TuneOptions{RAM: 4 << 30, CPUs: 4, PageSize: 4096, Version: int(p.Version()), Profile: "cif", Only: "postgres"}); err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(p.cfg.DataDir, "postgresql.conf")
	f, err := os.OpenFile(conf, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString("\n" + b.String()); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if err := p.Start(ctx, 20*time.Second); err != nil {
		log, _ := os.ReadFile(p.cfg.LogFile)
		t.Fatalf("postgres refused cifha tune's settings: %v\n%s\n%s", err, b.String(), log)
	}
	t.Cleanup(func() { p.StopWithin(context.Background(), Fast, 5*time.Second) })
	want := map[string]string{"shared_buffers": "409MB", "work_mem": "512MB", "max_connections": "11", "wal_level": "replica", "max_parallel_workers_per_gather": "2"}
	err = p.withConn(ctx, func(c *pgx.Conn) error {
		for name, v := range want {
			var got string
			if err := c.QueryRow(ctx, "SELECT current_setting($1)", name).Scan(&got); err != nil {
				return err
			}
			if got != v {
				t.Errorf("%s = %s, want %s", name, got, v)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestWalDir: initdb and a clone put the WAL in their own wal_dir (linked
// from the data directory); a non-empty, foreign or open wal_dir is refused
// before anything is touched; MoveAside moves the WAL directory with the
// data directory and relinks it (issue 11).
func TestWalDir(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	root := testutil.Dir(t, "pgctl-wal-")
	walName := "pg_wal"
	p := newTestInstance(t, ctx, root, "p")
	if p.Version() < 100000 {
		walName = "pg_xlog"
	}
	p.cfg.WalDir = filepath.Join(root, "p-wal")
	if err := p.InitDB(ctx, "pw"); err != nil {
		t.Fatal(err)
	}
	if l, err := os.Readlink(filepath.Join(p.cfg.DataDir, walName)); err != nil || l != p.cfg.WalDir {
		t.Fatalf("%s links to %q (%v), want %s", walName, l, err, p.cfg.WalDir)
	}
	if err := WriteConfig(p.cfg.DataDir, settingsFor(p, 5432, "p")); err != nil {
		t.Fatal(err)
	}
	if err := WritePassFile(p.cfg.PassFile, map[string]string{"replicator": "rpw"}); err != nil {
		t.Fatal(err)
	}
	if err := p.Start(ctx, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.StopWithin(context.Background(), Fast, 5*time.Second) })
	if err := p.EnsureRole(ctx, "replicator", "rpw", true); err != nil {
		t.Fatal(err)
	}

	s := newTestInstance(t, ctx, root, "s")
	s.cfg.Port = 5433
	prepare := func(dir string) error { return WriteConfig(dir, settingsFor(s, 5433, "s")) }
	// Refused before anything is touched: foreign content, open mode.
	s.cfg.WalDir = filepath.Join(root, "s-wal")
	if err := os.Mkdir(s.cfg.WalDir, 0o700); err != nil {
		t.Fatal(err)
	}
	old := filepath.Join(s.cfg.WalDir, "000000010000000000000001")
	if err := os.WriteFile(old, []byte("an earlier cluster's WAL"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := s.Clone(ctx, root, 5432, "replicator", "", "s", false, nil, prepare); !errors.Is(err, ErrWalDirInUse) {
		t.Fatalf("clone into a non-empty wal_dir: %v", err)
	}
	if b, err := os.ReadFile(old); err != nil || string(b) != "an earlier cluster's WAL" {
		t.Fatal("the old WAL was touched")
	}
	if _, err := os.Stat(s.cfg.DataDir); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("a data directory was left behind")
	}
	os.Remove(old)
	os.Chmod(s.cfg.WalDir, 0o755)
	if err := s.Clone(ctx, root, 5432, "replicator", "", "s", false, nil, prepare); err == nil || !strings.Contains(err.Error(), "chmod 0700") {
		t.Fatalf("clone into a world-readable wal_dir: %v", err)
	}
	os.Chmod(s.cfg.WalDir, 0o700)
	if err := s.Clone(ctx, root, 5432, "replicator", "", "s", false, nil, prepare); err != nil {
		t.Fatal(err)
	}
	if l, err := os.Readlink(filepath.Join(s.cfg.DataDir, walName)); err != nil || l != s.cfg.WalDir {
		t.Fatalf("clone: %s links to %q (%v), want %s", walName, l, err, s.cfg.WalDir)
	}
	if ents, _ := os.ReadDir(s.cfg.WalDir); len(ents) == 0 {
		t.Fatal("clone: no WAL in wal_dir")
	}
	moved, err := s.MoveAside(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
	if err != nil {
		t.Fatal(err)
	}
	wmoved := s.cfg.WalDir + ".cifha-old-20260102T030405Z"
	if l, err := os.Readlink(filepath.Join(moved, walName)); err != nil || l != wmoved {
		t.Fatalf("moved data directory links to %q (%v), want %s", l, err, wmoved)
	}
	if _, err := os.Stat(s.cfg.WalDir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("wal_dir still in place after MoveAside: %v", err)
	}
	if ents, _ := os.ReadDir(wmoved); len(ents) == 0 {
		t.Fatal("moved WAL directory is empty")
	}
}

// An interrupted clone left a temporary directory whose pg_wal links to
// wal_dir: CleanTempWal empties wal_dir (nobody's WAL) but never when the
// data directory in place links to it.
func TestCleanTempWal(t *testing.T) {
	root := t.TempDir()
	data, wal := filepath.Join(root, "data"), filepath.Join(root, "wal")
	tmp := data + ".cifha-new-123"
	for _, d := range []string{tmp, wal} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink(wal, filepath.Join(tmp, "pg_wal")); err != nil {
		t.Fatal(err)
	}
	seg := filepath.Join(wal, "000000010000000000000001")
	os.WriteFile(seg, []byte("partial"), 0o600)
	// The data directory in place uses wal_dir: nothing in it is touched.
	os.MkdirAll(data, 0o700)
	os.Symlink(wal, filepath.Join(data, "pg_wal"))
	if _, err := CleanTempWal(data, wal); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(seg); err != nil {
		t.Fatal("the live data directory's WAL was removed")
	}
	// Without a data directory: the partial copy's WAL goes.
	os.MkdirAll(tmp, 0o700)
	os.Symlink(wal, filepath.Join(tmp, "pg_wal"))
	os.RemoveAll(data)
	removed, err := CleanTempWal(data, wal)
	if err != nil || len(removed) != 1 {
		t.Fatalf("removed %v, %v", removed, err)
	}
	if ents, _ := os.ReadDir(wal); len(ents) != 0 {
		t.Fatalf("wal_dir still holds %d entries", len(ents))
	}
	if _, err := os.Stat(wal); err != nil {
		t.Fatal("wal_dir itself was removed")
	}
}

// TestTablespaces (issue 11): a configured tablespace is created at
// bootstrap; a clone asks the source where its tablespaces are and maps
// them to its own directories (the paths differ: both instances share
// this machine); a non-empty tablespace directory is refused before
// anything is written; MoveAside takes the tablespace directory along
// and relinks it from the moved copy.
func TestTablespaces(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	root := testutil.Dir(t, "pgctl-ts-")
	p := newTestInstance(t, ctx, root, "p")
	p.cfg.Tablespaces = map[string]string{"index": filepath.Join(root, "p-index")}
	if err := p.InitDB(ctx, "pw"); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(p.cfg.Tablespaces["index"]); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("tablespace directory not prepared before initdb: %v %v", fi, err)
	}
	if err := WriteConfig(p.cfg.DataDir, settingsFor(p, 5432, "p")); err != nil {
		t.Fatal(err)
	}
	if err := WritePassFile(p.cfg.PassFile, map[string]string{"replicator": "rpw", "postgres": "pw"}); err != nil {
		t.Fatal(err)
	}
	if err := p.Start(ctx, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.StopWithin(context.Background(), Fast, 5*time.Second) })
	if err := p.EnsureRole(ctx, "replicator", "rpw", true); err != nil {
		t.Fatal(err)
	}
	if err := p.EnsureRole(ctx, "cif", "cpw", false); err != nil {
		t.Fatal(err)
	}
	for range 2 { // the second time finds it and changes nothing
		if err := p.EnsureTablespaces(ctx, []string{"cif"}); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.Exec(ctx, `CREATE TABLE t (id int) TABLESPACE "index"; INSERT INTO t SELECT generate_series(1, 100)`); err != nil {
		t.Fatal(err)
	}
	src, err := p.SourceTablespaces(ctx, root, 5432)
	if err != nil || src["index"] != p.cfg.Tablespaces["index"] {
		t.Fatalf("source tablespaces %v, %v", src, err)
	}

	s := newTestInstance(t, ctx, root, "s")
	s.cfg.Port = 5433
	prepare := func(dir string) error { return WriteConfig(dir, settingsFor(s, 5433, "s")) }
	if args, unmapped := s.TablespaceMapping(src); len(args) != 0 || len(unmapped) != 1 {
		t.Fatalf("without configuration: args %v unmapped %v", args, unmapped)
	}
	s.cfg.Tablespaces = map[string]string{"index": filepath.Join(root, "s-index")}
	args, unmapped := s.TablespaceMapping(src)
	if len(args) != 1 || len(unmapped) != 0 {
		t.Fatalf("args %v unmapped %v", args, unmapped)
	}
	// A non-empty tablespace directory: refused, untouched, nothing left.
	os.Mkdir(s.cfg.Tablespaces["index"], 0o700)
	stray := filepath.Join(s.cfg.Tablespaces["index"], "PG_old")
	os.WriteFile(stray, []byte("x"), 0o600)
	if err := s.Clone(ctx, root, 5432, "replicator", "", "s", false, args, prepare); !errors.Is(err, ErrTablespaceInUse) {
		t.Fatalf("clone into a non-empty tablespace directory: %v", err)
	}
	if _, err := os.Stat(stray); err != nil {
		t.Fatal("the non-empty tablespace directory was touched")
	}
	if _, err := os.Stat(s.cfg.DataDir); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("a data directory was left behind")
	}
	os.Remove(stray)
	// Through a slot that does not exist yet: the clone makes it (11+).
	has, err := s.SourceHasSlot(ctx, root, 5432, "ts_s")
	if err != nil || has {
		t.Fatalf("source has slot ts_s: %v %v", has, err)
	}
	if err := s.Clone(ctx, root, 5432, "replicator", "ts_s", "s", s.Version() >= 110000, args, prepare); err != nil {
		t.Fatal(err)
	}
	if s.Version() >= 110000 {
		var slots int
		if err := p.withConn(ctx, func(c *pgx.Conn) error {
			return c.QueryRow(ctx, "SELECT count(*)::int FROM pg_replication_slots WHERE slot_name = 'ts_s'").Scan(&slots)
		}); err != nil || slots != 1 {
			t.Fatalf("the clone's slot on the primary: %d (%v)", slots, err)
		}
	}
	links := func(dataDir string) []string {
		ents, _ := os.ReadDir(filepath.Join(dataDir, "pg_tblspc"))
		var out []string
		for _, e := range ents {
			l, _ := os.Readlink(filepath.Join(dataDir, "pg_tblspc", e.Name()))
			out = append(out, l)
		}
		return out
	}
	if l := links(s.cfg.DataDir); len(l) != 1 || l[0] != s.cfg.Tablespaces["index"] {
		t.Fatalf("clone's tablespace links %v, want [%s]", l, s.cfg.Tablespaces["index"])
	}
	if ents, _ := os.ReadDir(s.cfg.Tablespaces["index"]); len(ents) == 0 {
		t.Fatal("clone: nothing in its tablespace directory")
	}
	if err := s.Start(ctx, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	var n int
	err = s.withConn(ctx, func(c *pgx.Conn) error { return c.QueryRow(ctx, "SELECT count(*)::int FROM t").Scan(&n) })
	if err != nil || n != 100 {
		t.Fatalf("standby reads %d rows from the tablespace table: %v", n, err)
	}
	if err := s.StopWithin(ctx, Fast, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	moved, err := s.MoveAside(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
	if err != nil {
		t.Fatal(err)
	}
	tsMoved := s.cfg.Tablespaces["index"] + ".cifha-old-20260102T030405Z"
	if l := links(moved); len(l) != 1 || l[0] != tsMoved {
		t.Fatalf("moved copy's tablespace links %v, want [%s]", l, tsMoved)
	}
	if _, err := os.Stat(s.cfg.Tablespaces["index"]); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("tablespace directory still in place after MoveAside")
	}
	// The moved copy is still a whole cluster: it starts from where it is.
	s2 := New(Config{BinDir: s.cfg.BinDir, DataDir: moved, SocketDir: root, Port: 5433, Superuser: "postgres",
		LogFile: filepath.Join(root, "s2.log"), PassFile: s.cfg.PassFile}, s.Version())
	if err := s2.Start(ctx, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	err = s2.withConn(ctx, func(c *pgx.Conn) error { return c.QueryRow(ctx, "SELECT count(*)::int FROM t").Scan(&n) })
	s2.StopWithin(context.Background(), Fast, 5*time.Second)
	if err != nil || n != 100 {
		t.Fatalf("moved copy reads %d rows: %v", n, err)
	}
}

// TestForeignPIDStalePidFile: a postmaster.pid naming another user's
// process (here PID 1) is stale: postgres runs as the data directory's
// owner, so it is no postmaster of this data directory (it must not be
// "stopped" forever, which EPERM would make impossible).
func TestForeignPIDStalePidFile(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "postmaster.pid"), []byte("1\n"+dir+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	i := New(Config{DataDir: dir}, 150018)
	if pid := i.ForeignPID(); pid != 0 {
		t.Fatalf("ForeignPID = %d for a pid file naming PID 1", pid)
	}
}
