package cifsync

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
	"github.com/cifha/cifha/pkg/config"
)

// Config is cif-sync's configuration (/etc/cifha/cif-sync.toml).
type Config struct {
	// Cluster is the cifha cluster whose primary ~/.cif must name (the
	// agents' cluster).
	Cluster string `toml:"cluster"`
	// CIFFile is the ~/.cif to keep pointing at the primary.
	CIFFile string `toml:"cif_file"`
	// BackupFile keeps the previous version; default <cif_file>.cifha-bak.
	BackupFile string `toml:"backup_file"`
	// FollowSymlinks allows writing through a symlink that leads out of
	// cif_file's directory.
	FollowSymlinks bool `toml:"follow_symlinks"`
	// Hosts overrides, per member, what is written as [db] host (e.g. a DNS
	// name); default: the host part of the member's connect address.
	Hosts map[string]string `toml:"hosts"`
	Etcd  config.Etcd       `toml:"etcd"`
	// APICAFile verifies the agents' APIs (GET /primary) when they use TLS
	// with a private CA.
	APICAFile string `toml:"api_ca_file"`
	// CloseOldConnections: after every change of [db] host, abort this
	// node's TCP connections to the previous host's port 5432 (ss -K;
	// needs root), so that a CIF process blocked on a black-holed old
	// primary reconnects at once and reads the new host (docs/cif.md).
	CloseOldConnections bool `toml:"close_old_connections"`
	// PostChange runs after every change of the file.
	PostChange struct {
		// Command is an argv (e.g. ["apachectl", "graceful"]) run once per
		// change of the file; a failure is logged and it runs again on the
		// next change.
		Command []string `toml:"command"`
		// Timeout bounds Command.
		Timeout config.Duration `toml:"timeout"`
	} `toml:"post_change"`
	Log config.Log `toml:"log"`
}

// DefaultConfig is the configuration before the file is read.
func DefaultConfig() Config {
	c := Config{Log: config.Log{Level: "info", Format: "text"}, CloseOldConnections: true}
	c.Etcd.DialTimeout.Duration = 2 * time.Second
	c.PostChange.Timeout.Duration = 30 * time.Second
	return c
}

// LoadConfig reads and validates a cif-sync configuration strictly.
func LoadConfig(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	d := DefaultConfig()
	c := &d
	md, err := toml.NewDecoder(bytes.NewReader(data)).Decode(c)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s: %s", path, key, fmt.Sprintf(format, args...)))
	}
	for _, k := range md.Undecoded() {
		if !strings.HasPrefix(k.String(), "hosts.") {
			bad(k.String(), "unknown key")
		}
	}
	if c.Cluster == "" {
		bad("cluster", "required")
	}
	if c.CIFFile == "" || !filepath.IsAbs(c.CIFFile) {
		bad("cif_file", "required, an absolute path (e.g. /home/cif/.cif)")
	}
	if c.BackupFile == "" && c.CIFFile != "" {
		c.BackupFile = c.CIFFile + ".cifha-bak"
	}
	if len(c.Etcd.Endpoints) == 0 {
		bad("etcd.endpoints", "required")
	}
	for m, h := range c.Hosts {
		if !hostRE.MatchString(h) {
			bad("hosts."+m, "%q is not a host name or address", h)
		}
	}
	if c.PostChange.Timeout.Duration <= 0 {
		bad("post_change.timeout", "must be positive")
	}
	if c.Etcd.PasswordFile != "" {
		b, err := os.ReadFile(c.Etcd.PasswordFile)
		if err != nil {
			bad("etcd.password_file", "cannot read %q: %v", c.Etcd.PasswordFile, err)
		} else {
			c.Etcd.Password = strings.TrimRight(string(b), "\r\n")
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return c, nil
}
