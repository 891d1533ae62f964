// Package command runs the operator's external commands: the agent's
// role-change hooks and cif-sync's post-change command. One runner, one
// set of rules: the command gets its own process group, which is killed
// when the timeout (or ctx) ends, so a hook that forks cannot outlive it;
// its combined output is captured up to a bound for the log; secrets never
// go through its environment unless the caller puts them there.
package command

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

// MaxOutput bounds the output kept for the log.
const MaxOutput = 16 << 10

// Spec is one command to run.
type Spec struct {
	// Argv is the command and its own arguments; Args are appended.
	Argv []string
	Args []string
	// Env is added to the agent's environment.
	Env []string
	// Timeout bounds the run (default 30 s).
	Timeout time.Duration
}

// Run runs s and returns its combined output (trimmed, at most MaxOutput
// bytes). A non-zero exit, a failure to start or the timeout is an error.
func Run(ctx context.Context, s Spec) (string, error) {
	if len(s.Argv) == 0 || s.Argv[0] == "" {
		return "", errors.New("empty command")
	}
	timeout := s.Timeout
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, s.Argv[0], append(append([]string{}, s.Argv[1:]...), s.Args...)...)
	cmd.Env = append(os.Environ(), s.Env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error {
		// The whole group: a hook's children must not outlive it.
		return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
	cmd.WaitDelay = time.Second
	var out capped
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	text := strings.TrimSpace(out.String())
	if ctx.Err() == context.DeadlineExceeded {
		return text, fmt.Errorf("%s: timed out after %s", s.Argv[0], timeout)
	}
	if err != nil {
		return text, fmt.Errorf("%s: %w", s.Argv[0], err)
	}
	return text, nil
}

// capped keeps the first MaxOutput bytes written to it.
type capped struct{ b bytes.Buffer }

func (c *capped) Write(p []byte) (int, error) {
	if room := MaxOutput - c.b.Len(); room > 0 {
		c.b.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}

func (c *capped) String() string { return c.b.String() }
