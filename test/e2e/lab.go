// Package e2e holds the whole-system tests and the lab harness they share
// with test/security: the tests bring up the network namespace lab
// (test/lab/lab.sh), run the real binaries in it and talk to them as users,
// admins and systemd would. They need root; without it every test is
// skipped with a message saying so.
//
// A package's TestMain calls Main. The lab is one per machine, so Main holds
// a lock on it from "lab up" to "lab down": `go test ./...` runs test/e2e
// and test/security one after the other, whatever its -p.
package e2e

import (
	"bufio"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netns"

	"github.com/bastiond/bastiond/web"
)

var (
	repoRoot string
	binDir   string            // where TestMain built bastiond and bastionctl
	lab      map[string]string // lab.env
	skipWhy  string            // non-empty: why the lab tier cannot run
)

// Main builds the binaries, brings the lab up, runs the package's tests and
// takes the lab down; it returns the exit code for os.Exit.
func Main(m *testing.M) int { return runLab(m) }

// MainCluster is Main with the lab in its cluster mode (lab.sh up
// --cluster): a balancer, two bastion namespaces and PostgreSQL.
func MainCluster(m *testing.M) int { return runLab(m, "--cluster") }

func runLab(m *testing.M, upArgs ...string) int {
	flag.Parse()
	wd, _ := os.Getwd()
	repoRoot = filepath.Clean(filepath.Join(wd, "..", ".."))
	if os.Geteuid() != 0 {
		skipWhy = "not root: the lab tier needs network namespaces; run 'sudo make test'"
		fmt.Println("e2e:", skipWhy)
		return m.Run()
	}
	if testing.Short() {
		skipWhy = "-short: lab tier skipped"
		return m.Run()
	}
	dir, err := os.MkdirTemp("", "bastiond-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	os.Chmod(dir, 0o755) // tests run bastionctl as other users
	binDir = dir
	// bastionctl remembers per bastion when UDP was blocked: the tests'
	// runs keep that to themselves, away from the user's cache.
	cache := filepath.Join(dir, "cache")
	os.Mkdir(cache, 0o777)
	os.Chmod(cache, 0o1777)
	os.Setenv("XDG_CACHE_HOME", cache)
	// Tests run race-enabled binaries; benchmarks measure the ones users run.
	args := []string{"build", "-race", "-o", binDir + "/", "./cmd/bastiond", "./cmd/bastionctl"}
	if f := flag.Lookup("test.bench"); f != nil && f.Value.String() != "" {
		args = slices.Delete(args, 1, 2)
	}
	args = append(args[:1], append(BuildTags(), args[1:]...)...)
	build := exec.Command("go", args...)
	build.Dir = repoRoot
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "e2e: build: %v\n%s", err, out)
		return 1
	}
	asked := time.Now()
	unlock, err := lockLab()
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	defer unlock()
	// `make test` sums these up (test/testtimes): the tiers take turns.
	held := time.Now()
	fmt.Printf("lab: waited %s for the lab\n", held.Sub(asked).Round(time.Second))
	defer func() { fmt.Printf("lab: held the lab %s\n", time.Since(held).Round(time.Second)) }()
	if out, err := labCmd(append([]string{"up"}, upArgs...)...); err != nil {
		fmt.Fprintf(os.Stderr, "e2e: lab up: %v\n%s", err, out)
		labCmd("down")
		return 1
	}
	if os.Getenv("BASTIOND_KEEP_LAB") == "" {
		defer labCmd("down")
	}
	fmt.Printf("lab: up in %s\n", time.Since(held).Round(time.Second))
	lab, err = readEnv(filepath.Join(labDir(), "lab.env"))
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	return m.Run()
}

// lockLab waits for the lab's lock, saying so when another test binary
// holds it.
func lockLab() (unlock func(), err error) {
	f, err := os.OpenFile(labDir()+".lock", os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lab lock: %w", err)
	}
	if syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB) != nil {
		fmt.Println("e2e: waiting for the lab: another test package is using it")
		if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
			f.Close()
			return nil, fmt.Errorf("lab lock: %w", err)
		}
	}
	return func() { f.Close() }, nil
}

// BinPath is the path of the binary name (bastiond, bastionctl) that Main
// built.
func BinPath(name string) string { return filepath.Join(binDir, name) }

func labDir() string {
	if d := os.Getenv("LAB_DIR"); d != "" {
		return d
	}
	return "/run/bastiond-lab"
}

func labCmd(args ...string) ([]byte, error) {
	cmd := exec.Command("bash", append([]string{filepath.Join(repoRoot, "test", "lab", "lab.sh")}, args...)...)
	return cmd.CombinedOutput()
}

func readEnv(path string) (map[string]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	env := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if k, v, ok := strings.Cut(line, "="); ok && !strings.HasPrefix(line, "#") {
			env[k] = strings.Trim(v, `"'`)
		}
	}
	return env, sc.Err()
}

// NeedLab skips t when the lab tier cannot run, saying why.
func NeedLab(t testing.TB) {
	t.Helper()
	if skipWhy != "" {
		t.Skip(skipWhy)
	}
}

// LabValue returns a lab.env value, failing the test when it is missing.
func LabValue(t testing.TB, key string) string {
	t.Helper()
	v, ok := lab[key]
	if !ok {
		t.Fatalf("lab.env has no %s", key)
	}
	return v
}

// InNetns runs fn with the calling OS thread in the named namespace. Sockets
// created in fn stay in that namespace after it returns.
func InNetns(name string, fn func() error) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		return err
	}
	defer orig.Close()
	ns, err := netns.GetFromName(name)
	if err != nil {
		return fmt.Errorf("netns %s: %w", name, err)
	}
	defer ns.Close()
	if err := netns.Set(ns); err != nil {
		return err
	}
	defer netns.Set(orig)
	return fn()
}

// LabHosts are the lab's hosts; host H is network namespace bl-H with a UTS
// namespace of its own whose hostname is H.
var LabHosts = []string{"client", "bastion", "vm1", "vm2", "rogue"}

// LabCommand returns a command that runs args on a lab host (client,
// bastion, vm1, vm2, rogue): in its network namespace, with its hostname and
// its /etc/netns files, as `test/lab/lab.sh exec` does.
func LabCommand(t testing.TB, host string, args ...string) *exec.Cmd {
	t.Helper()
	if !slices.Contains(LabHosts, host) {
		t.Fatalf("LabCommand: no lab host %q (one of %v)", host, LabHosts)
	}
	ns := "bl-" + host
	uts := filepath.Join(LabValue(t, "UTS_DIR"), ns)
	return exec.Command("nsenter", append([]string{"--uts=" + uts, "ip", "netns", "exec", ns}, args...)...)
}

// BuildTags are the flags that build the bastiond the tests run: without
// the browser client built (make web), -tags nowebclient, so that the
// daemon starts with the lab's browser roles and only the browser tests
// skip, as they say; with it, none.
func BuildTags() []string {
	if web.Built() {
		return nil
	}
	return []string{"-tags", "nowebclient"}
}

// labPID is the PID of the lab's service name (lab.sh's pids/NAME).
func labPID(t testing.TB, name string) int {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(labDir(), "pids", name))
	if err != nil {
		t.Fatalf("the lab's %s: %v", name, err)
	}
	pid, err := strconv.Atoi(strings.Fields(string(data) + " x")[0])
	if err != nil {
		t.Fatalf("the lab's %s: %q", name, data)
	}
	return pid
}
