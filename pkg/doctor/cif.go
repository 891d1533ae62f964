package doctor

import (
	"context"
	"fmt"
	"net"
	"os"
	"strconv"
	"time"

	"github.com/cifha/cifha/pkg/cifsync"
	"github.com/jackc/pgx/v5"
)

// CheckCIF runs the CIF node's checks (the seed's "Testing" from the CIF
// node): ~/.cif parses and its [db] host is the primary, etcd answers, and
// the [db] login works against the primary.
func CheckCIF(ctx context.Context, cfg *cifsync.Config, timeout time.Duration) Report {
	if timeout <= 0 {
		timeout = 3 * time.Second
	}
	var r Report
	b, err := os.ReadFile(cfg.CIFFile)
	if err != nil {
		r.fail("cif file", "check cif_file in cif-sync's configuration, and that this user can read it", "%v", err)
		return r
	}
	db := cifsync.DBValues(b)
	if db["host"] == "" {
		r.fail("cif file", "add a [db] section with host, user, password and database (the seed's ~/.cif)", "%s has no [db] host", cfg.CIFFile)
		return r
	}
	r.ok("cif file", "%s: [db] host %s, user %s, database %s", cfg.CIFFile, db["host"], db["user"], db["database"])
	if cfg.CloseOldConnections {
		if err := cifsync.CanCloseConnections(ctx); err != nil {
			r.fail("connections", "run cif-sync and this check as root (deploy/systemd/cifha-cif-sync.service does), with iproute2's ss installed",
				"after a change cif-sync aborts this node's connections to the old primary, but here it cannot: %v; a CIF process blocked on a black-holed old primary would wait for TCP's timeouts (minutes)", err)
		} else {
			r.ok("connections", "cif-sync can abort this node's connections to an old primary (ss -K)")
		}
	} else {
		r.warn("connections", "set close_old_connections = true (the default)",
			"close_old_connections is off: a CIF process blocked on a black-holed old primary waits for TCP's timeouts (minutes) before it reads the new [db] host")
	}
	c, ok := checkEtcd(ctx, &r, cfg.Etcd, cfg.Cluster, timeout)
	if ok {
		name := ""
		if c.Leader != nil {
			name = c.Leader.Name
		}
		switch m, found := c.Members[name]; {
		case c.Leader == nil:
			r.fail("primary", "start the DB hosts' agents (systemctl start cifha)", "cluster %q has no leader", cfg.Cluster)
		case !found:
			r.fail("primary", "", "the leader %s has not published its address", c.Leader.Name)
		default:
			want := cfg.Hosts[c.Leader.Name]
			if want == "" {
				want, _, _ = net.SplitHostPort(m.ConnAddress)
			}
			if db["host"] != want {
				r.fail("primary", "run cifha cif-sync (systemctl start cifha-cif-sync), or once: cifha cif-sync --once",
					"[db] host is %s, but the primary is %s (%s)", db["host"], c.Leader.Name, want)
			} else {
				r.ok("primary", "[db] host %s is the primary %s", want, c.Leader.Name)
			}
		}
	}
	port := 5432
	if p, err := strconv.Atoi(db["port"]); err == nil && p > 0 {
		port = p
	}
	database := db["database"]
	if database == "" {
		database = "cif"
	}
	cc, err := pgx.ParseConfig(fmt.Sprintf("sslmode=prefer connect_timeout=%d", max(1, int(timeout.Seconds()))))
	if err != nil {
		r.fail("login", "", "%v", err)
		return r
	}
	cc.Host, cc.Port, cc.User, cc.Password, cc.Database = db["host"], uint16(port), db["user"], db["password"], database
	lctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	conn, err := pgx.ConnectConfig(lctx, cc)
	if err == nil {
		var one int
		err = conn.QueryRow(lctx, "SELECT 1").Scan(&one)
		conn.Close(context.Background())
	}
	if err != nil {
		r.fail("login", "the role and database come from the DB hosts' [bootstrap] roles and databases (the role's password_file must hold ~/.cif's password), and [postgres] hba must allow this host",
			"logging in to %s:%d as %s, database %s: %v", db["host"], port, db["user"], database, err)
		return r
	}
	r.ok("login", "logged in to %s:%d as %s, database %s", db["host"], port, db["user"], database)
	return r
}
