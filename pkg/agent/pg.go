package agent

import (
	"context"
	"errors"
	"fmt"
	"github.com/cifha/cifha/pkg/config"
	"github.com/cifha/cifha/pkg/state"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"github.com/cifha/cifha/pkg/pgctl"
	"github.com/cifha/cifha/pkg/tuning"
)

// PG adapts a pgctl.Instance and the node's settings to Postgres.
type PG struct {
	*pgctl.Instance
	Settings            pgctl.Settings
	SuperuserPassword   string
	ReplicationUser     string
	ReplicationPassword string
	AppName             string
	// TriggerFile is recovery.conf's trigger_file before 12.
	TriggerFile string
	// Bootstrap are the application's roles and databases, made sure of
	// by a leader (EnsureRoles).
	Bootstrap config.Bootstrap
	// RestoreCommand and ArchiveCleanupCommand go into every standby's
	// settings (the managed archive).
	RestoreCommand, ArchiveCleanupCommand string
	// dynamic are the cluster-wide parameters from etcd, written after the
	// file's (they win). Only the loop goroutine sets them.
	dynamic map[string]string
	// syncNames is synchronous_standby_names as the loop last chose it.
	syncNames string
}

// SetSyncNames implements Postgres.
func (p *PG) SetSyncNames(v string) { p.syncNames = v }

// SetDynamicParams implements Postgres.
func (p *PG) SetDynamicParams(params map[string]string) { p.dynamic = params }

// settings is the node's settings with the cluster-wide parameters last.
func (p *PG) settings() pgctl.Settings {
	s := p.Settings
	// Always written, empty included: a value left from an earlier term
	// must not survive in the file.
	s.Params = append(append([]tuning.Param{}, s.Params...), tuning.Param{Name: "synchronous_standby_names",
		Value: tuning.Quote(p.syncNames), Comment: "managed by cifha (synchronous_mode)"})
	if len(p.dynamic) == 0 {
		return s
	}
	s.Params = append(append([]tuning.Param{}, s.Params...), MergeParams(nil, nil, p.dynamic)...)
	for i := len(s.Params) - len(p.dynamic); i < len(s.Params); i++ {
		s.Params[i].Comment = "cluster config (cifhactl set)"
	}
	return s
}

// NewPG builds the adapter. params are tuning + HA + operator parameters in
// increasing precedence.
func NewPG(inst *pgctl.Instance, s pgctl.Settings, superPW, replUser, replPW, name string) *PG {
	return &PG{Instance: inst, Settings: s, SuperuserPassword: superPW, ReplicationUser: replUser,
		ReplicationPassword: replPW, AppName: name}
}

// MergeParams orders tuning, HA settings and the operator's parameters so
// that later ones win (postgresql.conf takes the last setting of a name).
func MergeParams(tuned, ha []tuning.Param, extra map[string]string) []tuning.Param {
	out := append(append([]tuning.Param{}, tuned...), ha...)
	names := make([]string, 0, len(extra))
	for k := range extra {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		out = append(out, tuning.Param{Name: k, Value: tuning.Quote(extra[k]), Comment: "postgres.parameters"})
	}
	return out
}

// DataDirState implements Postgres.
func (p *PG) DataDirState() (pgctl.DataDirState, error) {
	return pgctl.InspectDataDir(p.Config().DataDir)
}

// StandbyState implements Postgres.
func (p *PG) StandbyState() (pgctl.StandbyState, error) { return pgctl.ReadStandby(p.Config().DataDir) }

// InitDB implements Postgres.
func (p *PG) InitDB(ctx context.Context) error { return p.Instance.InitDB(ctx, p.SuperuserPassword) }

// Clone implements Postgres.
func (p *PG) Clone(ctx context.Context, host string, port int, slot string, sb pgctl.Standby) error {
	if err := p.writePassFile(); err != nil {
		return err
	}
	tsArgs, err := p.tablespaceMapping(ctx, host, port)
	if err != nil {
		return err
	}
	create := false
	if slot == "" && p.Version() >= 110000 {
		// Stream the clone through this member's own slot, made by
		// pg_basebackup if the source has none yet (pgctl.Clone): it
		// exists before the standby first starts. Unknown (the source
		// cannot be asked): no slot for the copy, as before.
		if has, err := p.SourceHasSlot(ctx, host, port, sb.SlotName); err == nil {
			slot, create = sb.SlotName, !has
		}
	}
	// A clone is never a new cluster's first primary.
	if err := p.MarkBootstrap(false); err != nil {
		return err
	}
	return p.Instance.Clone(ctx, host, port, p.ReplicationUser, slot, p.AppName, create, tsArgs, func(dir string) error {
		if err := pgctl.WriteConfig(dir, p.settings()); err != nil {
			return err
		}
		return pgctl.WriteStandby(dir, p.Version(), sb)
	})
}

// tablespaceMapping asks the source for its tablespaces and maps each to
// this member's configured directory. One this member does not configure
// is refused before anything is written: pg_basebackup would put it at
// the source's path, which on this host may be anything (or another
// member's directory, when members share a machine).
func (p *PG) tablespaceMapping(ctx context.Context, host string, port int) ([]string, error) {
	src, err := p.SourceTablespaces(ctx, host, port)
	if err != nil {
		if len(p.Config().Tablespaces) == 0 {
			return nil, nil // nothing to map; pg_basebackup reports any tablespace itself
		}
		return nil, fmt.Errorf("clone: %w", err)
	}
	args, unmapped := p.TablespaceMapping(src)
	if len(unmapped) > 0 && len(p.Config().Tablespaces) == 0 {
		// A member that configures none clones as before cifha knew
		// tablespaces: at the source's paths (the same on every host).
		return nil, nil
	}
	if len(unmapped) > 0 {
		var want []string
		for _, n := range unmapped {
			want = append(want, fmt.Sprintf("%s = %q (at %s on %s)", n, "/path/on/this/host", src[n], host))
		}
		return nil, fmt.Errorf("clone: the source has tablespaces this member does not configure: add them to [postgres.tablespaces]: %s", strings.Join(want, ", "))
	}
	return args, nil
}

// Configure implements Postgres.
func (p *PG) Configure() error {
	if err := p.writePassFile(); err != nil {
		return err
	}
	return pgctl.WriteConfig(p.Config().DataDir, p.settings())
}

// writePassFile writes the libpq passfile (0600) that pg_basebackup,
// pg_rewind and primary_conninfo use, so no password is ever in a command
// line, an environment or postgresql.conf.
func (p *PG) writePassFile() error {
	return pgctl.WritePassFile(p.Config().PassFile, map[string]string{
		p.ReplicationUser:    p.ReplicationPassword,
		p.Settings.Superuser: p.SuperuserPassword,
	})
}

// SetStandby implements Postgres.
func (p *PG) SetStandby(s pgctl.Standby) error {
	return pgctl.WriteStandby(p.Config().DataDir, p.Version(), s)
}

// SetPrimary implements Postgres.
func (p *PG) SetPrimary() error { return pgctl.ClearStandby(p.Config().DataDir, p.Version()) }

// EnsureRoles implements Postgres: the replication role, then the
// [bootstrap] roles (created, or their password set from the file) and
// databases (created when missing, never changed otherwise).
func (p *PG) EnsureRoles(ctx context.Context, fresh bool) error {
	if p.ReplicationUser != p.Settings.Superuser {
		if err := p.EnsureRole(ctx, p.ReplicationUser, p.ReplicationPassword, true); err != nil {
			return err
		}
	}
	for _, r := range p.Bootstrap.Roles {
		if err := p.EnsureRole(ctx, r.Name, r.Password, false); err != nil {
			return err
		}
	}
	owners := []string{}
	for _, d := range p.Bootstrap.Databases {
		if d.Owner != "" && !slices.Contains(owners, d.Owner) {
			owners = append(owners, d.Owner)
		}
	}
	// Only on a new cluster's first primary: a tablespace added to the
	// configuration later would be created at this leader's path and
	// replayed there by every standby (whatever their configuration).
	if fresh {
		if err := p.EnsureTablespaces(ctx, owners); err != nil {
			return err
		}
	}
	for _, d := range p.Bootstrap.Databases {
		if err := p.EnsureDatabase(ctx, d.Name, d.Owner); err != nil {
			return err
		}
	}
	return nil
}

// StandbyFor implements Postgres.
func (p *PG) StandbyFor(leader, host string, port int) pgctl.Standby {
	sb := pgctl.Standby{Leader: leader, Host: host, Port: port, User: p.ReplicationUser,
		PassFile: p.Config().PassFile, AppName: p.AppName, SlotName: SlotName(p.AppName), TLS: p.Config().TLS}
	if p.Version() < 120000 {
		sb.TriggerFile = p.TriggerFile
	}
	sb.RestoreCommand, sb.ArchiveCleanupCommand = p.RestoreCommand, p.ArchiveCleanupCommand
	return sb
}

// Rewind implements Postgres.
func (p *PG) Rewind(ctx context.Context, host string, port int) error {
	return p.Instance.Rewind(ctx, host, port)
}

// SlotName is the replication slot the leader keeps for member name.
func SlotName(name string) string { return state.SlotName(name) }

// ReadSettings implements Postgres.
func (p *PG) ReadSettings(ctx context.Context) (map[string]pgctl.Setting, error) {
	return p.Instance.Settings(ctx)
}

// PostBootstrap runs [bootstrap] sql_files as the superuser (each file in
// one simple-protocol round trip: one implicit transaction unless it has
// its own), then the post_bootstrap command with libpq's environment set
// for the superuser over the local socket.
func (p *PG) PostBootstrap(ctx context.Context, b config.Bootstrap) error {
	for _, f := range b.SQLFiles {
		b, err := os.ReadFile(f)
		if err != nil {
			return fmt.Errorf("bootstrap sql file: %w", err)
		}
		if err := p.ExecScript(ctx, string(b)); err != nil {
			return fmt.Errorf("bootstrap sql file %s: %w", f, err)
		}
	}
	if argv := b.PostBootstrap; len(argv) > 0 {
		cfg := p.Config()
		cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
		cmd.Env = append(os.Environ(), "PGHOST="+cfg.SocketDir, fmt.Sprintf("PGPORT=%d", cfg.Port),
			"PGUSER="+cfg.Superuser, "PGDATABASE=postgres", "PGPASSFILE="+cfg.PassFile)
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("post_bootstrap %s: %w: %s", argv[0], err, strings.TrimSpace(tailLines(string(out), 5)))
		}
	}
	return nil
}

func tailLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// bootstrapMarker is beside the data directory, not in it: a clone or a
// rewind must not copy it.
func (p *PG) bootstrapMarker() string {
	return filepath.Clean(p.Config().DataDir) + ".cifha-bootstrap-pending"
}

// MarkBootstrap implements Postgres.
func (p *PG) MarkBootstrap(set bool) error {
	if !set {
		if err := os.Remove(p.bootstrapMarker()); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
		return nil
	}
	return os.WriteFile(p.bootstrapMarker(), []byte("initdb done; tablespaces and post_bootstrap pending\n"), 0o600)
}

// BootstrapMarked implements Postgres: the marker exists and the data
// directory it belongs to does too.
func (p *PG) BootstrapMarked() bool {
	if _, err := os.Stat(p.bootstrapMarker()); err != nil {
		return false
	}
	st, err := p.DataDirState()
	return err == nil && st == pgctl.DataDirValid
}
