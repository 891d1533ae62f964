package agent

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/cifha/cifha/pkg/ha"
	"github.com/hashicorp/go-hclog"
)

// A failing action is logged once per change of error, then once a minute
// while it lasts, and its recovery once.
func TestLogActErrOncePerChange(t *testing.T) {
	var buf bytes.Buffer
	a := &Agent{log: hclog.New(&hclog.LoggerOptions{Output: &buf, Level: hclog.Info})}
	p := ha.Plan{Action: ha.StartStandby}
	t0 := time.Unix(1000, 0)
	boom := errors.New("lock file already exists")
	for i := 0; i < 30; i++ {
		a.logActErr(t0.Add(time.Duration(i)*time.Second), p, boom)
	}
	if n := strings.Count(buf.String(), "[ERROR]"); n != 1 {
		t.Fatalf("30 identical failures in 30 s logged %d times:\n%s", n, buf.String())
	}
	a.logActErr(t0.Add(61*time.Second), p, boom)
	if !strings.Contains(buf.String(), "action still failing") {
		t.Fatalf("no reminder after a minute:\n%s", buf.String())
	}
	a.logActErr(t0.Add(62*time.Second), p, errors.New("another error"))
	a.logActErr(t0.Add(63*time.Second), p, nil)
	if strings.Count(buf.String(), "[ERROR]") != 3 || !strings.Contains(buf.String(), "action succeeded after failing") {
		t.Fatalf("log:\n%s", buf.String())
	}
}
