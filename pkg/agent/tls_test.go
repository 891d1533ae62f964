package agent

import (
	"context"
	"github.com/cifha/cifha/pkg/agent/agenttest"
	"github.com/cifha/cifha/pkg/api"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/cifha/cifha/internal/testpki"
	"github.com/cifha/cifha/pkg/election"
)

type fakeControl struct{ paused *bool }

func (f fakeControl) SetPause(_ context.Context, on bool, _ string) error { *f.paused = on; return nil }
func (fakeControl) RequestSwitchover(context.Context, election.SwitchoverRequest) (bool, error) {
	return false, nil
}
func (fakeControl) CancelSwitchover(context.Context) (bool, error) { return false, nil }
func (fakeControl) RequestFailover(context.Context, election.FailoverRequest, time.Duration) (bool, error) {
	return false, nil
}
func (fakeControl) PutConfig(context.Context, election.DynamicConfig, int64) error { return nil }

// pki writes a CA, a server certificate for 127.0.0.1 and a client
// certificate into dir and returns their paths.
func pki(t *testing.T, dir string) (ca, srvCert, srvKey, cliCert, cliKey string) {
	t.Helper()
	c, err := testpki.NewCA(dir, "ca")
	if err != nil {
		t.Fatal(err)
	}
	if srvCert, srvKey, err = c.Issue("server", "127.0.0.1"); err != nil {
		t.Fatal(err)
	}
	if cliCert, cliKey, err = c.Issue("client", "127.0.0.1"); err != nil {
		t.Fatal(err)
	}
	return c.Path, srvCert, srvKey, cliCert, cliKey
}

// TestControlRequiresClientCert: with api.client_ca_file, a control request
// needs both the token and a client certificate from that CA; the GET
// endpoints stay open.
func TestControlRequiresClientCert(t *testing.T) {
	ca, sc, sk, cc, ck := pki(t, t.TempDir())
	paused := false
	a := New(Options{Name: "db1", PG: &agenttest.Postgres{}, DCS: agenttest.NewDCS("db1", election.LeaseState{}), Control: fakeControl{&paused},
		Token: "tok", RequireClientCert: true, LoopInterval: time.Second})
	srv := httptest.NewUnstartedServer(Handler(a))
	tc, err := api.ServerTLS(sc, sk, ca)
	if err != nil {
		t.Fatal(err)
	}
	srv.TLS = tc
	srv.StartTLS()
	defer srv.Close()
	post := func(c *http.Client, token string) int {
		req, _ := http.NewRequest(http.MethodPost, srv.URL+"/pause", strings.NewReader(""))
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	noCert, err := api.NewHTTPClient(api.TLS{CAFile: ca}, "", 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	withCert, err := api.NewHTTPClient(api.TLS{CAFile: ca, CertFile: cc, KeyFile: ck}, "", 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if code := post(noCert, "tok"); code != 401 || paused {
		t.Fatalf("token without certificate: %d paused=%v", code, paused)
	}
	if code := post(withCert, "wrong"); code != 401 || paused {
		t.Fatalf("certificate with a wrong token: %d", code)
	}
	if code := post(withCert, "tok"); code != 200 || !paused {
		t.Fatalf("certificate and token: %d paused=%v", code, paused)
	}
	resp, err := noCert.Get(srv.URL + "/status")
	if err != nil || resp.StatusCode == 401 {
		t.Fatalf("GET /status without a certificate: %v %v", resp, err)
	}
	resp.Body.Close()
	if _, err := api.NewHTTPClient(api.TLS{CAFile: ca, CertFile: cc, KeyFile: "/nonexistent"}, "", time.Second); err == nil {
		t.Fatal("missing client key accepted")
	}
}

// TestBasicAuthAndProtectedReads: basic auth (api.username, the token as
// password) works like the bearer token; api.protect_reads puts /status and
// /wal behind them while /health, /primary and /replica stay open.
func TestBasicAuthAndProtectedReads(t *testing.T) {
	paused := false
	a := New(Options{Name: "db1", PG: &agenttest.Postgres{}, DCS: agenttest.NewDCS("db1", election.LeaseState{}), Control: fakeControl{&paused},
		Token: "tok", Username: "ops", ProtectReads: true, LoopInterval: time.Second})
	srv := httptest.NewServer(Handler(a))
	defer srv.Close()
	do := func(method, path string, auth func(*http.Request)) int {
		req, _ := http.NewRequest(method, srv.URL+path, nil)
		if auth != nil {
			auth(req)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	basic := func(u, p string) func(*http.Request) { return func(r *http.Request) { r.SetBasicAuth(u, p) } }
	if code := do("POST", "/pause", basic("ops", "wrong")); code != 401 || paused {
		t.Fatalf("wrong password: %d", code)
	}
	if code := do("POST", "/pause", basic("root", "tok")); code != 401 || paused {
		t.Fatalf("wrong user: %d", code)
	}
	if code := do("POST", "/pause", basic("ops", "tok")); code != 200 || !paused {
		t.Fatalf("basic auth: %d", code)
	}
	for _, p := range []string{"/status", "/wal"} {
		if code := do("GET", p, nil); code != 401 {
			t.Fatalf("GET %s without credentials: %d", p, code)
		}
		if code := do("GET", p, func(r *http.Request) { r.Header.Set("Authorization", "Bearer tok") }); code == 401 {
			t.Fatalf("GET %s with the token: 401", p)
		}
	}
	for _, p := range []string{"/health", "/primary", "/replica"} {
		if code := do("GET", p, nil); code == 401 {
			t.Fatalf("GET %s must stay open: 401", p)
		}
	}
	c := api.WithToken(&http.Client{}, "tok")
	resp, err := c.Get(srv.URL + "/status")
	if err != nil || resp.StatusCode == 401 {
		t.Fatalf("WithToken: %v %v", resp, err)
	}
	resp.Body.Close()
}
