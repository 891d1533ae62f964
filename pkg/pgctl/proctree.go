package pgctl

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"syscall"
	"time"
)

// PostgreSQL backends call setsid(): each is its own session and process
// group, so signalling the postmaster's process group misses them, and a
// backend that outlives its postmaster can still finish a commit. A stop
// therefore ends with every process of that postmaster: its children are
// recorded while it still parents them (after it dies they are reparented
// and can no longer be found by parent), then killed and waited for.

// Proc identifies one process across PID reuse: its PID and its start
// time in clock ticks since boot (/proc/PID/stat field 22).
type Proc struct {
	PID   int
	Start uint64
}

// procStat reads a process's parent PID and start time.
func procStat(pid int) (ppid int, start uint64, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, err
	}
	// The command name (field 2) is in parentheses and may contain spaces:
	// parse after the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, 0, fmt.Errorf("/proc/%d/stat: malformed", pid)
	}
	f := bytes.Fields(b[i+1:])
	// f[0] is field 3 (state), f[1] field 4 (ppid), f[19] field 22 (starttime).
	if len(f) < 20 {
		return 0, 0, fmt.Errorf("/proc/%d/stat: malformed", pid)
	}
	pp, err1 := strconv.Atoi(string(f[1]))
	st, err2 := strconv.ParseUint(string(f[19]), 10, 64)
	if err1 != nil || err2 != nil {
		return 0, 0, fmt.Errorf("/proc/%d/stat: malformed", pid)
	}
	return pp, st, nil
}

// Children lists the live processes whose parent is pid.
func Children(pid int) []Proc {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var out []Proc
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil || p == pid {
			continue
		}
		pp, st, err := procStat(p)
		if err == nil && pp == pid {
			out = append(out, Proc{PID: p, Start: st})
		}
	}
	return out
}

// Self returns pid as a Proc (zero if it is gone).
func Self(pid int) Proc {
	_, st, err := procStat(pid)
	if err != nil {
		return Proc{}
	}
	return Proc{PID: pid, Start: st}
}

// Alive reports whether p still runs (the same process, not a reused PID,
// and not a zombie).
func (p Proc) Alive() bool {
	if p.PID <= 0 {
		return false
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.PID))
	if err != nil {
		return false
	}
	_, st, err := procStat(p.PID)
	if err != nil || st != p.Start {
		return false
	}
	if i := bytes.LastIndexByte(b, ')'); i >= 0 && i+2 < len(b) && b[i+2] == 'Z' {
		return false // exited, not yet reaped: it can no longer run
	}
	return true
}

// KillAll sends SIGKILL to every process of procs that is still the same
// process, and waits until none runs, up to wait. It reports the ones left.
func KillAll(procs []Proc, wait time.Duration) []Proc {
	for _, p := range procs {
		if p.Alive() {
			_ = syscall.Kill(p.PID, syscall.SIGKILL)
		}
	}
	deadline := time.Now().Add(wait)
	for {
		var left []Proc
		for _, p := range procs {
			if p.Alive() {
				left = append(left, p)
			}
		}
		if len(left) == 0 || time.Now().After(deadline) {
			return left
		}
		// A bounded poll: these processes are not our children (the
		// postmaster parents them), so there is nothing to wait on.
		time.Sleep(5 * time.Millisecond)
	}
}

// merge adds the procs of b not already in a.
func merge(a, b []Proc) []Proc {
	for _, p := range b {
		found := false
		for _, q := range a {
			if p == q {
				found = true
				break
			}
		}
		if !found {
			a = append(a, p)
		}
	}
	return a
}
