package integration

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cifha/cifha/internal/cluster"
	"github.com/cifha/cifha/internal/devetcd"
	"github.com/cifha/cifha/internal/testpki"
	"github.com/cifha/cifha/internal/testutil"
	"github.com/jackc/pgx/v5/pgconn"
)

// chownAll gives the postgres user the files (certificates, keys,
// password files) the agents and postgres read.
func chownAll(t *testing.T, paths ...string) {
	t.Helper()
	cred, err := testutil.PostgresCredential()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range paths {
		if err := os.Chown(p, int(cred.Uid), int(cred.Gid)); err != nil {
			t.Fatal(err)
		}
	}
}

// strangerRun starts one more agent, "db3" on 127.0.0.13, from db2's
// configuration with edit applied, and returns its output and exit code:
// a member that cannot reach etcd must exit on its own, say why, and touch
// nothing. It is killed (and the test fails) if it is still running after
// 30 s.
func strangerRun(t *testing.T, c *cluster.Cluster, edit func(string) string) (string, int, string) {
	t.Helper()
	db2 := c.Node("db2")
	b, err := os.ReadFile(db2.ConfigPath)
	if err != nil {
		t.Fatal(err)
	}
	dir := testutil.Dir(t, "cifha-stranger-")
	text := strings.NewReplacer(`name = "db2"`, `name = "db3"`, "127.0.0.12", "127.0.0.13", db2.Dir, dir).Replace(string(b))
	text = edit(text)
	path := filepath.Join(dir, "cifha.toml")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	chownAll(t, path)
	cred, err := testutil.PostgresCredential()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(binDir, "cifha"), "--config", path)
	cmd.Dir = dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("the agent with bad etcd credentials kept running for 30 s:\n%s", out)
	}
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return string(out), code, filepath.Join(dir, "data")
}

// unchanged asserts the same primary with the same postmaster, and every
// other member still streaming.
func unchanged(t *testing.T, c *cluster.Cluster, primary string, postmaster int) {
	t.Helper()
	p, err := healthy(c)
	if err != nil {
		t.Fatalf("the cluster is no longer healthy: %v", err)
	}
	if p.Name != primary || p.PostmasterPID() != postmaster {
		t.Fatalf("primary %s (postmaster %d), was %s (%d)", p.Name, p.PostmasterPID(), primary, postmaster)
	}
}

// TestTLSEverywhere is issue 12's acceptance 3 for certificates: the
// cluster runs against an etcd that requires client certificates, and
// postgres serves TLS with replication, pg_basebackup and pg_rewind
// verifying the peer (sslmode=verify-full against each member's own
// certificate, which names only its address). A member with a
// certificate from another CA, or with none, exits with an error that says
// so, and nothing in the cluster changes.
func TestTLSEverywhere(t *testing.T) {
	requireEnv(t)
	pkiDir := testutil.Dir(t, "cifha-pki-")
	ca, err := testpki.NewCA(pkiDir, "ca")
	if err != nil {
		t.Fatal(err)
	}
	issue := func(name string, hosts ...string) (string, string) {
		c, k, err := ca.Issue(name, hosts...)
		if err != nil {
			t.Fatal(err)
		}
		chownAll(t, c, k)
		return c, k
	}
	ec, ek := issue("etcd", "127.0.0.1")
	agentCert, agentKey := issue("agent", "127.0.0.1")
	db1c, db1k := issue("db1", "127.0.0.11")
	db2c, db2k := issue("db2", "127.0.0.12")
	rogue, err := testpki.NewCA(pkiDir, "rogue")
	if err != nil {
		t.Fatal(err)
	}
	rc, rk, err := rogue.Issue("rogue-agent", "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	chownAll(t, ca.Path, rogue.Path, rc, rk)

	etcd, err := devetcd.StartWith(testutil.Dir(t, "cifha-etcd-tls-"), "127.0.0.1:0", devetcd.Options{CertFile: ec, KeyFile: ek, ClientCAFile: ca.Path})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(etcd.Close)

	pg := func(cert, key string) string {
		return fmt.Sprintf("ssl_cert_file = %q\nssl_key_file = %q\nssl_ca_file = %q\n", cert, key, ca.Path)
	}
	c := newClusterStartingFirst(t, 2, func(o *cluster.Options) {
		o.EtcdEndpoints = []string{etcd.Endpoint}
		o.EtcdExtra = fmt.Sprintf("ca_file = %q\ncert_file = %q\nkey_file = %q\n", ca.Path, agentCert, agentKey)
		o.PostgresExtra = map[string]string{"db1": pg(db1c, db1k), "db2": pg(db2c, db2k)}
		o.TTL = 3 * time.Second
	})
	db1, db2 := c.Node("db1"), c.Node("db2")

	// db2 was cloned (pg_basebackup) and streams over TLS, verifying db1.
	streamsOverTLS := func(primary, standby *cluster.Node) func() error {
		return func() error {
			n, err := queryIntE(primary, fmt.Sprintf(`SELECT count(*)::int FROM pg_stat_replication r JOIN pg_stat_ssl s USING (pid)
				WHERE s.ssl AND r.application_name = '%s' AND r.state = 'streaming'`, standby.Name))
			if err != nil {
				return err
			}
			if n != 1 {
				return fmt.Errorf("%s does not stream from %s over TLS", standby.Name, primary.Name)
			}
			return nil
		}
	}
	testutil.Eventually(t, 30*time.Second, "db2 streams over TLS", streamsOverTLS(db1, db2))
	conninfo := func(n *cluster.Node) string {
		conn, err := n.Connect(ctxT(t, 5*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(context.Background())
		var s string
		if err := conn.QueryRow(ctxT(t, 5*time.Second), "SHOW primary_conninfo").Scan(&s); err != nil {
			t.Fatal(err)
		}
		return s
	}
	if ci := conninfo(db2); !strings.Contains(ci, "sslmode=verify-full") || !strings.Contains(ci, "sslrootcert="+ca.Path) {
		t.Errorf("db2's primary_conninfo does not verify db1: %s", ci)
	}
	// The members' replication line is hostssl: plain TCP is refused.
	_, err = pgconn.Connect(ctxT(t, 5*time.Second), "host=127.0.0.11 port=5432 user=replicator password=x dbname=postgres sslmode=disable replication=true connect_timeout=3")
	if err == nil || !strings.Contains(err.Error(), "no pg_hba.conf entry") {
		t.Errorf("a replication connection without TLS: %v, want no pg_hba.conf entry", err)
	}

	// Strangers: refused by etcd; they exit, say why, and touch nothing.
	pm := db1.PostmasterPID()
	for _, tc := range []struct {
		name string
		edit func(string) string
		want string
	}{
		{"certificate from another CA", func(s string) string {
			return strings.NewReplacer(agentCert, rc, agentKey, rk).Replace(s)
		}, "refused this client's certificate"},
		{"no client certificate", func(s string) string {
			return strings.NewReplacer(fmt.Sprintf("cert_file = %q\n", agentCert), "", fmt.Sprintf("key_file = %q\n", agentKey), "").Replace(s)
		}, "requires a client certificate"},
		{"server not verified by ca_file", func(s string) string {
			return strings.Replace(s, fmt.Sprintf("ca_file = %q\ncert_file", ca.Path), fmt.Sprintf("ca_file = %q\ncert_file", rogue.Path), 1)
		}, "not signed by etcd.ca_file"},
	} {
		out, code, dataDir := strangerRun(t, c, tc.edit)
		if code == 0 || !strings.Contains(out, tc.want) {
			t.Errorf("%s: exit %d, output lacks %q:\n%s", tc.name, code, tc.want, tail(out, 10))
		}
		if _, err := os.Stat(dataDir); !os.IsNotExist(err) {
			t.Errorf("%s: the refused member made %s (%v)", tc.name, dataDir, err)
		}
		unchanged(t, c, "db1", pm)
	}

	// cifhactl with the agents' configuration reads etcd over TLS; without
	// a client certificate it says that one is required.
	out, code := cifhactlConfig(t, db1.ConfigPath, "status")
	if code != 0 || !strings.Contains(out, "db2") {
		t.Errorf("cifhactl status over TLS: exit %d\n%s", code, out)
	}
	noCert := filepath.Join(pkiDir, "ctl-nocert.toml")
	if err := os.WriteFile(noCert, []byte(fmt.Sprintf("cluster = %q\n[etcd]\nendpoints = [%q]\nca_file = %q\n", c.Opt.Cluster, etcd.Endpoint, ca.Path)), 0o600); err != nil {
		t.Fatal(err)
	}
	out, code = cifhactlConfig(t, noCert, "history")
	if code == 0 || !strings.Contains(out, "requires a client certificate") {
		t.Errorf("cifhactl without a client certificate: exit %d\n%s", code, out)
	}

	// A failover: db1's host is lost; db2 takes over; db1 comes back
	// through pg_rewind, which verifies db2's certificate, and streams
	// from db2 over TLS.
	db1.KillHost()
	testutil.Eventually(t, 30*time.Second, "db2 primary", func() error {
		p, err := c.Primary(ctxT(t, 3*time.Second))
		if err != nil {
			return err
		}
		if p != db2 {
			return fmt.Errorf("primary %s", p.Name)
		}
		return nil
	})
	exec1(t, db2, "CREATE TABLE IF NOT EXISTS tls_after_failover (id int)")
	if err := db1.Start(); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 60*time.Second, "db1 streams from db2 over TLS", streamsOverTLS(db2, db1))
	if ci := conninfo(db1); !strings.Contains(ci, "host=127.0.0.12") || !strings.Contains(ci, "sslmode=verify-full") {
		t.Errorf("db1's primary_conninfo: %s", ci)
	}
	if log := db1.Log(); strings.Contains(log, "rewinding") && !strings.Contains(log, "rewound; starting as standby") {
		t.Errorf("db1's pg_rewind over TLS did not succeed:\n%s", tail(log, 30))
	}
}

// cifhactlConfig runs cifhactl with --config.
func cifhactlConfig(t *testing.T, config string, args ...string) (string, int) {
	t.Helper()
	cmd := exec.Command(filepath.Join(binDir, "cifhactl"), append([]string{"--config", config}, args...)...)
	out, err := cmd.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); ok {
		return string(out), ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return string(out), 0
}

// TestEtcdPasswordCluster is issue 12's acceptance 3 for passwords: the
// cluster runs against an etcd with authentication enabled, as a user
// whose role may only touch /cifha/; a member or cifhactl with a wrong
// password fails with "authentication failed", and nothing changes.
func TestEtcdPasswordCluster(t *testing.T) {
	requireEnv(t)
	etcd, err := devetcd.Start(testutil.Dir(t, "cifha-etcd-auth-"), "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(etcd.Close)
	if err := devetcd.EnableAuth(ctxT(t, 10*time.Second), etcd.Endpoint, "root-pw-7f3a", "cifha", "etcd-pw-91c2", "/cifha/"); err != nil {
		t.Fatal(err)
	}
	var secrets string
	c := newClusterStartingFirst(t, 2, func(o *cluster.Options) {
		o.EtcdEndpoints = []string{etcd.Endpoint}
		secrets = filepath.Join(o.Root, "secrets")
		o.Files = map[string]string{filepath.Join(secrets, "etcd.password"): "etcd-pw-91c2\n", filepath.Join(secrets, "wrong.password"): "guess\n"}
		o.EtcdExtra = fmt.Sprintf("username = \"cifha\"\npassword_file = %q\n", filepath.Join(secrets, "etcd.password"))
		o.TTL = 3 * time.Second
	})
	db1 := c.Node("db1")
	pm := db1.PostmasterPID()
	out, code := cifhactlConfig(t, db1.ConfigPath, "status")
	if code != 0 || !strings.Contains(out, "db2") {
		t.Errorf("cifhactl status with the password: exit %d\n%s", code, out)
	}
	out, code, dataDir := strangerRun(t, c, func(s string) string {
		return strings.Replace(s, filepath.Join(secrets, "etcd.password"), filepath.Join(secrets, "wrong.password"), 1)
	})
	if code == 0 || !strings.Contains(out, "authentication failed") {
		t.Errorf("a member with a wrong etcd password: exit %d, output:\n%s", code, tail(out, 10))
	}
	if strings.Contains(out, "guess") {
		t.Errorf("the error shows the password:\n%s", out)
	}
	if _, err := os.Stat(dataDir); !os.IsNotExist(err) {
		t.Errorf("the refused member made %s (%v)", dataDir, err)
	}
	// cifhactl with the wrong password.
	wrong := filepath.Join(c.Opt.Root, "ctl-wrong.toml")
	if err := os.WriteFile(wrong, []byte(fmt.Sprintf("cluster = %q\n[etcd]\nendpoints = [%q]\nusername = \"cifha\"\npassword_file = %q\n",
		c.Opt.Cluster, etcd.Endpoint, filepath.Join(secrets, "wrong.password"))), 0o600); err != nil {
		t.Fatal(err)
	}
	out, code = cifhactlConfig(t, wrong, "status")
	if code == 0 || !strings.Contains(out, "authentication failed") {
		t.Errorf("cifhactl with a wrong password: exit %d\n%s", code, out)
	}
	unchanged(t, c, "db1", pm)
}
