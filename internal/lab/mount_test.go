package lab

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestHostMounts: a tmpfs mounted in a host's own mount namespace is seen
// by the host's processes and by nobody else; FillTmpfs makes it full
// (a write fails with ENOSPC) and ResizeTmpfs gives the space back; Close
// leaves no mount and no namespace file.
func TestHostMounts(t *testing.T) {
	needRoot(t)
	l, err := New(NewID(), []HostSpec{{"a", 1}})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	a := l.Host("a")
	dir, err := os.MkdirTemp("", Prefix+l.ID+"-")
	if err != nil {
		t.Fatal(err)
	}
	if err := a.OwnMounts(); err != nil {
		t.Fatal(err)
	}
	if err := a.MountTmpfs(dir, 8<<20, 0, 0); err != nil {
		t.Fatal(err)
	}
	fsType := func(cmd *exec.Cmd) string {
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		return strings.TrimSpace(string(out))
	}
	if got := fsType(a.Command(nil, "stat", "-f", "-c", "%T", dir)); got != "tmpfs" {
		t.Fatalf("the host sees %s on %s, want tmpfs", got, dir)
	}
	if got := fsType(exec.Command("stat", "-f", "-c", "%T", dir)); got == "tmpfs" {
		t.Fatalf("the machine sees the host's tmpfs on %s", dir)
	}
	write := func() error {
		return a.Command(nil, "sh", "-c", "head -c 1048576 /dev/zero > "+dir+"/f && sync").Run()
	}
	if err := write(); err != nil {
		t.Fatalf("write 1 MB into an 8 MB tmpfs: %v", err)
	}
	os.Remove(dir + "/f") // unseen from here: removed on the host below
	a.Command(nil, "rm", "-f", dir+"/f").Run()
	was, err := a.FillTmpfs(dir)
	if err != nil {
		t.Fatal(err)
	}
	if was != 8<<20 {
		t.Errorf("the limit was %d, want %d", was, 8<<20)
	}
	if err := write(); err == nil {
		t.Fatal("a write into the full tmpfs succeeded")
	}
	if err := a.ResizeTmpfs(dir, was); err != nil {
		t.Fatal(err)
	}
	a.Command(nil, "rm", "-f", dir+"/f").Run()
	if err := write(); err != nil {
		t.Fatalf("write after the space came back: %v", err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(l.mountDir()); !os.IsNotExist(err) {
		t.Errorf("%s is left: %v", l.mountDir(), err)
	}
	mi, _ := os.ReadFile("/proc/self/mountinfo")
	if strings.Contains(string(mi), Prefix+l.ID) {
		t.Errorf("a mount of the lab is left:\n%s", mi)
	}
	os.RemoveAll(dir)
}
