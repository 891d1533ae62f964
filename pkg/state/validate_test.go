package state

import (
	"strings"
	"testing"
)

func TestValidConnAddress(t *testing.T) {
	for addr, ok := range map[string]bool{
		"10.0.1.1:5432": true, "db1.example.org:5432": true, "[::1]:5432": true, "127.0.0.11:5432": true,
		"": false, "db1": false, "db1:0": false, "db1:70000": false, "db 1:5432": false, "db1\n:5432": false,
		"'db1':5432": false, "host=evil port=1:5432": false, "::1:5432": false, "[::1]5432": false,
	} {
		if err := ValidConnAddress(addr); (err == nil) != ok {
			t.Errorf("%q: %v; want ok=%v", addr, err, ok)
		}
	}
}

// FuzzValidators: whatever arrives from etcd, an accepted address or URL
// holds nothing that could add a line or a keyword where it is written.
func FuzzValidators(f *testing.F) {
	for _, s := range []string{"10.0.1.1:5432", "http://10.0.1.1:8008", "a\nb:1", "[::1]:5432", "https://x/'"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if ValidConnAddress(s) == nil && strings.ContainsAny(s, " '\"\\\n\r\t=") {
			t.Fatalf("accepted address %q", s)
		}
		if ValidAPIURL(s) == nil && strings.ContainsAny(s, " '\"\\\n\r\t<>") {
			t.Fatalf("accepted URL %q", s)
		}
		_ = SlotName(s)
	})
}
