// Package doctor is `cifha doctor`: a preflight on a DB host or on the CIF
// node that names each problem and the fix. It replaces the seed's
// "Testing" section (psql locally and from the CIF node). Every check is
// read-only: nothing is created, started or claimed.
package doctor

import (
	"fmt"
	"io"
	"sort"
	"strings"
)

// Status of one check.
type Status int

// Check outcomes. Warn is advice (a kernel setting off the recommended
// value); only Fail makes the report fail.
const (
	OK Status = iota
	Warn
	Fail
)

func (s Status) String() string {
	switch s {
	case OK:
		return "ok"
	case Warn:
		return "WARN"
	}
	return "FAIL"
}

// Result is one check's outcome. Fix says what to do about a Warn or Fail.
type Result struct {
	Status Status
	Check  string
	Detail string
	Fix    string
}

// Report collects results in the order checked.
type Report struct{ Results []Result }

func (r *Report) add(s Status, check, detail, fix string) {
	r.Results = append(r.Results, Result{s, check, detail, fix})
}
func (r *Report) ok(check, format string, a ...any) { r.add(OK, check, fmt.Sprintf(format, a...), "") }
func (r *Report) warn(check, fix, format string, a ...any) {
	r.add(Warn, check, fmt.Sprintf(format, a...), fix)
}
func (r *Report) fail(check, fix, format string, a ...any) {
	r.add(Fail, check, fmt.Sprintf(format, a...), fix)
}

// Failed reports whether any check failed.
func (r Report) Failed() bool {
	for _, x := range r.Results {
		if x.Status == Fail {
			return true
		}
	}
	return false
}

// Find returns the results of one check (tests and callers that act on
// a single check).
func (r Report) Find(check string) []Result {
	var out []Result
	for _, x := range r.Results {
		if x.Check == check {
			out = append(out, x)
		}
	}
	return out
}

// Print writes one line per result, the fix indented under it, then a
// summary line.
func (r Report) Print(w io.Writer) {
	fails, warns := 0, 0
	for _, x := range r.Results {
		fmt.Fprintf(w, "%-4s  %-12s %s\n", x.Status, x.Check, oneLine(x.Detail))
		if x.Fix != "" {
			fmt.Fprintf(w, "      %-12s fix: %s\n", "", oneLine(x.Fix))
		}
		switch x.Status {
		case Fail:
			fails++
		case Warn:
			warns++
		}
	}
	switch {
	case fails > 0:
		fmt.Fprintf(w, "\n%d check(s) failed, %d warning(s)\n", fails, warns)
	case warns > 0:
		fmt.Fprintf(w, "\nall checks passed, %d warning(s)\n", warns)
	default:
		fmt.Fprintln(w, "\nall checks passed")
	}
}

// oneLine keeps a result on its line whatever an error message holds.
func oneLine(s string) string {
	return strings.Join(strings.Fields(strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, s)), " ")
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
