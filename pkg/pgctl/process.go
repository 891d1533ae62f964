package pgctl

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"github.com/jackc/pgx/v5"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// StopMode is a PostgreSQL shutdown mode.
type StopMode int

// Shutdown modes, as postgres maps signals to them.
const (
	Smart     StopMode = iota // SIGTERM: wait for clients to leave
	Fast                      // SIGINT: disconnect clients, checkpoint
	Immediate                 // SIGQUIT: no checkpoint; crash recovery on next start
)

func (m StopMode) String() string { return [...]string{"smart", "fast", "immediate"}[m] }

func (m StopMode) signal() syscall.Signal {
	return [...]syscall.Signal{syscall.SIGTERM, syscall.SIGINT, syscall.SIGQUIT}[m]
}

// Errors callers branch on.
var (
	ErrNotRunning  = errors.New("postgres is not running")
	ErrRunning     = errors.New("postgres is already running")
	ErrStartTimout = errors.New("postgres did not become ready in time")
	// ErrForeignPostmaster means a live postmaster that cifha did not start
	// holds the data directory.
	ErrForeignPostmaster = errors.New("a postmaster not started by cifha is running on the data directory")
)

// Config locates one instance.
type Config struct {
	BinDir  string
	DataDir string
	// WalDir, if set, is where initdb and pg_basebackup put the WAL
	// (--waldir, --xlogdir before 10), linked from the data directory.
	WalDir string
	// Tablespaces maps tablespace names to this member's directories
	// ([postgres.tablespaces]).
	Tablespaces map[string]string
	SocketDir   string
	Port        int
	Superuser   string
	// LogFile receives postgres' stdout and stderr.
	LogFile string
	// PassFile is the libpq password file used by client programs.
	PassFile string
	// TLS is how client programs verify the peer they connect to.
	TLS TLS
}

// Instance runs and observes one postgres. Start and Stop are called from
// the agent's single acting goroutine; Running and Exited are safe anywhere.
type Instance struct {
	cfg     Config
	version Version

	mu      sync.Mutex
	proc    *os.Process
	exited  chan struct{}
	exitErr error

	connMu sync.Mutex
	conn   connHolder
}

// New returns an Instance for cfg and server version v.
func New(cfg Config, v Version) *Instance {
	return &Instance{cfg: cfg, version: v}
}

// Version is the server version of the binaries.
func (i *Instance) Version() Version { return i.version }

// Config returns the instance's configuration.
func (i *Instance) Config() Config { return i.cfg }

// PID returns the postmaster's PID, or 0 if cifha is not running one.
func (i *Instance) PID() int {
	i.mu.Lock()
	defer i.mu.Unlock()
	if i.proc == nil {
		return 0
	}
	select {
	case <-i.exited:
		return 0
	default:
		return i.proc.Pid
	}
}

// Running reports whether the postmaster cifha started is alive.
func (i *Instance) Running() bool { return i.PID() != 0 }

// Exited returns a channel closed when the current postmaster exits (nil if
// none was started).
func (i *Instance) Exited() <-chan struct{} {
	i.mu.Lock()
	defer i.mu.Unlock()
	return i.exited
}

// ExitErr is how the last postmaster ended.
func (i *Instance) ExitErr() error {
	i.mu.Lock()
	defer i.mu.Unlock()
	return i.exitErr
}

// cleanEnv is the environment for postgres and client programs: PG*
// variables are dropped (PGPASSWORD would win over the passfile) and
// PGPASSFILE points at cifha's.
func (i *Instance) cleanEnv() []string {
	var env []string
	for _, e := range os.Environ() {
		if strings.HasPrefix(e, "PG") {
			continue
		}
		env = append(env, e)
	}
	if i.cfg.PassFile != "" {
		env = append(env, "PGPASSFILE="+i.cfg.PassFile)
	}
	return env
}

// ForeignPID returns the PID in postmaster.pid if that process is alive and
// is not ours, else 0.
func (i *Instance) ForeignPID() int {
	pid := readPostmasterPID(i.cfg.DataDir)
	if pid <= 0 || pid == i.PID() {
		return 0
	}
	// EPERM: another user's process, which cannot be a postmaster of this
	// data directory (postgres runs as its owner, as the agent does); the
	// pid file is stale, as postgres' own lock-file check concludes. Its
	// /proc entry may be hidden (the unit's ProtectProc=invisible), so it
	// must not be judged by its name below.
	if err := syscall.Kill(pid, 0); err != nil {
		return 0
	}
	// A stale pid file can name a recycled PID; only a postgres counts.
	comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	if err == nil && !bytes.HasPrefix(comm, []byte("postgres")) && !bytes.HasPrefix(comm, []byte("postmaster")) {
		return 0
	}
	return pid
}

func readPostmasterPID(dataDir string) int {
	b, err := os.ReadFile(filepath.Join(dataDir, "postmaster.pid"))
	if err != nil {
		return 0
	}
	line, _, _ := bytes.Cut(b, []byte("\n"))
	pid, _ := strconv.Atoi(strings.TrimSpace(string(line)))
	return pid
}

// pidFileStatus returns line 8 of postmaster.pid ("starting", "ready",
// "standby", "stopping") when it names pid (10+).
func pidFileStatus(dataDir string, pid int) string {
	f, err := os.Open(filepath.Join(dataDir, "postmaster.pid"))
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	n := 0
	for sc.Scan() {
		n++
		if n == 1 {
			if p, _ := strconv.Atoi(strings.TrimSpace(sc.Text())); p != pid {
				return ""
			}
		}
		if n == 8 {
			return strings.TrimSpace(sc.Text())
		}
	}
	return ""
}

// StopForeign stops a postmaster that cifha did not start (left by an
// operator's pg_ctl, or surviving an agent crash) with a fast shutdown and
// waits for it to exit.
func (i *Instance) StopForeign(ctx context.Context) error {
	pid := i.ForeignPID()
	if pid == 0 {
		return nil
	}
	// fast, then immediate, then SIGKILL; each step gets a third of ctx's
	// remaining time (5 s each without a deadline).
	step := 5 * time.Second
	if dl, ok := ctx.Deadline(); ok {
		step = time.Until(dl) / 3
	}
	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGQUIT, syscall.SIGKILL} {
		if err := syscall.Kill(pid, sig); err != nil {
			if errors.Is(err, syscall.ESRCH) {
				return nil
			}
			return fmt.Errorf("stop foreign postmaster %d: %w", pid, err)
		}
		deadline := time.Now().Add(step)
		for time.Now().Before(deadline) {
			if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
				return nil
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("stop foreign postmaster %d: %w", pid, ctx.Err())
			case <-time.After(20 * time.Millisecond):
			}
		}
	}
	return fmt.Errorf("stop foreign postmaster %d: still running after SIGKILL", pid)
}

// Start runs postgres as a child process and waits up to wait for it to
// accept connections. The child gets SIGQUIT (immediate shutdown) if the
// agent dies, so an agent killed with -9 leaves no writable postgres behind.
// If postgres is still starting when wait ends, Start returns
// ErrStartTimout and leaves it running.
func (i *Instance) Start(ctx context.Context, wait time.Duration) error {
	if i.Running() {
		return ErrRunning
	}
	if pid := i.ForeignPID(); pid != 0 {
		return fmt.Errorf("%w (pid %d)", ErrForeignPostmaster, pid)
	}
	logf, err := os.OpenFile(i.cfg.LogFile, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("open postgres log: %w", err)
	}
	cmd := exec.Command(filepath.Join(i.cfg.BinDir, "postgres"), "-D", i.cfg.DataDir)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = i.cleanEnv()
	cmd.SysProcAttr = &syscall.SysProcAttr{
		// Own process group: a Ctrl-C meant for the agent's terminal must not
		// reach postgres behind the agent's back.
		Setpgid: true,
		// Parent-death signal: postgres does an immediate shutdown when the
		// thread that forked it dies. Pdeathsig is tied to that OS thread, so
		// the goroutine below locks it and keeps it until the child exits.
		Pdeathsig: syscall.SIGQUIT,
	}
	exited := make(chan struct{})
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		// Never unlocked: the thread exits with this goroutine, after the child.
		if err := cmd.Start(); err != nil {
			logf.Close()
			started <- err
			return
		}
		i.mu.Lock()
		i.proc, i.exited, i.exitErr = cmd.Process, exited, nil
		i.mu.Unlock()
		started <- nil
		werr := cmd.Wait()
		logf.Close()
		i.mu.Lock()
		i.exitErr = werr
		i.mu.Unlock()
		i.closeConn()
		close(exited)
	}()
	if err := <-started; err != nil {
		return fmt.Errorf("start postgres: %w", err)
	}
	pid := cmd.Process.Pid
	deadline := time.NewTimer(wait)
	defer deadline.Stop()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		switch pidFileStatus(i.cfg.DataDir, pid) {
		case "ready", "standby":
			return nil
		}
		select {
		case <-exited:
			return fmt.Errorf("postgres exited during start (%v); see %s: %s", i.ExitErr(), i.cfg.LogFile, tailFile(i.cfg.LogFile, 3))
		case <-ctx.Done():
			return ctx.Err()
		case <-deadline.C:
			return ErrStartTimout
		case <-tick.C:
		}
	}
}

// Stop shuts postgres down in mode and waits for the postmaster to exit or
// ctx to end. It does not escalate; see StopWithin.
func (i *Instance) Stop(ctx context.Context, mode StopMode) error {
	i.mu.Lock()
	proc, exited := i.proc, i.exited
	i.mu.Unlock()
	if proc == nil || exited == nil {
		return ErrNotRunning
	}
	select {
	case <-exited:
		return nil
	default:
	}
	i.closeConn()
	if err := proc.Signal(mode.signal()); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("signal postgres (%s): %w", mode, err)
	}
	select {
	case <-exited:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("stop postgres (%s): %w", mode, ctx.Err())
	}
}

// StopWithin stops postgres in mode, escalating to immediate and then
// SIGKILL if it has not exited after timeout each. It returns nil only
// when the postmaster and every process it started are gone: its children
// (backends call setsid(), so no process group covers them) are recorded
// before each step and killed after the postmaster exits, so no backend of
// a frozen or dead postmaster can commit after the stop returns.
func (i *Instance) StopWithin(ctx context.Context, mode StopMode, timeout time.Duration) error {
	i.mu.Lock()
	proc, exited := i.proc, i.exited
	i.mu.Unlock()
	if proc == nil || exited == nil {
		return nil
	}
	var kids []Proc
	finish := func() error {
		kids = merge(kids, Children(proc.Pid))
		if left := KillAll(kids, max(timeout, time.Second)); len(left) > 0 {
			return fmt.Errorf("stop postgres %d: %d of its processes still run after SIGKILL (first: %d)", proc.Pid, len(left), left[0].PID)
		}
		return nil
	}
	for m := mode; m <= Immediate; m++ {
		kids = merge(kids, Children(proc.Pid))
		c, cancel := context.WithTimeout(ctx, timeout)
		err := i.Stop(c, m)
		cancel()
		if err == nil || errors.Is(err, ErrNotRunning) {
			return finish()
		}
		if ctx.Err() != nil {
			_ = finish()
			return err
		}
	}
	// Last resort: SIGKILL the postmaster and every child it had.
	kids = merge(kids, Children(proc.Pid))
	_ = syscall.Kill(-proc.Pid, syscall.SIGKILL)
	_ = proc.Kill()
	select {
	case <-exited:
	case <-time.After(5 * time.Second):
		_ = finish()
		return fmt.Errorf("kill postgres %d: still not reaped after SIGKILL", proc.Pid)
	}
	return finish()
}

// Reload sends SIGHUP so postgres re-reads its configuration.
func (i *Instance) Reload() error {
	i.mu.Lock()
	proc := i.proc
	i.mu.Unlock()
	if !i.Running() {
		return ErrNotRunning
	}
	return proc.Signal(syscall.SIGHUP)
}

// Promote asks a standby to become a primary with pg_ctl promote and waits
// (up to 10 s) until it accepts writes.
//
// pg_ctl's own wait (-w) polls ten times a second; on 12+ (where
// pg_is_in_recovery answers during promotion) the agent signals without
// waiting and polls every 10 ms itself, which shortens the write
// unavailability of a switchover by up to 100 ms.
func (i *Instance) Promote(ctx context.Context) error {
	if i.version < 120000 {
		return i.run(ctx, "pg_ctl", "promote", "-D", i.cfg.DataDir, "-w", "-t", "10")
	}
	if err := i.run(ctx, "pg_ctl", "promote", "-D", i.cfg.DataDir, "-W"); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for {
		var inRecovery bool
		err := i.withConn(ctx, func(c *pgx.Conn) error {
			return c.QueryRow(ctx, "SELECT pg_is_in_recovery()").Scan(&inRecovery)
		})
		if err == nil && !inRecovery {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("promote: postgres still in recovery after 10 s (last error: %v)", err)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

func (i *Instance) run(ctx context.Context, prog string, args ...string) error {
	cmd := exec.CommandContext(ctx, filepath.Join(i.cfg.BinDir, prog), args...)
	cmd.Env = i.cleanEnv()
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %w: %s", prog, err, strings.TrimSpace(lastLines(string(out), 5)))
	}
	return nil
}

func tailFile(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	if len(b) > 64<<10 {
		b = b[len(b)-64<<10:]
	}
	return lastLines(string(b), n)
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " | ")
}
