package security

import (
	"bufio"
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bastiond/bastiond/api/tunnelwire"
	"github.com/bastiond/bastiond/test/e2e"
)

// recordedAccess: alice's SSH on vm1 and RDP on vm2 are recorded; her
// tunnel role reaches every port of every machine, carol audits.
const recordedAccess = `access:
  groups:
    ops: [alice]
    auditors: [carol]
  roles:
    - name: recorded
      subjects: [group:ops]
      targets: [vm1, vm2]
      protocols: [ssh, rdp]
      record: true
    - name: tunnels
      subjects: [group:ops]
      targets: ["*"]
      protocols: [tunnel]
    - name: audit
      subjects: [group:auditors]
      auditor: true
limits:
  target_timeout: 2s
`

// Invariant 11: a session that a role says must be recorded is recorded,
// or refused; never let through unrecorded.
func TestInvariant11ARecordedRoleIsRecordedOrRefused(t *testing.T) {
	e2e.NeedLab(t)
	d := e2e.StartDaemonWith(t, e2e.ViaFDs, func(dir string) string { return e2e.LabConfig(dir, recordedAccess) })
	removeFirewallAtEnd(t)
	e2e.AddLabUsers(t, d, "alice", "carol")
	e2e.PinVM1(t, d)
	e2e.PinVM2(t, d)
	pub4, pub6, pw := e2e.LabValue(t, "BASTION_PUB4"), e2e.LabValue(t, "BASTION_PUB6"), e2e.LabValue(t, "LAB_PASSWORD")
	client4 := e2e.LabValue(t, "CLIENT4") // the source the bastion sees of connections to pub4

	t.Run("browser SSH is recorded", func(t *testing.T) {
		tc := e2e.SignedIn(t, pub6, "alice").OpenTerminal("vm1")
		if ready := tc.Shell(pw); ready.Session == "" {
			t.Fatalf("ready: %+v", ready)
		}
		tc.TypeText("echo REC-$((6*7))-$((1000+337))\r")
		tc.ScreenHas("REC-42-1337", 10*time.Second)
		tc.TypeText("exit\r")
		tc.Ended()
		end := lastRecord(t, d, "session_end", "vm1")
		path, _ := end["recording"].(string)
		sum, _ := end["recording_sha256"].(string)
		if !strings.HasSuffix(path, ".cast.gz") || len(sum) != 64 {
			t.Fatalf("end record names no recording: %v", end)
		}
		if cast := gunzipFile(t, path); !strings.Contains(cast, "REC-42-1337") || !strings.HasPrefix(cast, `{"version":2`) {
			t.Errorf("the recording lacks the output:\n%s", cast)
		}
		if out, err := d.Ctl(nil, "recordings", "verify", strings.TrimSuffix(filepath.Base(path), ".cast.gz")); err != nil ||
			!strings.Contains(out, " ok ") {
			t.Errorf("recordings verify: %v\n%s", err, out)
		}
	})

	t.Run("a tunnel that would carry a recorded protocol is refused", func(t *testing.T) {
		tun := e2e.TunnelClient(t, e2e.LoginAs(t, "alice", pub4), pub4, "quic")
		rdp, _ := strconv.Atoi(e2e.LabValue(t, "VM2_RDP_NLA_PORT"))
		for _, c := range []struct {
			target string
			port   uint16
		}{{"vm1", 22}, {"vm2", uint16(rdp)}} {
			conn, err := e2e.Dial(t, tun, c.target, c.port)
			if err == nil {
				conn.Close()
				t.Errorf("a tunnel to %s:%d was let through unrecorded", c.target, c.port)
				continue
			}
			e2e.WantRefusal(t, err, tunnelwire.StatusDenied, "must be recorded")
			e2e.WantRefusal(t, err, tunnelwire.StatusDenied, "end-to-end encrypted")
			refused := waitEvent(t, d, func(e map[string]any) bool {
				return e["event"] == "connect_refused" && e["reason"] == "recording_unavailable" && e["target"] == c.target &&
					e["port"] == float64(c.port) && e["actor"] == "alice" && e["source"] == client4
			})
			if refused == nil {
				t.Errorf("no connect_refused event for the tunnel to %s:%d", c.target, c.port)
			}
		}
	})

	t.Run("browser RDP of a recorded role is recorded", func(t *testing.T) {
		u := e2e.SignedIn(t, pub4, "alice")
		tk := u.ConnectTicket("vm2", "rdp")
		dc := u.OpenDesktop()
		if resp := dc.Request(tk, e2e.AnyTLS); resp.Error != nil || resp.ServerCertChain == nil {
			t.Fatalf("the desktop did not open: %+v", resp)
		}
		dc.Close()
		end := lastRecord(t, d, "session_end", "vm2")
		path, _ := end["recording"].(string)
		if !strings.HasSuffix(path, ".rdp.gz") {
			t.Fatalf("the desktop's end record names no recording: %v", end)
		}
		id := end["session"].(string)
		if rec := gunzipFile(t, path); !strings.Contains(rec, `"kind":"rdp"`) || !strings.Contains(rec, id) {
			t.Errorf("the recording's header: %.200q", rec)
		}
		if waitEvent(t, d, func(e map[string]any) bool {
			return e["event"] == "recording_closed" && e["session"] == id && len(fmt.Sprint(e["recording_sha256"])) == 64
		}) == nil {
			t.Error("no recording_closed event with the desktop recording's hash")
		}
		if out, err := d.Ctl(nil, "recordings", "verify", id); err != nil || !strings.Contains(out, " ok ") {
			t.Errorf("recordings verify: %v\n%s", err, out)
		}
	})

	t.Run("a full disk refuses the next recorded session", func(t *testing.T) {
		dir := filepath.Join(d.Dir, "state", "recordings")
		fillInDaemon(t, d, dir)
		tc := e2e.SignedIn(t, pub4, "alice").OpenTerminal("vm1")
		tc.Send(e2e.WSMsg{Type: "auth", Login: e2e.LabValue(t, "LAB_USER"), Password: pw, Cols: 80, Rows: 24})
		end := tc.Ended()
		if end.Reason != "error" || !strings.Contains(end.Message, "cannot write its recording (no space left on device)") {
			t.Errorf("end: %+v", end)
		}
		if waitEvent(t, d, func(e map[string]any) bool {
			return e["event"] == "session_end" && e["target"] == "vm1" && e["reason"] == "recording failed: no space left on device"
		}) == nil {
			t.Errorf("no end record says the recording failed; the last one: %v", lastRecord(t, d, "session_end", "vm1"))
		}
		if waitEvent(t, d, func(e map[string]any) bool {
			return e["event"] == "recording_failed" && e["reason"] == "create_failed" && e["actor"] == "alice" && e["source"] == client4
		}) == nil {
			t.Error("no recording_failed event")
		}
		u := e2e.SignedIn(t, pub4, "alice")
		if resp := u.OpenDesktop().Request(u.ConnectTicket("vm2", "rdp"), e2e.AnyTLS); resp.Error == nil {
			t.Errorf("a desktop opened with its recording impossible: %+v", resp)
		}
	})

	t.Run("-check-config refuses record with tunnel rights", func(t *testing.T) {
		bad := e2e.LabConfig(d.Dir, strings.Replace(recordedAccess, "protocols: [ssh, rdp]", "protocols: [ssh, rdp, tunnel]", 1))
		out, err := checkConfig(t, bad)
		if err == nil {
			t.Fatalf("-check-config accepted record: true with tunnel rights:\n%s", out)
		}
		want := regexp.MustCompile(`bastiond\.yaml:\d+: access\.roles\[0\]\.protocols\[2\]: "tunnel" cannot go with record: true: ` +
			`a native tunnel carries an end-to-end encrypted protocol the bastion cannot see into`)
		if !want.MatchString(out) {
			t.Errorf("-check-config said:\n%s", out)
		}
		// Nor can a reload bring it in: the running configuration stays.
		d.WriteConfig(bad)
		d.Signal(syscall.SIGHUP)
		d.WaitNotify("RELOADING=1", 5*time.Second)
		if n := d.WaitNotify("READY=1", 10*time.Second); !strings.Contains(n, "failed") {
			t.Errorf("the reload was not refused: %s", n)
		}
	})

	t.Run("-check-config refuses a recordings_dir that cannot take recordings", func(t *testing.T) {
		notDir, missing := filepath.Join(t.TempDir(), "file"), filepath.Join(t.TempDir(), "not-mounted")
		os.WriteFile(notDir, nil, 0o600)
		for _, c := range []struct{ dir, want string }{
			{missing, "does not exist (a shared directory must be mounted before bastiond starts)"},
			{notDir, "is not a directory"},
		} {
			out, err := checkConfig(t, e2e.LabConfig(d.Dir, recordedAccess)+"recordings_dir: "+c.dir+"\n")
			if err == nil || !strings.Contains(out, "recordings_dir: recording: "+c.dir+" ") || !strings.Contains(out, c.want) {
				t.Errorf("-check-config with recordings_dir %s: %v\n%s", c.dir, err, out)
			}
		}
		if _, err := os.Stat(missing); err == nil {
			t.Error("-check-config made the missing directory")
		}
	})
}

// fillInDaemon mounts a 64 KiB tmpfs on dir in the daemon's mount
// namespace (`ip netns exec` gave it one of its own) and fills it: the
// recordings directory of a full disk. It is unmounted at the end.
func fillInDaemon(t *testing.T, d *e2e.Daemon, dir string) {
	t.Helper()
	pid := strconv.Itoa(d.Cmd.Process.Pid)
	in := func(args ...string) ([]byte, error) {
		return exec.Command("nsenter", append([]string{"-t", pid, "-m", "--"}, args...)...).CombinedOutput()
	}
	if out, err := in("mkdir", "-p", dir); err != nil {
		t.Fatalf("mkdir: %v\n%s", err, out)
	}
	if out, err := in("mount", "-t", "tmpfs", "-o", "size=64k,mode=0700", "tmpfs", dir); err != nil {
		t.Fatalf("mount a tmpfs: %v\n%s", err, out)
	}
	t.Cleanup(func() {
		if out, err := in("umount", dir); err != nil && d.Cmd.ProcessState == nil {
			t.Errorf("umount: %v\n%s", err, out)
		}
	})
	out, _ := in("dd", "if=/dev/zero", "of="+filepath.Join(dir, "filler"), "bs=4k")
	if !strings.Contains(string(out), "No space left on device") {
		t.Fatalf("filling the tmpfs: %s", out)
	}
}

// lastRecord is the last audit record of type ev about target.
func lastRecord(t *testing.T, d *e2e.Daemon, ev, target string) map[string]any {
	t.Helper()
	e := waitEvent(t, d, func(e map[string]any) bool { return e["event"] == ev && e["target"] == target })
	if e == nil {
		t.Fatalf("no %s record for %s", ev, target)
	}
	return e
}

// waitEvent waits up to 10 s for an audit line that match accepts, and
// returns the last such line, or nil.
func waitEvent(t *testing.T, d *e2e.Daemon, match func(map[string]any) bool) map[string]any {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		var last map[string]any
		if f, err := os.Open(d.AuditFile()); err == nil {
			sc := bufio.NewScanner(f)
			sc.Buffer(make([]byte, 1<<20), 1<<20)
			for sc.Scan() {
				var e map[string]any
				if json.Unmarshal(sc.Bytes(), &e) == nil && match(e) {
					last = e
				}
			}
			f.Close()
		}
		if last != nil || time.Now().After(deadline) {
			return last
		}
	}
}

// gunzipFile reads a compressed recording.
func gunzipFile(t *testing.T, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(zr)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatal(err)
	}
	return string(b)
}
