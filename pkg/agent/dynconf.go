package agent

import (
	"errors"
	"fmt"
	"github.com/cifha/cifha/pkg/ha"
	"maps"
	"math"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/cifha/cifha/pkg/config"
	"github.com/cifha/cifha/pkg/election"
	"github.com/cifha/cifha/pkg/pgctl"
)

// Cluster-wide settings (`cifhactl set`, `edit-config`) live in etcd and
// override each member's file. Every change is validated by the agent that
// receives it, against its own running postgres's pg_settings, before it is
// stored; an invalid value is refused with its key named and nothing is
// stored.

// managedParams are set by cifha itself; the cluster config may not change
// them (a wrong value would break replication or the agent's control).
var managedParams = map[string]string{
	"listen_addresses": "set [postgres] listen", "port": "set [postgres] port",
	"unix_socket_directories": "set [postgres] socket_dir", "data_directory": "managed by cifha",
	"hba_file": "managed by cifha", "ident_file": "managed by cifha", "config_file": "managed by cifha",
	"primary_conninfo": "managed by cifha", "primary_slot_name": "managed by cifha",
	"promote_trigger_file": "set ha.trigger_file", "hot_standby": "required on by cifha",
	"cluster_name": "managed by cifha", "recovery_target": "would stop a standby's recovery",
	"recovery_target_lsn": "would stop a standby's recovery", "recovery_target_name": "would stop a standby's recovery",
	"recovery_target_time": "would stop a standby's recovery", "recovery_target_xid": "would stop a standby's recovery",
	"recovery_target_action": "would stop a standby's recovery", "recovery_target_timeline": "managed by cifha",
	"recovery_target_inclusive": "would stop a standby's recovery",
	"synchronous_standby_names": "managed by cifha: set synchronous_mode",
}

// codeParams run commands or load code on every database host: write
// access to etcd must not become code execution there, so they can be set
// only in each host's own file (root's decision), never cluster-wide.
var codeParams = map[string]bool{
	"archive_command": true, "archive_library": true, "restore_command": true, "archive_cleanup_command": true,
	"recovery_end_command": true, "ssl_passphrase_command": true, "shared_preload_libraries": true,
	"local_preload_libraries": true, "session_preload_libraries": true, "dynamic_library_path": true,
	"jit_provider": true, "ssl_passphrase_command_supports_reload": true, "log_directory": true,
	"external_pid_file": true, "ssl_cert_file": true, "ssl_key_file": true, "ssl_ca_file": true, "ssl_crl_file": true,
	"ssl_crl_dir": true, "krb_server_keyfile": true, "event_source": true,
}

// mustBeOn are boolean parameters whose "off" breaks durability or rejoin.
var mustBeOn = map[string]string{
	"fsync":            "a crash could lose or corrupt committed data",
	"full_page_writes": "a crash could corrupt data, and pg_rewind needs it",
	"wal_log_hints":    "pg_rewind needs it (unless the cluster has data checksums)",
}

// pgFalse reports whether postgres would read v as boolean false: any
// unambiguous prefix of "false", "no" or "off" ("of" at least), or "0".
func pgFalse(v string) bool {
	v = strings.ToLower(strings.TrimSpace(v))
	switch {
	case v == "" || v == "o":
		return false
	case v == "0":
		return true
	case strings.HasPrefix("false", v), strings.HasPrefix("no", v), strings.HasPrefix("off", v):
		return true
	}
	return false
}

// minimums are floors for parameters replication depends on.
var minimums = map[string]int{"max_wal_senders": 2, "max_replication_slots": 2}

// ConfigError names the key whose value was refused.
type ConfigError struct {
	Key, Problem string
}

func (e *ConfigError) Error() string { return fmt.Sprintf("%s: %s", e.Key, e.Problem) }

// Limits are the bounds a ttl change is checked against (this member's
// file settings that depend on it).
type Limits struct {
	FenceMargin  time.Duration
	LoopInterval time.Duration // the file's, used when the change does not set it
	TTL          time.Duration // the file's
	DialTimeout  time.Duration // the file's etcd.dial_timeout (0: not checked)
}

var paramNameRE = regexp.MustCompile(`^[a-z_][a-z0-9_.]*$`)

// ApplySet returns cur with each key=value of set applied, validated. A
// value of "" removes the key (back to each member's file). settings is
// pg_settings of a running postgres.
func ApplySet(cur election.DynamicConfig, set map[string]string, settings map[string]pgctl.Setting, lim Limits) (election.DynamicConfig, error) {
	out := cur
	out.Parameters = maps.Clone(cur.Parameters)
	if out.Parameters == nil {
		out.Parameters = map[string]string{}
	}
	keys := slices.Sorted(maps.Keys(set))
	if len(keys) == 0 {
		return cur, errors.New("nothing to set")
	}
	for _, k := range keys {
		v := strings.TrimSpace(set[k])
		switch {
		case k == "ttl":
			out.TTL = v
		case k == "loop_interval":
			out.LoopInterval = v
		case k == "maximum_lag_on_failover":
			if v == "" {
				out.MaximumLagOnFailover = nil
				continue
			}
			n, err := config.ParseBytes(v)
			if err != nil {
				return cur, &ConfigError{k, err.Error()}
			}
			out.MaximumLagOnFailover = &n
		case k == "synchronous_mode" || k == "synchronous_mode_strict" || k == "failsafe_mode":
			field := map[string]**bool{"synchronous_mode": &out.SynchronousMode, "synchronous_mode_strict": &out.SynchronousModeStrict,
				"failsafe_mode": &out.FailsafeMode}[k]
			if v == "" {
				*field = nil
				continue
			}
			b, err := strconv.ParseBool(v)
			if err != nil {
				return cur, &ConfigError{k, fmt.Sprintf("%q is not true or false", v)}
			}
			*field = &b
		case k == "synchronous_node_count":
			if v == "" {
				out.SynchronousNodeCount = nil
				continue
			}
			n, err := strconv.Atoi(v)
			if err != nil {
				return cur, &ConfigError{k, fmt.Sprintf("%q is not a whole number", v)}
			}
			out.SynchronousNodeCount = &n
		case strings.HasPrefix(k, "postgresql.parameters.") || strings.HasPrefix(k, "parameters."):
			name := k[strings.LastIndex(k, "parameters.")+len("parameters."):]
			if v == "" {
				delete(out.Parameters, name)
				continue
			}
			if err := checkParam(name, v, settings); err != nil {
				return cur, &ConfigError{k, err.Error()}
			}
			out.Parameters[name] = v
		default:
			return cur, &ConfigError{k, "unknown setting (known: ttl, loop_interval, maximum_lag_on_failover, synchronous_mode, synchronous_mode_strict, synchronous_node_count, failsafe_mode, postgresql.parameters.NAME)"}
		}
	}
	if len(out.Parameters) == 0 {
		out.Parameters = nil
	}
	if err := ValidateDynamic(out, settings, lim); err != nil {
		return cur, err
	}
	return out, nil
}

// ValidateDynamic checks a whole cluster config (edit-config stores one).
func ValidateDynamic(c election.DynamicConfig, settings map[string]pgctl.Setting, lim Limits) error {
	tm := ha.Timing{TTL: lim.TTL, LoopInterval: lim.LoopInterval, FenceMargin: lim.FenceMargin, DialTimeout: lim.DialTimeout}
	if c.TTL != "" {
		d, err := time.ParseDuration(c.TTL)
		switch {
		case err != nil:
			return &ConfigError{"ttl", fmt.Sprintf("%q is not a duration (e.g. \"10s\")", c.TTL)}
		case d > 10*time.Minute:
			return &ConfigError{"ttl", fmt.Sprintf("%s is above 10m", d)}
		}
		tm.TTL = d
	}
	if c.LoopInterval != "" {
		d, err := time.ParseDuration(c.LoopInterval)
		if err != nil {
			return &ConfigError{"loop_interval", fmt.Sprintf("%q is not a duration (e.g. \"1s\")", c.LoopInterval)}
		}
		tm.LoopInterval = d
	}
	if c.TTL != "" || c.LoopInterval != "" {
		// The one timing rule (ha.Timing), with this member's other
		// settings; a setting the check has no value for is not judged.
		if tm.TTL == 0 {
			tm.TTL = 10 * time.Minute
		}
		if tm.LoopInterval == 0 {
			tm.LoopInterval = ha.MinLoopInterval
		}
		if tm.FenceMargin == 0 {
			tm.FenceMargin = max(ha.MinFenceMargin, min(2*time.Second, tm.TTL/3))
		}
		if tm.DialTimeout == 0 {
			tm.DialTimeout = time.Millisecond
		}
		if err := tm.Validate(); err != nil {
			var te *ha.TimingError
			if errors.As(err, &te) {
				key := te.Key
				if key == "fence_margin" || key == "dial_timeout" {
					key = "ttl" // this member's own setting limits the cluster's ttl
				}
				return &ConfigError{key, fmt.Sprintf("%s %s (this member: fence_margin %s)", te.Value, te.Problem, lim.FenceMargin)}
			}
			return &ConfigError{"ttl", err.Error()}
		}
	}
	if c.MaximumLagOnFailover != nil && *c.MaximumLagOnFailover <= 0 {
		return &ConfigError{"maximum_lag_on_failover", "must be positive"}
	}
	if n := c.SynchronousNodeCount; n != nil && (*n < 1 || *n > 64) {
		return &ConfigError{"synchronous_node_count", fmt.Sprintf("%d must be between 1 and 64", *n)}
	}
	for _, name := range slices.Sorted(maps.Keys(c.Parameters)) {
		if err := checkParam(name, c.Parameters[name], settings); err != nil {
			return &ConfigError{"postgresql.parameters." + name, err.Error()}
		}
	}
	return nil
}

func checkParam(name, v string, settings map[string]pgctl.Setting) error {
	if !paramNameRE.MatchString(name) {
		return fmt.Errorf("%q is not a parameter name", name)
	}
	if why, ok := managedParams[name]; ok {
		return fmt.Errorf("cannot be set cluster-wide (%s)", why)
	}
	if codeParams[name] {
		return errors.New("cannot be set cluster-wide: it runs commands, loads code or names host files; set it in each host's [postgres.parameters]")
	}
	if strings.ContainsAny(v, "\n\r\x00") {
		return errors.New("value contains a line break or NUL")
	}
	if name == "wal_level" && strings.EqualFold(strings.TrimSpace(v), "minimal") {
		return fmt.Errorf("%q refused: replication needs replica or logical", v)
	}
	if why, ok := mustBeOn[name]; ok && pgFalse(v) {
		return fmt.Errorf("%q refused: %s", v, why)
	}
	if floor, has := minimums[name]; has {
		if n, err := strconv.Atoi(v); err != nil || n < floor {
			return fmt.Errorf("%q refused: cifha needs at least %d", v, floor)
		}
	}
	if settings == nil {
		return nil // stored config: structure only, no server to ask
	}
	return checkValue(name, v, settings)
}

// checkValue checks v against the running server's pg_settings entry for
// name (type, enum values, range): what postgres would refuse.
func checkValue(name, v string, settings map[string]pgctl.Setting) error {
	s, ok := settings[name]
	if !ok {
		if strings.Contains(name, ".") {
			return nil // an extension's custom parameter: postgres accepts any value
		}
		return errors.New("unknown parameter on this PostgreSQL version")
	}
	switch s.Vartype {
	case "bool":
		switch strings.ToLower(v) {
		case "on", "off", "true", "false", "yes", "no", "1", "0":
			return nil
		}
		return fmt.Errorf("%q is not a boolean (on/off)", v)
	case "enum":
		for _, e := range s.EnumVals {
			if strings.EqualFold(e, v) {
				return nil
			}
		}
		return fmt.Errorf("%q is not one of %s", v, strings.Join(s.EnumVals, ", "))
	case "integer", "real":
		return checkNumber(s, v)
	}
	return nil
}

var numUnitRE = regexp.MustCompile(`^(-?[0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)$`)

// memory and time units relative to the smallest, as postgres accepts them.
var memUnits = map[string]float64{"B": 1, "kB": 1 << 10, "MB": 1 << 20, "GB": 1 << 30, "TB": 1 << 40}
var timeUnits = map[string]float64{"us": 1e-3, "ms": 1, "s": 1000, "min": 60000, "h": 3600000, "d": 86400000}

// checkNumber checks a numeric value against min/max, converting a unit
// suffix into the parameter's own unit (e.g. "64MB" for shared_buffers, whose
// unit is 8kB).
func checkNumber(s pgctl.Setting, v string) error {
	m := numUnitRE.FindStringSubmatch(v)
	if m == nil {
		return fmt.Errorf("%q is not a number", v)
	}
	n, err := strconv.ParseFloat(m[1], 64)
	if err != nil {
		return fmt.Errorf("%q is not a number", v)
	}
	if s.Vartype == "integer" && m[2] == "" && n != math.Trunc(n) {
		return fmt.Errorf("%q is not an integer", v)
	}
	if m[2] != "" {
		base, factor := unitScale(s.Unit)
		table := memUnits
		if base == "time" {
			table = timeUnits
		} else if base == "" {
			return fmt.Errorf("%q: this parameter takes no unit", v)
		}
		u, ok := table[m[2]]
		if !ok {
			return fmt.Errorf("%q: unknown unit %q", v, m[2])
		}
		n = n * u / factor
	}
	if s.Min != nil && n < *s.Min {
		return fmt.Errorf("%s is below the minimum %v%s", v, *s.Min, s.Unit)
	}
	if s.Max != nil && n > *s.Max {
		return fmt.Errorf("%s is above the maximum %v%s", v, *s.Max, s.Unit)
	}
	return nil
}

// unitScale returns the kind of a pg_settings unit ("mem", "time" or "")
// and its size in the smallest unit of that kind.
func unitScale(unit string) (string, float64) {
	m := numUnitRE.FindStringSubmatch(unit)
	if unit == "" || m == nil && !strings.Contains("B kB MB GB TB us ms s min h d", unit) {
		return "", 1
	}
	mult, name := 1.0, unit
	if m != nil {
		mult, _ = strconv.ParseFloat(m[1], 64)
		name = m[2]
	}
	if u, ok := memUnits[name]; ok {
		return "mem", mult * u
	}
	if u, ok := timeUnits[name]; ok {
		return "time", mult * u
	}
	return "", 1
}
