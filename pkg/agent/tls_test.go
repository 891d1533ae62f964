package agent

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"github.com/cifha/cifha/pkg/agent/agenttest"
	"github.com/cifha/cifha/pkg/api"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

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
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"}, IsCA: true,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTpl, caTpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	write := func(name, typ string, der []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	ca = write("ca.crt", "CERTIFICATE", caDER)
	leaf := func(name string, serial int64, usage x509.ExtKeyUsage) (string, string) {
		k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: name},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
			ExtKeyUsage: []x509.ExtKeyUsage{usage}, IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}}
		der, err := x509.CreateCertificate(rand.Reader, tpl, caCert, &k.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		kb, _ := x509.MarshalECPrivateKey(k)
		return write(name+".crt", "CERTIFICATE", der), write(name+".key", "EC PRIVATE KEY", kb)
	}
	srvCert, srvKey = leaf("server", 2, x509.ExtKeyUsageServerAuth)
	cliCert, cliKey = leaf("client", 3, x509.ExtKeyUsageClientAuth)
	return
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
