package pgctl

import (
	"context"
	"errors"
	"fmt"
	"github.com/cifha/cifha/pkg/state"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// WAL positions and status values live in pkg/state (pure, no I/O).
type (
	LSN     = state.LSN
	Status  = state.Status
	Replica = state.Replica
	Slot    = state.Slot
)

// ParseLSN parses "16/B374D848".
func ParseLSN(s string) (LSN, error) { return state.ParseLSN(s) }

// Queries is the version-specific SQL cifha reads state with.
type Queries struct {
	Status      string
	Replication string
	Slots       string
}

// QueriesFor returns the SQL for version v (xlog/location before 10).
func QueriesFor(v Version) Queries {
	q := queriesFor(v)
	if v >= 130000 {
		q.Slots = `SELECT slot_name, active, coalesce(wal_status, '') = 'lost' FROM pg_replication_slots WHERE slot_type = 'physical'`
	}
	return q
}

func queriesFor(v Version) Queries {
	if v >= 120000 {
		q := queriesFor(100000)
		q.Replication = `SELECT coalesce(application_name, ''), coalesce(state, ''), coalesce(sent_lsn::text, ''),
  coalesce(replay_lsn::text, ''), coalesce(sync_state, ''), coalesce(flush_lsn::text, ''),
  coalesce(extract(epoch FROM replay_lag)::float8, -1),
  coalesce(extract(epoch FROM clock_timestamp() - reply_time)::float8, -1) FROM pg_stat_replication`
		return q
	}
	if v >= 100000 {
		return Queries{
			Status: `SELECT pg_is_in_recovery(),
  CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_current_wal_lsn()::text END,
  CASE WHEN pg_is_in_recovery() THEN NULL ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int END,
  pg_last_wal_receive_lsn()::text, pg_last_wal_replay_lsn()::text,
  CASE WHEN pg_is_in_recovery() THEN pg_is_wal_replay_paused() ELSE false END,
  (SELECT timeline_id FROM pg_control_checkpoint()),
  (SELECT status FROM pg_stat_wal_receiver LIMIT 1),
  (SELECT received_tli FROM pg_stat_wal_receiver LIMIT 1),
  current_setting('synchronous_standby_names')`,
			Replication: `SELECT coalesce(application_name, ''), coalesce(state, ''), coalesce(sent_lsn::text, ''),
  coalesce(replay_lsn::text, ''), coalesce(sync_state, ''), coalesce(flush_lsn::text, ''),
  coalesce(extract(epoch FROM replay_lag)::float8, -1), -1::float8 FROM pg_stat_replication`,
			Slots: `SELECT slot_name, active, false FROM pg_replication_slots WHERE slot_type = 'physical'`,
		}
	}
	return Queries{
		Status: `SELECT pg_is_in_recovery(),
  CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_current_xlog_location()::text END,
  CASE WHEN pg_is_in_recovery() THEN NULL ELSE ('x' || substr(pg_xlogfile_name(pg_current_xlog_location()), 1, 8))::bit(32)::int END,
  pg_last_xlog_receive_location()::text, pg_last_xlog_replay_location()::text,
  CASE WHEN pg_is_in_recovery() THEN pg_is_xlog_replay_paused() ELSE false END,
  (SELECT timeline_id FROM pg_control_checkpoint()),
  (SELECT status FROM pg_stat_wal_receiver LIMIT 1),
  (SELECT received_tli FROM pg_stat_wal_receiver LIMIT 1),
  current_setting('synchronous_standby_names')`,
		Replication: `SELECT coalesce(application_name, ''), coalesce(state, ''), coalesce(sent_location::text, ''),
  coalesce(replay_location::text, ''), coalesce(sync_state, ''), coalesce(flush_location::text, ''),
  -1::float8, -1::float8 FROM pg_stat_replication`,
		Slots: `SELECT slot_name, active, false FROM pg_replication_slots WHERE slot_type = 'physical'`,
	}
}

// connHolder keeps one connection to the local postgres over its socket.
type connHolder struct{ c *pgx.Conn }

func (i *Instance) closeConn() {
	i.connMu.Lock()
	defer i.connMu.Unlock()
	if i.conn.c != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		_ = i.conn.c.Close(ctx)
		cancel()
		i.conn.c = nil
	}
}

// ConnConfig returns the pgx configuration of the agent's own local
// connection: the unix socket, peer authentication mapped to the superuser,
// and session settings safe for a control connection.
func (i *Instance) ConnConfig() (*pgx.ConnConfig, error) {
	cc, err := pgx.ParseConfig(fmt.Sprintf("host=%s port=%d user=%s dbname=postgres sslmode=disable connect_timeout=2",
		connQuote(i.cfg.SocketDir), i.cfg.Port, connQuote(i.cfg.Superuser)))
	if err != nil {
		return nil, err
	}
	cc.Password = ""
	cc.Fallbacks = nil
	cc.RuntimeParams = map[string]string{
		"application_name":   "cifha",
		"synchronous_commit": "local",
		"statement_timeout":  "5s",
	}
	return cc, nil
}

// ExecScript runs sql (several statements, one simple-protocol round
// trip) on a connection of its own, without the control connection's
// statement_timeout: long work (a schema load) neither waits on nor
// blocks the loop's connection, and session state it leaves behind ends
// with it.
func (i *Instance) ExecScript(ctx context.Context, sql string) error {
	cc, err := i.ConnConfig()
	if err != nil {
		return err
	}
	cc.RuntimeParams = map[string]string{"application_name": "cifha-bootstrap"}
	c, err := pgx.ConnectConfig(ctx, cc)
	if err != nil {
		return fmt.Errorf("connect to local postgres: %w", err)
	}
	defer c.Close(context.Background())
	_, err = c.Exec(ctx, sql)
	return err
}

// withConn runs f on the shared local connection, reconnecting if needed.
func (i *Instance) withConn(ctx context.Context, f func(*pgx.Conn) error) error {
	if !i.Running() {
		return ErrNotRunning
	}
	i.connMu.Lock()
	defer i.connMu.Unlock()
	if i.conn.c == nil || i.conn.c.IsClosed() {
		cc, err := i.ConnConfig()
		if err != nil {
			return err
		}
		c, err := pgx.ConnectConfig(ctx, cc)
		if err != nil {
			return fmt.Errorf("connect to local postgres: %w", err)
		}
		i.conn.c = c
	}
	err := f(i.conn.c)
	if err != nil && (i.conn.c.IsClosed() || errors.Is(err, context.DeadlineExceeded)) {
		_ = i.conn.c.Close(context.Background())
		i.conn.c = nil
	}
	return err
}

func parseOptLSN(s *string) (LSN, error) {
	if s == nil || *s == "" {
		return 0, nil
	}
	return ParseLSN(*s)
}

// Status reads the instance's state in a few queries.
func (i *Instance) Status(ctx context.Context) (Status, error) {
	var st Status
	q := QueriesFor(i.version)
	err := i.withConn(ctx, func(c *pgx.Conn) error {
		// One round trip for every query of an observation (the loop runs
		// this every round).
		b := &pgx.Batch{}
		b.Queue(q.Status)
		b.Queue(q.Replication)
		b.Queue(q.Slots)
		if i.version >= 90500 {
			b.Queue(`SELECT name FROM pg_settings WHERE pending_restart ORDER BY name`)
		}
		br := c.SendBatch(ctx, b)
		defer br.Close()
		var cur, rcv, rpl, wrStatus *string
		var curTLI, ckptTLI, rcvTLI *int32
		if err := br.QueryRow().Scan(&st.InRecovery, &cur, &curTLI, &rcv, &rpl, &st.ReplayPaused, &ckptTLI, &wrStatus, &rcvTLI, &st.SyncNames); err != nil {
			return fmt.Errorf("query status: %w", err)
		}
		var err error
		if st.CurrentLSN, err = parseOptLSN(cur); err != nil {
			return err
		}
		if st.ReceiveLSN, err = parseOptLSN(rcv); err != nil {
			return err
		}
		if st.ReplayLSN, err = parseOptLSN(rpl); err != nil {
			return err
		}
		if wrStatus != nil {
			st.WalReceiver = *wrStatus
		}
		switch {
		case curTLI != nil:
			st.Timeline = int(*curTLI)
		case rcvTLI != nil:
			st.Timeline = int(*rcvTLI)
		case ckptTLI != nil:
			st.Timeline = int(*ckptTLI)
		}
		rows, err := br.Query()
		if err != nil {
			return fmt.Errorf("query pg_stat_replication: %w", err)
		}
		for rows.Next() {
			var r Replica
			var sent, replay, flush string
			if err := rows.Scan(&r.Name, &r.State, &sent, &replay, &r.SyncState, &flush, &r.ReplayLagSeconds, &r.ReplyAgeSeconds); err != nil {
				rows.Close()
				return err
			}
			r.SentLSN, _ = ParseLSN(sent)
			r.ReplayLSN, _ = ParseLSN(replay)
			r.FlushLSN, _ = ParseLSN(flush)
			if !st.InRecovery { // a standby's cascading walsenders are not its replicas
				st.Replication = append(st.Replication, r)
			}
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return fmt.Errorf("query pg_stat_replication: %w", err)
		}
		rows, err = br.Query()
		if err != nil {
			return fmt.Errorf("query slots: %w", err)
		}
		for rows.Next() {
			var s Slot
			if err := rows.Scan(&s.Name, &s.Active, &s.Lost); err != nil {
				rows.Close()
				return err
			}
			st.Slots = append(st.Slots, s)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		if i.version < 90500 {
			return nil
		}
		rows, err = br.Query()
		if err != nil {
			return fmt.Errorf("query pending restart: %w", err)
		}
		for rows.Next() {
			var n string
			if err := rows.Scan(&n); err != nil {
				rows.Close()
				return err
			}
			st.PendingRestart = append(st.PendingRestart, n)
		}
		rows.Close()
		return rows.Err()
	})
	if err != nil {
		return st, err
	}
	st.ArchiverKnown = i.archiver(ctx, &st) == nil
	return st, nil
}

// archiver reads pg_stat_archiver, for metrics only: apart from the
// observation's queries, bounded by 300 ms, and its failure never fails
// Status. Before 15 it goes through the statistics collector, which a
// backend may wait on for up to 10 s when the host is slow.
func (i *Instance) archiver(ctx context.Context, st *Status) error {
	ctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	return i.withConn(ctx, func(c *pgx.Conn) error {
		var last float64
		err := c.QueryRow(ctx, `SELECT current_setting('archive_mode') <> 'off', archived_count, failed_count,
  coalesce(extract(epoch FROM last_archived_time), 0)::float8 FROM pg_stat_archiver`).Scan(&st.Archiving, &st.ArchivedCount, &st.ArchiveFailed, &last)
		if err == nil && last > 0 {
			st.LastArchived = time.Unix(0, int64(last*1e9))
		}
		return err
	})
}

// CreateSlot creates a physical replication slot that reserves WAL at once.
// An existing slot is not an error.
func (i *Instance) CreateSlot(ctx context.Context, name string) error {
	return i.withConn(ctx, func(c *pgx.Conn) error {
		_, err := c.Exec(ctx, `SELECT pg_create_physical_replication_slot($1, true)
WHERE NOT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = $1)`, name)
		if err != nil {
			return fmt.Errorf("create slot %s: %w", name, err)
		}
		return nil
	})
}

// EnsureRole creates or updates a login role with password. The statement
// carries a secret, so this session stops logging statements first.
func (i *Instance) EnsureRole(ctx context.Context, name, password string, replication bool) error {
	return i.withConn(ctx, func(c *pgx.Conn) error {
		tx, err := c.Begin(ctx)
		if err != nil {
			return err
		}
		defer tx.Rollback(ctx)
		for _, s := range []string{"SET LOCAL log_statement = 'none'", "SET LOCAL log_min_error_statement = 'panic'", "SET LOCAL log_min_duration_statement = -1"} {
			if _, err := tx.Exec(ctx, s); err != nil {
				return fmt.Errorf("ensure role %s: %w", name, err)
			}
		}
		var exists bool
		if err := tx.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)", name).Scan(&exists); err != nil {
			return fmt.Errorf("ensure role %s: %w", name, err)
		}
		verb := "CREATE"
		if exists {
			verb = "ALTER"
		}
		attrs := "LOGIN"
		if replication {
			attrs += " REPLICATION"
		}
		secret := password
		if v, ok, err := PasswordVerifier(i.version, name, password); err != nil {
			return fmt.Errorf("ensure role %s: %w", name, err)
		} else if ok {
			secret = v // the server stores the verifier as is; the password never travels
		}
		sql := fmt.Sprintf("%s ROLE %s WITH %s PASSWORD %s", verb, pgx.Identifier{name}.Sanitize(), attrs, quoteLiteral(secret))
		if _, err := tx.Exec(ctx, sql); err != nil {
			// The error text cannot contain the statement; keep the secret out anyway.
			return fmt.Errorf("ensure role %s failed", name)
		}
		return tx.Commit(ctx)
	})
}

// EnsureDatabase creates database name owned by owner (the connecting
// superuser when empty) unless it exists; an existing one is left as it is.
func (i *Instance) EnsureDatabase(ctx context.Context, name, owner string) error {
	return i.withConn(ctx, func(c *pgx.Conn) error {
		var exists bool
		if err := c.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)", name).Scan(&exists); err != nil {
			return fmt.Errorf("ensure database %s: %w", name, err)
		}
		if exists {
			return nil
		}
		sql := "CREATE DATABASE " + pgx.Identifier{name}.Sanitize()
		if owner != "" {
			sql += " OWNER " + pgx.Identifier{owner}.Sanitize()
		}
		if _, err := c.Exec(ctx, sql); err != nil {
			return fmt.Errorf("create database %s: %w", name, err)
		}
		return nil
	})
}

func quoteLiteral(s string) string {
	return "'" + strings.ReplaceAll(s, "'", "''") + "'"
}

// Exec runs one statement on the local instance (used by tests and tools).
func (i *Instance) Exec(ctx context.Context, sql string, args ...any) error {
	return i.withConn(ctx, func(c *pgx.Conn) error {
		_, err := c.Exec(ctx, sql, args...)
		return err
	})
}
