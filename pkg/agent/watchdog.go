package agent

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
)

// The fence watchdog closes the gap the fencer goroutine cannot: an agent
// process that is alive but not running at all (SIGSTOP, a debugger, a
// stuck page fault). It is a separate, tiny process (`cifha fence-watchdog`)
// that the agent feeds over a pipe with "arm <postmaster pid> <ns>" — the
// time left until this primary must stop accepting writes, measured by the
// agent when it sends — and "disarm". If the time runs out before a fresh
// "arm", it stops postgres itself (SIGQUIT: immediate shutdown, then
// SIGKILL of the process group). The pipe's latency only makes it fire
// later than the agent would, and the fence margin (≥ 300 ms) covers that.
// When the agent exits, the pipe closes and the watchdog exits too
// (postgres has its own parent-death signal).

// Watchdog is the agent's side of the fence watchdog.
type Watchdog interface {
	Arm(pid int, left time.Duration)
	Disarm()
}

// ProcessWatchdog runs `<exe> fence-watchdog` as a child and writes to it.
type ProcessWatchdog struct {
	mu   sync.Mutex
	exe  string
	cmd  *exec.Cmd
	in   io.WriteCloser
	log  hclog.Logger
	last string
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
	cmd := exec.Command(w.exe, "fence-watchdog")
	in, err := cmd.StdinPipe()
	if err != nil {
		return err
	}
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	// Its own process group: signals meant for the agent do not reach it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start fence watchdog: %w", err)
	}
	go cmd.Wait()
	w.cmd, w.in = cmd, in
	return nil
}

func (w *ProcessWatchdog) send(line string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.in == nil {
		return
	}
	if _, err := io.WriteString(w.in, line+"\n"); err != nil {
		w.log.Error("fence watchdog unreachable; restarting it", "error", err)
		w.in.Close()
		if err := w.start(); err != nil {
			w.log.Error("fence watchdog", "error", err)
			w.in = nil
			return
		}
		_, _ = io.WriteString(w.in, line+"\n")
	}
}

// Arm implements Watchdog.
func (w *ProcessWatchdog) Arm(pid int, left time.Duration) {
	w.send(fmt.Sprintf("arm %d %d", pid, left.Nanoseconds()))
}

// Disarm implements Watchdog.
func (w *ProcessWatchdog) Disarm() { w.send("disarm") }

// Close stops the watchdog (disarmed first).
func (w *ProcessWatchdog) Close() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.in != nil {
		_, _ = io.WriteString(w.in, "disarm\n")
		w.in.Close()
		w.in = nil
	}
}

// RunWatchdog is the body of `cifha fence-watchdog`: it reads commands
// from r until EOF.
func RunWatchdog(r io.Reader, log hclog.Logger) {
	type armed struct {
		pid      int
		deadline time.Time
	}
	cmds := make(chan *armed)
	go func() {
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			f := strings.Fields(sc.Text())
			switch {
			case len(f) == 3 && f[0] == "arm":
				now := time.Now()
				pid, err1 := strconv.Atoi(f[1])
				ns, err2 := strconv.ParseInt(f[2], 10, 64)
				if err1 != nil || err2 != nil || pid <= 0 {
					log.Error("bad command", "line", sc.Text())
					continue
				}
				cmds <- &armed{pid: pid, deadline: now.Add(time.Duration(ns))}
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
				timer.Reset(time.Until(cur.deadline))
			}
		case <-timer.C:
			if cur == nil || time.Now().Before(cur.deadline) {
				timer.Reset(time.Hour)
				continue
			}
			log.Warn("fence watchdog: the agent did not renew in time; stopping postgres", "pid", cur.pid)
			stopPostmaster(cur.pid)
			cur = nil
			timer.Reset(time.Hour)
		}
	}
}

// stopPostmaster sends an immediate shutdown to pid if it is a postgres,
// then SIGKILL to its process group if it is still there after a second.
func stopPostmaster(pid int) {
	comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	if err != nil || !bytes.HasPrefix(comm, []byte("postgres")) {
		return
	}
	_ = syscall.Kill(pid, syscall.SIGQUIT)
	for i := 0; i < 20; i++ {
		if syscall.Kill(pid, 0) != nil {
			return
		}
		time.Sleep(50 * time.Millisecond) // bounded wait for a process we do not parent
	}
	_ = syscall.Kill(-pid, syscall.SIGKILL)
	_ = syscall.Kill(pid, syscall.SIGKILL)
}
