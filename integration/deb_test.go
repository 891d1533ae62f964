package integration

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cifha/cifha/internal/testutil"
)

// TestDebPackage (issue 12, acceptance 1): `make deb` builds a package;
// its files, owners and modes are as listed below; unpacked into a
// scratch root (dpkg -x) its cifha prints the version; its units start
// /usr/bin/cifha; its postinst makes /etc/cifha (0755, root) and enables
// nothing (run in a mount namespace over a copy of /etc).
func TestDebPackage(t *testing.T) {
	if os.Geteuid() != 0 && testutil.InCI() {
		t.Fatal("needs root")
	}
	for _, tool := range []string{"dpkg-deb", "make"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s not found", tool)
		}
	}
	dist := testutil.Dir(t, "cifha-deb-")
	if out, err := exec.Command("make", "-C", "..", "deb", "DISTDIR="+dist).CombinedOutput(); err != nil {
		t.Fatalf("make deb: %v\n%s", err, out)
	}
	debs, _ := filepath.Glob(filepath.Join(dist, "cifha_*_*.deb"))
	if len(debs) != 1 {
		t.Fatalf("make deb made %v", debs)
	}
	deb := debs[0]
	out, err := exec.Command("dpkg-deb", "-c", deb).CombinedOutput()
	if err != nil {
		t.Fatalf("dpkg-deb -c: %v\n%s", err, out)
	}
	listing := map[string]string{} // path -> "mode owner"
	for _, l := range strings.Split(string(out), "\n") {
		f := strings.Fields(l)
		if len(f) >= 6 {
			listing[strings.TrimPrefix(f[len(f)-1], ".")] = f[0] + " " + f[1]
		}
	}
	for path, want := range map[string]string{
		"/usr/bin/cifha":                                      "-rwxr-xr-x root/root",
		"/usr/bin/cifhactl":                                   "-rwxr-xr-x root/root",
		"/lib/systemd/system/cifha.service":                   "-rw-r--r-- root/root",
		"/lib/systemd/system/cifha-cif-sync.service":          "-rw-r--r-- root/root",
		"/usr/share/doc/cifha/install.md":                     "-rw-r--r-- root/root",
		"/usr/share/doc/cifha/configuration.md":               "-rw-r--r-- root/root",
		"/usr/share/doc/cifha/examples/cifha.example.toml":    "-rw-r--r-- root/root",
		"/usr/share/doc/cifha/examples/cif-sync.example.toml": "-rw-r--r-- root/root",
		"/usr/share/bash-completion/completions/cifhactl":     "-rw-r--r-- root/root",
		"/usr/share/zsh/vendor-completions/_cifhactl":         "-rw-r--r-- root/root",
		"/usr/share/fish/vendor_completions.d/cifhactl.fish":  "-rw-r--r-- root/root",
	} {
		if got := listing[path]; got != want {
			t.Errorf("%s: %q, want %q", path, got, want)
		}
	}
	root := testutil.Dir(t, "cifha-deb-root-")
	if out, err := exec.Command("dpkg-deb", "-x", deb, root).CombinedOutput(); err != nil {
		t.Fatalf("dpkg -x: %v\n%s", err, out)
	}
	ver, err := exec.Command(filepath.Join(root, "usr/bin/cifha"), "version").CombinedOutput()
	if err != nil || !strings.HasPrefix(string(ver), "cifha ") || !strings.Contains(string(ver), "commit ") {
		t.Fatalf("cifha version: %v: %s", err, ver)
	}
	unit, _ := os.ReadFile(filepath.Join(root, "lib/systemd/system/cifha.service"))
	if !strings.Contains(string(unit), "ExecStart=/usr/bin/cifha --config /etc/cifha/cifha.toml") || strings.Contains(string(unit), "/usr/local/") {
		t.Fatalf("the packaged unit must start /usr/bin/cifha and name no /usr/local path:\n%s", unit)
	}
	ctrl := filepath.Join(dist, "control")
	if out, err := exec.Command("dpkg-deb", "-e", deb, ctrl).CombinedOutput(); err != nil {
		t.Fatalf("dpkg-deb -e: %v\n%s", err, out)
	}
	post, err := os.ReadFile(filepath.Join(ctrl, "postinst"))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(post), "enable") && !strings.Contains(string(post), "Nothing is enabled") || strings.Contains(string(post), "systemctl start") {
		t.Fatalf("postinst must enable and start nothing:\n%s", post)
	}
	if os.Geteuid() != 0 {
		return
	}
	etc := filepath.Join(dist, "etc")
	if out, err := exec.Command("cp", "-a", "/etc/.", etc).CombinedOutput(); err != nil {
		t.Fatalf("copy /etc: %v: %s", err, out)
	}
	os.RemoveAll(filepath.Join(etc, "cifha"))
	if out, err := exec.Command("unshare", "-m", "--propagation", "private", "--", "sh", "-c",
		"mount --bind "+etc+" /etc && sh "+filepath.Join(ctrl, "postinst")+" configure").CombinedOutput(); err != nil {
		t.Fatalf("postinst configure: %v\n%s", err, out)
	}
	fi, err := os.Stat(filepath.Join(etc, "cifha"))
	if err != nil || !fi.IsDir() || fi.Mode().Perm() != 0o755 {
		t.Fatalf("postinst: /etc/cifha %v %v", fi, err)
	}
}
