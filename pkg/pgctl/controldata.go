package pgctl

import (
	"bufio"
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
)

// ControlData is what pg_controldata reports about a stopped data directory
// that a switchover needs.
type ControlData struct {
	// State is "Database cluster state" ("shut down", "shut down in
	// recovery", "in production", ...).
	State string
	// Checkpoint is "Latest checkpoint location": after a clean shutdown,
	// the shutdown checkpoint, the last WAL record the primary wrote.
	Checkpoint LSN
	// Timeline is "Latest checkpoint's TimeLineID".
	Timeline int
}

// CleanShutdown reports whether the data directory was shut down cleanly as
// a primary (its WAL ends with the shutdown checkpoint).
func (c ControlData) CleanShutdown() bool { return c.State == "shut down" }

// ParseControlData reads pg_controldata's output (run with LC_ALL=C).
func ParseControlData(out string) (ControlData, error) {
	var c ControlData
	seen := 0
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		v = strings.TrimSpace(v)
		switch strings.TrimSpace(k) {
		case "Database cluster state":
			c.State = v
			seen++
		case "Latest checkpoint location":
			l, err := ParseLSN(v)
			if err != nil {
				return c, fmt.Errorf("pg_controldata: checkpoint location: %w", err)
			}
			c.Checkpoint = l
			seen++
		case "Latest checkpoint's TimeLineID":
			n, err := strconv.Atoi(v)
			if err != nil {
				return c, fmt.Errorf("pg_controldata: timeline %q: %w", v, err)
			}
			c.Timeline = n
			seen++
		}
	}
	if seen != 3 {
		return c, fmt.Errorf("pg_controldata: output lacks state, checkpoint location or timeline")
	}
	return c, nil
}

// ControlData runs pg_controldata on the data directory.
func (i *Instance) ControlData(ctx context.Context) (ControlData, error) {
	cmd := exec.CommandContext(ctx, filepath.Join(i.cfg.BinDir, "pg_controldata"), "-D", i.cfg.DataDir)
	cmd.Env = append(i.cleanEnv(), "LC_ALL=C")
	out, err := cmd.Output()
	if err != nil {
		return ControlData{}, fmt.Errorf("pg_controldata: %w", err)
	}
	return ParseControlData(string(out))
}
