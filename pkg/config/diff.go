package config

import (
	"reflect"
	"sort"
	"strings"
)

// Diff lists the keys whose values differ between a and b, as
// "section.key" (a secret read from a file appears under its file's key
// with " (contents)"). Used by SIGHUP reload to tell live changes from
// those that need a restart. Path is not compared.
func Diff(a, b *Config) []string {
	var out []string
	diffValue(reflect.ValueOf(*a), reflect.ValueOf(*b), "", &out)
	sort.Strings(out)
	return out
}

func diffValue(a, b reflect.Value, prefix string, out *[]string) {
	t := a.Type()
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if !f.IsExported() || f.Name == "Path" && prefix == "" {
			continue
		}
		key := strings.Split(f.Tag.Get("toml"), ",")[0]
		if key == "-" || key == "" {
			// A secret read from a file: named by its file's key. Other
			// derived fields follow their own keys.
			if key = secretKey(f.Name); key == "" {
				continue
			}
			key += " (contents)"
		}
		name := key
		if prefix != "" {
			name = prefix + "." + key
		}
		fa, fb := a.Field(i), b.Field(i)
		if fa.Kind() == reflect.Struct && !isLeafStruct(fa.Type()) {
			diffValue(fa, fb, name, out)
			continue
		}
		if !reflect.DeepEqual(fa.Interface(), fb.Interface()) {
			*out = append(*out, name)
		}
	}
}

// isLeafStruct: structs compared as one value (durations).
func isLeafStruct(t reflect.Type) bool { return t == reflect.TypeOf(Duration{}) }

func secretKey(field string) string {
	switch field {
	case "Password":
		return "password_file"
	case "Token":
		return "token_file"
	case "SuperuserPassword":
		return "superuser_password_file"
	case "ReplicationPassword":
		return "replication_password_file"
	}
	return ""
}
