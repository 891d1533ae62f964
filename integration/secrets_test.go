package integration

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/cifha/cifha/internal/cluster"
	"github.com/cifha/cifha/internal/testutil"
)

// TestNoSecretLeaks (issue 12, acceptance 6): with recognisable secrets
// (superuser, replication and an application role's passwords, the API
// token), through bootstrap, a clone, a switchover, a reload and a
// failed login, none of them appears in the agents' logs, postgres' logs,
// /status, /metrics, the control API's answers, or any value in etcd.
func TestNoSecretLeaks(t *testing.T) {
	const (
		super = "Sup3r-s3cret-q7wz"
		token = "T0ken-s3cret-k2vx"
		appPw = "App-s3cret-m4np"
	)
	secrets := []string{super, "repl-" + super, token, appPw}
	var pwFile string
	c := newCluster(t, 2, func(o *cluster.Options) {
		o.SuperuserPassword = super
		o.APIToken = token
		pwFile = filepath.Join(o.Root, "secrets", "cif.password")
		o.Extra += fmt.Sprintf("\n[bootstrap]\nroles = [{ name = \"cif\", password_file = %q }]\ndatabases = [{ name = \"cif\", owner = \"cif\" }]\n", pwFile)
		o.Files = map[string]string{pwFile: appPw + "\n"}
	})
	p := waitHealthy(t, c, 60*time.Second)
	s := others(c, p)[0]
	tok := filepath.Join(c.Opt.Root, "secrets", "api.token")
	if out, code := cifhactl(t, c, "--token-file", tok, "switchover", "--force", "--to", s.Name); code != 0 {
		t.Fatalf("switchover: %d %s", code, out)
	}
	testutil.Eventually(t, 60*time.Second, s.Name+" is the primary", func() error {
		if code, _, err := s.API(ctxT(t, 3*time.Second), "/primary"); err != nil || code != 200 {
			return fmt.Errorf("%d %v", code, err)
		}
		return nil
	})
	if err := s.SignalAgent(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	// A wrong token on the control API.
	if out, code := cifhactl(t, c, "--token-file", writeTemp(t, "not-the-token"), "pause"); code == 0 {
		t.Fatalf("pause with a wrong token succeeded: %s", out)
	}
	waitHealthy(t, c, 60*time.Second)

	var texts []string
	for _, n := range c.Nodes {
		texts = append(texts, "agent log of "+n.Name+"\n"+n.Log())
		if b, err := os.ReadFile(filepath.Join(n.Dir, "postgresql-"+n.Name+".log")); err == nil {
			texts = append(texts, "postgres log of "+n.Name+"\n"+string(b))
		}
		for _, path := range []string{"/status", "/metrics", "/health", "/primary", "/replica", "/wal"} {
			_, body, err := n.API(ctxT(t, 5*time.Second), path)
			if err != nil {
				t.Fatalf("%s%s: %v", n.Name, path, err)
			}
			texts = append(texts, n.Name+path+"\n"+string(body))
		}
	}
	out, _ := cifhactl(t, c, "status", "--json")
	texts = append(texts, "cifhactl status\n"+out)
	cli, err := clientv3.New(clientv3.Config{Endpoints: c.Opt.EtcdEndpoints, DialTimeout: 3 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := cli.Get(ctx, "", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) < 3 {
		t.Fatalf("only %d keys in etcd", len(resp.Kvs))
	}
	for _, kv := range resp.Kvs {
		texts = append(texts, "etcd "+string(kv.Key)+"\n"+string(kv.Value))
	}
	for _, text := range texts {
		for _, sec := range secrets {
			if i := strings.Index(text, sec); i >= 0 {
				where, _, _ := strings.Cut(text, "\n")
				lo := max(0, i-120)
				t.Errorf("%s contains a secret: ...%s...", where, text[lo:min(len(text), i+len(sec)+40)])
			}
		}
	}
}

func writeTemp(t *testing.T, content string) string {
	t.Helper()
	dir := testutil.Dir(t, "cifha-secret-")
	p := filepath.Join(dir, "f")
	if err := os.WriteFile(p, []byte(content+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}
