package config

import (
	"bytes"
	"errors"
	"fmt"
	"github.com/cifha/cifha/pkg/ha"
	"github.com/cifha/cifha/pkg/state"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/BurntSushi/toml"
)

// DefaultPath is where cifha looks for its configuration when --config is not given.
const DefaultPath = "/etc/cifha/cifha.toml"

// Config is one node's configuration, decoded from TOML.
type Config struct {
	// Path is the file it was read from (set by Load and Parse).
	Path string `toml:"-"`
	// Cluster names the cluster; all members of one cluster share it. It is
	// part of every etcd key (/cifha/<cluster>/...).
	Cluster string `toml:"cluster"`
	// Name is this member's unique name (e.g. "db1").
	Name string `toml:"name"`

	API       API       `toml:"api"`
	Etcd      Etcd      `toml:"etcd"`
	Postgres  Postgres  `toml:"postgres"`
	Tuning    Tuning    `toml:"tuning"`
	HA        HA        `toml:"ha"`
	Log       Log       `toml:"log"`
	Tags      Tags      `toml:"tags"`
	Callbacks Callbacks `toml:"callbacks"`
	Bootstrap Bootstrap `toml:"bootstrap"`
	Archive   Archive   `toml:"archive"`
}

// Archive is the managed WAL archive. Mode "directory": every member
// archives its WAL to Dir (local, or a mount every member shares) with
// `cifha archive-wal`, and a standby restores from it with `cifha
// restore-wal` when streaming cannot give it what it needs (the primary
// recycled the WAL). "none" (the default) leaves postgres.archive_command,
// if any, as the operator set it.
//
// Mode "peers" (the seed's scp, without ssh): the primary stores each
// segment in its own Dir and sends it over the agents' authenticated API
// (api.token_file) to every other member's Dir; a standby restores from
// its own Dir first, then asks the peers.
//
// Mode "command": the operator's own ArchiveCommand and RestoreCommand
// (pgBackRest, WAL-G), and CleanupCommand if any, written as they are.
type Archive struct {
	// Mode is "none" (default: postgres.archive_command, if any, as set),
	// "directory", "peers" or "command" (above).
	Mode string `toml:"mode"`
	// Dir is the archive directory of modes "directory" and "peers"; it
	// must exist, owned by postgres.
	Dir string `toml:"dir"`
	// Cleanup: a standby trims the archive with pg_archivecleanup at each
	// restartpoint (the seed's archive_cleanup_command). Only for an
	// archive no other member or backup still needs.
	Cleanup bool `toml:"cleanup"`
	// ArchiveCommand, RestoreCommand and CleanupCommand are mode
	// "command"'s postgres commands (%p, %f, %r as postgres expands them).
	ArchiveCommand string `toml:"archive_command"`
	// RestoreCommand is mode "command"'s restore_command (%f, %p).
	RestoreCommand string `toml:"restore_command"`
	// CleanupCommand is mode "command"'s archive_cleanup_command (%r);
	// optional.
	CleanupCommand string `toml:"cleanup_command"`
}

// Bootstrap names the application's roles and databases (CIF's `cif`
// database and its owner). The leader makes sure they exist whenever it
// takes office: created if missing, a role's password set from its file;
// nothing is ever dropped or changed otherwise.
type Bootstrap struct {
	Roles     []BootstrapRole     `toml:"roles"`
	Databases []BootstrapDatabase `toml:"databases"`
	// Clients are the addresses (CIDR, e.g. the CIF node's "10.0.1.3/32")
	// allowed to log in to each database as its owner, by password: one
	// pg_hba line per database and client.
	Clients []string `toml:"clients"`
	// SQLFiles run once, in order, as the superuser on the new cluster's
	// first primary, after the roles, tablespaces and databases exist
	// (each file in one transaction unless it manages its own).
	SQLFiles []string `toml:"sql_files"`
	// PostBootstrap is a command (argv) run once after SQLFiles, like
	// Patroni's post_bootstrap, with PGHOST, PGPORT, PGUSER, PGDATABASE
	// and PGPASSFILE set for the superuser.
	PostBootstrap []string `toml:"post_bootstrap"`
}

// BootstrapRole is a login role whose password is read from a file.
type BootstrapRole struct {
	// Name is the role's name (a login role).
	Name string `toml:"name"`
	// PasswordFile holds its password (mode 0600, owned by postgres); set
	// on the role by every new leader.
	PasswordFile string `toml:"password_file"`
	// Password is read from PasswordFile by Load; never logged.
	Password string `toml:"-"`
}

// BootstrapDatabase is a database and its owner (a role of Roles, or the
// superuser when empty).
type BootstrapDatabase struct {
	// Name is the database's name.
	Name string `toml:"name"`
	// Owner is its owner: a role of bootstrap.roles, or the superuser when
	// empty.
	Owner string `toml:"owner"`
}

// Callbacks are commands run on role changes, like Patroni's callbacks.
// Each is an argv; cifha appends the action (on_start, on_stop,
// on_role_change), the new role (primary, replica) and the cluster name.
// They run outside the HA loop, one at a time, each bounded by Timeout.
type Callbacks struct {
	// OnStart runs after the agent started postgres.
	OnStart []string `toml:"on_start"`
	// OnStop runs after the agent stopped postgres.
	OnStop []string `toml:"on_stop"`
	// OnRoleChange runs after a promotion or a demotion.
	OnRoleChange []string `toml:"on_role_change"`
	// Timeout bounds each callback; it is killed after it.
	Timeout Duration `toml:"timeout"`
}

// API configures the agent's HTTP API.
type API struct {
	// Listen is the host:port the API binds to.
	Listen string `toml:"listen"`
	// AdvertiseURL is the URL other members, cifhactl and load balancers use
	// to reach this agent; defaults to http://<listen>.
	AdvertiseURL string `toml:"advertise_url"`
	// CertFile and KeyFile enable TLS on the API when both are set.
	CertFile string `toml:"cert_file"`
	// KeyFile is the private key of CertFile (mode 0600).
	KeyFile string `toml:"key_file"`
	// CAFile verifies the other members' APIs when they use TLS with a
	// private CA (default: the system's roots).
	CAFile string `toml:"ca_file"`
	// TokenFile holds the bearer token that the control endpoints (POST
	// /switchover, /pause, ...) require; without it they are disabled.
	TokenFile string `toml:"token_file"`
	// Username enables HTTP basic auth on the control API as an
	// alternative to the bearer token: this user name, the token as password.
	Username string `toml:"username"`
	// ProtectReads puts GET /status and /wal behind the same credentials
	// (/health, /primary and /replica stay open for load balancers).
	ProtectReads bool `toml:"protect_reads"`
	// ClientCAFile, with TLS on, makes the control endpoints also require
	// a client certificate signed by this CA (the GET endpoints stay open
	// to load balancers and peers).
	ClientCAFile string `toml:"client_ca_file"`
	// ClientCertFile and ClientKeyFile are the certificate cifhactl
	// presents to the control endpoints (read by cifhactl only).
	ClientCertFile string `toml:"client_cert_file"`
	// ClientKeyFile is the private key of ClientCertFile.
	ClientKeyFile string `toml:"client_key_file"`

	// Token is read from TokenFile by Load; never logged.
	Token string `toml:"-"`
}

// Etcd configures the connection to the etcd cluster holding the leader lease.
type Etcd struct {
	// Endpoints are the etcd members' client addresses (host:port, or
	// http(s)://host:port); list every member.
	Endpoints []string `toml:"endpoints"`
	// DialTimeout bounds connecting to a member; must be below ttl/2.
	DialTimeout Duration `toml:"dial_timeout"`
	// Username enables etcd's password authentication (with PasswordFile).
	Username string `toml:"username"`
	// PasswordFile holds the etcd user's password (mode 0600).
	PasswordFile string `toml:"password_file"`
	// CAFile verifies etcd's server certificates (TLS; https endpoints).
	CAFile string `toml:"ca_file"`
	// CertFile is the client certificate presented to etcd (client-cert
	// authentication).
	CertFile string `toml:"cert_file"`
	// KeyFile is the private key of CertFile.
	KeyFile string `toml:"key_file"`
	// AllowUnsafeServer lets the agent run against an etcd server whose
	// leases a stalled etcd leader can revoke early (etcd issue 15247,
	// fixed in 3.4.31 and 3.5.13): the fencing argument does not hold
	// there. For tests of old servers only.
	AllowUnsafeServer bool `toml:"allow_unsafe_server"`
	// KeepLeaderAway: while this member is the primary,
	// ask etcd to move its leader off this host when it is here, so that
	// losing the host costs no etcd election on top of the ttl (an etcd
	// leader change extends every lease). Set false for an etcd that
	// others share and whose leader cifha must not move.
	KeepLeaderAway bool `toml:"keep_leader_away"`

	// Password is read from PasswordFile by Load; never logged.
	Password string `toml:"-"`
}

// Postgres configures the local PostgreSQL instance that the agent runs.
type Postgres struct {
	// BinDir holds postgres, initdb, pg_basebackup, ...; auto-detected under
	// /usr/lib/postgresql/*/bin (highest version) when empty.
	BinDir string `toml:"bin_dir"`
	// DataDir is the data directory, made by cifha (initdb on the first
	// member, a clone on the others); its parent must exist and be
	// writable by postgres (the unit's StateDirectory makes
	// /var/lib/cifha).
	DataDir string `toml:"data_dir"`
	// WalDir, if set, holds the WAL outside the data directory (the seed's
	// pg_xlog partition): initdb --waldir and pg_basebackup --waldir put it
	// there and link it from the data directory. Moved aside with the data
	// directory by reinit; never deleted.
	WalDir string `toml:"wal_dir"`
	// MemberNetworks limit where the replication user and the superuser
	// may log in from (CIDRs: the DB hosts' network); empty: anywhere,
	// by password.
	MemberNetworks []string `toml:"member_networks"`
	// Tablespaces maps a tablespace name to this member's directory for it
	// (CIF's schema wants "archive" and "index"). Checked or created (owner
	// postgres, mode 0700) before bootstrap or clone, created as
	// tablespaces at bootstrap, mapped to this member's paths when it
	// clones (pg_basebackup --tablespace-mapping), and moved aside with the
	// data directory by reinit; never deleted.
	Tablespaces map[string]string `toml:"tablespaces"`
	// Listen is postgres' listen_addresses.
	Listen string `toml:"listen"`
	// Port is postgres' port (CIF's ~/.cif has no port key: keep 5432).
	Port int `toml:"port"`
	// ConnectAddress is the host:port peers and clients use to reach this
	// postgres; defaults to <listen>:<port> when listen is a single address.
	ConnectAddress string `toml:"connect_address"`
	// SocketDir is unix_socket_directories; the agent connects through it.
	SocketDir string `toml:"socket_dir"`
	// LogFile receives postgres' stderr.
	LogFile string `toml:"log_file"`
	// PassFile is the libpq password file cifha writes (mode 0600) for
	// pg_basebackup, pg_rewind and primary_conninfo.
	PassFile string `toml:"pass_file"`

	// Superuser is the superuser initdb makes and the agent connects as.
	Superuser string `toml:"superuser"`
	// SuperuserPasswordFile holds its password (mode 0600, owner postgres);
	// required.
	SuperuserPasswordFile string `toml:"superuser_password_file"`
	// ReplicationUser is the role standbys, pg_basebackup and pg_rewind
	// connect as.
	ReplicationUser string `toml:"replication_user"`
	// ReplicationPasswordFile holds its password (mode 0600, owner
	// postgres); required.
	ReplicationPasswordFile string `toml:"replication_password_file"`

	// ArchiveCommand, when set, turns archive_mode on (the seed ships WAL
	// with scp; any command that copies %p to durable storage works).
	ArchiveCommand string `toml:"archive_command"`
	// HBA lines appended after cifha's own (replication, agent access).
	// Default: one line allowing password (scram) access from anywhere.
	HBA []string `toml:"hba"`
	// Parameters are extra postgresql.conf settings; they win over tuning.
	Parameters map[string]string `toml:"parameters"`

	// SSLCertFile and SSLKeyFile turn TLS on in postgres (ssl = on):
	// replication, pg_basebackup, pg_rewind and the [bootstrap] clients
	// then log in over TLS only (hostssl lines), and members verify each
	// other's certificates (SSLMode, against SSLCAFile). The certificate
	// must name every address peers use for this member (connect_address:
	// an IP address or DNS name in subjectAltName).
	SSLCertFile string `toml:"ssl_cert_file"`
	// SSLKeyFile is the private key of SSLCertFile: owned by postgres with
	// mode 0600, or by root with mode 0640 and group postgres (postgres'
	// own rule).
	SSLKeyFile string `toml:"ssl_key_file"`
	// SSLCAFile is the CA that signed the members' certificates: standbys,
	// pg_basebackup and pg_rewind verify the member they connect to
	// against it (sslrootcert), and postgres' ssl_ca_file. Required with
	// SSLCertFile.
	SSLCAFile string `toml:"ssl_ca_file"`
	// SSLMode is how members verify each other: "verify-full" (the
	// certificate must name the address connected to) or "verify-ca" (any
	// certificate signed by SSLCAFile). Default "verify-full" when TLS is
	// on.
	SSLMode string `toml:"ssl_mode"`

	// HBADefault is set by Load when HBA was not configured and holds
	// DefaultHBA.
	HBADefault bool `toml:"-"`

	// Passwords read from the files by Load; never logged.
	SuperuserPassword   string `toml:"-"`
	ReplicationPassword string `toml:"-"`
}

// Tuning selects the performance settings cifha writes.
type Tuning struct {
	// Profile is "cif" (the seed's postgressetup.sh, made version-aware) or
	// "none" (PostgreSQL defaults).
	Profile string `toml:"profile"`
	// Memory overrides the detected RAM (e.g. "8GB"), for shared hosts.
	Memory string `toml:"memory"`
}

// HA configures the leader lease and the agent loop.
type HA struct {
	// TTL of the leader lease. A standby can take over at the earliest TTL
	// after the leader's last successful renewal.
	TTL Duration `toml:"ttl"`
	// LoopInterval is how often the agent observes and acts when nothing
	// wakes it earlier.
	LoopInterval Duration `toml:"loop_interval"`
	// StartTimeout bounds how long one start of postgres is waited for.
	StartTimeout Duration `toml:"start_timeout"`
	// SwitchoverTimeout bounds each wait of a planned switchover: for the
	// candidate to replay the old leader's shutdown checkpoint, then to
	// promote. Past it, the switchover is rolled back.
	SwitchoverTimeout Duration `toml:"switchover_timeout"`
	// FenceMargin: a primary begins to stop accepting writes this long
	// before its lease can expire. Default min(2s, ttl/3); must be at most
	// ttl/3 (one missed renewal must not demote) and at least 300ms (room for
	// a fast stop escalated to immediate).
	FenceMargin Duration `toml:"fence_margin"`
	// PrimaryStartTimeout: when the leader's postgres has failed to start
	// as primary for this long, the leader releases the key so that a
	// qualifying standby takes over (Patroni's master_start_timeout).
	// Default 300s; 0 disables it (the leader keeps trying forever).
	PrimaryStartTimeout Duration `toml:"primary_start_timeout"`
	// MaximumLagOnFailover: a standby whose received WAL is further than
	// this behind the last position the leader published is not promoted.
	MaximumLagOnFailover string `toml:"maximum_lag_on_failover"`
	// PromoteMethod is "pg_ctl" (pg_ctl promote) or "trigger_file" (the
	// seed's method; PostgreSQL 12-15 only, polled every 5 s by postgres).
	PromoteMethod string `toml:"promote_method"`
	// TriggerFile is the file created for promote_method = "trigger_file".
	TriggerFile string `toml:"trigger_file"`
	// RemoveDataDirectoryOnRewindFailure lets a member whose pg_rewind failed
	// re-clone; its old data directory is moved aside, never deleted.
	RemoveDataDirectoryOnRewindFailure bool `toml:"remove_data_directory_on_rewind_failure"`
	// SynchronousMode: the leader makes commits wait for a standby
	// (synchronous_standby_names, managed) and records in etcd which
	// standbys have every acknowledged commit; only those are promoted.
	// The cluster-wide setting of the same name (cifhactl set) wins.
	SynchronousMode bool `toml:"synchronous_mode"`
	// SynchronousModeStrict: with no synchronous standby available,
	// commits wait instead of falling back to asynchronous replication.
	SynchronousModeStrict bool `toml:"synchronous_mode_strict"`
	// SynchronousNodeCount is how many standbys each commit waits for when
	// that many are healthy (default 1).
	SynchronousNodeCount int `toml:"synchronous_node_count"`
	// FailsafeMode (DCS failsafe): when etcd cannot be reached, the
	// leader stays writable only while every other member confirms over
	// its API that it follows it and promises not to take over
	// (docs/fencing.md). Off by default.
	FailsafeMode bool `toml:"failsafe_mode"`

	// MaxLagBytes is MaximumLagOnFailover parsed.
	MaxLagBytes int64 `toml:"-"`
}

// Log configures the agent's own log.
type Log struct {
	// Level is trace, debug, info, warn or error.
	Level  string `toml:"level"`
	Format string `toml:"format"` // "text" or "json"
}

// Tags are per-member flags read by other members (failover rules use them).
type Tags struct {
	// NoFailover: this member is never promoted (failover or switchover).
	NoFailover bool `toml:"nofailover"`
	// FailoverPriority orders candidates that are equally far ahead:
	// higher first.
	FailoverPriority int `toml:"failover_priority"`
}

// Duration is a time.Duration written as a string ("10s", "500ms").
type Duration struct{ time.Duration }

// UnmarshalText implements encoding.TextUnmarshaler.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("invalid duration %q (use e.g. \"10s\", \"500ms\")", string(b))
	}
	d.Duration = v
	return nil
}

// MarshalText implements encoding.TextMarshaler.
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.Duration.String()), nil }

// Defaults for the HA section.
const (
	// DefaultTTL is the smallest ttl at which one lost etcd member (its
	// leader killed, frozen or cut off from its peers) never demoted the
	// primary in the measurements of docs/benchmarks.md, at etcd's default
	// election timeout; 6 s did once in three runs.
	DefaultTTL          = 7 * time.Second
	MinTTL              = ha.MinTTL
	DefaultLoopInterval = time.Second
	MinLoopInterval     = ha.MinLoopInterval
	DefaultDialTimeout  = 2 * time.Second
	DefaultStartTimeout = 30 * time.Second
	// DefaultSwitchoverTimeout is ha.switchover_timeout's default.
	DefaultSwitchoverTimeout = 30 * time.Second
	MinFenceMargin           = ha.MinFenceMargin
	// DefaultPrimaryStartTimeout is ha.primary_start_timeout's default
	// (Patroni's master_start_timeout default).
	DefaultPrimaryStartTimeout = 300 * time.Second
)

// Default returns a configuration with every optional key at its default.
func Default() Config {
	return Config{
		Etcd: Etcd{DialTimeout: Duration{DefaultDialTimeout}, KeepLeaderAway: true},
		Postgres: Postgres{
			Port:            5432,
			Superuser:       "postgres",
			ReplicationUser: "replicator",
			SocketDir:       "/var/run/postgresql",
		},
		Tuning: Tuning{Profile: "cif"},
		HA: HA{
			TTL:                  Duration{DefaultTTL},
			LoopInterval:         Duration{DefaultLoopInterval},
			StartTimeout:         Duration{DefaultStartTimeout},
			SwitchoverTimeout:    Duration{DefaultSwitchoverTimeout},
			PrimaryStartTimeout:  Duration{DefaultPrimaryStartTimeout},
			MaximumLagOnFailover: "1MB",
			PromoteMethod:        "pg_ctl",
			SynchronousNodeCount: 1,
		},
		Log:       Log{Level: "info", Format: "text"},
		Callbacks: Callbacks{Timeout: Duration{30 * time.Second}},
	}
}

// FieldError is one invalid or missing key. Line is 0 when the key is absent.
type FieldError struct {
	File string
	Line int
	Key  string
	Msg  string
}

func (e *FieldError) Error() string {
	loc := e.File
	if e.Line > 0 {
		loc = fmt.Sprintf("%s:%d", e.File, e.Line)
	}
	return fmt.Sprintf("%s: %s: %s", loc, e.Key, e.Msg)
}

// Load reads, strictly decodes and validates the file at path, and reads the
// password files it names. The returned error names the file, the line where
// known, and the key.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	return Parse(path, data)
}

// Parse is Load on bytes already read; path is used in messages and to
// resolve nothing else.
func Parse(path string, data []byte) (*Config, error) {
	cfg := Default()
	cfg.Path = path
	loc := newLocator(data)
	md, err := toml.NewDecoder(bytes.NewReader(data)).Decode(&cfg)
	if err != nil {
		var pe toml.ParseError
		if errors.As(err, &pe) {
			key := pe.LastKey
			if key == "" {
				key = "(syntax)"
			}
			return nil, &FieldError{File: path, Line: pe.Position.Line, Key: key, Msg: pe.Message}
		}
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if und := md.Undecoded(); len(und) > 0 {
		var errs []error
		for _, k := range und {
			ks := k.String()
			// Free-form maps decode every key; anything else is unknown.
			if strings.HasPrefix(ks, "postgres.parameters.") {
				continue
			}
			errs = append(errs, &FieldError{File: path, Line: loc.line(ks), Key: ks, Msg: "unknown key"})
		}
		if len(errs) > 0 {
			return nil, errors.Join(errs...)
		}
	}
	cfg.applyDerivedDefaults()
	if errs := cfg.validate(); len(errs) > 0 {
		out := make([]error, 0, len(errs))
		for _, fe := range errs {
			fe.File = path
			fe.Line = loc.line(fe.Key)
			out = append(out, fe)
		}
		return nil, errors.Join(out...)
	}
	if errs := cfg.readSecrets(); len(errs) > 0 {
		out := make([]error, 0, len(errs))
		for _, fe := range errs {
			fe.File = path
			fe.Line = loc.line(fe.Key)
			out = append(out, fe)
		}
		return nil, errors.Join(out...)
	}
	return &cfg, nil
}

// routable reports whether host is an address others can connect to (not a
// wildcard such as 0.0.0.0 or ::, nor "localhost" or empty). Loopback
// addresses other than "localhost" are allowed: tests and the demo use them.
func routable(host string) bool {
	if host == "" || host == "localhost" || host == "*" {
		return false
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
		return false
	}
	return true
}

func (c *Config) applyDerivedDefaults() {
	if c.HA.FenceMargin.Duration == 0 {
		c.HA.FenceMargin.Duration = min(2*time.Second, c.HA.TTL.Duration/3)
	}
	if h, _, err := net.SplitHostPort(c.API.Listen); c.API.AdvertiseURL == "" && err == nil && routable(h) {
		scheme := "http"
		if c.API.CertFile != "" {
			scheme = "https"
		}
		c.API.AdvertiseURL = scheme + "://" + c.API.Listen
	}
	if c.Postgres.ConnectAddress == "" && routable(c.Postgres.Listen) && !strings.Contains(c.Postgres.Listen, ",") {
		c.Postgres.ConnectAddress = net.JoinHostPort(c.Postgres.Listen, strconv.Itoa(c.Postgres.Port))
	}
	if c.Postgres.DataDir != "" {
		parent := filepath.Dir(filepath.Clean(c.Postgres.DataDir))
		if c.Postgres.PassFile == "" {
			c.Postgres.PassFile = filepath.Join(parent, ".cifha.pgpass")
		}
		if c.Postgres.LogFile == "" {
			c.Postgres.LogFile = filepath.Join(parent, "postgresql-"+c.Name+".log")
		}
	}
	if len(c.Postgres.HBA) == 0 {
		c.Postgres.HBA = DefaultHBA(c.Postgres.SSLCertFile != "")
		c.Postgres.HBADefault = true
	}
	if c.Postgres.SSLCertFile != "" && c.Postgres.SSLMode == "" {
		c.Postgres.SSLMode = "verify-full"
	}
}

// DefaultHBA is the client line used when [postgres] hba is not set:
// password access from anywhere, over TLS only when postgres serves TLS.
func DefaultHBA(tls bool) []string {
	if tls {
		return []string{"hostssl all all all scram-sha-256"}
	}
	return []string{"host all all all scram-sha-256"}
}

var nameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,62}$`)
var roleRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,62}$`)
var paramRE = regexp.MustCompile(`^[a-z_][a-z0-9_.]*$`)

// managedParams are written by cifha itself; setting them in
// [postgres.parameters] would break replication or the agent's control.
var managedParams = map[string]string{
	"listen_addresses":          "postgres.listen",
	"port":                      "postgres.port",
	"unix_socket_directories":   "postgres.socket_dir",
	"hba_file":                  "postgres.hba",
	"ident_file":                "postgres.hba",
	"primary_conninfo":          "(managed by cifha)",
	"primary_slot_name":         "(managed by cifha)",
	"archive_command":           "postgres.archive_command",
	"archive_mode":              "postgres.archive_command",
	"wal_level":                 "(managed by cifha)",
	"hot_standby":               "(managed by cifha)",
	"data_directory":            "postgres.data_dir",
	"config_file":               "(managed by cifha)",
	"wal_log_hints":             "(managed by cifha)",
	"cluster_name":              "name",
	"synchronous_standby_names": "ha.synchronous_mode (managed by cifha)",
	"restore_command":           "archive.mode",
	"archive_cleanup_command":   "archive.cleanup",
}

func (c *Config) validate() []*FieldError {
	var errs []*FieldError
	bad := func(key, format string, args ...any) {
		errs = append(errs, &FieldError{Key: key, Msg: fmt.Sprintf(format, args...)})
	}
	if c.Cluster == "" {
		bad("cluster", "required")
	} else if !nameRE.MatchString(c.Cluster) {
		bad("cluster", "%q must be lowercase letters, digits, '-' or '_' (max 63)", c.Cluster)
	}
	if c.Name == "" {
		bad("name", "required")
	} else if !nameRE.MatchString(c.Name) {
		bad("name", "%q must be lowercase letters, digits, '-' or '_' (max 63)", c.Name)
	}

	// API
	if c.API.Listen == "" {
		bad("api.listen", "required (host:port)")
	} else if _, _, err := net.SplitHostPort(c.API.Listen); err != nil {
		bad("api.listen", "%q is not host:port", c.API.Listen)
	}
	if c.API.AdvertiseURL == "" && c.API.Listen != "" {
		bad("api.advertise_url", "required when api.listen (%q) is a wildcard or localhost: other members must reach this agent", c.API.Listen)
	} else if c.API.AdvertiseURL != "" {
		u, err := url.Parse(c.API.AdvertiseURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			bad("api.advertise_url", "%q is not an http(s) URL", c.API.AdvertiseURL)
		}
	}
	if c.API.ProtectReads && c.API.TokenFile == "" {
		bad("api.protect_reads", "needs api.token_file (the credentials it requires)")
	}
	if c.API.Username != "" && c.API.TokenFile == "" {
		bad("api.username", "needs api.token_file (the password)")
	}
	if c.API.ClientCAFile != "" && c.API.CertFile == "" {
		bad("api.client_ca_file", "client certificates need TLS: set cert_file and key_file too")
	}
	if (c.API.ClientCertFile == "") != (c.API.ClientKeyFile == "") {
		bad("api.client_cert_file", "client_cert_file and client_key_file must be set together")
	}
	if (c.API.CertFile == "") != (c.API.KeyFile == "") {
		bad("api.cert_file", "cert_file and key_file must be set together")
	}

	// etcd
	if len(c.Etcd.Endpoints) == 0 {
		bad("etcd.endpoints", "required (at least one endpoint)")
	}
	seen := map[string]bool{}
	for _, ep := range c.Etcd.Endpoints {
		hostport := ep
		if strings.Contains(ep, "://") {
			u, err := url.Parse(ep)
			if err != nil || (u.Scheme != "http" && u.Scheme != "https") {
				bad("etcd.endpoints", "%q is not http(s)://host:port or host:port", ep)
				continue
			}
			hostport = u.Host
		}
		if _, _, err := net.SplitHostPort(hostport); err != nil {
			bad("etcd.endpoints", "%q is not host:port", ep)
			continue
		}
		if seen[hostport] {
			bad("etcd.endpoints", "duplicate endpoint %q", ep)
		}
		seen[hostport] = true
	}
	if c.Etcd.DialTimeout.Duration <= 0 {
		bad("etcd.dial_timeout", "%s must be positive", c.Etcd.DialTimeout.Duration)
	}
	if (c.Etcd.CertFile == "") != (c.Etcd.KeyFile == "") {
		bad("etcd.cert_file", "cert_file and key_file must be set together")
	}
	if c.Etcd.PasswordFile != "" && c.Etcd.Username == "" {
		bad("etcd.username", "required when etcd.password_file is set")
	}

	// postgres
	if c.Postgres.DataDir == "" {
		bad("postgres.data_dir", "required")
	} else if !filepath.IsAbs(c.Postgres.DataDir) {
		bad("postgres.data_dir", "%q must be an absolute path", c.Postgres.DataDir)
	} else if filepath.Clean(c.Postgres.DataDir) == "/" {
		bad("postgres.data_dir", "%q is not a data directory", c.Postgres.DataDir)
	}
	if w := c.Postgres.WalDir; w != "" {
		cw, cd := filepath.Clean(w), filepath.Clean(c.Postgres.DataDir)
		switch {
		case !filepath.IsAbs(w):
			bad("postgres.wal_dir", "%q must be an absolute path", w)
		case cw == "/":
			bad("postgres.wal_dir", "%q is not a WAL directory", w)
		case cw == cd || strings.HasPrefix(cw, cd+"/") || strings.HasPrefix(cd, cw+"/"):
			bad("postgres.wal_dir", "%q must be outside postgres.data_dir (%q), and not contain it", w, c.Postgres.DataDir)
		case strings.HasPrefix(cw, cd+".cifha-"):
			bad("postgres.wal_dir", "%q looks like one of cifha's own names for moved or temporary data directories (%s.cifha-...)", w, cd)
		}
	}
	c.validateTablespaces(bad)
	if c.Postgres.BinDir != "" && !filepath.IsAbs(c.Postgres.BinDir) {
		bad("postgres.bin_dir", "%q must be an absolute path", c.Postgres.BinDir)
	}
	if c.Postgres.Listen == "" {
		bad("postgres.listen", "required (listen_addresses, e.g. \"10.0.1.1\")")
	}
	if c.Postgres.Port < 1 || c.Postgres.Port > 65535 {
		bad("postgres.port", "%d is out of range 1-65535", c.Postgres.Port)
	}
	if c.Postgres.ConnectAddress == "" {
		bad("postgres.connect_address", "required when postgres.listen (%q) is not a single routable address", c.Postgres.Listen)
	} else if err := state.ValidConnAddress(c.Postgres.ConnectAddress); err != nil {
		bad("postgres.connect_address", "%v", err)
	}
	if !filepath.IsAbs(c.Postgres.SocketDir) {
		bad("postgres.socket_dir", "%q must be an absolute path", c.Postgres.SocketDir)
	} else if len(c.Postgres.SocketDir)+len("/.s.PGSQL.65535.lock") > 107 {
		bad("postgres.socket_dir", "%q is too long for a unix socket path", c.Postgres.SocketDir)
	}
	if !roleRE.MatchString(c.Postgres.Superuser) {
		bad("postgres.superuser", "%q is not a plain role name", c.Postgres.Superuser)
	}
	if !roleRE.MatchString(c.Postgres.ReplicationUser) {
		bad("postgres.replication_user", "%q is not a plain role name", c.Postgres.ReplicationUser)
	}
	if c.Postgres.SuperuserPasswordFile == "" {
		bad("postgres.superuser_password_file", "required (file holding the superuser's password)")
	}
	if (c.Postgres.SSLCertFile == "") != (c.Postgres.SSLKeyFile == "") {
		bad("postgres.ssl_cert_file", "ssl_cert_file and ssl_key_file must be set together")
	}
	if c.Postgres.SSLCertFile != "" {
		if c.Postgres.SSLCAFile == "" {
			bad("postgres.ssl_ca_file", "required with ssl_cert_file: members verify each other's certificates against it")
		}
		switch c.Postgres.SSLMode {
		case "verify-full", "verify-ca":
		default:
			bad("postgres.ssl_mode", "%q must be \"verify-full\" or \"verify-ca\"", c.Postgres.SSLMode)
		}
	} else {
		if c.Postgres.SSLCAFile != "" {
			bad("postgres.ssl_ca_file", "set, but TLS is off: set ssl_cert_file and ssl_key_file too")
		}
		if c.Postgres.SSLMode != "" {
			bad("postgres.ssl_mode", "set, but TLS is off: set ssl_cert_file and ssl_key_file too")
		}
	}
	for key, p := range map[string]string{"postgres.ssl_cert_file": c.Postgres.SSLCertFile, "postgres.ssl_key_file": c.Postgres.SSLKeyFile, "postgres.ssl_ca_file": c.Postgres.SSLCAFile} {
		if p != "" && !filepath.IsAbs(p) {
			bad(key, "%q must be an absolute path (postgres resolves relative paths against its data directory)", p)
		}
	}
	a := c.Archive
	if a.Mode != "command" {
		for key, v := range map[string]string{"archive.archive_command": a.ArchiveCommand, "archive.restore_command": a.RestoreCommand, "archive.cleanup_command": a.CleanupCommand} {
			if v != "" {
				bad(key, "set, but archive.mode is not \"command\"")
			}
		}
	}
	switch a.Mode {
	case "", "none":
		if a.Dir != "" {
			bad("archive.dir", "set, but archive.mode is not \"directory\" or \"peers\"")
		}
		if a.Cleanup {
			bad("archive.cleanup", "set, but archive.mode is not \"directory\" or \"peers\"")
		}
	case "directory", "peers":
		if a.Dir == "" || !filepath.IsAbs(a.Dir) {
			bad("archive.dir", "%q must be an absolute path (the archive directory)", a.Dir)
		}
		if c.Postgres.ArchiveCommand != "" {
			bad("postgres.archive_command", "set together with archive.mode = %q: choose one", a.Mode)
		}
		if a.Mode == "peers" && c.API.TokenFile == "" {
			bad("archive.mode", "\"peers\" sends WAL over the agents' authenticated API: set api.token_file (the same token on every member)")
		}
	case "command":
		if a.ArchiveCommand == "" || a.RestoreCommand == "" {
			bad("archive.archive_command", "mode \"command\" needs archive_command and restore_command (a standby restores with the latter)")
		}
		if a.Dir != "" || a.Cleanup {
			bad("archive.dir", "mode \"command\" uses its own commands: remove dir and cleanup (use cleanup_command)")
		}
		if c.Postgres.ArchiveCommand != "" {
			bad("postgres.archive_command", "set together with archive.mode = \"command\": use archive.archive_command")
		}
	default:
		bad("archive.mode", "%q: must be \"none\", \"directory\", \"peers\" or \"command\"", a.Mode)
	}
	roles := map[string]bool{}
	for i, r := range c.Bootstrap.Roles {
		key := fmt.Sprintf("bootstrap.roles[%d]", i)
		switch {
		case !roleRE.MatchString(r.Name):
			bad(key+".name", "%q is not a plain role name", r.Name)
		case r.Name == c.Postgres.Superuser || r.Name == c.Postgres.ReplicationUser:
			bad(key+".name", "%q is cifha's own superuser or replication user", r.Name)
		case roles[r.Name]:
			bad(key+".name", "%q is listed twice", r.Name)
		}
		roles[r.Name] = true
		if r.PasswordFile == "" {
			bad(key+".password_file", "required (file holding the role's password, e.g. the one in CIF's ~/.cif)")
		}
	}
	dbs := map[string]bool{}
	for i, d := range c.Bootstrap.Databases {
		key := fmt.Sprintf("bootstrap.databases[%d]", i)
		switch {
		case !roleRE.MatchString(d.Name):
			bad(key+".name", "%q is not a plain database name", d.Name)
		case d.Name == "postgres" || d.Name == "template0" || d.Name == "template1":
			bad(key+".name", "%q exists in every cluster", d.Name)
		case dbs[d.Name]:
			bad(key+".name", "%q is listed twice", d.Name)
		}
		dbs[d.Name] = true
		if d.Owner != "" && !roles[d.Owner] && d.Owner != c.Postgres.Superuser {
			bad(key+".owner", "%q is not one of bootstrap.roles (or the superuser)", d.Owner)
		}
	}
	for i, n := range c.Postgres.MemberNetworks {
		if _, _, err := net.ParseCIDR(n); err != nil {
			bad(fmt.Sprintf("postgres.member_networks[%d]", i), "%q is not an address range (CIDR, e.g. \"10.0.1.0/24\")", n)
		}
	}
	for i, cl := range c.Bootstrap.Clients {
		if _, _, err := net.ParseCIDR(cl); err != nil {
			bad(fmt.Sprintf("bootstrap.clients[%d]", i), "%q is not an address range (CIDR, e.g. \"10.0.1.3/32\")", cl)
		}
	}
	if len(c.Bootstrap.Clients) > 0 && len(c.Bootstrap.Databases) == 0 {
		bad("bootstrap.clients", "set, but there are no bootstrap.databases to allow them to")
	}
	for i, f := range c.Bootstrap.SQLFiles {
		if !filepath.IsAbs(f) {
			bad(fmt.Sprintf("bootstrap.sql_files[%d]", i), "%q must be an absolute path", f)
		}
	}
	if pb := c.Bootstrap.PostBootstrap; len(pb) > 0 && (pb[0] == "" || !filepath.IsAbs(pb[0])) {
		bad("bootstrap.post_bootstrap", "%q: the command must be an absolute path (an argv, not a shell line)", pb[0])
	}
	if c.Postgres.ReplicationPasswordFile == "" {
		bad("postgres.replication_password_file", "required (file holding the replication user's password)")
	}
	for i, line := range c.Postgres.HBA {
		f := strings.Fields(line)
		if len(f) < 4 || (f[0] != "local" && f[0] != "host" && f[0] != "hostssl" && f[0] != "hostnossl" &&
			f[0] != "hostgssenc" && f[0] != "hostnogssenc") {
			bad("postgres.hba", "entry %d %q is not a pg_hba.conf line", i+1, line)
		}
		if strings.ContainsAny(line, "\n\r") {
			bad("postgres.hba", "entry %d contains a newline", i+1)
		}
	}
	names := make([]string, 0, len(c.Postgres.Parameters))
	for k := range c.Postgres.Parameters {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		v := c.Postgres.Parameters[k]
		key := "postgres.parameters." + k
		if !paramRE.MatchString(k) {
			bad(key, "%q is not a parameter name", k)
		} else if owner, ok := managedParams[k]; ok {
			bad(key, "is set by cifha; use %s", owner)
		}
		if strings.ContainsAny(v, "\n\r\x00") {
			bad(key, "value contains a newline or NUL")
		}
	}

	// tuning
	switch c.Tuning.Profile {
	case "cif", "none":
	default:
		bad("tuning.profile", "%q must be \"cif\" or \"none\"", c.Tuning.Profile)
	}
	if c.Tuning.Memory != "" {
		if _, err := ParseBytes(c.Tuning.Memory); err != nil {
			bad("tuning.memory", "%v", err)
		}
	}

	// ha
	// The one timing rule (ttl, loop interval, fence margin, dial
	// timeout) is ha.Timing.Validate; the cluster-wide settings and the ttl
	// read at start use the same function.
	if err := c.HA.Timing(c.Etcd.DialTimeout.Duration).Validate(); err != nil {
		for _, e := range unjoin(err) {
			var te *ha.TimingError
			if errors.As(e, &te) {
				key := "ha." + te.Key
				if te.Key == "dial_timeout" {
					key = "etcd.dial_timeout"
				}
				bad(key, "%s %s", te.Value, te.Problem)
			}
		}
	}
	if c.HA.PrimaryStartTimeout.Duration < 0 {
		bad("ha.primary_start_timeout", "%s must not be negative (0 disables it)", c.HA.PrimaryStartTimeout.Duration)
	}
	if c.HA.SwitchoverTimeout.Duration <= 0 {
		bad("ha.switchover_timeout", "%s must be positive", c.HA.SwitchoverTimeout.Duration)
	}
	if c.HA.StartTimeout.Duration <= 0 {
		bad("ha.start_timeout", "%s must be positive", c.HA.StartTimeout.Duration)
	}
	if c.HA.SynchronousNodeCount < 1 || c.HA.SynchronousNodeCount > 64 {
		bad("ha.synchronous_node_count", "%d must be between 1 and 64", c.HA.SynchronousNodeCount)
	}
	if c.HA.SynchronousModeStrict && !c.HA.SynchronousMode {
		bad("ha.synchronous_mode_strict", "needs synchronous_mode = true")
	}
	if n, err := ParseBytes(c.HA.MaximumLagOnFailover); err != nil {
		bad("ha.maximum_lag_on_failover", "%v", err)
	} else {
		c.HA.MaxLagBytes = n
	}
	switch c.HA.PromoteMethod {
	case "pg_ctl":
	case "trigger_file":
		if !filepath.IsAbs(c.HA.TriggerFile) {
			bad("ha.trigger_file", "%q must be an absolute path when promote_method = \"trigger_file\"", c.HA.TriggerFile)
		}
	default:
		bad("ha.promote_method", "%q must be \"pg_ctl\" or \"trigger_file\"", c.HA.PromoteMethod)
	}

	for key, argv := range map[string][]string{"callbacks.on_start": c.Callbacks.OnStart,
		"callbacks.on_stop": c.Callbacks.OnStop, "callbacks.on_role_change": c.Callbacks.OnRoleChange} {
		if len(argv) > 0 && argv[0] == "" {
			bad(key, "the command (first element) is empty")
		}
	}
	if c.Callbacks.Timeout.Duration <= 0 {
		bad("callbacks.timeout", "%s must be positive", c.Callbacks.Timeout.Duration)
	}
	switch c.Log.Level {
	case "trace", "debug", "info", "warn", "error":
	default:
		bad("log.level", "%q must be trace, debug, info, warn or error", c.Log.Level)
	}
	switch c.Log.Format {
	case "text", "json":
	default:
		bad("log.format", "%q must be \"text\" or \"json\"", c.Log.Format)
	}
	return errs
}

// readSecrets reads password files. Their contents are never put in errors.
func (c *Config) readSecrets() []*FieldError {
	var errs []*FieldError
	read := func(key, path string, dst *string) {
		if path == "" {
			return
		}
		b, err := os.ReadFile(path)
		if err != nil {
			errs = append(errs, &FieldError{Key: key, Msg: fmt.Sprintf("cannot read %q: %v", path, unwrapPathErr(err))})
			return
		}
		s := strings.TrimRight(string(b), "\r\n")
		if s == "" {
			errs = append(errs, &FieldError{Key: key, Msg: fmt.Sprintf("%q is empty", path)})
			return
		}
		if strings.ContainsAny(s, "\n\r\x00") {
			errs = append(errs, &FieldError{Key: key, Msg: fmt.Sprintf("%q must hold one line", path)})
			return
		}
		*dst = s
	}
	// Certificates and keys are read by the etcd client and by postgres
	// later; a missing or unreadable one is reported now, by its key.
	for _, f := range []struct{ key, path string }{
		{"etcd.ca_file", c.Etcd.CAFile}, {"etcd.cert_file", c.Etcd.CertFile}, {"etcd.key_file", c.Etcd.KeyFile},
		{"postgres.ssl_cert_file", c.Postgres.SSLCertFile}, {"postgres.ssl_key_file", c.Postgres.SSLKeyFile}, {"postgres.ssl_ca_file", c.Postgres.SSLCAFile},
	} {
		if f.path == "" {
			continue
		}
		fh, err := os.Open(f.path)
		if err != nil {
			errs = append(errs, &FieldError{Key: f.key, Msg: fmt.Sprintf("cannot read %q: %v", f.path, unwrapPathErr(err))})
			continue
		}
		fh.Close()
	}
	if k := c.Postgres.SSLKeyFile; k != "" {
		if msg := keyModeProblem(k); msg != "" {
			errs = append(errs, &FieldError{Key: "postgres.ssl_key_file", Msg: msg})
		}
	}
	read("etcd.password_file", c.Etcd.PasswordFile, &c.Etcd.Password)
	read("api.token_file", c.API.TokenFile, &c.API.Token)
	read("postgres.superuser_password_file", c.Postgres.SuperuserPasswordFile, &c.Postgres.SuperuserPassword)
	read("postgres.replication_password_file", c.Postgres.ReplicationPasswordFile, &c.Postgres.ReplicationPassword)
	for i := range c.Bootstrap.Roles {
		r := &c.Bootstrap.Roles[i]
		read(fmt.Sprintf("bootstrap.roles[%d].password_file", i), r.PasswordFile, &r.Password)
	}
	return errs
}

// keyModeProblem says why postgres would refuse the private key at path
// (its rule: no group or other access when owned by the server's user;
// at most group read when owned by root), or "".
func keyModeProblem(path string) string {
	fi, err := os.Stat(path)
	if err != nil {
		return ""
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return ""
	}
	perm := fi.Mode().Perm()
	if st.Uid == 0 {
		if perm&0o037 != 0 {
			return fmt.Sprintf("%q is owned by root with mode %04o: postgres refuses it unless the mode is 0640 or stricter (chmod 640)", path, perm)
		}
		return ""
	}
	if perm&0o077 != 0 {
		return fmt.Sprintf("%q has mode %04o: postgres refuses a private key that group or others can read (chmod 600)", path, perm)
	}
	return ""
}

func unwrapPathErr(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// ParseBytes parses sizes such as "512MB", "8GB", "8GiB", "1024kB" or a
// plain byte count (every unit is binary, as PostgreSQL counts memory).
func ParseBytes(s string) (int64, error) {
	t := strings.TrimSpace(s)
	units := []struct {
		suffix string
		mult   int64
	}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10},
		{"TB", 1 << 40}, {"GB", 1 << 30}, {"MB", 1 << 20}, {"kB", 1 << 10}, {"KB", 1 << 10}, {"B", 1}}
	mult := int64(1)
	for _, u := range units {
		if strings.HasSuffix(t, u.suffix) {
			mult = u.mult
			t = strings.TrimSpace(strings.TrimSuffix(t, u.suffix))
			break
		}
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || n <= 0 || n > (1<<62)/mult {
		return 0, fmt.Errorf("%q is not a size (e.g. \"8GB\", \"512MB\")", s)
	}
	return n * mult, nil
}

// locator finds the line where a dotted key is set, for error messages.
// It understands [table] headers and key = value lines, which is all a cifha
// config uses; when it cannot tell it returns 0 and the message has no line.
type locator struct{ lines map[string]int }

var headerRE = regexp.MustCompile(`^\s*\[\s*([A-Za-z0-9_.\-" ]+?)\s*\]\s*(#.*)?$`)
var keyRE = regexp.MustCompile(`^\s*("?[A-Za-z0-9_\-.]+"?)\s*=`)

func newLocator(data []byte) *locator {
	l := &locator{lines: map[string]int{}}
	table := ""
	for i, line := range strings.Split(string(data), "\n") {
		if m := headerRE.FindStringSubmatch(line); m != nil {
			table = strings.ReplaceAll(strings.ReplaceAll(m[1], `"`, ""), " ", "")
			if _, ok := l.lines[table]; !ok {
				l.lines[table] = i + 1
			}
			continue
		}
		if m := keyRE.FindStringSubmatch(line); m != nil {
			k := strings.Trim(m[1], `"`)
			if table != "" {
				k = table + "." + k
			}
			if _, ok := l.lines[k]; !ok {
				l.lines[k] = i + 1
			}
		}
	}
	return l
}

func (l *locator) line(key string) int { return l.lines[key] }

// Timing returns the durations the one timing rule (ha.Timing) checks.
func (h HA) Timing(dial time.Duration) ha.Timing {
	return ha.Timing{TTL: h.TTL.Duration, LoopInterval: h.LoopInterval.Duration, FenceMargin: h.FenceMargin.Duration, DialTimeout: dial}
}

func unjoin(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

// tablespaceName is what cifha accepts as a tablespace name: a plain
// lower-case SQL identifier (quoted when used, so "index" works), not one
// of postgres' reserved pg_ names.
var tablespaceName = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,62}$`)

// validateTablespaces checks [postgres.tablespaces]: valid names, absolute
// paths that are distinct and clear of the data and WAL directories (a
// tablespace inside the data directory breaks pg_basebackup and reinit).
func (c *Config) validateTablespaces(bad func(key, format string, args ...any)) {
	cd, cw := filepath.Clean(c.Postgres.DataDir), ""
	if c.Postgres.WalDir != "" {
		cw = filepath.Clean(c.Postgres.WalDir)
	}
	nested := func(a, b string) bool {
		return a == b || strings.HasPrefix(a, b+"/") || strings.HasPrefix(b, a+"/")
	}
	names := make([]string, 0, len(c.Postgres.Tablespaces))
	for n := range c.Postgres.Tablespaces {
		names = append(names, n)
	}
	sort.Strings(names)
	seen := map[string]string{}
	for _, n := range names {
		path := c.Postgres.Tablespaces[n]
		key := "postgres.tablespaces." + n
		cp := filepath.Clean(path)
		switch {
		case !tablespaceName.MatchString(n) || strings.HasPrefix(n, "pg_"):
			bad(key, "%q is not a usable tablespace name (lower-case letters, digits and _, at most 63, not starting with a digit or pg_)", n)
		case path == "" || !filepath.IsAbs(path):
			bad(key, "%q must be an absolute path", path)
		case cp == "/":
			bad(key, "%q is not a tablespace directory", path)
		case strings.ContainsAny(path, "'\\\n\r\x00="):
			bad(key, "%q contains a quote, backslash, '=' or control character; choose a plain path", path)
		case c.Postgres.DataDir != "" && nested(cp, cd):
			bad(key, "%q must be outside postgres.data_dir (%q), and not contain it", path, c.Postgres.DataDir)
		case cw != "" && nested(cp, cw):
			bad(key, "%q must be outside postgres.wal_dir (%q), and not contain it", path, c.Postgres.WalDir)
		case strings.HasPrefix(cp, cd+".cifha-"):
			bad(key, "%q looks like one of cifha's own names for moved or temporary data directories (%s.cifha-...)", path, cd)
		case seen[cp] != "":
			bad(key, "%q is also tablespace %s's directory", path, seen[cp])
		default:
			for p, other := range seen {
				if nested(cp, p) {
					bad(key, "%q and tablespace %s's %q contain one another", path, other, p)
				}
			}
			seen[cp] = n
		}
	}
}
