package main

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/BurntSushi/toml"
	"github.com/cifha/cifha/pkg/cifsync"
)

// TestDocumentedConfigurationsPassCheckConfig: docs/cifha.example.toml,
// the fast-failover setting its comments describe, and every TOML block in
// the docs applied on top of the example, each pass `cifha run
// --check-config`; so does docs/cif-sync.example.toml for cif-sync.
func TestDocumentedConfigurationsPassCheckConfig(t *testing.T) {
	dir := t.TempDir()
	for _, f := range []string{"superuser.password", "replication.password", "pg.crt", "pg.key", "ca.crt", "api.token"} {
		if err := os.WriteFile(filepath.Join(dir, f), []byte("s3cret\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	local := func(b []byte) string { return strings.ReplaceAll(string(b), "/etc/cifha/", dir+"/") }
	example, err := os.ReadFile("../../docs/cifha.example.toml")
	if err != nil {
		t.Fatal(err)
	}
	var base map[string]any
	if _, err := toml.Decode(local(example), &base); err != nil {
		t.Fatalf("docs/cifha.example.toml: %v", err)
	}
	configs := map[string]string{"docs/cifha.example.toml": local(example)}
	overlay := func(name, fragment string) {
		var over map[string]any
		if _, err := toml.Decode(local([]byte(fragment)), &over); err != nil {
			t.Errorf("%s: %v", name, err)
			return
		}
		merged := merge(clone(base), over)
		var b bytes.Buffer
		if err := toml.NewEncoder(&b).Encode(merged); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		configs[name] = b.String()
	}
	// The example's "Fast failover" comment, as an operator applies it.
	overlay("the example's fast failover", "[ha]\nttl = \"3s\"\nfailsafe_mode = true\n[etcd]\ndial_timeout = \"1s\"\n")
	docs, _ := filepath.Glob("../../docs/*.md")
	docs = append(docs, "../../README.md")
	block := regexp.MustCompile("(?s)```toml\n(.*?)```")
	n := 0
	for _, d := range docs {
		if filepath.Base(d) == "configuration.md" {
			continue // the reference: one key at a time, checked by confref
		}
		b, err := os.ReadFile(d)
		if err != nil {
			t.Fatal(err)
		}
		for i, m := range block.FindAllSubmatch(b, -1) {
			// Indented blocks (in lists) keep their indentation.
			overlay(filepath.Base(d)+" block "+strconv.Itoa(i+1), dedent(string(m[1])))
			n++
		}
	}
	if n == 0 {
		t.Fatal("no TOML block found in the docs: the test reads nothing")
	}
	t.Logf("%d TOML blocks in the docs", n)
	for name, text := range configs {
		f := filepath.Join(dir, "cifha.toml")
		if err := os.WriteFile(f, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		code, out, errOut := capture(t, func() int { return dispatch([]string{"run", "--config", f, "--check-config"}) })
		if code != 0 || !strings.Contains(out, "configuration ok") {
			t.Errorf("%s: cifha run --check-config exit %d: %s%s\n%s", name, code, out, errOut, text)
		}
	}
	syncExample, err := os.ReadFile("../../docs/cif-sync.example.toml")
	if err != nil {
		t.Fatal(err)
	}
	f := filepath.Join(dir, "cif-sync.toml")
	os.WriteFile(f, []byte(local(syncExample)), 0o600)
	if _, err := cifsync.LoadConfig(f); err != nil {
		t.Errorf("docs/cif-sync.example.toml: %v", err)
	}
}

func clone(m map[string]any) map[string]any {
	out := map[string]any{}
	for k, v := range m {
		if sub, ok := v.(map[string]any); ok {
			v = clone(sub)
		}
		out[k] = v
	}
	return out
}

// merge puts over's keys into base, table by table.
func merge(base, over map[string]any) map[string]any {
	for k, v := range over {
		if sub, ok := v.(map[string]any); ok {
			if b, ok := base[k].(map[string]any); ok {
				base[k] = merge(b, sub)
				continue
			}
		}
		base[k] = v
	}
	return base
}

func dedent(s string) string {
	lines := strings.Split(s, "\n")
	indent := -1
	for _, l := range lines {
		if strings.TrimSpace(l) == "" {
			continue
		}
		if k := len(l) - len(strings.TrimLeft(l, " ")); indent < 0 || k < indent {
			indent = k
		}
	}
	for i, l := range lines {
		if len(l) >= indent && indent > 0 {
			lines[i] = l[indent:]
		}
	}
	return strings.Join(lines, "\n")
}
