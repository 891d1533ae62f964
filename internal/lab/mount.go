package lab

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// A host's own mount namespace, for faults of its file systems (pg_wal
// filling its disk): a persistent namespace, as `ip netns` keeps network
// ones, in which every process Command starts on the host runs. Mounts
// made there (MountTmpfs) are seen by the host's processes only, and go
// away with the namespace: Cleanup unmounts its file once the host's
// processes are killed, and the kernel unmounts the rest.
//
// The namespace files live in mountRoot/<prefix><id>-mnt, a directory
// bind-mounted on itself with private propagation (util-linux's unshare
// refuses to bind a namespace onto a shared mount).

// mountRoot holds each lab's mount-namespace directory.
const mountRoot = "/run"

func (l *Lab) mountDir() string { return filepath.Join(mountRoot, Prefix+l.ID+"-mnt") }

// OwnMounts gives h a mount namespace of its own. Call it before starting
// the host's processes: those started earlier stay in the machine's.
func (h *Host) OwnMounts() error {
	if h.mnt != "" {
		return nil
	}
	dir := h.lab.mountDir()
	if _, err := os.Stat(dir); os.IsNotExist(err) {
		if err := os.Mkdir(dir, 0o700); err != nil {
			return err
		}
		if err := unix.Mount(dir, dir, "", unix.MS_BIND, ""); err != nil {
			os.Remove(dir)
			return fmt.Errorf("bind %s: %w", dir, err)
		}
		if err := unix.Mount("", dir, "", unix.MS_PRIVATE, ""); err != nil {
			return fmt.Errorf("make %s private: %w", dir, err)
		}
	}
	f := filepath.Join(dir, h.Name)
	if err := os.WriteFile(f, nil, 0o600); err != nil {
		return err
	}
	// Every mount in the new namespace private: nothing mounted there
	// propagates back to the machine's.
	if out, err := exec.Command("unshare", "--mount="+f, "--propagation", "private", "true").CombinedOutput(); err != nil {
		os.Remove(f)
		return fmt.Errorf("unshare a mount namespace for %s: %w: %s", h.Name, err, strings.TrimSpace(string(out)))
	}
	h.mnt = f
	return nil
}

// inMounts runs a command in the host's mount namespace.
func (h *Host) inMounts(args ...string) (string, error) {
	if h.mnt == "" {
		return "", fmt.Errorf("%s has no mount namespace of its own (OwnMounts)", h.Name)
	}
	out, err := exec.Command("nsenter", append([]string{"--mount=" + h.mnt, "--"}, args...)...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s on %s: %w: %s", strings.Join(args, " "), h.Name, err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// MountTmpfs mounts a tmpfs of at most size bytes on dir (which must
// exist), seen by the host's processes only, owned by uid:gid, mode 0700.
func (h *Host) MountTmpfs(dir string, size int64, uid, gid int) error {
	_, err := h.inMounts("mount", "-t", "tmpfs", "-o", fmt.Sprintf("size=%d,mode=0700,uid=%d,gid=%d", size, uid, gid), "cifhalab", dir)
	return err
}

// ResizeTmpfs changes the size limit of the host's tmpfs on dir. A limit
// at what is used makes the file system full at once, without writing a
// byte (FillTmpfs).
func (h *Host) ResizeTmpfs(dir string, size int64) error {
	_, err := h.inMounts("mount", "-o", fmt.Sprintf("remount,size=%d", size), dir)
	return err
}

// TmpfsUsage reports the used and total bytes of the file system on dir,
// as the host sees it.
func (h *Host) TmpfsUsage(dir string) (used, total int64, err error) {
	out, err := h.inMounts("stat", "-f", "-c", "%S %b %f", dir)
	if err != nil {
		return 0, 0, err
	}
	f := strings.Fields(out)
	if len(f) != 3 {
		return 0, 0, fmt.Errorf("stat -f %s: %q", dir, out)
	}
	var v [3]int64
	for i := range f {
		if v[i], err = strconv.ParseInt(f[i], 10, 64); err != nil {
			return 0, 0, fmt.Errorf("stat -f %s: %q", dir, out)
		}
	}
	return (v[1] - v[2]) * v[0], v[1] * v[0], nil
}

// FillTmpfs makes the tmpfs on dir full: its limit set to what it holds
// (a page more, the least the kernel accepts). It returns the limit to
// give back with ResizeTmpfs.
func (h *Host) FillTmpfs(dir string) (was int64, err error) {
	used, total, err := h.TmpfsUsage(dir)
	if err != nil {
		return 0, err
	}
	return total, h.ResizeTmpfs(dir, used+int64(os.Getpagesize()))
}

// RemoveMounts removes the hosts' mount namespaces of the lab with this ID
// (id "": every lab's), once their processes are gone (KillAndDelete).
func RemoveMounts(id string) error {
	pattern := Prefix + "*-mnt"
	if id != "" {
		pattern = Prefix + id + "-mnt"
	}
	dirs, _ := filepath.Glob(filepath.Join(mountRoot, pattern))
	var errs []error
	for _, d := range dirs {
		errs = append(errs, removeMountDir(d))
	}
	return errors.Join(errs...)
}

// removeMountDir unmounts a lab's mount-namespace files and its directory,
// and removes them.
func removeMountDir(dir string) error {
	if !strings.HasPrefix(filepath.Base(dir), Prefix) {
		return fmt.Errorf("%s is not a lab's", dir)
	}
	var errs []error
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		f := filepath.Join(dir, e.Name())
		if err := unix.Unmount(f, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) {
			errs = append(errs, fmt.Errorf("unmount %s: %w", f, err))
		}
		if err := os.Remove(f); err != nil {
			errs = append(errs, err)
		}
	}
	if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) {
		errs = append(errs, fmt.Errorf("unmount %s: %w", dir, err))
	}
	if err := os.Remove(dir); err != nil && !os.IsNotExist(err) {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
