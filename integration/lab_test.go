package integration

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cifha/cifha/internal/checker"
	"github.com/cifha/cifha/internal/lab"
	"github.com/cifha/cifha/internal/testutil"
)

func needLab(t *testing.T) { t.Helper(); testutil.NeedRoot(t, "the fault lab") }

// leftovers is what a lab run with this ID left: namespaces, directories
// (its own and its hosts' mount namespaces'), and mounts.
func leftovers(t *testing.T, id string) []string {
	t.Helper()
	ns, err := lab.Namespaces(id)
	if err != nil {
		t.Fatal(err)
	}
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), lab.Prefix+id+"*"))
	mnt, _ := filepath.Glob(filepath.Join("/run", lab.Prefix+id+"*"))
	left := append(append(ns, dirs...), mnt...)
	mi, _ := os.ReadFile("/proc/self/mountinfo")
	for _, l := range strings.Split(string(mi), "\n") {
		if strings.Contains(l, lab.Prefix+id) {
			left = append(left, "mount: "+l)
		}
	}
	return left
}

// TestLab is the short fault lab of issue 22: every lab fault once, in
// synchronous mode, at the shipped defaults, on namespace hosts laid out
// as docs/install.md's (etcd members on db1, db2 and cif1) plus db3, a
// client and an observer; cifha-check lab as a real process. It must
// report no lost row, no overlap and no false failover, and leave
// nothing behind.
func TestLab(t *testing.T) {
	needLab(t)
	id := lab.NewID()
	var faults []string
	for _, f := range checker.LabFaults {
		faults = append(faults, string(f))
	}
	cmd := exec.Command(filepath.Join(binDir, "cifha-check"), "lab", "--bin", binDir, "--id", id, "--seed", "22",
		"--rounds", itoa(len(faults)), "--each-in-turn", "--faults", strings.Join(faults, ","), "--outage-hold", "15s")
	out, err := cmd.CombinedOutput()
	t.Logf("\n%s", out)
	if left := leftovers(t, id); len(left) > 0 {
		lab.Cleanup(id)
		t.Errorf("the run left %v", left)
	}
	if err != nil {
		t.Fatalf("cifha-check lab: %v", err)
	}
	s := string(out)
	for _, f := range faults {
		if !strings.Contains(s, f+" ") {
			t.Errorf("no row for %s in the table", f)
		}
	}
	if strings.Contains(s, "FAIL ") {
		t.Fatal("a round failed (above)")
	}
}

// TestLabCleanup: a lab killed with SIGKILL leaves its namespaces and
// processes; `cifha-check lab --cleanup --id` removes every one of them,
// and its directory, and nothing else.
func TestLabCleanup(t *testing.T) {
	needLab(t)
	id := lab.NewID()
	other := lab.NewID() // another run's namespace: must survive
	ol, err := lab.New(other, []lab.HostSpec{{Name: "x", Octet: 1}})
	if err != nil {
		t.Fatal(err)
	}
	defer ol.Close()
	cmd := exec.Command(filepath.Join(binDir, "cifha-check"), "lab", "--bin", binDir, "--id", id, "--rounds", "100", "--faults", "switchover")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	killed := false
	defer func() {
		if !killed {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
		lab.Cleanup(id)
	}()
	up := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			t.Log(sc.Text())
			if strings.Contains(sc.Text(), "round 1:") {
				close(up)
			}
		}
	}()
	select {
	case <-up:
	case <-time.After(3 * time.Minute):
		t.Fatal("the lab did not start its rounds")
	}
	var pids []int
	ns, _ := lab.Namespaces(id)
	for _, n := range ns {
		out, _ := exec.Command("ip", "netns", "pids", n).Output()
		for _, f := range strings.Fields(string(out)) {
			pids = append(pids, atoi(f))
		}
	}
	if len(ns) < 7 || len(pids) < 6 {
		t.Fatalf("a running lab: namespaces %v, processes %v", ns, pids)
	}
	_ = cmd.Process.Signal(syscall.SIGKILL)
	_ = cmd.Wait()
	killed = true
	if left := leftovers(t, id); len(left) == 0 {
		t.Fatal("nothing left after SIGKILL: the test proves nothing")
	}
	out, err := exec.Command(filepath.Join(binDir, "cifha-check"), "lab", "--cleanup", "--id", id).CombinedOutput()
	if err != nil {
		t.Fatalf("cleanup: %v: %s", err, out)
	}
	if left := leftovers(t, id); len(left) > 0 {
		t.Fatalf("left after --cleanup: %v", left)
	}
	deadline := time.Now().Add(10 * time.Second)
	for _, pid := range pids {
		for syscall.Kill(pid, 0) == nil {
			if time.Now().After(deadline) {
				t.Fatalf("process %d of the lab survives --cleanup", pid)
			}
			time.Sleep(50 * time.Millisecond) // poll within the deadline
		}
	}
	if o, _ := lab.Namespaces(other); len(o) != 2 {
		t.Fatalf("another run's namespaces were touched: %v", o)
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

func atoi(s string) int { n, _ := strconv.Atoi(s); return n }
