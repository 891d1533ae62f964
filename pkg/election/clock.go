package election

import (
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// BootClock returns cifha's clock for lease deadlines: it advances with
// Linux CLOCK_BOOTTIME, which keeps counting while the host is suspended or
// the VM is paused. Go's own monotonic reading is CLOCK_MONOTONIC, which
// stops during a suspend while etcd's lease timers on other hosts keep
// running: after a pause longer than the ttl an agent on that clock would
// still believe its lease valid. With this clock, an agent resumed after
// such a pause sees its deadline passed and fences before anything else.
//
// The times it returns carry no monotonic reading; they are the wall time
// at the first call plus boot time elapsed since, so they are also usable
// as (approximate) timestamps and are immune to wall-clock steps. All
// deadline arithmetic (the session's ValidUntil, the agent's Now) must use
// the same clock; on systems without CLOCK_BOOTTIME it falls back to
// time.Now.
func BootClock() func() time.Time {
	bootOnce.Do(func() {
		if d, ok := boottime(); ok {
			bootEpoch = time.Now().Round(0).Add(-d)
			bootOK = true
		}
	})
	if !bootOK {
		return time.Now
	}
	return func() time.Time {
		d, ok := boottime()
		if !ok {
			return time.Now()
		}
		return bootEpoch.Add(d)
	}
}

var (
	bootOnce  sync.Once
	bootEpoch time.Time
	bootOK    bool
)

func boottime() (time.Duration, bool) {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts); err != nil {
		return 0, false
	}
	return time.Duration(ts.Nano()), true
}

// BootNanos converts a time from BootClock into nanoseconds of
// CLOCK_BOOTTIME, the form another process on this host can compare with
// its own reading (the fence watchdog). Without CLOCK_BOOTTIME it is Unix
// nanoseconds of the wall clock, and BootNow agrees.
func BootNanos(t time.Time) int64 {
	BootClock() // initialise
	if !bootOK {
		return t.UnixNano()
	}
	return int64(t.Sub(bootEpoch))
}

// BootNow is the current CLOCK_BOOTTIME in nanoseconds (see BootNanos).
func BootNow() int64 {
	if d, ok := boottime(); ok {
		return int64(d)
	}
	return time.Now().UnixNano()
}
