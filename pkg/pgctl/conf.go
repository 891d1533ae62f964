package pgctl

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"github.com/cifha/cifha/pkg/config"
	"github.com/cifha/cifha/pkg/state"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/cifha/cifha/pkg/tuning"
)

// Files cifha owns inside the data directory.
const (
	// BaseConfFile is initdb's postgresql.conf, kept and included first.
	BaseConfFile = "postgresql.base.conf"
	// RecoveryIncludeFile holds the standby settings (12+); empty on a primary.
	RecoveryIncludeFile = "cifha.recovery.conf"
	standbySignal       = "standby.signal"
	recoveryConf        = "recovery.conf"
	managedHeader       = "# Managed by cifha: rewritten on every start. Change the cifha configuration instead.\n"
	targetPrefix        = "# cifha-target: "
)

// Settings is what cifha writes into postgresql.conf, pg_hba.conf and pg_ident.conf.
type Settings struct {
	Version     Version
	ClusterName string
	Listen      string
	Port        int
	SocketDir   string
	// OSUser is the operating-system user the agent runs as; pg_ident maps it
	// to the superuser so the agent connects over the socket without a password.
	OSUser          string
	Superuser       string
	ReplicationUser string
	// Params are written in order after cifha's own; later ones win.
	Params []tuning.Param
	// HBA lines appended after cifha's own.
	HBA []string
	// MemberNetworks limit the replication and superuser lines (CIDRs);
	// empty: any address ("all"), password-protected either way.
	MemberNetworks []string
	// TLS, when on, makes postgres serve TLS and the members' own lines
	// hostssl.
	TLS TLS
}

// TLS is how postgres serves TLS ([postgres] ssl_*) and how a member
// connecting to another (streaming, pg_basebackup, pg_rewind, the
// clone's queries) verifies it. The zero value is TLS off: peers are
// reached with sslmode=prefer, as before TLS was configurable.
type TLS struct {
	CertFile, KeyFile, CAFile string
	// Mode is the sslmode of connections to peers: verify-full or
	// verify-ca.
	Mode string
}

// On says whether postgres serves TLS.
func (t TLS) On() bool { return t.CertFile != "" }

// SSLMode is the sslmode for connections to a peer.
func (t TLS) SSLMode() string {
	switch {
	case !t.On():
		return "prefer"
	case t.Mode == "":
		return "verify-full"
	}
	return t.Mode
}

// TLSFor is the TLS a member's [postgres] section configures (standbys,
// pg_rewind, clones, and cifha doctor's replication check use it).
func TLSFor(p config.Postgres) TLS {
	return TLS{CertFile: p.SSLCertFile, KeyFile: p.SSLKeyFile, CAFile: p.SSLCAFile, Mode: p.SSLMode}
}

// ConnParams are the conninfo keywords for a connection to a peer.
func (t TLS) ConnParams() []string {
	kv := []string{"sslmode=" + t.SSLMode()}
	if t.On() && t.CAFile != "" {
		kv = append(kv, "sslrootcert="+connQuote(t.CAFile))
	}
	return kv
}

// env is ConnParams for client programs (pg_basebackup), as libpq's
// environment variables.
func (t TLS) env() []string {
	e := []string{"PGSSLMODE=" + t.SSLMode()}
	if t.On() && t.CAFile != "" {
		e = append(e, "PGSSLROOTCERT="+t.CAFile)
	}
	return e
}

var paramNameRE = regexp.MustCompile(`^[a-z_][a-z0-9_.]*$`)

// check refuses what could add a line to a configuration file or a
// keyword to a connection string: every value is quoted when written, and
// none may hold a control character.
func (s Settings) check() error {
	for _, v := range []string{s.Listen, s.SocketDir, s.ClusterName, s.OSUser, s.Superuser, s.ReplicationUser} {
		if err := state.Printable(v); err != nil {
			return fmt.Errorf("postgres settings: %q %w", v, err)
		}
	}
	for _, p := range s.Params {
		if !paramNameRE.MatchString(p.Name) {
			return fmt.Errorf("postgres parameter %q: not a parameter name", p.Name)
		}
		if err := state.Printable(p.Value); err != nil {
			return fmt.Errorf("postgres parameter %s: value %w", p.Name, err)
		}
	}
	for i, l := range s.HBA {
		if err := state.Printable(l); err != nil {
			return fmt.Errorf("pg_hba entry %d %w", i+1, err)
		}
	}
	return nil
}

// RenderConf renders postgresql.conf.
func RenderConf(s Settings) string {
	var b strings.Builder
	b.WriteString(managedHeader)
	fmt.Fprintf(&b, "include_if_exists = '%s'\n\n", BaseConfFile)
	w := func(name, value, comment string) {
		if comment != "" {
			fmt.Fprintf(&b, "%s = %s\t# %s\n", name, value, comment)
		} else {
			fmt.Fprintf(&b, "%s = %s\n", name, value)
		}
	}
	w("listen_addresses", tuning.Quote(s.Listen), "")
	w("port", strconv.Itoa(s.Port), "")
	w("unix_socket_directories", tuning.Quote(s.SocketDir), "")
	w("cluster_name", tuning.Quote(s.ClusterName), "")
	w("logging_collector", "off", "stderr goes to the file cifha opens")
	if s.TLS.On() {
		w("ssl", "on", "[postgres] ssl_cert_file: members and clients log in over TLS")
		w("ssl_cert_file", tuning.Quote(s.TLS.CertFile), "")
		w("ssl_key_file", tuning.Quote(s.TLS.KeyFile), "")
		if s.TLS.CAFile != "" {
			w("ssl_ca_file", tuning.Quote(s.TLS.CAFile), "")
		}
	}
	for _, p := range s.Params {
		w(p.Name, p.Value, p.Comment)
	}
	if !s.Version.UsesRecoveryConf() {
		fmt.Fprintf(&b, "\n# standby settings (primary_conninfo, primary_slot_name); empty on a primary\ninclude_if_exists = '%s'\n", RecoveryIncludeFile)
	}
	return b.String()
}

// RenderHBA renders pg_hba.conf: the agent's own local access, replication
// between members with a password, the operator's lines, then password
// access for the superuser (pg_rewind between members).
func RenderHBA(s Settings) string {
	method := "scram-sha-256"
	if s.Version < 100000 {
		method = "md5"
	}
	nets := s.MemberNetworks
	if len(nets) == 0 {
		nets = []string{"all"}
	}
	host := "host   "
	if s.TLS.On() {
		host = "hostssl"
	}
	var b strings.Builder
	b.WriteString(managedHeader)
	b.WriteString("# TYPE  DATABASE     USER  ADDRESS  METHOD\n")
	b.WriteString("# The agent itself, over the local socket as its OS user (peer).\n")
	b.WriteString("local   all          all            peer map=cifha\n")
	b.WriteString("local   replication  all            peer map=cifha\n")
	b.WriteString("# Standbys stream and clone (pg_basebackup) as the replication user,\n# by password, from the members' networks (postgres.member_networks).\n")
	for _, n := range nets {
		fmt.Fprintf(&b, "%s replication  %s  %s  %s\n", host, s.ReplicationUser, n, method)
	}
	b.WriteString("# from postgres.hba (and [bootstrap] clients)\n")
	for _, l := range s.HBA {
		b.WriteString(l)
		b.WriteByte('\n')
	}
	// Last, so the operator's lines decide first (the seed trusts the CIF
	// node); pg_rewind from peers needs at least this.
	b.WriteString("# An old primary's pg_rewind, and a clone's tablespace query, log in as\n# the superuser, by password, from the members' networks.\n")
	for _, n := range nets {
		fmt.Fprintf(&b, "%s all          %s  %s  %s\n", host, s.Superuser, n, method)
	}
	return b.String()
}

// RenderIdent renders pg_ident.conf: the agent's OS user may connect as the
// superuser or the replication user; every OS user may connect as the role of the same name.
func RenderIdent(s Settings) string {
	var b strings.Builder
	b.WriteString(managedHeader)
	fmt.Fprintf(&b, "cifha  %s  %s\n", s.OSUser, s.Superuser)
	fmt.Fprintf(&b, "cifha  %s  %s\n", s.OSUser, s.ReplicationUser)
	b.WriteString("cifha  /^(.*)$  \\1\n")
	return b.String()
}

// WriteConfig writes postgresql.conf, pg_hba.conf and pg_ident.conf into
// dataDir. The first time, initdb's postgresql.conf is kept as
// postgresql.base.conf.
func WriteConfig(dataDir string, s Settings) error {
	if err := s.check(); err != nil {
		return err
	}
	conf := filepath.Join(dataDir, "postgresql.conf")
	base := filepath.Join(dataDir, BaseConfFile)
	if _, err := os.Stat(base); errors.Is(err, os.ErrNotExist) {
		if old, err := os.ReadFile(conf); err == nil && !bytes.HasPrefix(old, []byte(managedHeader)) {
			if err := writeFileAtomic(base, old, 0o600); err != nil {
				return fmt.Errorf("keep initdb's configuration: %w", err)
			}
		}
	}
	for name, text := range map[string]string{
		"postgresql.conf": RenderConf(s),
		"pg_hba.conf":     RenderHBA(s),
		"pg_ident.conf":   RenderIdent(s),
	} {
		if err := writeFileAtomic(filepath.Join(dataDir, name), []byte(text), 0o600); err != nil {
			return fmt.Errorf("write %s: %w", name, err)
		}
	}
	return nil
}

// Standby describes the upstream a standby streams from.
type Standby struct {
	// Leader is the upstream member's name (recorded for the agent, not used by postgres).
	Leader   string
	Host     string
	Port     int
	User     string
	PassFile string
	// AppName is this member's name; it is the application_name the primary
	// sees in pg_stat_replication.
	AppName  string
	SlotName string
	// TLS: how the standby verifies its upstream (sslmode, sslrootcert).
	TLS TLS
	// TriggerFile, before 12, is recovery.conf's trigger_file (from 12 it is
	// the promote_trigger_file parameter, see Settings.Params).
	TriggerFile string
	// RestoreCommand and ArchiveCleanupCommand, if set, let the standby
	// read WAL from an archive (restore_command, archive_cleanup_command).
	RestoreCommand        string
	ArchiveCleanupCommand string
}

// archiveLines renders the archive settings of a standby.
func (s Standby) archiveLines(b *strings.Builder) {
	if s.RestoreCommand != "" {
		fmt.Fprintf(b, "restore_command = %s\n", tuning.Quote(s.RestoreCommand))
	}
	if s.ArchiveCleanupCommand != "" {
		fmt.Fprintf(b, "archive_cleanup_command = %s\n", tuning.Quote(s.ArchiveCleanupCommand))
	}
}

// Target is "<leader> <host>:<port>", recorded in the standby settings so the
// agent can tell whom a stopped standby would follow.
func (s Standby) Target() string {
	return s.Leader + " " + net.JoinHostPort(s.Host, strconv.Itoa(s.Port))
}

// Conninfo renders primary_conninfo. The password stays in the passfile.
func (s Standby) Conninfo() string {
	kv := []string{
		"host=" + connQuote(s.Host),
		"port=" + strconv.Itoa(s.Port),
		"user=" + connQuote(s.User),
		"passfile=" + connQuote(s.PassFile),
		"application_name=" + connQuote(s.AppName),
	}
	kv = append(kv, s.TLS.ConnParams()...)
	kv = append(kv,
		"connect_timeout=2",
		"keepalives_idle=2",
		"keepalives_interval=1",
		"keepalives_count=3",
	)
	return strings.Join(kv, " ")
}

func connQuote(v string) string {
	if v != "" && !strings.ContainsAny(v, " '\\") {
		return v
	}
	r := strings.NewReplacer(`\`, `\\`, `'`, `\'`)
	return "'" + r.Replace(v) + "'"
}

// RenderStandby12 renders the include file for 12+.
func RenderStandby12(s Standby) string {
	var b strings.Builder
	b.WriteString(managedHeader)
	b.WriteString(targetPrefix + s.Target() + "\n")
	fmt.Fprintf(&b, "primary_conninfo = %s\n", tuning.Quote(s.Conninfo()))
	if s.SlotName != "" {
		fmt.Fprintf(&b, "primary_slot_name = %s\n", tuning.Quote(s.SlotName))
	}
	s.archiveLines(&b)
	b.WriteString("recovery_target_timeline = 'latest'\n")
	return b.String()
}

// RenderRecoveryConf renders recovery.conf for 9.x-11.
func RenderRecoveryConf(s Standby) string {
	var b strings.Builder
	b.WriteString(managedHeader)
	b.WriteString(targetPrefix + s.Target() + "\n")
	b.WriteString("standby_mode = 'on'\n")
	fmt.Fprintf(&b, "primary_conninfo = %s\n", tuning.Quote(s.Conninfo()))
	if s.SlotName != "" {
		fmt.Fprintf(&b, "primary_slot_name = %s\n", tuning.Quote(s.SlotName))
	}
	if s.TriggerFile != "" {
		fmt.Fprintf(&b, "trigger_file = %s\n", tuning.Quote(s.TriggerFile))
	}
	s.archiveLines(&b)
	b.WriteString("recovery_target_timeline = 'latest'\n")
	return b.String()
}

// WriteStandby makes dataDir start as a standby of s (standby.signal and
// the include file, or recovery.conf before 12).
func WriteStandby(dataDir string, v Version, s Standby) error {
	for what, val := range map[string]string{"leader": s.Leader, "host": s.Host, "user": s.User, "passfile": s.PassFile,
		"application_name": s.AppName, "slot": s.SlotName, "trigger file": s.TriggerFile,
		"restore_command": s.RestoreCommand, "archive_cleanup_command": s.ArchiveCleanupCommand} {
		if err := state.Printable(val); err != nil {
			return fmt.Errorf("standby settings: %s %w", what, err)
		}
	}
	if v.UsesRecoveryConf() {
		return writeFileAtomic(filepath.Join(dataDir, recoveryConf), []byte(RenderRecoveryConf(s)), 0o600)
	}
	if err := writeFileAtomic(filepath.Join(dataDir, RecoveryIncludeFile), []byte(RenderStandby12(s)), 0o600); err != nil {
		return err
	}
	return writeFileAtomic(filepath.Join(dataDir, standbySignal), nil, 0o600)
}

// ClearStandby makes dataDir start as a primary: it removes standby.signal
// (or recovery.conf) and empties the include file.
func ClearStandby(dataDir string, v Version) error {
	for _, f := range []string{standbySignal, recoveryConf} {
		if err := os.Remove(filepath.Join(dataDir, f)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	if !v.UsesRecoveryConf() {
		return writeFileAtomic(filepath.Join(dataDir, RecoveryIncludeFile), []byte(managedHeader), 0o600)
	}
	return nil
}

// StandbyState is what the files in a data directory say about its role.
type StandbyState = state.StandbyState

// ReadStandby reports whether dataDir is configured as a standby and whom it follows.
func ReadStandby(dataDir string) (StandbyState, error) {
	var st StandbyState
	for _, f := range []string{standbySignal, recoveryConf} {
		if _, err := os.Stat(filepath.Join(dataDir, f)); err == nil {
			st.Standby = true
		} else if !errors.Is(err, os.ErrNotExist) {
			return st, err
		}
	}
	for _, f := range []string{RecoveryIncludeFile, recoveryConf} {
		b, err := os.ReadFile(filepath.Join(dataDir, f))
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(bytes.NewReader(b))
		for sc.Scan() {
			if t, ok := strings.CutPrefix(sc.Text(), targetPrefix); ok {
				st.Target = t
			}
		}
	}
	return st, nil
}

// WritePassFile writes a libpq password file (mode 0600) with one line per
// user, for any host.
func WritePassFile(path string, creds map[string]string) error {
	esc := strings.NewReplacer(`\`, `\\`, `:`, `\:`)
	var b strings.Builder
	users := make([]string, 0, len(creds))
	for u := range creds {
		users = append(users, u)
	}
	sort.Strings(users)
	for _, u := range users {
		fmt.Fprintf(&b, "*:*:*:%s:%s\n", esc.Replace(u), esc.Replace(creds[u]))
	}
	return writeFileAtomic(path, []byte(b.String()), 0o600)
}

// writeFileAtomic writes data to a temporary file beside path, fsyncs it and
// renames it over path, so a crash never leaves a half-written file.
func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp) // no-op after a successful rename
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Chmod(mode); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	return syncDir(filepath.Dir(path))
}
