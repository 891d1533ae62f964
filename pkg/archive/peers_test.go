package archive

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Push and Pull through Handler: stored atomically, the same segment
// twice succeeds, a different one under the same name is refused and the
// original stays, a missing one is ErrNotFound, and nothing is served or
// stored without the token or under a name that is not a WAL file's.
func TestPeersPushPull(t *testing.T) {
	dir := t.TempDir()
	srv := httptest.NewServer(http.StripPrefix("", Handler(dir, 1<<20, func(r *http.Request) bool {
		return r.Header.Get("Authorization") == "Bearer tok"
	})))
	defer srv.Close()
	hc := &http.Client{Transport: bearer{"tok"}}
	ctx := context.Background()
	src := filepath.Join(t.TempDir(), "seg")
	os.WriteFile(src, []byte("segment one"), 0o600)
	name := "000000010000000000000001"
	for range 2 {
		if err := Push(ctx, hc, srv.URL, src, name); err != nil {
			t.Fatal(err)
		}
	}
	other := filepath.Join(t.TempDir(), "other")
	os.WriteFile(other, []byte("another segment"), 0o600)
	if err := Push(ctx, hc, srv.URL, other, name); !errors.Is(err, ErrConflict) {
		t.Fatalf("different content under the same name: %v", err)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, name)); string(b) != "segment one" {
		t.Fatalf("archived content %q", b)
	}
	dst := filepath.Join(t.TempDir(), "RECOVERYXLOG")
	if err := Pull(ctx, hc, srv.URL, name, dst); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(dst); string(b) != "segment one" {
		t.Fatalf("pulled %q", b)
	}
	if err := Pull(ctx, hc, srv.URL, "000000010000000000000002", dst); !errors.Is(err, ErrNotFound) {
		t.Fatalf("missing segment: %v", err)
	}
	if err := Push(ctx, http.DefaultClient, srv.URL, src, "000000010000000000000003"); err == nil || !strings.Contains(err.Error(), "401") {
		t.Fatalf("push without the token: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "000000010000000000000003")); err == nil {
		t.Fatal("stored without the token")
	}
	for _, bad := range []string{"..%2Fetc%2Fpasswd", "pg_control", "000000010000000000000001%2F..%2Fx"} {
		resp, err := hc.Get(srv.URL + "/archive/" + bad)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest && resp.StatusCode != http.StatusNotFound {
			t.Errorf("GET %s: %d", bad, resp.StatusCode)
		}
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Errorf("archive holds %d entries (temporary files left?)", len(ents))
	}
}

type bearer struct{ tok string }

func (b bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+b.tok)
	return http.DefaultTransport.RoundTrip(r)
}
