package e2e

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bastiond/bastiond/proxy/sshca"
	"github.com/bastiond/bastiond/tunnel"
)

// upgradeConfig lets alice open browser terminals to vm1 and tunnels to its
// echo service on 9001, fifty and more at once.
func upgradeConfig(dir string) string {
	cfg := LabConfig(dir, `access:
  roles:
    - name: ops
      subjects: [user:alice]
      targets: [vm1]
      protocols: [ssh, tunnel]
limits:
  capacity: 400
  sessions_per_user: 200
  target_timeout: 2s
  upgrade_grace: 5m
`)
	return strings.Replace(cfg, "ports: {ssh: 22}", "ports: {ssh: 22, tunnel: [9001]}", 1)
}

// echoTunnel is a tunnel to the echo service, with what went through it.
type echoTunnel struct {
	c        net.Conn
	id       string
	sent     int64
	received int64
}

// roundTrip sends a line through the tunnel and checks it comes back.
func (e *echoTunnel) roundTrip(t testing.TB, line string) {
	t.Helper()
	e.c.SetDeadline(time.Now().Add(15 * time.Second))
	n, err := io.WriteString(e.c, line)
	e.sent += int64(n)
	if err != nil {
		t.Fatalf("tunnel %s: write: %v", e.id, err)
	}
	buf := make([]byte, len(line))
	n, err = io.ReadFull(e.c, buf)
	e.received += int64(n)
	if err != nil || string(buf) != line {
		t.Fatalf("tunnel %s: read %q, %v; want %q", e.id, buf[:n], err, line)
	}
}

// installBinary builds bastiond as version into path, atomically, as a
// package manager installs it over the running one.
func installBinary(t testing.TB, path, version string) {
	t.Helper()
	tmp := path + ".new"
	args := append([]string{"build", "-race"}, BuildTags()...)
	build := exec.Command("go", append(args, "-ldflags", "-X github.com/bastiond/bastiond/internal/version.Version="+version, "-o", tmp, "./cmd/bastiond")...)
	build.Dir = repoRoot
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build %s: %v\n%s", version, err, out)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// auditRecords reads every record of the audit file, by session and event.
func (d *Daemon) auditRecords() map[string]map[string][]map[string]any {
	d.t.Helper()
	f, err := os.Open(d.AuditFile())
	if err != nil {
		d.t.Fatal(err)
	}
	defer f.Close()
	recs := map[string]map[string][]map[string]any{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var r map[string]any
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			d.t.Fatalf("audit line %q: %v", sc.Text(), err)
		}
		id, _ := r["session"].(string)
		ev, _ := r["event"].(string)
		if id == "" || (ev != "session_start" && ev != "session_end") {
			continue // not a session record
		}
		if recs[id] == nil {
			recs[id] = map[string][]map[string]any{}
		}
		recs[id][ev] = append(recs[id][ev], r)
	}
	return recs
}

// waitGone waits for the process pid to exit. After an upgrade, d.wait
// does not do: the new process shares the old one's output pipe, and
// exec.Cmd.Wait waits for the pipe too. An exited child of the test stays a
// zombie until then.
func waitGone(t testing.TB, pid int, timeout time.Duration) {
	t.Helper()
	for end := time.Now().Add(timeout); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			return
		}
		// pid (comm) state ...
		if i := strings.LastIndexByte(string(stat), ')'); i > 0 && i+2 < len(stat) && stat[i+2] == 'Z' {
			return
		}
	}
	t.Fatalf("process %d still runs after %s", pid, timeout)
}

type upgradeResult struct {
	OldPID   int    `json:"old_pid"`
	NewPID   int    `json:"new_pid"`
	Sessions int    `json:"sessions"`
	Binary   string `json:"binary"`
}

// upgradable is a daemon started from a binary of its own, which a test
// replaces and then upgrades to, with alice signed up and vm1's echo
// service on 9001. The processes its upgrades start are killed at the end:
// the test's daemon started them.
type upgradable struct {
	*Daemon
	pids []int // started by successful upgrades
}

func startUpgradable(t *testing.T, version string) *upgradable {
	t.Helper()
	NeedLab(t)
	dir := t.TempDir()
	os.Chmod(filepath.Dir(dir), 0o755)
	os.Chmod(dir, 0o755)
	bin := filepath.Join(dir, "bin", "bastiond")
	os.MkdirAll(filepath.Dir(bin), 0o755)
	installBinary(t, bin, version)
	d := &Daemon{t: t, Dir: dir, cfgPath: filepath.Join(dir, "bastiond.yaml"), admin: filepath.Join(dir, "admin.sock"), bin: bin}
	d.WriteConfig(upgradeConfig(dir))
	d.launch(ViaFDs)
	u := &upgradable{Daemon: d}
	t.Cleanup(func() {
		for _, pid := range u.pids {
			if p, err := os.FindProcess(pid); err == nil {
				p.Signal(syscall.SIGKILL)
			}
		}
		if t.Failed() {
			t.Logf("the daemons' log ends:\n%s", tail(d.Log.String(), 8000))
		}
	})
	AddLabUsers(t, d, "alice")
	StartSink(t, LabValue(t, "NS_VM1"), "[::]:9001", SinkEcho)
	return u
}

// upgrade installs version over the running binary and upgrades to it.
func (u *upgradable) upgrade(version string) upgradeResult {
	u.t.Helper()
	installBinary(u.t, u.bin, version)
	out, err := u.Ctl(nil, "upgrade", "--json")
	if err != nil {
		u.t.Fatalf("upgrade to %s: %v\n%s", version, err, out)
	}
	var up upgradeResult
	if err := json.Unmarshal([]byte(out), &up); err != nil {
		u.t.Fatalf("upgrade answer %q: %v", out, err)
	}
	u.pids = append(u.pids, up.NewPID)
	return up
}

func TestUpgradeKeepsSessions(t *testing.T) {
	const terminals, tunnels = 24, 26 // 50 live sessions
	u := startUpgradable(t, "before-upgrade")
	d := u.Daemon
	PinVM1(t, d)
	pw := lab["LAB_PASSWORD"]

	// 24 browser terminals (IPv4 and IPv6 alternately) and 26 tunnels (QUIC
	// and TLS, IPv4 and IPv6).
	addrs := []string{lab["BASTION_PUB4"], lab["BASTION_PUB6"]}
	var terms []*TermClient
	users := []*WebUser{SignedIn(t, addrs[0], "alice"), SignedIn(t, addrs[1], "alice")}
	for i := range terminals {
		tc := users[i%2].OpenTerminal("vm1")
		tc.Shell(pw)
		tc.TypeText(fmt.Sprintf("echo before-%d-$((%d*3))\r", i, i))
		tc.ScreenHas(fmt.Sprintf("before-%d-%d", i, i*3), 15*time.Second)
		terms = append(terms, tc)
	}
	creds := LoginAs(t, "alice", addrs[0])
	clients := map[string]*tunnel.Client{}
	for _, tr := range []string{"quic", "tcp"} {
		for _, a := range addrs {
			clients[tr+a] = TunnelClient(t, creds, a, tr)
		}
	}
	var tuns []*echoTunnel
	seen := map[string]bool{}
	for i := range tunnels {
		tr := []string{"quic", "tcp"}[i%2]
		cl := clients[tr+addrs[(i/2)%2]]
		c, err := Dial(t, cl, "vm1", 9001)
		if err != nil {
			t.Fatalf("tunnel %d over %s: %v", i, tr, err)
		}
		t.Cleanup(func() { c.Close() })
		e := &echoTunnel{c: c}
		e.roundTrip(t, fmt.Sprintf("before %d\n", i))
		tuns = append(tuns, e)
	}
	// Session ids from the registry, matched to tunnels by their bytes.
	for _, s := range d.liveSessions() {
		seen[s["id"].(string)] = true
	}
	if len(seen) != terminals+tunnels {
		t.Fatalf("%d live sessions before the upgrade, want %d", len(seen), terminals+tunnels)
	}

	// Upgrade to a new build installed over the running one.
	oldPID := d.Cmd.Process.Pid
	up := u.upgrade("after-upgrade")
	if up.OldPID != oldPID || up.NewPID == oldPID || up.Sessions != terminals+tunnels || up.Binary != d.bin {
		t.Errorf("upgrade result %+v; old pid %d, %d sessions", up, oldPID, terminals+tunnels)
	}
	d.WaitNotify(fmt.Sprintf("MAINPID=%d", up.NewPID), 10*time.Second)
	st, err := d.Ctl(nil, "status", "--json")
	if err != nil || !strings.Contains(st, `"version": "after-upgrade"`) || !strings.Contains(st, `"pid": `+strconv.Itoa(up.NewPID)) {
		t.Errorf("status after the upgrade: %v\n%s", err, st)
	}
	var status struct{ Previous *struct{ PID, Sessions int } }
	json.Unmarshal([]byte(st), &status)
	if p := status.Previous; p == nil || p.PID != oldPID || p.Sessions != terminals+tunnels {
		t.Errorf("status shows the previous process as %+v; want pid %d with %d sessions", p, oldPID, terminals+tunnels)
	}

	// Every session lives on, in the old process, and the new process
	// lists them.
	for i, tc := range terms {
		tc.TypeText(fmt.Sprintf("echo after-%d-$((%d*5))\r", i, i))
		tc.ScreenHas(fmt.Sprintf("after-%d-%d", i, i*5), 15*time.Second)
	}
	for i, e := range tuns {
		e.roundTrip(t, fmt.Sprintf("after %d\n", i))
	}
	if got := len(d.liveSessions()); got != terminals+tunnels {
		t.Errorf("the new process lists %d sessions, want the old process's %d", got, terminals+tunnels)
	}

	// New sessions go to the new process: a terminal from the web session
	// signed in before the upgrade (no new sign-in), and tunnels both ways.
	newTerm := users[0].OpenTerminal("vm1")
	newTerm.Shell(pw)
	newTerm.TypeText("echo fresh-$((7*6))\r")
	newTerm.ScreenHas("fresh-42", 15*time.Second)
	var newTuns []*echoTunnel
	for _, tr := range []string{"quic", "tcp"} {
		c, err := Dial(t, clients[tr+addrs[1]], "vm1", 9001)
		if err != nil {
			t.Fatalf("new tunnel over %s after the upgrade: %v", tr, err)
		}
		t.Cleanup(func() { c.Close() })
		e := &echoTunnel{c: c}
		e.roundTrip(t, "new "+tr+"\n")
		newTuns = append(newTuns, e)
	}

	// An admin kills one of the old process's sessions through the new one.
	var killed string
	for _, s := range d.liveSessions() {
		if id := s["id"].(string); seen[id] && s["protocol"] == "tunnel" {
			killed = id
			break
		}
	}
	if out, err := d.Ctl(nil, "sessions", "kill", killed, "--reason", "after upgrade"); err != nil {
		t.Fatalf("kill an old session through the new process: %v\n%s", err, out)
	}
	if r := d.AuditRecord(killed, "session_end"); r["reason"] != "killed: by root: after upgrade" {
		t.Errorf("killed session's end record: %v", r)
	}

	// A reload in the new process withdraws tunnels from alice: every
	// tunnel ends, in both processes, with that reason; the terminals,
	// still allowed, go on.
	d.WriteConfig(strings.Replace(upgradeConfig(d.Dir), "protocols: [ssh, tunnel]", "protocols: [ssh]", 1))
	if err := syscall.Kill(up.NewPID, syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	d.WaitNotify("RELOADING=1", 10*time.Second)
	// A WebSocket tunnel's end waits up to 5 s for the client's close frame
	// (this test's clients do not read meanwhile).
	d.WaitNotify("READY=1", 20*time.Second)
	for i, e := range append(tuns, newTuns...) {
		e.c.SetReadDeadline(time.Now().Add(15 * time.Second))
		if n, err := e.c.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
			t.Errorf("tunnel %d still open after the reload withdrew tunnels: %d bytes, %v", i, n, err)
		}
		e.c.Close()
	}
	for i, tc := range terms {
		tc.TypeText(fmt.Sprintf("echo reloaded-%d-$((%d*7))\r", i, i))
		tc.ScreenHas(fmt.Sprintf("reloaded-%d-%d", i, i*7), 15*time.Second)
	}

	// The old sessions end; the old process then exits on its own, and
	// the new terminal still works: it was never the old process's.
	for _, tc := range terms {
		tc.TypeText("exit\r")
	}
	waitGone(t, oldPID, 60*time.Second)
	if st, err := d.Ctl(nil, "status"); err != nil || strings.Contains(st, "previous process") {
		t.Errorf("status once the old process has gone: %v\n%s", err, st)
	}
	newTerm.TypeText("echo still-$((8*8))\r")
	newTerm.ScreenHas("still-64", 15*time.Second)

	// Every session has exactly one start and one end record, with the
	// tunnels' exact byte counts.
	recs := d.auditRecords()
	for id := range seen {
		if len(recs[id]["session_start"]) != 1 || len(recs[id]["session_end"]) != 1 {
			t.Errorf("session %s: %d start and %d end records", id, len(recs[id]["session_start"]), len(recs[id]["session_end"]))
			continue
		}
		end := recs[id]["session_end"][0]
		want := "remote exit (status 0)"
		switch {
		case id == killed:
			want = "killed: by root: after upgrade"
		case end["protocol"] == "tunnel":
			want = "access revoked"
		}
		if end["bytes_exact"] != true || end["reason"] != want {
			t.Errorf("session %s ended %v, want the reason %q", id, end, want)
		}
	}
	var up64, down64 int64
	for _, e := range tuns {
		up64 += e.sent
		down64 += e.received
	}
	var recUp, recDown int64
	for id := range seen {
		if r := recs[id]["session_end"]; len(r) == 1 && r[0]["protocol"] == "tunnel" {
			recUp += int64(r[0]["bytes_up"].(float64))
			recDown += int64(r[0]["bytes_down"].(float64))
		}
	}
	if recUp != up64 || recDown != down64 {
		t.Errorf("tunnel records: %d up, %d down; the clients sent %d and got %d", recUp, recDown, up64, down64)
	}
	t.Logf("upgrade: %d sessions kept (%d terminals, %d tunnels), old pid %d exited, new pid %d serves", terminals+tunnels, terminals, tunnels, oldPID, up.NewPID)
}

// An upgrade whose new binary cannot start leaves the running process
// serving as before: its sessions, its sign-ins, new sessions, and a later
// upgrade that works.
func TestUpgradeThatFailsKeepsServing(t *testing.T) {
	u := startUpgradable(t, "running")
	d, bin := u.Daemon, u.bin
	addr := lab["BASTION_PUB6"]
	creds := LoginAs(t, "alice", addr)
	cl := TunnelClient(t, creds, addr, "quic")
	c, err := Dial(t, cl, "vm1", 9001)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	live := &echoTunnel{c: c}
	live.roundTrip(t, "before\n")

	stillServing := func(step string) {
		t.Helper()
		live.roundTrip(t, step+"\n")
		LoginAs(t, "alice", addr) // the state store is back
		c, err := Dial(t, TunnelClient(t, creds, addr, "tcp"), "vm1", 9001)
		if err != nil {
			t.Fatalf("%s: a new tunnel: %v", step, err)
		}
		(&echoTunnel{c: c}).roundTrip(t, "new after "+step+"\n")
		c.Close()
		if st, err := d.Ctl(nil, "status", "--json"); err != nil || !strings.Contains(st, `"version": "running"`) {
			t.Errorf("%s: status: %v\n%s", step, err, st)
		}
	}

	// A binary that is not bastiond at all.
	script := "#!/bin/sh\necho not a bastiond >&2\nexit 3\n"
	if err := os.WriteFile(bin+".new", []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	running, _ := os.ReadFile(bin) // to put back
	os.Rename(bin+".new", bin)
	out, err := d.Ctl(nil, "upgrade")
	if err == nil || !strings.Contains(out, "upgrade failed, the running bastiond still serves") || !strings.Contains(out, "exit status 3") {
		t.Errorf("upgrade to a binary that exits: %v\n%s", err, out)
	}
	stillServing("a binary that exits")

	// A bastiond that fails after the running one let go of the state
	// store: it cannot read the SSH CA's key. The running one takes the
	// store back.
	os.WriteFile(bin+".new", running, 0o755)
	os.Rename(bin+".new", bin)
	caKey := filepath.Join(d.Dir, "state", sshca.KeyFile)
	good, err := os.ReadFile(caKey)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(caKey, []byte("not a key\n"), 0o600)
	out, err = d.Ctl(nil, "upgrade")
	if err == nil || !strings.Contains(out, "the new process could not start") {
		t.Errorf("upgrade to a bastiond that cannot read its CA key: %v\n%s", err, out)
	}
	stillServing("a bastiond that fails after the release")

	// Put right, the same binary upgrades.
	os.WriteFile(caKey, good, 0o600)
	u.upgrade("fixed")
	live.roundTrip(t, "after the upgrade\n")
	live.c.Close()
	waitGone(t, d.Cmd.Process.Pid, 30*time.Second)
}

// Two upgrades in a row while the first process still serves a QUIC
// tunnel: its datagrams reach it through the second process, which stays
// until the first has gone; then both have exited and the third serves.
func TestUpgradeTwice(t *testing.T) {
	u := startUpgradable(t, "gen0")
	d := u.Daemon
	creds := LoginAs(t, "alice", lab["BASTION_PUB6"])
	open := func() *echoTunnel {
		t.Helper()
		c, err := Dial(t, TunnelClient(t, creds, lab["BASTION_PUB6"], "quic"), "vm1", 9001)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		e := &echoTunnel{c: c}
		e.roundTrip(t, "hello\n")
		return e
	}
	gen0 := d.Cmd.Process.Pid
	t0 := open()
	gen1 := u.upgrade("gen1").NewPID
	t1 := open()
	u.upgrade("gen2")
	t0.roundTrip(t, "gen0's tunnel after two upgrades\n")
	t1.roundTrip(t, "gen1's tunnel after one\n")
	if n := len(d.liveSessions()); n != 2 {
		t.Errorf("the newest process lists %d sessions, want both older ones'", n)
	}

	// gen1's own tunnel ends; gen1 stays, relaying gen0's datagrams.
	t1.c.Close()
	time.Sleep(2 * time.Second)
	if _, err := os.Stat(fmt.Sprintf("/proc/%d", gen1)); err != nil {
		t.Fatal("the middle process exited while the first still served through it")
	}
	t0.roundTrip(t, "still through the middle process\n")
	t0.c.Close()
	waitGone(t, gen0, 30*time.Second)
	waitGone(t, gen1, 30*time.Second)
	if st, err := d.Ctl(nil, "status", "--json"); err != nil || !strings.Contains(st, `"version": "gen2"`) {
		t.Errorf("status: %v\n%s", err, st)
	}
	open().roundTrip(t, "the third process serves\n")
}
