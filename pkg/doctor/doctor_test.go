package doctor

import (
	"bytes"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestProcIP(t *testing.T) {
	for in, want := range map[string]string{
		"0B00007F":                         "127.0.0.11",
		"00000000":                         "0.0.0.0",
		"00000000000000000000000000000000": "::",
		"00000000000000000000000001000000": "::1",
		"zz":                               "<nil>",
	} {
		if got := procIP(in).String(); got != want {
			t.Errorf("procIP(%q) = %s, want %s", in, got, want)
		}
	}
}

func TestHolderFixNamesDebiansCluster(t *testing.T) {
	fix := holderFix("/usr/lib/postgresql/15/bin/postgres -D /var/lib/postgresql/15/main -c config_file=/etc/postgresql/15/main/postgresql.conf", 5432)
	for _, want := range []string{"pg_ctlcluster 15 main stop", "systemctl disable postgresql@15-main", "create_main_cluster = false"} {
		if !strings.Contains(fix, want) {
			t.Errorf("fix %q lacks %q", fix, want)
		}
	}
	if fix := holderFix("/opt/other/postgres -D /srv/pg", 5432); !strings.Contains(fix, "choose another [postgres] port") {
		t.Errorf("fix for another program: %q", fix)
	}
}

// A port held by a listener of this process is found, with its command
// line; another address's listener on the same port is not blamed.
func TestPortHolder(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	port := l.Addr().(*net.TCPAddr).Port
	pid, cmd := portHolder("127.0.0.1", port)
	if pid != os.Getpid() || cmd == "" {
		t.Errorf("holder of 127.0.0.1:%d: pid %d (%q), want %d", port, pid, cmd, os.Getpid())
	}
	if pid, _ := portHolder("127.0.0.2", port); pid != 0 {
		t.Errorf("127.0.0.2:%d blamed on pid %d", port, pid)
	}
}

func TestCheckOwnedAndKernel(t *testing.T) {
	dir := t.TempDir()
	uid, gid := os.Geteuid(), os.Getegid()
	o := HostOptions{UID: uid, GID: gid, User: "me"}
	var r Report
	open := filepath.Join(dir, "open")
	os.Mkdir(open, 0o755)
	checkOwned(&r, "tablespace", open, false, o, "")
	checkOwned(&r, "tablespace", filepath.Join(dir, "absent"), false, o, "created later")
	checkOwned(&r, "archive", filepath.Join(dir, "absent"), true, o, "")
	checkKernel(&r, 150000, func(k string) (string, error) {
		if k == "vm.swappiness" {
			return "60\n", nil
		}
		return map[string]string{"vm.overcommit_memory": "2", "vm.overcommit_ratio": "80"}[k], nil
	})
	want := []struct {
		s     Status
		check string
		text  string
	}{
		{Fail, "tablespace", "chmod 0700"},
		{OK, "tablespace", "created later"},
		{Fail, "archive", "does not exist"},
		{OK, "kernel", "vm.overcommit_memory = 2"},
		{OK, "kernel", "vm.overcommit_ratio = 80"},
		{Warn, "kernel", "vm.swappiness is 60"},
	}
	if len(r.Results) != len(want) {
		t.Fatalf("results %+v", r.Results)
	}
	for i, w := range want {
		x := r.Results[i]
		if x.Status != w.s || x.Check != w.check || !strings.Contains(x.Detail+" "+x.Fix, w.text) {
			t.Errorf("result %d = %+v, want %v %s %q", i, x, w.s, w.check, w.text)
		}
	}
	if !r.Failed() {
		t.Error("report with failures does not fail")
	}
	var b bytes.Buffer
	r.Print(&b)
	if !strings.Contains(b.String(), "2 check(s) failed, 1 warning(s)") || !strings.Contains(b.String(), "fix: chmod 0700 "+open) {
		t.Errorf("printed:\n%s", b.String())
	}
}

func TestOneLine(t *testing.T) {
	if got := oneLine("a\nb\x1b[31m  c"); got != "a b [31m c" {
		t.Errorf("oneLine = %q", got)
	}
}
