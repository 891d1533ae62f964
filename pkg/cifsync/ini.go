package cifsync

import (
	"bytes"
	"errors"
	"fmt"
	"regexp"
	"strings"
)

// hostRE is what may be written as [db] host: a DNS name or an IP address.
var hostRE = regexp.MustCompile(`^[A-Za-z0-9._:-]{1,253}$`)

// ErrAmbiguous means the file cannot be edited unambiguously (for example
// two [db] sections, or two host keys in [db]); it is left untouched.
var ErrAmbiguous = errors.New("ambiguous ~/.cif")

// line is one physical line: its content and its terminator ("\n",
// "\r\n" or "" for a last line without newline).
type line struct {
	text, eol string
}

func splitLines(b []byte) []line {
	var out []line
	for len(b) > 0 {
		i := bytes.IndexByte(b, '\n')
		if i < 0 {
			out = append(out, line{text: string(b)})
			break
		}
		text, eol := string(b[:i]), "\n"
		if strings.HasSuffix(text, "\r") {
			text, eol = text[:len(text)-1], "\r\n"
		}
		out = append(out, line{text: text, eol: eol})
		b = b[i+1:]
	}
	return out
}

// sectionName returns the name of a "[name]" header line, or "" if the line
// is not a header. Config::Simple allows spaces around the name.
func sectionName(s string) (string, bool) {
	t := strings.TrimSpace(s)
	if len(t) < 2 || t[0] != '[' || t[len(t)-1] != ']' {
		return "", false
	}
	return strings.TrimSpace(t[1 : len(t)-1]), true
}

func isComment(s string) bool {
	t := strings.TrimLeft(s, " \t")
	return t == "" || t[0] == '#' || t[0] == ';'
}

// keyOf returns the key of a "key = value" line and the byte offset where
// its value starts (after '=' and the spaces that follow it).
func keyOf(s string) (key string, valueAt int, ok bool) {
	if isComment(s) {
		return "", 0, false
	}
	eq := strings.IndexByte(s, '=')
	if eq < 0 {
		return "", 0, false
	}
	key = strings.TrimSpace(s[:eq])
	v := eq + 1
	for v < len(s) && (s[v] == ' ' || s[v] == '\t') {
		v++
	}
	return key, v, true
}

// SetDBHost returns in with the host value of [db] set to host. Only that
// value changes: everything else is preserved byte for byte. A missing
// [db] section or host key is added (one line, plus a header if needed,
// with the file's own line ending). It returns changed=false when the host
// already has that value. On error the input must be left as it is.
func SetDBHost(in []byte, host string) (out []byte, changed bool, err error) {
	if !hostRE.MatchString(host) {
		return nil, false, fmt.Errorf("refusing to write host %q into ~/.cif: not a host name or address", host)
	}
	lines := splitLines(in)
	eol := "\n"
	for _, l := range lines {
		if l.eol != "" {
			eol = l.eol
			break
		}
	}
	dbStart, dbEnd, hostLine := -1, -1, -1
	cur := ""
	for i, l := range lines {
		if t := strings.TrimSpace(l.text); strings.HasPrefix(t, "[") {
			if _, ok := sectionName(l.text); !ok {
				// "[db]0" or "[db": another INI reader may take it for a
				// section header. Adding a [db] section could then make a
				// duplicate, so the file is left alone.
				return nil, false, fmt.Errorf("%w: line %d looks like a section header but is malformed: %q", ErrAmbiguous, i+1, truncateLine(t))
			}
		}
		if name, ok := sectionName(l.text); ok {
			if cur == "db" && dbEnd < 0 {
				dbEnd = i
			}
			cur = name
			if name == "db" {
				if dbStart >= 0 {
					return nil, false, fmt.Errorf("%w: two [db] sections (lines %d and %d)", ErrAmbiguous, dbStart+1, i+1)
				}
				dbStart = i
			}
			continue
		}
		if cur != "db" {
			continue
		}
		if k, _, ok := keyOf(l.text); ok && k == "host" {
			if hostLine >= 0 {
				return nil, false, fmt.Errorf("%w: two host keys in [db] (lines %d and %d)", ErrAmbiguous, hostLine+1, i+1)
			}
			hostLine = i
		}
	}
	if dbStart >= 0 && dbEnd < 0 {
		dbEnd = len(lines)
	}
	var buf bytes.Buffer
	buf.Grow(len(in) + len(host) + 16)
	write := func(ls []line) {
		for _, l := range ls {
			buf.WriteString(l.text)
			buf.WriteString(l.eol)
		}
	}
	switch {
	case hostLine >= 0:
		l := lines[hostLine]
		_, at, _ := keyOf(l.text)
		value := l.text[at:]
		// Keep trailing spaces after the value as they were, and double
		// quotes around it if it had them (Config::Simple strips them).
		trimmed := strings.TrimRight(value, " \t")
		newValue := host
		if len(trimmed) >= 2 && trimmed[0] == '"' && trimmed[len(trimmed)-1] == '"' {
			newValue = `"` + host + `"`
		}
		if trimmed == newValue {
			return in, false, nil
		}
		write(lines[:hostLine])
		buf.WriteString(l.text[:at])
		buf.WriteString(newValue)
		buf.WriteString(value[len(trimmed):])
		buf.WriteString(l.eol)
		write(lines[hostLine+1:])
	case dbStart >= 0:
		// Add "host = ..." right after the [db] header.
		write(lines[:dbStart])
		h := lines[dbStart]
		buf.WriteString(h.text)
		if h.eol == "" {
			buf.WriteString(eol)
			buf.WriteString("host = " + host)
		} else {
			buf.WriteString(h.eol)
			buf.WriteString("host = " + host + eol)
		}
		write(lines[dbStart+1:])
	default:
		// Append a [db] section at the end.
		buf.Write(in)
		if len(lines) > 0 && lines[len(lines)-1].eol == "" {
			buf.WriteString(eol)
		}
		buf.WriteString("[db]" + eol + "host = " + host + eol)
	}
	return buf.Bytes(), true, nil
}

// DBValues reads the [db] section's values (for clients that build their
// connection from it, as CIF does).
func DBValues(in []byte) map[string]string {
	out := map[string]string{}
	cur := ""
	for _, l := range splitLines(in) {
		if name, ok := sectionName(l.text); ok {
			cur = name
			continue
		}
		if cur != "db" {
			continue
		}
		if k, at, ok := keyOf(l.text); ok {
			v := strings.TrimSpace(l.text[at:])
			if len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' {
				v = v[1 : len(v)-1]
			}
			out[k] = v
		}
	}
	return out
}

func truncateLine(s string) string {
	if len(s) > 40 {
		return s[:40] + "..."
	}
	return s
}
