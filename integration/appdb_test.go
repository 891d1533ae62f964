package integration

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cifha/cifha/internal/cluster"
	"github.com/cifha/cifha/internal/testutil"
	"github.com/jackc/pgx/v5"
)

// TestBootstrapApplicationDatabase (issue 11, acceptance 4): [bootstrap]
// creates CIF's `cif` role (password from its file) and `cif` database
// owned by it. A client logging in as cif with that password (the one in
// CIF's ~/.cif) works against the primary and on the standby; the
// password never reaches the agent's log. The client gets in through the
// pg_hba line of [bootstrap] clients (the cluster's own client lines
// allow only the postgres database). The sql_files and then the
// post_bootstrap command ran once on the first primary, before any
// standby cloned it.
func TestBootstrapApplicationDatabase(t *testing.T) {
	const pw = "cif-s3cret pass'word"
	c := newCluster(t, 2, func(o *cluster.Options) {
		pwFile := filepath.Join(o.Root, "secrets", "cif-db.password")
		sqlFile := filepath.Join(o.Root, "secrets", "schema.sql")
		o.Extra += fmt.Sprintf("\n[bootstrap]\nroles = [{ name = \"cif\", password_file = %q }]\ndatabases = [{ name = \"cif\", owner = \"cif\" }]\n", pwFile) +
			"clients = [\"127.0.0.0/8\"]\n" +
			fmt.Sprintf("sql_files = [%q]\n", sqlFile) +
			fmt.Sprintf("post_bootstrap = [\"/bin/sh\", \"-c\", %q]\n", filepath.Join(testutil.PGBinDir(t), "psql")+` -v ON_ERROR_STOP=1 -c "INSERT INTO bootstrap_probe VALUES ('command', (SELECT count(*) FROM pg_stat_replication))"`)
		o.Files = map[string]string{pwFile: pw + "\n",
			sqlFile: "CREATE TABLE bootstrap_probe (step text, standbys bigint);\nINSERT INTO bootstrap_probe VALUES ('sql', (SELECT count(*) FROM pg_stat_replication));\n"}
		o.HBA = []string{"host postgres all 127.0.0.0/8 scram-sha-256"}
	})
	p := waitHealthy(t, c, 60*time.Second)
	// Both steps ran, in order, once, while no standby was attached yet.
	if got := queryInt(t, p, "SELECT count(*)::int FROM bootstrap_probe WHERE standbys = 0"); got != 2 {
		t.Errorf("bootstrap_probe has %d rows written before any standby, want 2 (sql, command)", got)
	}
	if !strings.Contains(p.Log(), "post_bootstrap done") {
		t.Errorf("%s did not log post_bootstrap done", p.Name)
	}
	login := func(n *cluster.Node) error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, fmt.Sprintf("host=%s port=5432 user=cif password='%s' dbname=cif sslmode=disable connect_timeout=2", n.Addr, "cif-s3cret pass\\'word"))
		if err != nil {
			return err
		}
		defer conn.Close(ctx)
		var owner string
		if err := conn.QueryRow(ctx, "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = current_database()").Scan(&owner); err != nil {
			return err
		}
		if owner != "cif" {
			return fmt.Errorf("database cif is owned by %s", owner)
		}
		return nil
	}
	testutil.Eventually(t, 20*time.Second, "cif logs in to its database on the primary", func() error { return login(p) })
	if _, err := os.Stat(filepath.Join(c.Opt.Root, "secrets", "cif-db.password")); err != nil {
		t.Fatal(err)
	}
	for _, s := range others(c, p) {
		testutil.Eventually(t, 20*time.Second, "cif's database on "+s.Name, func() error { return login(s) })
	}
	if strings.Contains(p.Log(), "cif-s3cret") {
		t.Fatal("the role's password is in the agent's log")
	}
}
