package api

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/cifha/cifha/pkg/state"
)

// Body limits: requests the agent accepts, answers a client reads.
const (
	MaxRequest  = 1 << 16
	MaxResponse = 1 << 20
)

// TLS selects the client side of the API's TLS: a private CA to trust
// (instead of the system's roots) and a client certificate to present.
type TLS struct {
	CAFile, CertFile, KeyFile string
}

// NewHTTPClient returns an HTTP client for the agents' APIs: it trusts
// t.CAFile when set (else the system's roots) and presents t.CertFile when
// set; it sends token as a bearer token when token is not empty.
func NewHTTPClient(t TLS, token string, timeout time.Duration) (*http.Client, error) {
	c := &http.Client{Timeout: timeout}
	if t.CAFile != "" || t.CertFile != "" {
		tc := &tls.Config{MinVersion: tls.VersionTLS12}
		if t.CAFile != "" {
			pool, err := LoadPool(t.CAFile)
			if err != nil {
				return nil, fmt.Errorf("api ca_file: %w", err)
			}
			tc.RootCAs = pool
		}
		if t.CertFile != "" {
			cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
			if err != nil {
				return nil, fmt.Errorf("api client certificate: %w", err)
			}
			tc.Certificates = []tls.Certificate{cert}
		}
		c.Transport = &http.Transport{TLSClientConfig: tc}
	}
	return WithToken(c, token), nil
}

// LoadPool reads a PEM CA bundle.
func LoadPool(path string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s: no PEM certificate found", path)
	}
	return pool, nil
}

// ServerTLS is the API server's TLS configuration: the server certificate
// and, with clientCAFile, verification of client certificates when given
// (the control endpoints then require one).
func ServerTLS(certFile, keyFile, clientCAFile string) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("api TLS: %w", err)
	}
	tc := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if clientCAFile != "" {
		pool, err := LoadPool(clientCAFile)
		if err != nil {
			return nil, fmt.Errorf("api client_ca_file: %w", err)
		}
		tc.ClientCAs, tc.ClientAuth = pool, tls.VerifyClientCertIfGiven
	}
	return tc, nil
}

// WithToken returns a copy of c that sends token as a bearer token on
// every request ("" returns c).
func WithToken(c *http.Client, token string) *http.Client {
	if token == "" {
		return c
	}
	cc := *c
	base := c.Transport
	if base == nil {
		base = http.DefaultTransport
	}
	cc.Transport = bearer{base: base, token: token}
	return &cc
}

// WithTokenFunc is WithToken with a token read at every request (a
// SIGHUP may change it); an empty token sends none.
func WithTokenFunc(c *http.Client, token func() string) *http.Client {
	cc := *c
	base := c.Transport
	if base == nil {
		base = http.DefaultTransport
	}
	cc.Transport = bearer{base: base, fn: token}
	return &cc
}

type bearer struct {
	base  http.RoundTripper
	token string
	fn    func() string
}

func (b bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	tok := b.token
	if b.fn != nil {
		tok = b.fn()
	}
	if tok == "" {
		return b.base.RoundTrip(r)
	}
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+tok)
	return b.base.RoundTrip(r)
}

// ErrUnauthorized is a 401 answer.
var ErrUnauthorized = errors.New("401 unauthorized (the members' api.token_file differ, or no token was given)")

// Get fetches base+path and decodes the JSON answer into out, whatever the
// status code (load-balancer endpoints answer 503 with a body, the control
// endpoints explain a 401 or a 409 in theirs). It returns the status code;
// the caller judges it. An error means no usable answer (code 0: no answer
// at all).
func Get(ctx context.Context, c *http.Client, base, path string, out any) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(base, "/")+path, nil)
	if err != nil {
		return 0, err
	}
	return do(c, req, out)
}

// Post sends body as JSON to base+path and decodes the answer into out.
func Post(ctx context.Context, c *http.Client, base, path string, body, out any) (int, error) {
	b, err := json.Marshal(body)
	if err != nil {
		return 0, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimRight(base, "/")+path, bytes.NewReader(b))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	return do(c, req, out)
}

func do(c *http.Client, req *http.Request, out any) (int, error) {
	resp, err := c.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, MaxResponse+1))
	if err != nil {
		return resp.StatusCode, fmt.Errorf("%s %s: %w", req.Method, req.URL.Path, err)
	}
	if len(b) > MaxResponse {
		return resp.StatusCode, fmt.Errorf("%s %s: answer larger than %d bytes", req.Method, req.URL.Path, MaxResponse)
	}
	if out == nil {
		return resp.StatusCode, nil
	}
	if err := json.Unmarshal(b, out); err != nil {
		if resp.StatusCode == http.StatusUnauthorized {
			return resp.StatusCode, fmt.Errorf("%s %s: %w", req.Method, req.URL.Path, ErrUnauthorized)
		}
		return resp.StatusCode, fmt.Errorf("%s %s: %d, %w", req.Method, req.URL.Path, resp.StatusCode, err)
	}
	return resp.StatusCode, nil
}

// DecodeRequest decodes a request body strictly (state.DecodeStrict): the
// server side of the same rule.
func DecodeRequest(body []byte, v any) error {
	if len(body) > MaxRequest {
		return fmt.Errorf("invalid request: larger than %d bytes", MaxRequest)
	}
	if err := state.DecodeStrict(body, v); err != nil {
		return fmt.Errorf("invalid request: %v", err)
	}
	return nil
}
