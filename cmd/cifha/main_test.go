package main

import (
	"io"
	"os"
	"strings"
	"testing"
)

// capture runs f with os.Stdout and os.Stderr redirected.
func capture(t *testing.T, f func() int) (code int, stdout, stderr string) {
	t.Helper()
	or, ow, _ := os.Pipe()
	er, ew, _ := os.Pipe()
	oldOut, oldErr := os.Stdout, os.Stderr
	os.Stdout, os.Stderr = ow, ew
	outC, errC := make(chan string), make(chan string)
	go func() { b, _ := io.ReadAll(or); outC <- string(b) }()
	go func() { b, _ := io.ReadAll(er); errC <- string(b) }()
	code = f()
	os.Stdout, os.Stderr = oldOut, oldErr
	ow.Close()
	ew.Close()
	return code, <-outC, <-errC
}

func TestSubcommandsAreExplicit(t *testing.T) {
	cases := []struct {
		args     []string
		code     int
		out, err string
	}{
		{[]string{"tune"}, 2, "", `unknown command "tune"`},
		{[]string{"cif-snyc"}, 2, "", "usage: cifha"},
		{[]string{"help"}, 0, "usage: cifha", ""},
		{[]string{"--help"}, 0, "usage: cifha", ""},
		{[]string{"-h"}, 0, "usage: cifha", ""},
		{[]string{"version"}, 0, "cifha ", ""},
		{[]string{"--config", "/nonexistent/cifha.toml", "stray"}, 2, "", `unexpected argument "stray"`},
		{[]string{"run", "--config", "/nonexistent/cifha.toml", "--check-config"}, 2, "", "invalid configuration"},
	}
	for _, tc := range cases {
		code, out, errOut := capture(t, func() int { return dispatch(tc.args) })
		if code != tc.code || !strings.Contains(out, tc.out) || !strings.Contains(errOut, tc.err) {
			t.Errorf("cifha %v: exit %d, stdout %q, stderr %q; want exit %d, stdout with %q, stderr with %q",
				tc.args, code, out, errOut, tc.code, tc.out, tc.err)
		}
	}
}
