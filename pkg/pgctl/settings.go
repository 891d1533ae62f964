package pgctl

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// Setting is one row of pg_settings: what a parameter accepts.
type Setting struct {
	Name string
	// Vartype is bool, integer, real, string or enum.
	Vartype string
	// Context is when a change applies: "postmaster" needs a restart.
	Context  string
	Unit     string
	Min, Max *float64
	EnumVals []string
}

// NeedsRestart reports whether a change takes effect only at a restart.
func (s Setting) NeedsRestart() bool { return s.Context == "postmaster" }

// Settings reads pg_settings from the running server.
func (i *Instance) Settings(ctx context.Context) (map[string]Setting, error) {
	out := map[string]Setting{}
	err := i.withConn(ctx, func(c *pgx.Conn) error {
		rows, err := c.Query(ctx, `SELECT name, vartype, context, coalesce(unit, ''), min_val::float8, max_val::float8, coalesce(enumvals, '{}') FROM pg_settings`)
		if err != nil {
			return fmt.Errorf("query pg_settings: %w", err)
		}
		defer rows.Close()
		for rows.Next() {
			var s Setting
			if err := rows.Scan(&s.Name, &s.Vartype, &s.Context, &s.Unit, &s.Min, &s.Max, &s.EnumVals); err != nil {
				return fmt.Errorf("read pg_settings: %w", err)
			}
			out[s.Name] = s
		}
		return rows.Err()
	})
	return out, err
}

// DropSlot drops a physical replication slot. It is refused while the slot
// is in use (something still streams through it); a missing slot is fine.
func (i *Instance) DropSlot(ctx context.Context, name string) error {
	return i.withConn(ctx, func(c *pgx.Conn) error {
		var active bool
		err := c.QueryRow(ctx, `SELECT active FROM pg_replication_slots WHERE slot_name = $1`, name).Scan(&active)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read slot %s: %w", name, err)
		}
		if active {
			return fmt.Errorf("slot %s is in use: a postgres still streams through it (stop it first)", name)
		}
		if _, err := c.Exec(ctx, `SELECT pg_drop_replication_slot($1)`, name); err != nil {
			return fmt.Errorf("drop slot %s: %w", name, err)
		}
		return nil
	})
}
