package realsystemd

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bastiond/bastiond/test/e2e"
)

func TestMain(m *testing.M) {
	code := e2e.Main(m)
	if built.dir != "" {
		os.RemoveAll(built.dir)
	}
	os.Exit(code)
}

// labConfig is the bastion's configuration for the lab, as an admin writes
// it into /etc/bastiond/bastiond.yaml: everything else (state, audit file,
// admin socket) where the package puts it. alice may tunnel to vm1's SSH
// port and to the echo service on 9001.
func labConfig(t testing.TB) string {
	v := func(k string) string { return e2e.LabValue(t, k) }
	return fmt.Sprintf(`listen:
  server_name: %s
  tls: {self_signed: true}
bastion:
  public_interface: %s
  vnet_interface: %s
  subnets: [%s, "%s"]
  mode: bridged
inventory:
  targets:
    - name: vm1
      addresses: [%s, "%s"]
      ports: {ssh: 22, tunnel: [9001]}
access:
  roles:
    - name: ops
      subjects: [user:alice]
      targets: [vm1]
      protocols: [tunnel]
limits:
  upgrade_grace: 5m
  drain_grace: 5s
logging: {format: json}
`, e2e.ServerName, v("PUB_IFACE"), v("VNET_BRIDGE"), v("BASTION_SUBNET4"), v("BASTION_SUBNET6"), v("VM1_4"), v("VM1_6"))
}

// bastion is the container with the package installed.
type bastion struct {
	*Container
	t testing.TB
}

// mainPID is the service's main process, as the container sees it; 0
// when it does not run.
func (b *bastion) mainPID() int {
	n, _ := strconv.Atoi(b.Property("bastiond.service", "MainPID"))
	return n
}

// waitActive waits until bastiond.service is active with a main process
// other than not.
func (b *bastion) waitActive(not int, timeout time.Duration) int {
	b.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		state := b.Property("bastiond.service", "ActiveState")
		if pid := b.mainPID(); state == "active" && pid != 0 && pid != not {
			return pid
		}
		if time.Now().After(deadline) {
			st, _ := b.Exec("systemctl", "status", "--no-pager", "bastiond.service")
			j, _ := b.Exec("journalctl", "--no-pager", "-n", "60", "-u", "bastiond.service")
			b.t.Fatalf("bastiond.service is %s after %s\n%s\n%s", state, timeout, st, j)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// ctl runs bastionctl in the container, as root.
func (b *bastion) ctl(args ...string) string {
	b.t.Helper()
	return b.MustExec(append([]string{"bastionctl"}, args...)...)
}

// status is bastionctl status --json.
func (b *bastion) status() map[string]any {
	b.t.Helper()
	var st map[string]any
	out := b.ctl("status", "--json")
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		b.t.Fatalf("bastionctl status --json: %v\n%s", err, out)
	}
	return st
}

// echo is a tunnel to vm1's echo service that checks every byte comes back.
type echo struct {
	c net.Conn
	n int
}

func (e *echo) roundTrip(t testing.TB) {
	t.Helper()
	e.n++
	line := fmt.Sprintf("line %d through the bastion\n", e.n)
	e.c.SetDeadline(time.Now().Add(15 * time.Second))
	if _, err := io.WriteString(e.c, line); err != nil {
		t.Fatalf("echo tunnel: write %d: %v", e.n, err)
	}
	buf := make([]byte, len(line))
	if _, err := io.ReadFull(e.c, buf); err != nil || string(buf) != line {
		t.Fatalf("echo tunnel: read %q, %v; want %q", buf, err, line)
	}
}

// sshSession is `ssh lab@vm1 cat` through `bastionctl ssh-proxy`, from
// the client namespace: a real SSH session over a native tunnel.
type sshSession struct {
	cmd *exec.Cmd
	in  io.WriteCloser
	out *bufio.Reader
	n   int
}

func startSSH(t testing.TB, creds, key string) *sshSession {
	t.Helper()
	proxy := fmt.Sprintf("ProxyCommand=env BASTION_CREDENTIALS=%s %s ssh-proxy vm1", creds, e2e.BinPath("bastionctl"))
	cmd := e2e.LabCommand(t, "client", "ssh", "-F", "none", "-o", proxy, "-o", "StrictHostKeyChecking=no",
		"-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes", "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=20",
		"-i", key, "lab@vm1", "cat")
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		in.Close()
		cmd.Process.Kill()
		cmd.Wait()
	})
	s := &sshSession{cmd: cmd, in: in, out: bufio.NewReader(out)}
	s.roundTrip(t)
	return s
}

func (s *sshSession) roundTrip(t testing.TB) {
	t.Helper()
	s.n++
	line := fmt.Sprintf("ssh line %d", s.n)
	if _, err := io.WriteString(s.in, line+"\n"); err != nil {
		t.Fatalf("ssh session: write %d: %v", s.n, err)
	}
	got := make(chan string, 1)
	go func() {
		l, _ := s.out.ReadString('\n')
		got <- strings.TrimSpace(l)
	}()
	select {
	case l := <-got:
		if l != line {
			t.Fatalf("ssh session: read %q, want %q", l, line)
		}
	case <-time.After(15 * time.Second):
		t.Fatalf("ssh session: no answer to line %d within 15s", s.n)
	}
}

// TestUnderSystemd installs the package in a Debian container whose PID 1
// is systemd, inside the lab's bastion namespace, and runs the service as
// an admin would: socket activation, the sandbox, the journal, reloads,
// the watchdog, a binary upgrade and a package upgrade with live SSH and
// tunnel sessions, and a stop that drains both processes. Each step needs
// the ones before it.
func TestUnderSystemd(t *testing.T) {
	e2e.NeedLab(t)
	if why := cannotBoot(); why != "" {
		t.Skip(why)
	}
	wd, _ := os.Getwd()
	repoRoot := filepath.Clean(filepath.Join(wd, "..", ".."))
	work := t.TempDir()
	oldDeb, newDeb := sharedPackages(t, repoRoot)
	rootfs, err := Rootfs()
	if err != nil {
		t.Fatalf("the container's root file system: %v", err)
	}
	c := Boot(t, rootfs, "/run/netns/"+e2e.LabValue(t, "NS_BASTION"), built.dir+":/mnt/packages")
	b := &bastion{Container: c, t: t}
	inContainer := func(path string) string { return "/mnt/packages/" + strings.TrimPrefix(path, built.dir+"/") }

	var pid int
	// A step fails the rest: each needs the ones before it. Within a step,
	// the container's helpers fail the step's t.
	step := func(name string, f func(t *testing.T)) {
		ok := t.Run(name, func(st *testing.T) {
			b.t, c.t = st, st
			defer func() { b.t, c.t = t, t }()
			f(st)
		})
		if !ok {
			t.FailNow()
		}
	}

	step("apt installs the package, enabled but not started", func(t *testing.T) {
		start := time.Now()
		out := b.MustExec("apt-get", "install", "-y", "--no-install-recommends", inContainer(oldDeb))
		t.Logf("apt-get install of the .deb, first install under systemd: %s", time.Since(start).Round(10*time.Millisecond))
		if !strings.Contains(out, "/etc/bastiond/bastiond.yaml") {
			t.Errorf("the first install does not tell the admin to write the configuration:\n%s", out)
		}
		if s, _ := b.Exec("systemctl", "is-enabled", "bastiond.socket"); strings.TrimSpace(s) != "enabled" {
			t.Errorf("bastiond.socket is %q after the install, want enabled", strings.TrimSpace(s))
		}
		if s := b.Property("bastiond.service", "ActiveState"); s != "inactive" {
			t.Errorf("bastiond.service is %s after the first install, want inactive: the config is not written yet", s)
		}
		if id := b.MustExec("id", "bastiond"); !strings.Contains(id, "(bastiond)") {
			t.Errorf("no bastiond user: %s", id)
		}
	})

	step("socket activation starts the service on the first connection", func(t *testing.T) {
		b.WriteFile("/etc/bastiond/bastiond.yaml", []byte(labConfig(t)), 0o640)
		b.MustExec("chgrp", "bastiond", "/etc/bastiond/bastiond.yaml")
		b.MustExec("bastiond", "-check-config", "-config", "/etc/bastiond/bastiond.yaml")
		b.MustExec("systemctl", "enable", "--now", "bastiond.socket")
		if s := b.Property("bastiond.service", "ActiveState"); s != "inactive" {
			t.Fatalf("bastiond.service is %s before any connection, want inactive", s)
		}
		if s := b.Property("bastiond.socket", "ActiveState"); s != "active" {
			t.Fatalf("bastiond.socket is %s", s)
		}
		// The first connection (systemd holds the socket and queues it)
		// starts the daemon, which then serves it.
		first := make(chan error, 1)
		go func() {
			resp, err := e2e.HTTPSGetWithin(t, e2e.LabValue(t, "BASTION_PUB4"), "/", 60*time.Second)
			if err == nil {
				resp.Body.Close()
			}
			first <- err
		}()
		pid = b.waitActive(0, 60*time.Second)
		start, _ := strconv.ParseInt(b.Property("bastiond.service", "InactiveExitTimestampMonotonic"), 10, 64)
		ready, _ := strconv.ParseInt(b.Property("bastiond.service", "ActiveEnterTimestampMonotonic"), 10, 64)
		t.Logf("the daemon started in %s (socket activation to READY=1)", time.Duration(ready-start)*time.Microsecond)
		if err := <-first; err != nil {
			t.Errorf("the first connection: %v", err)
		}
		st := b.MustExec("systemctl", "status", "--no-pager", "bastiond.service")
		if !strings.Contains(st, "active (running)") || !regexp.MustCompile(`Status: "serving `+regexp.QuoteMeta(e2e.ServerName)).MatchString(st) {
			t.Errorf("systemctl status:\n%s", st)
		}
		for _, addr := range []string{e2e.LabValue(t, "BASTION_PUB4"), e2e.LabValue(t, "BASTION_PUB6")} {
			resp, err := e2e.HTTPSGet(t, addr, "/")
			if err != nil {
				t.Errorf("GET / on %s: %v", addr, err)
				continue
			}
			resp.Body.Close()
		}
	})

	step("the installed unit's exposure is at most 1.5", func(t *testing.T) {
		out, _ := b.Exec("systemd-analyze", "security", "--no-pager", "bastiond.service")
		m := regexp.MustCompile(`Overall exposure level for bastiond.service: ([0-9.]+)`).FindStringSubmatch(out)
		if m == nil {
			t.Fatalf("systemd-analyze security:\n%s", out)
		}
		if score, _ := strconv.ParseFloat(m[1], 64); score > 1.5 {
			t.Errorf("exposure %s, want at most 1.5\n%s", m[1], out)
		}
		t.Logf("systemd-analyze security bastiond.service: %s", m[1])
	})

	step("the daemon runs as bastiond with CAP_NET_ADMIN only, and writes only its own directories", func(t *testing.T) {
		host := c.HostPID(pid)
		st, err := readStatus(host)
		if err != nil {
			t.Fatal(err)
		}
		uid := strings.TrimSpace(b.MustExec("id", "-u", "bastiond"))
		gid := strings.TrimSpace(b.MustExec("id", "-g", "bastiond"))
		if f := strings.Fields(st["Uid"]); len(f) != 4 || f[0] != uid || f[1] != uid || f[2] != uid {
			t.Errorf("Uid: %s, want bastiond's %s", st["Uid"], uid)
		}
		const netAdmin = "0000000000001000" // bit 12, CAP_NET_ADMIN
		for _, k := range []string{"CapEff", "CapPrm", "CapBnd", "CapAmb"} {
			if st[k] != netAdmin {
				t.Errorf("%s: %s, want %s (CAP_NET_ADMIN alone)", k, st[k], netAdmin)
			}
		}
		if st["NoNewPrivs"] != "1" || st["Seccomp"] != "2" {
			t.Errorf("NoNewPrivs %s, Seccomp %s: want 1 and 2 (filter)", st["NoNewPrivs"], st["Seccomp"])
		}
		// A shell in the daemon's mount namespace, with its user and
		// groups, sees the file system as the daemon does.
		try := func(path string) error {
			cmd := exec.Command("nsenter", "-t", strconv.Itoa(host), "-m", "-S", uid, "-G", gid, "--", "/bin/sh", "-c", `: > "$0" && rm "$0"`, path)
			out, err := cmd.CombinedOutput()
			if err != nil {
				return fmt.Errorf("%v: %s", err, strings.TrimSpace(string(out)))
			}
			return nil
		}
		for _, dir := range []string{"/var/lib/bastiond", "/var/log/bastiond", "/run/bastiond"} {
			if err := try(dir + "/write-test"); err != nil {
				t.Errorf("the daemon cannot write its own %s: %v", dir, err)
			}
		}
		for _, dir := range []string{"/etc", "/etc/bastiond", "/usr/sbin", "/var/lib", "/root", "/home", "/run", "/var/log", "/var/cache"} {
			if err := try(dir + "/write-test"); err == nil {
				t.Errorf("the daemon can write %s", dir)
			}
		}
		// /tmp and /var/tmp are its own (PrivateTmp=): what it leaves
		// there, the host does not see.
		for _, dir := range []string{"/tmp", "/var/tmp"} {
			cmd := exec.Command("nsenter", "-t", strconv.Itoa(host), "-m", "-S", uid, "-G", gid, "--", "/bin/sh", "-c", `: > "$0"`, dir+"/private-test")
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Errorf("the daemon cannot write its private %s: %v %s", dir, err, out)
			}
			if _, err := b.Exec("test", "-e", dir+"/private-test"); err == nil {
				t.Errorf("the daemon's %s is the host's", dir)
			}
		}
	})

	var userCreds string
	step("a sign-in is an audit event in the journal, with its structured fields", func(t *testing.T) {
		cmd := b.Command("bastionctl", "users", "add", "alice", "--password-stdin")
		cmd.Stdin = strings.NewReader(e2e.TunnelPassword + "\n")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("users add: %v\n%s", err, out)
		}
		// The credentials outlive this step (its TempDir does not).
		data, err := os.ReadFile(e2e.LoginAs(t, "alice", e2e.LabValue(t, "BASTION_PUB4")))
		if err != nil {
			t.Fatal(err)
		}
		userCreds = filepath.Join(work, "credentials.json")
		if err := os.WriteFile(userCreds, data, 0o600); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(10 * time.Second)
		for {
			out := b.MustExec("journalctl", "--no-pager", "-o", "json", "-u", "bastiond.service", "BASTIOND_EVENT=signin_succeeded")
			var e map[string]any
			if line, _, _ := strings.Cut(out, "\n"); json.Unmarshal([]byte(line), &e) == nil {
				if e["BASTIOND_USER"] != "alice" || e["MESSAGE_ID"] == nil || e["BASTIOND_AUDIT"] == nil || e["BASTIOND_HASH"] == nil {
					t.Errorf("the journal's sign-in entry lacks fields: %v", e)
				}
				break
			}
			if time.Now().After(deadline) {
				j, _ := b.Exec("journalctl", "--no-pager", "-n", "40", "-u", "bastiond.service")
				t.Fatalf("no signin_succeeded entry in the journal of bastiond.service\n%s", j)
			}
			time.Sleep(200 * time.Millisecond)
		}
	})

	step("systemctl reload applies a good configuration and keeps the old one when the new is broken", func(t *testing.T) {
		digest := b.status()["config_digest"]
		good := strings.Replace(labConfig(t), "drain_grace: 5s", "drain_grace: 6s", 1)
		b.WriteFile("/etc/bastiond/bastiond.yaml", []byte(good), 0o640)
		b.MustExec("systemctl", "reload", "bastiond.service")
		waitFor(t, 10*time.Second, "the reload to apply", func() bool { return b.status()["config_digest"] != digest })
		digest = b.status()["config_digest"]

		broken := strings.Replace(good, "upgrade_grace: 5m", "upgrade_grace: soon", 1)
		b.WriteFile("/etc/bastiond/bastiond.yaml", []byte(broken), 0o640)
		b.MustExec("systemctl", "reload", "bastiond.service")
		waitFor(t, 10*time.Second, "systemctl status to say the reload failed", func() bool {
			st, _ := b.Exec("systemctl", "status", "--no-pager", "bastiond.service")
			return strings.Contains(st, "reload failed, running previous configuration")
		})
		st := b.status()
		if st["config_digest"] != digest {
			t.Errorf("the broken configuration replaced the running one")
		}
		last, _ := st["last_reload"].(map[string]any)
		if why, _ := last["error"].(string); last["ok"] != false || !strings.Contains(why, "upgrade_grace") {
			t.Errorf("bastionctl status does not say why the reload failed: last_reload %v", last)
		}
		if b.mainPID() != pid || b.Property("bastiond.service", "ActiveState") != "active" {
			t.Errorf("the service did not stay up through the failed reload")
		}
		b.WriteFile("/etc/bastiond/bastiond.yaml", []byte(good), 0o640)
		b.MustExec("systemctl", "reload", "bastiond.service")
	})

	step("the watchdog restarts a daemon that stops answering", func(t *testing.T) {
		restarts := b.Property("bastiond.service", "NRestarts")
		syscall.Kill(c.HostPID(pid), syscall.SIGSTOP)
		wd, _ := time.ParseDuration(strings.ReplaceAll(b.Property("bastiond.service", "WatchdogUSec"), " ", ""))
		start := time.Now()
		newPID := b.waitActive(pid, wd+90*time.Second)
		t.Logf("restarted %s after SIGSTOP (WatchdogSec %s)", time.Since(start).Round(time.Second), wd)
		if got := b.Property("bastiond.service", "NRestarts"); got == restarts {
			t.Errorf("NRestarts is still %s", got)
		}
		j := b.MustExec("journalctl", "--no-pager", "-u", "bastiond.service")
		if !strings.Contains(j, "Watchdog timeout") {
			t.Errorf("the journal does not say the watchdog fired:\n%s", tail([]byte(j), 30))
		}
		pid = newPID
		resp, err := e2e.HTTPSGet(t, e2e.LabValue(t, "BASTION_PUB6"), "/")
		if err != nil {
			t.Fatalf("after the restart: %v", err)
		}
		resp.Body.Close()
	})

	// Live sessions from here on: a raw tunnel to vm1's echo service and a
	// real SSH session, over IPv4 and IPv6.
	e2e.StartSink(t, e2e.LabValue(t, "NS_VM1"), ":9001", e2e.SinkEcho)
	var tunnels []*echo
	for _, addr := range []string{e2e.LabValue(t, "BASTION_PUB4"), e2e.LabValue(t, "BASTION_PUB6")} {
		cl := e2e.TunnelClient(t, userCreds, addr, "quic")
		conn, err := e2e.Dial(t, cl, "vm1", 9001)
		if err != nil {
			t.Fatalf("tunnel to vm1:9001 via %s: %v", addr, err)
		}
		t.Cleanup(func() { conn.Close() })
		e := &echo{c: conn}
		e.roundTrip(t)
		tunnels = append(tunnels, e)
	}
	ssh := startSSH(t, userCreds, e2e.LabValue(t, "LAB_KEY"))
	roundTrips := func(t *testing.T) {
		for _, e := range tunnels {
			e.roundTrip(t)
		}
		ssh.roundTrip(t)
	}

	step("bastionctl upgrade hands over to a new process, sessions live, no restart", func(t *testing.T) {
		restarts := b.Property("bastiond.service", "NRestarts")
		out := b.ctl("upgrade")
		newPID := b.waitActive(pid, 30*time.Second)
		if !strings.Contains(out, "now runs as pid "+strconv.Itoa(newPID)) {
			t.Errorf("bastionctl upgrade said %q; systemd's MainPID is %d", out, newPID)
		}
		if got := b.Property("bastiond.service", "NRestarts"); got != restarts {
			t.Errorf("NRestarts went from %s to %s", restarts, got)
		}
		roundTrips(t)
		pid = newPID
	})

	step("a package upgrade hands over the same way", func(t *testing.T) {
		restarts := b.Property("bastiond.service", "NRestarts")
		start := time.Now()
		out := b.MustExec("apt-get", "install", "-y", "--no-install-recommends", inContainer(newDeb))
		t.Logf("apt-get install of the newer .deb, with the hand-over: %s", time.Since(start).Round(10*time.Millisecond))
		newPID := b.waitActive(pid, 30*time.Second)
		if got := b.Property("bastiond.service", "NRestarts"); got != restarts {
			t.Errorf("NRestarts went from %s to %s: the package restarted the service\n%s", restarts, got, out)
		}
		if v := b.status()["version"]; v != versionNew {
			t.Errorf("bastionctl status: version %v, want %s", v, versionNew)
		}
		roundTrips(t)
		if st := b.MustExec("systemctl", "status", "--no-pager", "bastiond.service"); !strings.Contains(st, "active (running)") {
			t.Errorf("systemctl status after the upgrade:\n%s", st)
		}
		pid = newPID
	})

	step("systemctl stop drains every process of the service", func(t *testing.T) {
		// Three generations: the first serves the sessions (their QUIC
		// connections are its), the second has none but carries the
		// first's datagrams from the third, which reads the socket.
		procs := strings.Fields(b.MustExec("pgrep", "-x", "bastiond"))
		if len(procs) != 3 {
			t.Errorf("%d bastiond processes before stop, want 3 (the one serving the sessions, the one relaying its datagrams, the new one): %v", len(procs), procs)
		}
		b.MustExec("systemctl", "stop", "bastiond.service", "bastiond.socket")
		if s := b.Property("bastiond.service", "ActiveState"); s != "inactive" {
			t.Errorf("bastiond.service is %s after stop", s)
		}
		if left, err := b.Exec("pgrep", "-a", "-x", "bastiond"); err == nil {
			t.Errorf("processes left after stop: %s", left)
		}
		for _, e := range tunnels {
			e.c.SetReadDeadline(time.Now().Add(10 * time.Second))
			if _, err := e.c.Read(make([]byte, 1)); err == nil {
				t.Error("a tunnel still carries bytes after stop")
			}
		}
		audit := b.MustExec("cat", "/var/log/bastiond/audit.jsonl")
		if n := strings.Count(audit, `"event":"session_end"`); n < 3 {
			t.Errorf("%d session_end records after stop, want one per session (3)", n)
		}
		verify := b.MustExec("bastionctl", "audit", "verify", "/var/log/bastiond/audit.jsonl")
		t.Logf("bastionctl audit verify: %s", strings.TrimSpace(verify))
	})
}

// waitFor polls cond until it holds or timeout passes.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(timeout); !cond(); time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("waited %s for %s", timeout, what)
		}
	}
}
