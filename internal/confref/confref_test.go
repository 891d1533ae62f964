package confref

import (
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/cifha/cifha/pkg/cifsync"
	"github.com/cifha/cifha/pkg/config"
)

// TestReferenceUpToDate: docs/configuration.md is what the code generates
// (UPDATE_CONFREF=1 rewrites it: make docs), and every key is in the
// example files.
func TestReferenceUpToDate(t *testing.T) {
	got, err := Markdown("../..")
	if err != nil {
		t.Fatal(err)
	}
	if os.Getenv("UPDATE_CONFREF") == "1" {
		if err := os.WriteFile("../../docs/configuration.md", []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile("../../docs/configuration.md")
	if err != nil {
		t.Fatal(err)
	}
	if string(want) != got {
		t.Fatal("docs/configuration.md is out of date with the configuration structs: run make docs")
	}
}

// TestExamplesHaveEveryKey: each key of the reference is in its example
// file, set or commented out (a leaf "name =" anywhere in the file).
func TestExamplesHaveEveryKey(t *testing.T) {
	for _, f := range []struct {
		typ, example string
		def          any
	}{
		{"config.Config", "../../docs/cifha.example.toml", config.Default()},
		{"cifsync.Config", "../../docs/cif-sync.example.toml", cifsync.DefaultConfig()},
	} {
		keys, err := Keys("../..", f.typ, f.def)
		if err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(f.example)
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range keys {
			leaf := k.Name[strings.LastIndexByte(k.Name, '.')+1:]
			re := regexp.MustCompile(`(^|[\s{,#\[.])` + regexp.QuoteMeta(leaf) + `(\s*=|\]|\.)`)
			if k.Table {
				re = regexp.MustCompile(`(?m)^#?\s*\[+` + regexp.QuoteMeta(k.Name) + `[\].]|` + regexp.QuoteMeta(leaf) + `\s*=`)
			}
			if !re.Match(b) {
				t.Errorf("%s has no %s", f.example, k.Name)
			}
		}
	}
}
