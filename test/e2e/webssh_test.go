package e2e

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"encoding/pem"
	"os"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

// webSSHConfig is the lab's configuration for browser SSH: alice's role
// records, bob's may log in only as the lab user and has no clipboard,
// carol audits. vm1 may be changed by edit (a YAML fragment replacing
// "ports: {ssh: 22}").
func webSSHConfig(dir, vm1, limits string) string {
	access := `access:
  groups:
    ops: [alice]
    auditors: [carol]
  roles:
    - name: ops-ssh
      subjects: [group:ops]
      targets: [vm1]
      protocols: [ssh]
      record: true
    - name: restricted
      subjects: [user:bob]
      targets: [vm1]
      protocols: [ssh]
      logins: [` + lab["LAB_USER"] + `]
      disable_clipboard: true
    - name: audit
      subjects: [group:auditors]
      auditor: true
limits:
  target_timeout: 2s
` + limits
	cfg := labConfig(dir, access)
	if vm1 != "" {
		cfg = strings.Replace(cfg, "ports: {ssh: 22}", vm1, 1)
	}
	return cfg
}

// pinVM1 pins vm1's host keys as an admin would: a scan, then a pin.
func pinVM1(t testing.TB, d *daemon) {
	t.Helper()
	if out, err := d.ctl(nil, "hostkeys", "scan", "vm1", "--pin"); err != nil {
		t.Fatalf("hostkeys scan vm1 --pin: %v\n%s", err, out)
	}
}

// signedIn is a signed-in browser of user at the bastion address addr.
func signedIn(t testing.TB, addr, user string) *webUser {
	t.Helper()
	u := newWebUser(t, addr)
	if code, page := u.signIn(user, tunnelPW, ""); code != 303 {
		t.Fatalf("sign in %s: %d\n%s", user, code, page)
	}
	return u
}

// shell signs tc in with a password and waits for the shell.
func (tc *termClient) shell(password string) wsMsg {
	tc.t.Helper()
	tc.send(wsMsg{Type: "auth", Login: lab["LAB_USER"], Password: password, Cols: 100, Rows: 30})
	return tc.message("ready", 20*time.Second)
}

// ended waits for the end message.
func (tc *termClient) ended() wsMsg { tc.t.Helper(); return tc.message("end", 30*time.Second) }

func TestWebSSH(t *testing.T) {
	d := startDaemonWith(t, viaFDs, func(dir string) string { return webSSHConfig(dir, "", "") })
	addLabUsers(t, d, "alice", "bob", "carol")
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("the daemon's log ends:\n%s", tail(d.log.String(), 6000))
		}
	})
	pw := lab["LAB_PASSWORD"]
	reload := func(vm1, limits string) {
		t.Helper()
		d.writeConfig(webSSHConfig(d.dir, vm1, limits))
		d.signal(syscall.SIGHUP)
		d.waitNotify("READY=1", 10*time.Second)
	}

	t.Run("a host key nobody approved", func(t *testing.T) {
		tc := signedIn(t, lab["BASTION_PUB4"], "alice").openTerminal("vm1")
		tc.send(wsMsg{Type: "auth", Login: lab["LAB_USER"], Password: pw, Cols: 80, Rows: 24})
		end := tc.ended()
		if end.Reason != "host_key_unknown" || !strings.Contains(end.Message, "administrator") {
			t.Errorf("end: %+v", end)
		}
		out, err := d.ctl(nil, "hostkeys", "list", "vm1")
		if err != nil || !strings.Contains(out, "pending") {
			t.Errorf("the key seen should wait for approval: %v\n%s", err, out)
		}
		if out, err := d.ctl(nil, "hostkeys", "pin", "vm1"); err != nil {
			t.Fatalf("pin: %v\n%s", err, out)
		}
	})

	for _, addr := range []string{lab["BASTION_PUB4"], lab["BASTION_PUB6"]} {
		t.Run("password, terminal, resize, paste, exit, via "+addr, func(t *testing.T) {
			tc := signedIn(t, addr, "alice").openTerminal("vm1")
			if h := tc.Hello; h.Target != "vm1" || !h.Recorded || !h.Clipboard || h.Certificate || h.Logins != nil {
				t.Errorf("hello: %+v", h)
			}
			tc.send(wsMsg{Type: "auth", Login: lab["LAB_USER"], Password: "not the password", Cols: 100, Rows: 30})
			if f := tc.message("auth_failed", 20*time.Second); !f.Retry {
				t.Errorf("auth_failed: %+v", f)
			}
			ready := tc.shell(pw)
			tc.typeText("stty size; echo $TERM; echo out-$((6*7))\r")
			tc.screenHas("30 100", 10*time.Second)
			tc.screenHas("xterm-256color", 5*time.Second)
			tc.screenHas("out-42", 5*time.Second)
			tc.send(wsMsg{Type: "resize", Cols: 132, Rows: 43})
			tc.typeText("stty size\r")
			tc.screenHas("43 132", 10*time.Second)
			tc.send(wsMsg{Type: "paste", Data: "echo pasted-$((2+3))\r"})
			tc.screenHas("pasted-5", 10*time.Second)
			tc.typeText("exit\r")
			end := tc.ended()
			if end.Reason != "exit" || end.ExitStatus == nil || *end.ExitStatus != 0 || end.Reconnect {
				t.Errorf("end: %+v", end)
			}

			r := d.auditRecord(ready.Session, "session_end")
			if r["reason"] != "remote exit (status 0)" || r["via"] != "browser" || r["login"] != lab["LAB_USER"] || r["user"] != "alice" {
				t.Errorf("end record: %v", r)
			}
			if up, down := r["bytes_up"].(float64), r["bytes_down"].(float64); up < 60 || down < 100 {
				t.Errorf("end record counts %v up, %v down", up, down)
			}
			path, _ := r["recording"].(string)
			cast, err := os.ReadFile(path) // closed before the end record was written
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
				if data, _ := os.ReadFile(d.dir + "/audit.jsonl"); strings.Contains(string(data), secret) {
					t.Errorf("the audit file contains the password %q", secret)
				}
				if strings.Contains(d.log.String(), secret) {
					t.Errorf("the daemon's log contains the password %q", secret)
				}
			}
			if !slices.ContainsFunc(endedRecords(d, "vm1"), func(r map[string]any) bool { return r["reason"] == "auth failed" }) {
				t.Error("the failed attempt left no end record with reason \"auth failed\"")
			}
		})
	}

	t.Run("private key, restricted login, no clipboard", func(t *testing.T) {
		key, err := os.ReadFile(lab["LAB_KEY"])
		if err != nil {
			t.Fatal(err)
		}
		bob := signedIn(t, lab["BASTION_PUB6"], "bob")
		tc := bob.openTerminal("vm1")
		if h := tc.Hello; h.Clipboard || h.Recorded || !slices.Equal(h.Logins, []string{lab["LAB_USER"]}) {
			t.Errorf("hello: %+v", h)
		}
		tc.send(wsMsg{Type: "auth", Login: lab["LAB_USER"], PrivateKey: string(key), Cols: 80, Rows: 24})
		tc.message("ready", 20*time.Second)
		tc.send(wsMsg{Type: "paste", Data: "echo pasted-$((2+3))\r"})
		tc.typeText("echo typed-$((1+1))\r")
		tc.screenHas("typed-2", 10*time.Second)
		if strings.Contains(tc.screenText(), "pasted") {
			t.Error("a paste went through with the clipboard disabled")
		}
		tc.typeText("exit\r")
		tc.ended()

		tc = bob.openTerminal("vm1")
		tc.send(wsMsg{Type: "auth", Login: "root", Password: "x", Cols: 80, Rows: 24})
		if end := tc.ended(); end.Reason != "denied" {
			t.Errorf("login root for bob: %+v", end)
		}
	})

	t.Run("an encrypted private key", func(t *testing.T) {
		pemKey := encryptedLabKey(t, "key passphrase")
		tc := signedIn(t, lab["BASTION_PUB4"], "alice").openTerminal("vm1")
		tc.send(wsMsg{Type: "auth", Login: lab["LAB_USER"], PrivateKey: pemKey, Passphrase: "wrong", Cols: 80, Rows: 24})
		if f := tc.message("auth_failed", 20*time.Second); !f.Retry || !strings.Contains(strings.ToLower(f.Message), "passphrase") {
			t.Errorf("wrong passphrase: %+v", f)
		}
		tc.send(wsMsg{Type: "auth", Login: lab["LAB_USER"], PrivateKey: pemKey, Passphrase: "key passphrase", Cols: 80, Rows: 24})
		tc.message("ready", 20*time.Second)
		if strings.Contains(d.log.String(), "key passphrase") {
			t.Error("the daemon's log contains the passphrase")
		}
	})

	t.Run("kill", func(t *testing.T) {
		tc := signedIn(t, lab["BASTION_PUB4"], "alice").openTerminal("vm1")
		ready := tc.shell(pw)
		if out, err := d.ctl(nil, "sessions", "kill", ready.Session, "--reason", "maintenance window"); err != nil {
			t.Fatalf("kill: %v\n%s", err, out)
		}
		if end := tc.ended(); end.Reason != "killed" || !strings.Contains(end.Message, "maintenance window") {
			t.Errorf("end: %+v", end)
		}
	})

	t.Run("certificate from the bastion's CA", func(t *testing.T) {
		ca, err := d.ctl(nil, "ca", "show")
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
		tc := signedIn(t, lab["BASTION_PUB6"], "alice").openTerminal("vm1")
		if !tc.Hello.Certificate {
			t.Fatalf("hello: %+v", tc.Hello)
		}
		tc.send(wsMsg{Type: "auth", Login: lab["LAB_USER"], Cols: 80, Rows: 24})
		tc.message("ready", 20*time.Second)
		tc.typeText("echo cert-$((40+2))\r")
		tc.screenHas("cert-42", 10*time.Second)
	})

	t.Run("idle warning, then idle end", func(t *testing.T) {
		reload("", "  ssh: {idle_timeout: 4s}\n")
		defer reload("", "")
		tc := signedIn(t, lab["BASTION_PUB4"], "alice").openTerminal("vm1")
		if tc.Hello.IdleTimeout != 4 {
			t.Errorf("hello idle_timeout %d, want 4", tc.Hello.IdleTimeout)
		}
		tc.shell(pw)
		if w := tc.message("idle_warning", 10*time.Second); w.Seconds < 1 || w.Seconds > 4 {
			t.Errorf("idle warning: %+v", w)
		}
		if end := tc.ended(); end.Reason != "idle" {
			t.Errorf("end: %+v", end)
		}
	})

	t.Run("the machine goes away", func(t *testing.T) {
		tc := signedIn(t, lab["BASTION_PUB4"], "alice").openTerminal("vm1")
		ready := tc.shell(pw)
		port := "vm1p"
		if out, err := exec.Command("ip", "-n", lab["NS_BASTION"], "link", "set", port, "down").CombinedOutput(); err != nil {
			t.Fatalf("link down: %v\n%s", err, out)
		}
		defer exec.Command("ip", "-n", lab["NS_BASTION"], "link", "set", port, "up").Run()
		tc.typeText("echo lost\r") // unacknowledged data meets the target timeout (2s)
		end := tc.ended()
		if end.Reason != "network" || !end.Reconnect {
			t.Errorf("end: %+v", end)
		}
		if r := d.auditRecord(ready.Session, "session_end"); r["reason"] != "target unreachable" {
			t.Errorf("end record: %v", r)
		}
	})

	t.Run("a changed host key", func(t *testing.T) {
		pub, _, _ := ed25519.GenerateKey(rand.Reader)
		impostor, _ := ssh.NewPublicKey(pub)
		if out, err := d.ctl(nil, "hostkeys", "forget", "vm1"); err != nil {
			t.Fatalf("forget: %v\n%s", err, out)
		}
		if out, err := d.ctlStdin(string(ssh.MarshalAuthorizedKey(impostor)), "hostkeys", "pin", "vm1", "--key-file", "-"); err != nil {
			t.Fatalf("pin the impostor key: %v\n%s", err, out)
		}
		defer func() {
			d.ctl(nil, "hostkeys", "forget", "vm1")
			pinVM1(t, d)
		}()
		tc := signedIn(t, lab["BASTION_PUB4"], "alice").openTerminal("vm1")
		tc.send(wsMsg{Type: "auth", Login: lab["LAB_USER"], Password: pw, Cols: 80, Rows: 24})
		end := tc.ended()
		if end.Reason != "host_key_mismatch" || end.Reconnect {
			t.Errorf("end: %+v", end)
		}
		last := endedRecords(d, "vm1")
		if r := last[len(last)-1]; !strings.HasPrefix(r["reason"].(string), "host key mismatch") {
			t.Errorf("end record: %v", r)
		}
	})
}

// encryptedLabKey is the lab user's key, encrypted with passphrase.
func encryptedLabKey(t testing.TB, passphrase string) string {
	t.Helper()
	data, err := os.ReadFile(lab["LAB_KEY"])
	if err != nil {
		t.Fatal(err)
	}
	key, err := ssh.ParseRawPrivateKey(data)
	if err != nil {
		t.Fatal(err)
	}
	block, err := ssh.MarshalPrivateKeyWithPassphrase(key, "", []byte(passphrase))
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(block))
}

// endedRecords are the session_end records of sessions to target, oldest first.
func endedRecords(d *daemon, target string) []map[string]any {
	d.t.Helper()
	var out []map[string]any
	data, _ := os.ReadFile(d.dir + "/audit.jsonl")
	for _, line := range strings.Split(string(data), "\n") {
		var r map[string]any
		if json.Unmarshal([]byte(line), &r) == nil && r["event"] == "session_end" && r["target"] == target {
			out = append(out, r)
		}
	}
	return out
}
