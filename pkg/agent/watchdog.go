package agent

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/cifha/cifha/pkg/election"
	"github.com/cifha/cifha/pkg/pgctl"
	"github.com/hashicorp/go-hclog"
)

// The fence watchdog closes the gap the fencer goroutine cannot: an agent
// process that is alive but not running at all (SIGSTOP, a debugger, a
// stuck page fault). It is a separate, tiny process (`cifha fence-watchdog`)
// that the agent feeds over a pipe with "arm <postmaster pid> <deadline>"
// and "disarm". The deadline is absolute, in nanoseconds of the host's
// CLOCK_BOOTTIME (the same clock the agent measures its lease on, readable
// by both processes), so the pipe's latency never moves it later. When the
// deadline passes without a fresh "arm", the watchdog stops postgres
// itself: an immediate shutdown, then SIGKILL of the postmaster and of
// every process it had started. When the agent exits, the pipe closes and
// the watchdog exits too (postgres has its own parent-death signal).
//
// A watchdog that stops reading can never block the agent: every write
// has a short deadline; a write that misses it counts as a dead watchdog,
// which is killed and restarted. If it cannot be restarted, Arm fails, the
// fencer stops postgres, and no step makes postgres writable until it
// works again (status and metrics say why).

// writeTimeout bounds one write to the watchdog's pipe.
const writeTimeout = 50 * time.Millisecond

// ProcessWatchdog runs `<exe> fence-watchdog` as a child and writes to it.
type ProcessWatchdog struct {
	mu   sync.Mutex
	exe  string
	cmd  *exec.Cmd
	in   *os.File
	log  hclog.Logger
	err  string
	errM sync.Mutex
}

// NewProcessWatchdog starts the watchdog child.
func NewProcessWatchdog(log hclog.Logger) (*ProcessWatchdog, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	w := &ProcessWatchdog{exe: exe, log: log}
	return w, w.start()
}

func (w *ProcessWatchdog) start() error {
	r, wr, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("start fence watchdog: %w", err)
	}
	cmd := exec.Command(w.exe, "fence-watchdog")
	cmd.Stdin = r
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	// Its own process group: signals meant for the agent do not reach it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		r.Close()
		wr.Close()
		return fmt.Errorf("start fence watchdog: %w", err)
	}
	r.Close()
	go func() { _ = cmd.Wait() }()
	w.cmd, w.in = cmd, wr
	return nil
}

func (w *ProcessWatchdog) setErr(s string) {
	w.errM.Lock()
	w.err = s
	w.errM.Unlock()
}

// Err implements Watchdog.
func (w *ProcessWatchdog) Err() string {
	w.errM.Lock()
	defer w.errM.Unlock()
	return w.err
}

func (w *ProcessWatchdog) write(line string) error {
	if w.in == nil {
		return errors.New("fence watchdog not running")
	}
	_ = w.in.SetWriteDeadline(time.Now().Add(writeTimeout))
	_, err := io.WriteString(w.in, line+"\n")
	return err
}

// send writes line; on failure it restarts the watchdog (killing the old
// one by PID: it may be stuck) and writes again.
func (w *ProcessWatchdog) send(line string) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	err := w.write(line)
	if err == nil {
		w.setErr("")
		return nil
	}
	w.log.Error("fence watchdog unreachable; restarting it", "error", err)
	if w.in != nil {
		w.in.Close()
		w.in = nil
	}
	if w.cmd != nil && w.cmd.Process != nil {
		_ = w.cmd.Process.Kill()
	}
	if serr := w.start(); serr != nil {
		msg := fmt.Sprintf("fence watchdog cannot be restarted: %v", serr)
		w.setErr(msg)
		return errors.New(msg)
	}
	if err := w.write(line); err != nil {
		msg := fmt.Sprintf("fence watchdog restarted but unreachable: %v", err)
		w.setErr(msg)
		return errors.New(msg)
	}
	w.setErr("")
	return nil
}

// Arm implements Watchdog.
func (w *ProcessWatchdog) Arm(pid int, deadline time.Time, grace time.Duration) error {
	return w.send(fmt.Sprintf("arm %d %d %d", pid, election.BootNanos(deadline), grace.Nanoseconds()))
}

// Disarm implements Watchdog.
func (w *ProcessWatchdog) Disarm() { _ = w.send("disarm") }

// Close stops the watchdog (disarmed first).
func (w *ProcessWatchdog) Close() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.in != nil {
		_ = w.write("disarm")
		w.in.Close()
		w.in = nil
	}
}

// RunWatchdog is the body of `cifha fence-watchdog`: it reads commands
// from r until EOF. now returns the current CLOCK_BOOTTIME in nanoseconds
// (election.BootNow; injected by tests).
func RunWatchdog(r io.Reader, log hclog.Logger, now func() int64) {
	type armed struct {
		pid      int
		deadline int64
		grace    time.Duration
	}
	cmds := make(chan *armed)
	go func() {
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			f := strings.Fields(sc.Text())
			switch {
			case (len(f) == 3 || len(f) == 4) && f[0] == "arm":
				pid, err1 := strconv.Atoi(f[1])
				ns, err2 := strconv.ParseInt(f[2], 10, 64)
				grace := int64(time.Second)
				var err3 error
				if len(f) == 4 {
					grace, err3 = strconv.ParseInt(f[3], 10, 64)
				}
				if err1 != nil || err2 != nil || err3 != nil || pid <= 0 || grace <= 0 {
					log.Error("bad command", "line", sc.Text())
					continue
				}
				cmds <- &armed{pid: pid, deadline: ns, grace: time.Duration(grace)}
			case len(f) == 1 && f[0] == "disarm":
				cmds <- nil
			default:
				log.Error("bad command", "line", sc.Text())
			}
		}
		close(cmds)
	}()
	var cur *armed
	timer := time.NewTimer(time.Hour)
	for {
		select {
		case a, ok := <-cmds:
			if !ok {
				return // the agent is gone; postgres has its own parent-death signal
			}
			cur = a
			if cur != nil {
				timer.Reset(max(time.Duration(cur.deadline-now()), 0))
			}
		case <-timer.C:
			if cur == nil {
				timer.Reset(time.Hour)
				continue
			}
			if left := time.Duration(cur.deadline - now()); left > 0 {
				timer.Reset(left)
				continue
			}
			log.Warn("fence watchdog: the agent did not renew in time; stopping postgres", "pid", cur.pid)
			stopPostmaster(cur.pid, cur.grace)
			cur = nil
			timer.Reset(time.Hour)
		}
	}
}

// stopPostmaster sends an immediate shutdown to pid if it is a postgres,
// then, after grace, SIGKILL to it and to every process it had started
// (recorded before the signal: backends call setsid() and are reparented
// once it dies).
func stopPostmaster(pid int, grace time.Duration) {
	comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	if err != nil || !strings.HasPrefix(string(comm), "postgres") {
		return
	}
	pm := pgctl.Self(pid)
	kids := pgctl.Children(pid)
	_ = syscall.Kill(pid, syscall.SIGQUIT)
	deadline := time.Now().Add(grace)
	for pm.Alive() && time.Now().Before(deadline) {
		kids = append(kids, pgctl.Children(pid)...)
		time.Sleep(20 * time.Millisecond) // bounded wait for a process we do not parent
	}
	_ = syscall.Kill(-pid, syscall.SIGKILL)
	pgctl.KillAll(append(kids, pm), 2*time.Second)
}
