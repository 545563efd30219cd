package e2e

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"os"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestWebSSH(t *testing.T) {
	d := StartDaemonWith(t, ViaFDs, func(dir string) string { return WebSSHConfig(dir, "", "") })
	AddLabUsers(t, d, "alice", "bob", "carol")
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("the daemon's log ends:\n%s", tail(d.Log.String(), 6000))
		}
	})
	pw := lab["LAB_PASSWORD"]
	reload := func(vm1, limits string) {
		t.Helper()
		d.WriteConfig(WebSSHConfig(d.Dir, vm1, limits))
		d.Signal(syscall.SIGHUP)
		d.WaitNotify("READY=1", 10*time.Second)
	}

	t.Run("a host key nobody approved", func(t *testing.T) {
		tc := SignedIn(t, lab["BASTION_PUB4"], "alice").OpenTerminal("vm1")
		tc.Send(WSMsg{Type: "auth", Login: lab["LAB_USER"], Password: pw, Cols: 80, Rows: 24})
		end := tc.Ended()
		if end.Reason != "host_key_unknown" || !strings.Contains(end.Message, "administrator") {
			t.Errorf("end: %+v", end)
		}
		out, err := d.Ctl(nil, "hostkeys", "list", "vm1")
		if err != nil || !strings.Contains(out, "pending") {
			t.Errorf("the key seen should wait for approval: %v\n%s", err, out)
		}
		if out, err := d.Ctl(nil, "hostkeys", "pin", "vm1"); err != nil {
			t.Fatalf("pin: %v\n%s", err, out)
		}
	})

	for _, addr := range []string{lab["BASTION_PUB4"], lab["BASTION_PUB6"]} {
		t.Run("password, terminal, resize, paste, exit, via "+addr, func(t *testing.T) {
			tc := SignedIn(t, addr, "alice").OpenTerminal("vm1")
			if h := tc.Hello; h.Target != "vm1" || !h.Recorded || !h.Clipboard || h.Certificate || h.Logins != nil {
				t.Errorf("hello: %+v", h)
			}
			tc.Send(WSMsg{Type: "auth", Login: lab["LAB_USER"], Password: "not the password", Cols: 100, Rows: 30})
			if f := tc.Message("auth_failed", 20*time.Second); !f.Retry {
				t.Errorf("auth_failed: %+v", f)
			}
			ready := tc.Shell(pw)
			tc.TypeText("stty size; echo $TERM; echo out-$((6*7))\r")
			tc.ScreenHas("30 100", 10*time.Second)
			tc.ScreenHas("xterm-256color", 5*time.Second)
			tc.ScreenHas("out-42", 5*time.Second)
			tc.Send(WSMsg{Type: "resize", Cols: 132, Rows: 43})
			tc.TypeText("stty size\r")
			tc.ScreenHas("43 132", 10*time.Second)
			tc.Send(WSMsg{Type: "paste", Data: "echo pasted-$((2+3))\r"})
			tc.ScreenHas("pasted-5", 10*time.Second)
			tc.TypeText("exit\r")
			end := tc.Ended()
			if end.Reason != "exit" || end.ExitStatus == nil || *end.ExitStatus != 0 || end.Reconnect {
				t.Errorf("end: %+v", end)
			}

			r := d.AuditRecord(ready.Session, "session_end")
			if r["reason"] != "remote exit (status 0)" || r["via"] != "browser" || r["login"] != lab["LAB_USER"] || r["user"] != "alice" {
				t.Errorf("end record: %v", r)
			}
			if up, down := r["bytes_up"].(float64), r["bytes_down"].(float64); up < 60 || down < 100 {
				t.Errorf("end record counts %v up, %v down", up, down)
			}
			path, _ := r["recording"].(string)
			raw, err := os.ReadFile(path) // closed before the end record was written
			if err != nil {
				t.Fatalf("recording %q: %v", path, err)
			}
			if sum := sha256.Sum256(raw); r["recording_sha256"] != hex.EncodeToString(sum[:]) {
				t.Errorf("end record's recording_sha256 %v, the file's %x", r["recording_sha256"], sum)
			}
			zr, err := gzip.NewReader(bytes.NewReader(raw))
			if err != nil {
				t.Fatalf("recording %q: %v", path, err)
			}
			cast, err := io.ReadAll(zr)
			if err != nil {
				t.Fatalf("recording %q: %v", path, err)
			}
			for _, want := range []string{`"version":2`, "out-42", "43 132", "pasted-5"} {
				if !strings.Contains(string(cast), want) {
					t.Errorf("the recording lacks %q", want)
				}
			}
			for _, secret := range []string{pw, "not the password"} {
				if strings.Contains(string(cast), secret) {
					t.Errorf("the recording contains the password %q", secret)
				}
				if data, _ := os.ReadFile(d.Dir + "/audit.jsonl"); strings.Contains(string(data), secret) {
					t.Errorf("the audit file contains the password %q", secret)
				}
				if strings.Contains(d.Log.String(), secret) {
					t.Errorf("the daemon's log contains the password %q", secret)
				}
			}
			if !slices.ContainsFunc(EndedRecords(d, "vm1"), func(r map[string]any) bool { return r["reason"] == "auth failed" }) {
				t.Error("the failed attempt left no end record with reason \"auth failed\"")
			}
		})
	}

	t.Run("private key, restricted login, no clipboard", func(t *testing.T) {
		key, err := os.ReadFile(lab["LAB_KEY"])
		if err != nil {
			t.Fatal(err)
		}
		bob := SignedIn(t, lab["BASTION_PUB6"], "bob")
		tc := bob.OpenTerminal("vm1")
		if h := tc.Hello; h.Clipboard || h.Recorded || !slices.Equal(h.Logins, []string{lab["LAB_USER"]}) {
			t.Errorf("hello: %+v", h)
		}
		tc.Send(WSMsg{Type: "auth", Login: lab["LAB_USER"], PrivateKey: string(key), Cols: 80, Rows: 24})
		tc.Message("ready", 20*time.Second)
		tc.Send(WSMsg{Type: "paste", Data: "echo pasted-$((2+3))\r"})
		tc.TypeText("echo typed-$((1+1))\r")
		tc.ScreenHas("typed-2", 10*time.Second)
		if strings.Contains(tc.screenText(), "pasted") {
			t.Error("a paste went through with the clipboard disabled")
		}
		tc.TypeText("exit\r")
		tc.Ended()

		tc = bob.OpenTerminal("vm1")
		tc.Send(WSMsg{Type: "auth", Login: "root", Password: "x", Cols: 80, Rows: 24})
		if end := tc.Ended(); end.Reason != "denied" {
			t.Errorf("login root for bob: %+v", end)
		}
	})

	t.Run("an encrypted private key", func(t *testing.T) {
		pemKey := EncryptedLabKey(t, "key passphrase")
		tc := SignedIn(t, lab["BASTION_PUB4"], "alice").OpenTerminal("vm1")
		tc.Send(WSMsg{Type: "auth", Login: lab["LAB_USER"], PrivateKey: pemKey, Passphrase: "wrong", Cols: 80, Rows: 24})
		if f := tc.Message("auth_failed", 20*time.Second); !f.Retry || !strings.Contains(strings.ToLower(f.Message), "passphrase") {
			t.Errorf("wrong passphrase: %+v", f)
		}
		tc.Send(WSMsg{Type: "auth", Login: lab["LAB_USER"], PrivateKey: pemKey, Passphrase: "key passphrase", Cols: 80, Rows: 24})
		tc.Message("ready", 20*time.Second)
		if strings.Contains(d.Log.String(), "key passphrase") {
			t.Error("the daemon's log contains the passphrase")
		}
	})

	t.Run("kill", func(t *testing.T) {
		tc := SignedIn(t, lab["BASTION_PUB4"], "alice").OpenTerminal("vm1")
		ready := tc.Shell(pw)
		if out, err := d.Ctl(nil, "sessions", "kill", ready.Session, "--reason", "maintenance window"); err != nil {
			t.Fatalf("kill: %v\n%s", err, out)
		}
		if end := tc.Ended(); end.Reason != "killed" || !strings.Contains(end.Message, "maintenance window") {
			t.Errorf("end: %+v", end)
		}
	})

	t.Run("certificate from the bastion's CA", func(t *testing.T) {
		ca, err := d.Ctl(nil, "ca", "show")
		if err != nil {
			t.Fatalf("ca show: %v\n%s", err, ca)
		}
		line := strings.SplitN(ca, "\n", 2)[0] // the hint goes to stderr, after
		if err := os.WriteFile(lab["VM1_TRUSTED_CA"], []byte(line+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		defer os.WriteFile(lab["VM1_TRUSTED_CA"], nil, 0o644)
		reload("ports: {ssh: 22}\n      ssh_certificates: true", "")
		defer reload("", "")
		tc := SignedIn(t, lab["BASTION_PUB6"], "alice").OpenTerminal("vm1")
		if !tc.Hello.Certificate {
			t.Fatalf("hello: %+v", tc.Hello)
		}
		tc.Send(WSMsg{Type: "auth", Login: lab["LAB_USER"], Cols: 80, Rows: 24})
		tc.Message("ready", 20*time.Second)
		tc.TypeText("echo cert-$((40+2))\r")
		tc.ScreenHas("cert-42", 10*time.Second)
	})

	t.Run("idle warning, then idle end", func(t *testing.T) {
		reload("", "  ssh: {idle_timeout: 4s}\n")
		defer reload("", "")
		tc := SignedIn(t, lab["BASTION_PUB4"], "alice").OpenTerminal("vm1")
		if tc.Hello.IdleTimeout != 4 {
			t.Errorf("hello idle_timeout %d, want 4", tc.Hello.IdleTimeout)
		}
		tc.Shell(pw)
		if w := tc.Message("idle_warning", 10*time.Second); w.Seconds < 1 || w.Seconds > 4 {
			t.Errorf("idle warning: %+v", w)
		}
		if end := tc.Ended(); end.Reason != "idle" {
			t.Errorf("end: %+v", end)
		}
	})

	t.Run("the machine goes away", func(t *testing.T) {
		tc := SignedIn(t, lab["BASTION_PUB4"], "alice").OpenTerminal("vm1")
		ready := tc.Shell(pw)
		port := "vm1p"
		if out, err := exec.Command("ip", "-n", lab["NS_BASTION"], "link", "set", port, "down").CombinedOutput(); err != nil {
			t.Fatalf("link down: %v\n%s", err, out)
		}
		defer exec.Command("ip", "-n", lab["NS_BASTION"], "link", "set", port, "up").Run()
		tc.TypeText("echo lost\r") // unacknowledged data meets the target timeout (2s)
		end := tc.Ended()
		if end.Reason != "network" || !end.Reconnect {
			t.Errorf("end: %+v", end)
		}
		if r := d.AuditRecord(ready.Session, "session_end"); r["reason"] != "target unreachable" {
			t.Errorf("end record: %v", r)
		}
	})

}
