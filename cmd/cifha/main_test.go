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
		{[]string{"frobnicate"}, 2, "", `unknown command "frobnicate"`},
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

func TestTuneCommand(t *testing.T) {
	var out, errb strings.Builder
	if rc := runTune([]string{"--ram", "8GiB", "--cpus", "4", "--pg-version", "15"}, &out, &errb); rc != 0 {
		t.Fatalf("rc %d: %s", rc, errb.String())
	}
	for _, want := range []string{"shared_buffers = 819MB", "work_mem = 1024MB", "vm.overcommit_memory = 2"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("missing %q:\n%s", want, out.String())
		}
	}
	for _, bad := range [][]string{
		{"--ram", "lots"}, {"--pg-version", "8"}, {"--pg-version", "15", "--profile", "fast"},
		{"--pg-version", "15", "--only", "kernel"}, {"--pg-version", "15", "--cpus", "0"}, {"--pg-version", "15", "extra"},
	} {
		errb.Reset()
		if rc := runTune(bad, &out, &errb); rc != 2 || errb.Len() == 0 {
			t.Errorf("%v: rc %d, stderr %q; want 2 and a message", bad, rc, errb.String())
		}
	}
}
