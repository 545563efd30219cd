// Package realsystemd is the test tier that runs bastiond under a real
// systemd as PID 1: a Debian container booted with systemd-nspawn inside
// the lab's bastion network namespace, with the package installed by apt
// as an admin would, and everything checked through systemctl, journalctl
// and bastionctl. See docs/lab-kernel.md and test/lab/README.md for the lab.
//
// The container's root file system is made once by debootstrap and kept
// outside the clone (rootfsCache), keyed by what it holds; each boot runs on
// a throwaway overlay of it (--volatile=overlay), so no test changes it.
package realsystemd

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bastiond/bastiond/internal/syncbuf"
)

// The container's root file system: Debian 12 with systemd and the few
// tools the tests and the package's scripts use. Changing the list
// changes the cache key, so the next run builds a new one.
var (
	rootfsSuite    = "bookworm"
	rootfsPackages = []string{"systemd", "systemd-sysv", "dbus", "iproute2", "procps", "sudo"}
)

// rootfsCache is where the built root file systems are kept, across runs
// and clones.
func rootfsCache() string {
	if d := os.Getenv("BASTIOND_ROOTFS_CACHE"); d != "" {
		return d
	}
	return "/var/cache/bastiond-test"
}

// cannotBoot says why this machine cannot boot a container, or "" if it can.
func cannotBoot() string {
	if os.Geteuid() != 0 {
		return "not root: a systemd container needs root; run 'sudo make test'"
	}
	for _, tool := range []string{"systemd-nspawn", "debootstrap", "nsenter"} {
		if _, err := exec.LookPath(tool); err != nil {
			return tool + " is missing: test/deps.sh test installs it (systemd-container, debootstrap)"
		}
	}
	return ""
}

// aptMirror is the Debian mirror the host's apt uses, for debootstrap.
func aptMirror() string {
	files, _ := filepath.Glob("/etc/apt/sources.list.d/*.sources")
	for _, name := range files {
		b, err := os.ReadFile(name)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "URIs:"); ok {
				if f := strings.Fields(v); len(f) > 0 && !strings.Contains(f[0], "security") {
					return f[0]
				}
			}
		}
	}
	if b, err := os.ReadFile("/etc/apt/sources.list"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if f := strings.Fields(line); len(f) >= 3 && f[0] == "deb" && !strings.Contains(f[1], "security") {
				return f[1]
			}
		}
	}
	return "http://deb.debian.org/debian"
}

// Rootfs returns the cached root file system, building it first if it is
// not there (a few minutes, once per machine). Builds are serialized by a
// lock next to the cache; a half-built one is never taken.
func Rootfs() (string, error) {
	sum := sha256.Sum256([]byte(rootfsSuite + "\n" + strings.Join(rootfsPackages, ",")))
	dir := filepath.Join(rootfsCache(), "rootfs-"+rootfsSuite+"-"+hex.EncodeToString(sum[:6]))
	if _, err := os.Stat(filepath.Join(dir, "usr/lib/systemd/systemd")); err == nil {
		return dir, nil
	}
	if err := os.MkdirAll(rootfsCache(), 0o755); err != nil {
		return "", err
	}
	lock, err := os.OpenFile(filepath.Join(rootfsCache(), ".lock"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return "", err
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return "", err
	}
	if _, err := os.Stat(filepath.Join(dir, "usr/lib/systemd/systemd")); err == nil {
		return dir, nil // another run built it meanwhile
	}
	tmp := dir + ".tmp"
	os.RemoveAll(tmp)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "debootstrap", "--variant=minbase", "--include="+strings.Join(rootfsPackages, ","),
		rootfsSuite, tmp, aptMirror())
	if out, err := cmd.CombinedOutput(); err != nil {
		os.RemoveAll(tmp)
		return "", fmt.Errorf("debootstrap: %v\n%s", err, tail(out, 40))
	}
	// apt in the container installs local files only: no lists to fetch.
	os.WriteFile(filepath.Join(tmp, "etc/apt/apt.conf.d/90bastiond-test"), []byte("Acquire::Languages \"none\";\n"), 0o644)
	if err := os.Rename(tmp, dir); err != nil {
		return "", err
	}
	return dir, nil
}

// tail is the last n lines of b.
func tail(b []byte, n int) string {
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// Container is a booted systemd container.
type Container struct {
	t      testing.TB
	nspawn *exec.Cmd
	leader int // the container's PID 1, as the host sees it
	Log    syncbuf.Buffer
	done   chan struct{}
}

// Boot starts systemd in a container of rootfs, in the network namespace
// at netns (a path under /run/netns), with the host's paths binds
// ("HOST:CONTAINER", read-only) mounted in, and waits until the system
// has booted. The container is stopped when the test ends.
func Boot(t testing.TB, rootfs, netns string, binds ...string) *Container {
	t.Helper()
	args := []string{"-q", "-D", rootfs, "-b", "--register=no", "--keep-unit", "--volatile=overlay",
		"--network-namespace-path=" + netns, "--machine=bastion", "--console=pipe",
		// The host the container stands for programs its network's
		// firewall: without this, nspawn keeps CAP_NET_ADMIN only for a
		// network of its own making.
		"--capability=CAP_NET_ADMIN"}
	for _, b := range binds {
		args = append(args, "--bind-ro="+b)
	}
	c := &Container{t: t, done: make(chan struct{})}
	c.nspawn = exec.Command("systemd-nspawn", args...)
	c.nspawn.Stdout, c.nspawn.Stderr = &c.Log, &c.Log
	if err := c.nspawn.Start(); err != nil {
		t.Fatalf("systemd-nspawn: %v", err)
	}
	go func() {
		c.nspawn.Wait()
		close(c.done)
	}()
	t.Cleanup(c.Stop)
	deadline := time.Now().Add(30 * time.Second)
	for c.leader == 0 {
		select {
		case <-c.done:
			t.Fatalf("systemd-nspawn exited: %v\n%s", c.nspawn.ProcessState, c.Log.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("no container PID 1 after 30s\n%s", c.Log.String())
		}
		c.leader = containerInit(c.nspawn.Process.Pid)
		time.Sleep(20 * time.Millisecond)
	}
	// is-system-running --wait returns once boot is done: "running", or
	// "degraded" if a unit failed, which the tests look at themselves.
	// Until systemd's bus is up it fails at once ("offline").
	for {
		out, _ := c.Exec("systemctl", "is-system-running", "--wait")
		s := strings.TrimSpace(out)
		if s == "running" || s == "degraded" {
			break
		}
		if time.Now().After(deadline) {
			failed, _ := c.Exec("systemctl", "--failed", "--no-pager")
			t.Fatalf("the container's systemd is %q\n%s\n%s", s, failed, c.Log.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	return c
}

// containerInit finds the child of nspawn that is PID 1 in its own PID
// namespace, or 0.
func containerInit(nspawn int) int {
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		// Its name is systemd once nspawn's child has set up the
		// container and exec'd it: entering it earlier enters the mount
		// namespace of before the pivot.
		st, err := readStatus(pid)
		if err == nil && st["PPid"] == strconv.Itoa(nspawn) && st["Name"] == "systemd" {
			if ns := strings.Fields(st["NSpid"]); len(ns) > 1 && ns[len(ns)-1] == "1" {
				return pid
			}
		}
	}
	return 0
}

// readStatus is /proc/PID/status, by field.
func readStatus(pid int) (map[string]string, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	m := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), ":"); ok {
			m[k] = strings.TrimSpace(v)
		}
	}
	return m, sc.Err()
}

// Command is args run inside the container: in all of its namespaces, as
// root, with the container's environment (not the test's).
func (c *Container) Command(args ...string) *exec.Cmd {
	cmd := exec.Command("nsenter", append([]string{"-t", strconv.Itoa(c.leader), "-a", "--",
		"/usr/bin/env", "-i", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8"}, args...)...)
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

// Exec runs args in the container and returns their output, standard
// error included.
func (c *Container) Exec(args ...string) (string, error) {
	out, err := c.Command(args...).CombinedOutput()
	return string(out), err
}

// MustExec is Exec that fails the test on an error.
func (c *Container) MustExec(args ...string) string {
	c.t.Helper()
	out, err := c.Exec(args...)
	if err != nil {
		c.t.Fatalf("in the container, %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// Property is a unit's property, as systemctl show gives it.
func (c *Container) Property(unit, name string) string {
	c.t.Helper()
	return strings.TrimSpace(c.MustExec("systemctl", "show", "-P", name, unit))
}

// HostPID is the host's PID of a process the container calls pid.
func (c *Container) HostPID(pid int) int {
	c.t.Helper()
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		hp, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		st, err := readStatus(hp)
		if err != nil {
			continue
		}
		if ns := strings.Fields(st["NSpid"]); len(ns) > 1 && ns[len(ns)-1] == strconv.Itoa(pid) && c.inside(hp) {
			return hp
		}
	}
	c.t.Fatalf("no host PID for the container's PID %d", pid)
	return 0
}

// inside reports whether host process pid is in the container's PID
// namespace.
func (c *Container) inside(pid int) bool {
	a, err1 := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", pid))
	b, err2 := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", c.leader))
	return err1 == nil && err2 == nil && a == b
}

// WriteFile writes data to path in the container (through its root, as
// the container's root user would).
func (c *Container) WriteFile(path string, data []byte, mode fs.FileMode) {
	c.t.Helper()
	cmd := c.Command("sh", "-c", `umask 077; cat > "$0" && chmod "$1" "$0"`, path, strconv.FormatUint(uint64(mode), 8))
	cmd.Stdin = strings.NewReader(string(data))
	if out, err := cmd.CombinedOutput(); err != nil {
		c.t.Fatalf("write %s in the container: %v\n%s", path, err, out)
	}
}

// Stop halts the container (SIGTERM to nspawn: a clean poweroff), kills
// it if it does not stop within 20s, and removes what nspawn leaves on the
// host: empty cgroups and its runtime directory.
func (c *Container) Stop() {
	select {
	case <-c.done:
	default:
		c.nspawn.Process.Signal(syscall.SIGTERM)
		select {
		case <-c.done:
		case <-time.After(20 * time.Second):
			c.nspawn.Process.Kill()
			<-c.done
		}
	}
	cleanHost()
}

// cleanHost removes the empty cgroups and runtime files nspawn leaves on a
// host whose PID 1 is not systemd. Only empty directories go (rmdir).
func cleanHost() {
	for _, root := range []string{"/sys/fs/cgroup/systemd", "/sys/fs/cgroup/unified"} {
		for _, top := range []string{"payload", "supervisor"} {
			var dirs []string
			filepath.WalkDir(filepath.Join(root, top), func(p string, d fs.DirEntry, err error) error {
				if err == nil && d.IsDir() {
					dirs = append(dirs, p)
				}
				return nil
			})
			slices.Reverse(dirs) // depth first
			for _, d := range dirs {
				syscall.Rmdir(d)
			}
		}
	}
	matches, _ := filepath.Glob("/run/systemd/nspawn*")
	for _, m := range matches {
		os.RemoveAll(m)
	}
}
