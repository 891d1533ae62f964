package command

import (
	"context"
	"strings"
	"testing"
	"time"
)

func TestRun(t *testing.T) {
	out, err := Run(context.Background(), Spec{Argv: []string{"sh", "-c", `echo "$0 $1 $X"`}, Args: []string{"a", "b"}, Env: []string{"X=y"}})
	if err != nil || out != "a b y" {
		t.Fatalf("out %q err %v", out, err)
	}
	if _, err := Run(context.Background(), Spec{Argv: []string{"sh", "-c", "exit 3"}}); err == nil {
		t.Fatal("exit 3 was no error")
	}
	if _, err := Run(context.Background(), Spec{}); err == nil {
		t.Fatal("empty command ran")
	}
	// A command that forks a long-lived child ends with its group at the
	// timeout.
	start := time.Now()
	_, err = Run(context.Background(), Spec{Argv: []string{"sh", "-c", "sleep 30 & sleep 30"}, Timeout: 200 * time.Millisecond})
	if err == nil || !strings.Contains(err.Error(), "timed out") {
		t.Fatalf("err %v", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("the timeout did not end the group (%s)", d)
	}
	out, _ = Run(context.Background(), Spec{Argv: []string{"sh", "-c", "head -c 100000 /dev/zero | tr '\\0' x"}})
	if len(out) != MaxOutput {
		t.Fatalf("output %d bytes; want capped at %d", len(out), MaxOutput)
	}
}
