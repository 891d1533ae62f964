package api

import (
	"os"
	"testing"
	"time"
)

func TestAPIClientCAFile(t *testing.T) {
	if c, err := NewHTTPClient(TLS{}, "", time.Second); err != nil || c.Transport != nil {
		t.Fatalf("default client: %v", err)
	}
	if _, err := NewHTTPClient(TLS{CAFile: "/nonexistent/ca.crt"}, "", time.Second); err == nil {
		t.Fatal("missing ca_file accepted")
	}
	bad := t.TempDir() + "/ca.crt"
	os.WriteFile(bad, []byte("not a certificate"), 0o600)
	if _, err := NewHTTPClient(TLS{CAFile: bad}, "", time.Second); err == nil {
		t.Fatal("ca_file without PEM accepted")
	}
}
