// Command fakesystemctl stands in for systemctl in the install test
// (TestInstallDoc), where each "host" is a mount namespace on one machine
// and no systemd runs. It reads the real unit files the install put in
// place and does what systemd would do with the few directives cifha's
// units use, so that the test checks the units as well as the commands:
//
//   - User=, Group=; DynamicUser=yes runs as nobody/nogroup (systemd
//     would allocate a transient user; the file ownership rules are the
//     same: the state directory belongs to it);
//   - StateDirectory= (made under /var/lib, owned by the unit's user, mode
//     StateDirectoryMode=, default 0755);
//   - Environment=, EnvironmentFile= (a leading "-" makes it optional);
//   - ExecStartPre= (run to completion; a failure fails the start unless
//     prefixed with "-"), ExecStart= (started in its own session, output to
//     $FAKE_SYSTEMD_DIR/<unit>.log, pid in <unit>.pid), ExecReload= with
//     $MAINPID.
//
// Verbs: daemon-reload, enable [--now], disable [--now], start, stop,
// restart, reload, is-active. Units are looked up where systemd looks for
// them: /etc/systemd/system, /usr/local/lib/systemd/system,
// /lib/systemd/system. Restart= is not emulated: a unit that dies stays
// dead, so the test sees it. Not for anything but tests.
package main

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "systemctl (fake):", err)
		os.Exit(1)
	}
}

func stateDir() string {
	if d := os.Getenv("FAKE_SYSTEMD_DIR"); d != "" {
		return d
	}
	return "/run/fake-systemd"
}

func run(args []string) error {
	var verb string
	var units []string
	now := false
	for _, a := range args {
		switch {
		case a == "--now":
			now = true
		case strings.HasPrefix(a, "-"):
			// --quiet, --no-pager, ...: no effect here.
		case verb == "":
			verb = a
		default:
			units = append(units, a)
		}
	}
	if err := os.MkdirAll(stateDir(), 0o755); err != nil {
		return err
	}
	switch verb {
	case "daemon-reload":
		return nil
	case "enable", "start", "restart":
		for _, u := range units {
			uf, err := load(u)
			if err != nil {
				return err
			}
			if verb == "enable" {
				if err := os.WriteFile(filepath.Join(stateDir(), uf.name+".enabled"), nil, 0o644); err != nil {
					return err
				}
				if !now {
					continue
				}
			}
			if verb == "restart" {
				if err := stop(uf); err != nil {
					return err
				}
			}
			if err := start(uf); err != nil {
				return fmt.Errorf("start %s: %w", uf.name, err)
			}
		}
		return nil
	case "disable", "stop":
		for _, u := range units {
			name := unitName(u)
			if verb == "disable" {
				os.Remove(filepath.Join(stateDir(), name+".enabled"))
				if !now {
					continue
				}
			}
			if err := stop(&unit{name: name}); err != nil {
				return err
			}
		}
		return nil
	case "reload":
		for _, u := range units {
			uf, err := load(u)
			if err != nil {
				return err
			}
			pid, ok := mainPID(uf.name)
			if !ok {
				return fmt.Errorf("%s is not active", uf.name)
			}
			line := uf.get("ExecReload")
			if line == "" {
				return fmt.Errorf("%s has no ExecReload", uf.name)
			}
			argv := strings.Fields(strings.ReplaceAll(line, "$MAINPID", strconv.Itoa(pid)))
			if out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput(); err != nil {
				return fmt.Errorf("reload %s: %v: %s", uf.name, err, out)
			}
		}
		return nil
	case "is-active":
		for _, u := range units {
			if _, ok := mainPID(unitName(u)); !ok {
				fmt.Println("inactive")
				return errors.New(unitName(u) + " is inactive")
			}
			fmt.Println("active")
		}
		return nil
	}
	return fmt.Errorf("verb %q is not emulated", verb)
}

type unit struct {
	name string
	keys map[string][]string // [Service] and [Unit] keys, in order
}

func (u *unit) get(k string) string {
	if v := u.keys[k]; len(v) > 0 {
		return v[len(v)-1]
	}
	return ""
}

func unitName(u string) string {
	if !strings.Contains(u, ".") {
		return u + ".service"
	}
	return u
}

func load(u string) (*unit, error) {
	name := unitName(u)
	for _, dir := range []string{"/etc/systemd/system", "/usr/local/lib/systemd/system", "/lib/systemd/system", "/usr/lib/systemd/system"} {
		f, err := os.Open(filepath.Join(dir, name))
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, err
		}
		defer f.Close()
		uf := &unit{name: name, keys: map[string][]string{}}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			line := strings.TrimSpace(sc.Text())
			if line == "" || line[0] == '#' || line[0] == ';' || line[0] == '[' {
				continue
			}
			k, v, ok := strings.Cut(line, "=")
			if !ok {
				return nil, fmt.Errorf("%s: bad line %q", f.Name(), line)
			}
			uf.keys[strings.TrimSpace(k)] = append(uf.keys[strings.TrimSpace(k)], strings.TrimSpace(v))
		}
		return uf, sc.Err()
	}
	return nil, fmt.Errorf("unit %s not found", name)
}

func credential(uf *unit) (*syscall.Credential, error) {
	uname, gname := uf.get("User"), uf.get("Group")
	if uf.get("DynamicUser") == "yes" {
		uname, gname = "nobody", "nogroup"
	}
	if uname == "" || uname == "root" {
		return nil, nil
	}
	u, err := user.Lookup(uname)
	if err != nil {
		return nil, err
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	if gname != "" {
		g, err := user.LookupGroup(gname)
		if err != nil {
			return nil, err
		}
		gid, _ = strconv.Atoi(g.Gid)
	}
	var groups []uint32
	if ids, err := u.GroupIds(); err == nil {
		for _, s := range ids {
			if n, err := strconv.Atoi(s); err == nil {
				groups = append(groups, uint32(n))
			}
		}
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: groups}, nil
}

func environment(uf *unit) ([]string, error) {
	env := []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8"}
	for _, ef := range uf.keys["EnvironmentFile"] {
		optional := strings.HasPrefix(ef, "-")
		b, err := os.ReadFile(strings.TrimPrefix(ef, "-"))
		if err != nil {
			if optional && errors.Is(err, os.ErrNotExist) {
				continue
			}
			return nil, err
		}
		for _, line := range strings.Split(string(b), "\n") {
			line = strings.TrimSpace(line)
			if line == "" || line[0] == '#' {
				continue
			}
			k, v, ok := strings.Cut(line, "=")
			if !ok {
				return nil, fmt.Errorf("%s: bad line %q", ef, line)
			}
			env = append(env, k+"="+strings.Trim(v, `"'`))
		}
	}
	for _, e := range uf.keys["Environment"] {
		for _, kv := range strings.Fields(e) {
			env = append(env, strings.Trim(kv, `"`))
		}
	}
	return env, nil
}

func start(uf *unit) error {
	if _, ok := mainPID(uf.name); ok {
		return nil
	}
	cred, err := credential(uf)
	if err != nil {
		return err
	}
	env, err := environment(uf)
	if err != nil {
		return err
	}
	if sd := uf.get("StateDirectory"); sd != "" {
		mode := os.FileMode(0o755)
		if m := uf.get("StateDirectoryMode"); m != "" {
			n, err := strconv.ParseUint(m, 8, 32)
			if err != nil {
				return fmt.Errorf("StateDirectoryMode %q: %w", m, err)
			}
			mode = os.FileMode(n)
		}
		dir := filepath.Join("/var/lib", sd)
		if err := os.MkdirAll(dir, mode); err != nil {
			return err
		}
		if err := os.Chmod(dir, mode); err != nil {
			return err
		}
		if cred != nil {
			if err := os.Chown(dir, int(cred.Uid), int(cred.Gid)); err != nil {
				return err
			}
		}
	}
	for _, pre := range uf.keys["ExecStartPre"] {
		ignore := strings.HasPrefix(pre, "-")
		argv := strings.Fields(strings.TrimPrefix(pre, "-"))
		cmd := exec.Command(argv[0], argv[1:]...)
		cmd.Env = env
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
		if out, err := cmd.CombinedOutput(); err != nil && !ignore {
			return fmt.Errorf("ExecStartPre %s: %v: %s", pre, err, out)
		}
	}
	argv := strings.Fields(uf.get("ExecStart"))
	if len(argv) == 0 {
		return errors.New("no ExecStart")
	}
	logf, err := os.OpenFile(filepath.Join(stateDir(), uf.name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = env
	cmd.Dir = "/"
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred, Setsid: true}
	if err := cmd.Start(); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(stateDir(), uf.name+".pid"), []byte(strconv.Itoa(cmd.Process.Pid)+"\n"), 0o644)
}

// mainPID is the unit's running main process.
func mainPID(name string) (int, bool) {
	b, err := os.ReadFile(filepath.Join(stateDir(), name+".pid"))
	if err != nil {
		return 0, false
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return 0, false
	}
	return pid, alive(pid)
}

// alive: the process exists and is not a zombie.
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i > 0 && i+2 < len(s) && s[i+2] != 'Z'
}

func stop(uf *unit) error {
	pid, ok := mainPID(uf.name)
	if !ok {
		return nil
	}
	_ = syscall.Kill(pid, syscall.SIGTERM)
	deadline := time.Now().Add(60 * time.Second)
	for alive(pid) && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if alive(pid) {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	return os.Remove(filepath.Join(stateDir(), uf.name+".pid"))
}
