// Package confref generates docs/configuration.md, the reference of every
// key of cifha.toml and cif-sync.toml, from the configuration structs
// themselves: the key from the toml tag, the type from the Go type, the
// default from config.Default() (cifsync.DefaultConfig()), the meaning from
// the field's doc comment. A key without a doc comment is an error, and
// TestReferenceUpToDate fails when the file differs from what the code
// says or when an example file lacks a key, so the reference cannot drift
// from the code. Regenerate with `make docs`.
package confref

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/cifha/cifha/pkg/cifsync"
	"github.com/cifha/cifha/pkg/config"
)

// Key is one configuration key.
type Key struct {
	Name, Type, Default, Doc string
	Table                    bool // a [table]: its keys follow
}

// files parses the Go files of the packages the structs live in.
type files struct {
	types map[string]*ast.StructType // "config.Postgres"
	docs  map[*ast.StructType]string // a named struct type's doc comment
}

func parse(root string) (*files, error) {
	f := &files{types: map[string]*ast.StructType{}, docs: map[*ast.StructType]string{}}
	for pkg, dir := range map[string]string{"config": "pkg/config", "cifsync": "pkg/cifsync"} {
		fset := token.NewFileSet()
		matches, _ := filepath.Glob(filepath.Join(root, dir, "*.go"))
		for _, m := range matches {
			if strings.HasSuffix(m, "_test.go") {
				continue
			}
			af, err := parser.ParseFile(fset, m, nil, parser.ParseComments)
			if err != nil {
				return nil, err
			}
			for _, d := range af.Decls {
				gd, ok := d.(*ast.GenDecl)
				if !ok || gd.Tok != token.TYPE {
					continue
				}
				for _, sp := range gd.Specs {
					ts := sp.(*ast.TypeSpec)
					st, ok := ts.Type.(*ast.StructType)
					if !ok {
						continue
					}
					f.types[pkg+"."+ts.Name.Name] = st
					doc := ts.Doc.Text()
					if doc == "" && len(gd.Specs) == 1 {
						doc = gd.Doc.Text()
					}
					f.docs[st] = strings.TrimSpace(doc)
				}
			}
		}
	}
	return f, nil
}

// Keys lists the keys of a struct type ("config.Config") with its default
// value dv.
func Keys(root, typ string, dv any) ([]Key, error) {
	f, err := parse(root)
	if err != nil {
		return nil, err
	}
	st := f.types[typ]
	if st == nil {
		return nil, fmt.Errorf("no struct %s", typ)
	}
	var out []Key
	var missing []string
	pkg, _, _ := strings.Cut(typ, ".")
	f.walk(pkg, st, reflect.ValueOf(dv), "", &out, &missing)
	if len(missing) > 0 {
		return out, fmt.Errorf("keys without a doc comment (document the struct field): %s", strings.Join(missing, ", "))
	}
	return out, nil
}

func (f *files) walk(pkg string, st *ast.StructType, rv reflect.Value, prefix string, out *[]Key, missing *[]string) {
	for _, fld := range st.Fields.List {
		if fld.Tag == nil || len(fld.Names) == 0 {
			continue
		}
		tag, _ := strconv.Unquote(fld.Tag.Value)
		name, _, _ := strings.Cut(reflect.StructTag(tag).Get("toml"), ",")
		if name == "" || name == "-" {
			continue
		}
		key := prefix + name
		doc := strings.TrimSpace(fld.Doc.Text())
		if doc == "" {
			doc = strings.TrimSpace(fld.Comment.Text())
		}
		fv := rv.FieldByName(fld.Names[0].Name)
		typ, sub, subPkg, list := f.describe(pkg, fld.Type)
		if sub != nil {
			if doc == "" {
				doc = f.docs[sub]
			}
			if doc == "" {
				*missing = append(*missing, key)
			}
			t := "table"
			if list {
				t = "list of tables"
			}
			*out = append(*out, Key{Name: key, Type: t, Doc: doc, Table: true})
			if list {
				fv = reflect.New(fv.Type().Elem()).Elem()
			}
			f.walk(subPkg, sub, fv, key+".", out, missing)
			continue
		}
		if doc == "" {
			*missing = append(*missing, key)
		}
		*out = append(*out, Key{Name: key, Type: typ, Default: defaultOf(fv), Doc: doc})
	}
}

// describe returns a key's type in words, or the struct it is a table of.
func (f *files) describe(pkg string, e ast.Expr) (typ string, sub *ast.StructType, subPkg string, list bool) {
	switch t := e.(type) {
	case *ast.Ident:
		switch t.Name {
		case "string":
			return "string", nil, "", false
		case "bool":
			return "boolean", nil, "", false
		case "int", "int64":
			return "integer", nil, "", false
		}
		if st := f.types[pkg+"."+t.Name]; st != nil {
			if t.Name == "Duration" {
				return "duration", nil, "", false
			}
			return "", st, pkg, false
		}
	case *ast.SelectorExpr:
		x, _ := t.X.(*ast.Ident)
		if x != nil && x.Name == "config" {
			if t.Sel.Name == "Duration" {
				return "duration", nil, "", false
			}
			if st := f.types["config."+t.Sel.Name]; st != nil {
				return "", st, "config", false
			}
		}
	case *ast.StructType:
		return "", t, pkg, false
	case *ast.ArrayType:
		et, st, sp, _ := f.describe(pkg, t.Elt)
		if st != nil {
			return "", st, sp, true
		}
		return "list of " + et + "s", nil, "", false
	case *ast.MapType:
		vt, _, _, _ := f.describe(pkg, t.Value)
		return "table of " + vt + "s", nil, "", false
	}
	return fmt.Sprintf("%T", e), nil, "", false
}

func defaultOf(v reflect.Value) string {
	if !v.IsValid() || v.IsZero() {
		if v.IsValid() && v.Kind() == reflect.Bool {
			return "false"
		}
		return ""
	}
	switch x := v.Interface().(type) {
	case config.Duration:
		return x.Duration.String()
	case time.Duration:
		return x.String()
	case string:
		return strconv.Quote(x)
	case []string:
		q := make([]string, len(x))
		for i, s := range x {
			q[i] = strconv.Quote(s)
		}
		return "[" + strings.Join(q, ", ") + "]"
	}
	return fmt.Sprint(v.Interface())
}

// Markdown renders the reference.
func Markdown(root string) (string, error) {
	var b strings.Builder
	b.WriteString(`# Configuration reference

Generated from the configuration structs (pkg/config, pkg/cifsync) by
` + "`make docs`" + `; ` + "`TestReferenceUpToDate`" + ` fails when this file, the code or the
example files (cifha.example.toml, cif-sync.example.toml) disagree. A
default of "" means the key is empty unless set; some defaults are
derived from other keys, as the meaning says. Unknown keys are an error.
Sizes are written as "1MB", "8GB" (binary units); durations as "7s",
"500ms".
`)
	for _, f := range []struct {
		title, typ string
		def        any
	}{
		{"cifha.toml (/etc/cifha/cifha.toml; cifhactl.toml uses cluster, [etcd] and [api])", "config.Config", config.Default()},
		{"cif-sync.toml (/etc/cifha/cif-sync.toml, on the CIF node)", "cifsync.Config", cifsync.DefaultConfig()},
	} {
		keys, err := Keys(root, f.typ, f.def)
		if err != nil {
			return "", fmt.Errorf("%s: %w", f.typ, err)
		}
		fmt.Fprintf(&b, "\n## %s\n", f.title)
		open := false
		for _, k := range keys {
			if k.Table {
				fmt.Fprintf(&b, "\n### [%s] (%s)\n\n%s\n", k.Name, k.Type, oneLine(k.Doc))
				open = false
				continue
			}
			if !open {
				b.WriteString("\n| key | type | default | meaning |\n|---|---|---|---|\n")
				open = true
			}
			fmt.Fprintf(&b, "| `%s` | %s | %s | %s |\n", k.Name, k.Type, cell(k.Default), oneLine(k.Doc))
		}
	}
	return b.String(), nil
}

func cell(s string) string {
	if s == "" {
		return ""
	}
	return "`" + s + "`"
}

func oneLine(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	return strings.ReplaceAll(s, "|", "\\|")
}
