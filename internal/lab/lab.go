// Package lab makes the fault lab's hosts: each host is a Linux network
// namespace with its own address on a private bridge, and a fault is the
// kernel's own doing (nftables rules inside a host's namespace drop its
// packets, all or a random share) or a signal to every process of a host
// (SIGSTOP of a whole host, SIGKILL of a whole host).
//
// The network exists only inside namespaces the lab makes: a switch
// namespace holding the bridge, and one namespace per host, linked to the
// bridge by a veth pair. No namespace has a default route, nothing is
// NATed, and the root namespace gets no interface or address. Every name
// carries the run's prefix (Prefix + run ID), and Close, or Cleanup after
// a SIGKILL of the lab, removes every namespace with that prefix after
// killing the processes still inside them (`ip netns pids`): a process in
// a lab namespace was started by the lab.
//
// Needs root, iproute2, nftables and util-linux's nsenter.
package lab

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Prefix starts the name of every namespace a lab makes, and of its
// directories under the temporary directory: Cleanup("") removes all of
// them, and nothing else.
const Prefix = "cifhalab-"

// Subnet is the hosts' network (a /24 on each lab's own bridge; labs run
// side by side have separate bridges, so they may share it).
const Subnet = "10.231.0"

// Lab is one run's network.
type Lab struct {
	// ID is the run's identifier; every name starts with Prefix+ID.
	ID    string
	Hosts []*Host
	sw    string       // the switch namespace (the bridge)
	delay *delaySwitch // running while some host's packets are delayed
}

// Host is one network namespace with one address.
type Host struct {
	Name, NS, Addr string
	// filters is the host's current fault rules (nil: none).
	filters []Rule
	// port is the host's veth end in the switch namespace.
	port string
	// mnt is the host's own mount namespace (a file under the lab's
	// mount directory; "" until OwnMounts).
	mnt string
	lab *Lab
}

// HostSpec names a host and the last byte of its address.
type HostSpec struct {
	Name  string
	Octet int
}

// NewID returns a fresh run ID (8 hex digits).
func NewID() string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// New makes the lab's namespaces, bridge and links. On error everything
// made so far is removed.
func New(id string, hosts []HostSpec) (l *Lab, err error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("the lab needs root (network namespaces and packet filters)")
	}
	for _, tool := range []string{"ip", "nft", "nsenter"} {
		if _, err := exec.LookPath(tool); err != nil {
			if _, err2 := os.Stat("/usr/sbin/" + tool); err2 != nil {
				return nil, fmt.Errorf("the lab needs %s: %w (apt-get install iproute2 nftables util-linux)", tool, err)
			}
		}
	}
	if !validID(id) {
		return nil, fmt.Errorf("lab ID %q: want 1 to 8 lower-case letters or digits", id)
	}
	l = &Lab{ID: id, sw: Prefix + id + "-sw"}
	defer func() {
		if err != nil {
			l.Close()
		}
	}()
	if err := ip("netns", "add", l.sw); err != nil {
		return nil, err
	}
	for _, args := range [][]string{
		{"-n", l.sw, "link", "set", "lo", "up"},
		{"-n", l.sw, "link", "add", "br0", "type", "bridge"},
		{"-n", l.sw, "link", "set", "br0", "up"},
	} {
		if err := ip(args...); err != nil {
			return nil, err
		}
	}
	for i, hs := range hosts {
		if hs.Octet < 1 || hs.Octet > 254 || !validID(strings.ReplaceAll(hs.Name, "-", "")) {
			return nil, fmt.Errorf("host %q with address octet %d", hs.Name, hs.Octet)
		}
		h := &Host{Name: hs.Name, NS: Prefix + id + "-" + hs.Name, Addr: fmt.Sprintf("%s.%d", Subnet, hs.Octet), port: fmt.Sprintf("p%d", i), lab: l}
		if err := ip("netns", "add", h.NS); err != nil {
			return nil, err
		}
		l.Hosts = append(l.Hosts, h)
		port := h.port
		for _, args := range [][]string{
			{"-n", h.NS, "link", "set", "lo", "up"},
			// Made inside the switch namespace, the host's end moved
			// straight into the host's: no name ever appears in the root
			// namespace.
			{"-n", l.sw, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", h.NS},
			{"-n", l.sw, "link", "set", port, "master", "br0", "up"},
			{"-n", h.NS, "addr", "add", h.Addr + "/24", "dev", "eth0"},
			{"-n", h.NS, "link", "set", "eth0", "up"},
		} {
			if err := ip(args...); err != nil {
				return nil, err
			}
		}
	}
	return l, nil
}

func validID(s string) bool {
	if s == "" || len(s) > 8 {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9') {
			return false
		}
	}
	return true
}

// Host returns the host called name (nil if none).
func (l *Lab) Host(name string) *Host {
	for _, h := range l.Hosts {
		if h.Name == name {
			return h
		}
	}
	return nil
}

// Close kills every process left in the lab's namespaces and removes them
// (and with them their links, the bridge and every packet filter).
func (l *Lab) Close() error {
	if l.delay != nil {
		l.delay.stop()
		l.delay = nil
	}
	return Cleanup(l.ID)
}

// Namespaces lists the network namespaces whose names start with
// Prefix+id (id "": every lab's).
func Namespaces(id string) ([]string, error) {
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		return nil, fmt.Errorf("ip netns list: %w", err)
	}
	var names []string
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) > 0 && strings.HasPrefix(f[0], Prefix+id) {
			names = append(names, f[0])
		}
	}
	return names, nil
}

// Cleanup removes what a lab with this ID left (id "": every lab's):
// the processes inside its namespaces (SIGKILL, after SIGCONT for a frozen
// one), the namespaces, and its directories under the temporary directory.
// It touches nothing whose name lacks the prefix.
func Cleanup(id string) error {
	if id != "" && !validID(id) {
		return fmt.Errorf("lab ID %q: want 1 to 8 lower-case letters or digits", id)
	}
	names, err := Namespaces(id)
	if err != nil {
		return err
	}
	errs := []error{KillAndDelete(names)}
	// The hosts' mount namespaces, once their processes are gone: with
	// the last reference, the kernel unmounts what was mounted in them.
	errs = append(errs, RemoveMounts(id))
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), Prefix+id+"*"))
	for _, d := range dirs {
		if err := os.RemoveAll(d); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// KillAndDelete kills the processes inside the named namespaces and
// deletes them.
func KillAndDelete(names []string) error {
	var errs []error
	for _, ns := range names {
		if !strings.HasPrefix(ns, Prefix) {
			errs = append(errs, fmt.Errorf("%s is not a lab namespace", ns))
			continue
		}
		for attempt := 0; attempt < 50; attempt++ {
			pids := nsPIDs(ns)
			if len(pids) == 0 {
				break
			}
			for _, pid := range pids {
				_ = syscall.Kill(pid, syscall.SIGCONT)
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
			time.Sleep(100 * time.Millisecond) // bounded wait for the kernel to reap what was killed
		}
		if pids := nsPIDs(ns); len(pids) > 0 {
			errs = append(errs, fmt.Errorf("%s: processes %v survive SIGKILL", ns, pids))
		}
		if err := ip("netns", "delete", ns); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// nsPIDs lists the processes in namespace ns (`ip netns pids`).
func nsPIDs(ns string) []int {
	out, _ := exec.Command("ip", "netns", "pids", ns).Output()
	var pids []int
	for _, f := range strings.Fields(string(out)) {
		if pid, err := strconv.Atoi(f); err == nil && pid > 1 && pid != os.Getpid() {
			pids = append(pids, pid)
		}
	}
	return pids
}

func ip(args ...string) error {
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

// Command is cmd run inside the host's network namespace (nsenter, which
// execs in place: the process's PID is the command's), as cred's user when
// cred is set (nsenter drops to it after entering; the process starts in
// its own process group).
func (h *Host) Command(cred *syscall.Credential, path string, args ...string) *exec.Cmd {
	ns := []string{"--net=" + filepath.Join("/run/netns", h.NS)}
	if h.mnt != "" {
		ns = append(ns, "--mount="+h.mnt)
	}
	if cred != nil {
		ns = append(ns, "--setgid", strconv.Itoa(int(cred.Gid)), "--setuid", strconv.Itoa(int(cred.Uid)))
	}
	cmd := exec.Command("nsenter", append(append(ns, "--", path), args...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	return cmd
}

// PIDs lists the host's processes.
func (h *Host) PIDs() []int { return nsPIDs(h.NS) }

// Signal sends sig to every process of the host (SIGSTOP freezes the whole
// host: its agent, postgres and etcd member alike).
func (h *Host) Signal(sig syscall.Signal) error {
	pids := h.PIDs()
	if len(pids) == 0 {
		return fmt.Errorf("%s has no process", h.Name)
	}
	for _, pid := range pids {
		_ = syscall.Kill(pid, sig)
	}
	return nil
}

// DialContext dials from inside the host's network namespace (inNS).
func (h *Host) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	var c net.Conn
	err := h.inNS(func() (err error) {
		var d net.Dialer
		c, err = d.DialContext(ctx, network, addr)
		return err
	})
	return c, err
}

// inNS runs fn on an OS thread that entered the host's network namespace:
// the sockets fn makes belong to the namespace and work from any thread
// afterwards. That thread is never returned to the runtime's pool (the
// goroutine exits locked, so the runtime ends the thread).
func (h *Host) inNS(fn func() error) error { return inNamespace(h.NS, fn) }

// inNamespace runs fn on a fresh OS thread inside the named network
// namespace (see Host.inNS).
func inNamespace(ns string, fn func() error) error {
	ch := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: see Host.inNS
		f, err := os.Open(filepath.Join("/run/netns", ns))
		if err != nil {
			ch <- err
			return
		}
		err = unix.Setns(int(f.Fd()), unix.CLONE_NEWNET)
		f.Close()
		if err != nil {
			ch <- fmt.Errorf("enter %s: %w", ns, err)
			return
		}
		ch <- fn()
	}()
	return <-ch
}

// Dir is which way a rule drops packets, seen from the host it is on.
type Dir int

// Directions.
const (
	Both Dir = iota
	In       // packets arriving from the peers
	Out      // packets sent to the peers
)

// Rule drops the host's packets exchanged with Peers (addresses): all of
// them, or LossPercent of them at random; only those of TCP port Port
// (either end) when it is set.
type Rule struct {
	Dir         Dir
	Peers       []string
	Port        int
	LossPercent int
}

// SetFilter replaces the host's fault rules with rules (none: Heal).
func (h *Host) SetFilter(rules ...Rule) error {
	var in, out []string
	for _, r := range rules {
		if len(r.Peers) == 0 {
			continue
		}
		for _, p := range r.Peers {
			if net.ParseIP(p) == nil {
				return fmt.Errorf("rule peer %q is not an address", p)
			}
		}
		set := "{ " + strings.Join(r.Peers, ", ") + " }"
		drop := "drop"
		if r.LossPercent > 0 && r.LossPercent < 100 {
			drop = fmt.Sprintf("numgen random mod 100 < %d drop", r.LossPercent)
		}
		ports := []string{""}
		if r.Port > 0 {
			ports = []string{fmt.Sprintf("tcp sport %d ", r.Port), fmt.Sprintf("tcp dport %d ", r.Port)}
		}
		for _, p := range ports {
			if r.Dir == Both || r.Dir == In {
				in = append(in, fmt.Sprintf("ip saddr %s %s%s", set, p, drop))
			}
			if r.Dir == Both || r.Dir == Out {
				out = append(out, fmt.Sprintf("ip daddr %s %s%s", set, p, drop))
			}
		}
	}
	script := "table inet cifhalab\ndelete table inet cifhalab\n"
	if len(in)+len(out) > 0 {
		script += "table inet cifhalab {\n" +
			"  chain input { type filter hook input priority 0; policy accept;\n    " + strings.Join(in, "\n    ") + "\n  }\n" +
			"  chain output { type filter hook output priority 0; policy accept;\n    " + strings.Join(out, "\n    ") + "\n  }\n}\n"
	}
	cmd := exec.Command("ip", "netns", "exec", h.NS, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("nft in %s: %w: %s\n%s", h.NS, err, bytes.TrimSpace(out), script)
	}
	h.filters = slices.Clone(rules)
	return nil
}

// Heal removes the host's fault rules.
func (h *Host) Heal() error { return h.SetFilter() }

// Filtered reports whether the host has fault rules.
func (h *Host) Filtered() bool { return len(h.filters) > 0 }

// Listen listens inside the host's network namespace (inNS).
func (h *Host) Listen(network, addr string) (net.Listener, error) {
	var ln net.Listener
	err := h.inNS(func() (err error) {
		ln, err = net.Listen(network, addr)
		return err
	})
	return ln, err
}
