package webssh

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
	"go.uber.org/zap"
	"golang.org/x/crypto/ssh"

	"github.com/bastiond/bastiond/internal/audit"
	"github.com/bastiond/bastiond/proxy/broker"
	"github.com/bastiond/bastiond/proxy/hostkeys"
	"github.com/bastiond/bastiond/proxy/recording"
)

func TestTerminal(t *testing.T) {
	d := startSSHD(t, sshdConfig{})
	for _, tc := range []struct {
		name string
		ipv6 bool
	}{{"IPv4", false}, {"IPv6", true}} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.ipv6 && !d.ipv6 {
				t.Skip("no IPv6 loopback here")
			}
			h := newHarness(t, d, d.addr(tc.ipv6), nil)
			c := h.dial()
			hello := c.expect(typeHello)
			if hello.str("target") != "vm1" || fmt.Sprint(hello["logins"]) != "["+testUser+"]" ||
				hello["certificate"] != false || hello["clipboard"] != true || hello["recorded"] != false {
				t.Errorf("hello %v", hello)
			}
			c.auth(map[string]any{"password": d.password})
			ready := c.expect(typeReady)
			s := h.session(0)
			if ready.str("session") != s.id {
				t.Errorf("ready %v, want session %s", ready, s.id)
			}
			if s.login != testUser {
				t.Errorf("session opened for login %q", s.login)
			}
			c.run("stty size", "40 120")
			c.send(map[string]any{"type": typeResize, "cols": 132, "rows": 43})
			c.run("stty size", "43 132")
			c.run("echo LANG=$LANG", "LANG=C.UTF-8")
			c.run("printf 'caf\\303\\251 \\342\\202\\254\\n'", "café €")
			c.typeText("exit 3\r")
			end := c.expectEnd(endExit)
			if st, ok := end["exit_status"].(float64); !ok || st != 3 {
				t.Errorf("end %v, want exit_status 3", end)
			}
			if end.str("message") != "The remote shell exited (status 3)." || end["reconnect"] != false {
				t.Errorf("end %v", end)
			}
			h.waitServed()
			if r := s.EndReason(); r != "remote exit (status 3)" {
				t.Errorf("session ended with %q", r)
			}
			if s.up.Load() < int64(len("stty size\r")) || s.down.Load() < int64(len(c.out.String())) {
				t.Errorf("counted %d up, %d down; the terminal showed %d bytes", s.up.Load(), s.down.Load(), c.out.Len())
			}
			if h.sessionCount() != 1 {
				t.Errorf("%d sessions opened", h.sessionCount())
			}
		})
	}
}

func TestClientCloses(t *testing.T) {
	d := startSSHD(t, sshdConfig{})
	h := newHarness(t, d, d.addr(false), nil)
	c := h.dial()
	c.login(map[string]any{"password": d.password})
	c.run("echo up-$((1+1))", "up-2")
	c.ws.Close(websocket.StatusGoingAway, "tab closed")
	h.waitServed()
	if r := h.session(0).EndReason(); r != broker.ReasonClientClosed {
		t.Errorf("session ended with %q, want %q", r, broker.ReasonClientClosed)
	}
}

func TestPageStopsAnswering(t *testing.T) {
	d := startSSHD(t, sshdConfig{})
	h := newHarness(t, d, d.addr(false), nil) // pings every second
	c := h.dial()
	c.login(map[string]any{"password": d.password})
	c.run("echo up-$((1+1))", "up-2")
	// The page reads nothing more, so it answers no ping.
	h.waitServed()
	if r := h.session(0).EndReason(); r != broker.ReasonClientError+"no answer to pings" {
		t.Errorf("session ended with %q", r)
	}
}

func TestMachineStopsAnswering(t *testing.T) {
	d := startSSHD(t, sshdConfig{})
	var frozen *freezableConn
	h := newHarness(t, d, d.addr(false), func(p *Params) {
		open := p.Open
		p.Open = func(ctx context.Context, login string, roles []string) (Session, error) {
			s, err := open(ctx, login, roles)
			if err == nil {
				ts := s.(*testSession)
				frozen = &freezableConn{Conn: ts.conn, closed: make(chan struct{})}
				ts.conn = frozen
			}
			return s, err
		}
	})
	c := h.dial()
	c.login(map[string]any{"password": d.password})
	c.run("echo up-$((1+1))", "up-2")
	frozen.frozen.Store(true)
	if m := c.expectEnd(endNetwork); m["reconnect"] != true {
		t.Errorf("end %v", m)
	}
	h.waitServed()
	if r := h.session(0).EndReason(); r != broker.ReasonTargetUnreachable {
		t.Errorf("session ended with %q", r)
	}
}

// freezableConn stops delivering what the machine sends while frozen, as
// a machine that hangs.
type freezableConn struct {
	net.Conn
	frozen    atomic.Bool
	closed    chan struct{}
	closeOnce sync.Once
}

func (c *freezableConn) Read(p []byte) (int, error) {
	for c.frozen.Load() {
		select {
		case <-c.closed:
			return 0, net.ErrClosed
		case <-time.After(10 * time.Millisecond):
		}
	}
	return c.Conn.Read(p)
}

func (c *freezableConn) Close() error {
	c.closeOnce.Do(func() { close(c.closed) })
	return c.Conn.Close()
}

func TestPrivateKey(t *testing.T) {
	d := startSSHD(t, sshdConfig{})
	_, otherKey, _ := newKey("")
	type step struct {
		fields  map[string]any
		refused string // a word of the auth_failed message; "": the shell opens
	}
	tests := []struct {
		name     string
		steps    []step
		sessions int
	}{
		{"plain", []step{{map[string]any{"private_key": string(d.keyPEM)}, ""}}, 1},
		{"encrypted", []step{{map[string]any{"private_key": string(d.encKeyPEM), "passphrase": d.passphrase}, ""}}, 1},
		{"passphrase for a plain key", []step{{map[string]any{"private_key": string(d.keyPEM), "passphrase": "unneeded"}, ""}}, 1},
		{"passphrase missing, then wrong, then right", []step{
			{map[string]any{"private_key": string(d.encKeyPEM)}, "encrypted"},
			{map[string]any{"private_key": string(d.encKeyPEM), "passphrase": "wrong"}, "Wrong passphrase"},
			{map[string]any{"private_key": string(d.encKeyPEM), "passphrase": d.passphrase}, ""},
		}, 1},
		{"not a key", []step{
			{map[string]any{"private_key": "hello"}, "not a private key"},
			{map[string]any{"private_key": string(d.keyPEM)}, ""},
		}, 1},
		{"key not authorized", []step{
			{map[string]any{"private_key": string(otherKey)}, "did not accept this key"},
			{map[string]any{"private_key": string(d.keyPEM)}, ""},
		}, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, d, d.addr(false), nil)
			c := h.dial()
			c.expect(typeHello)
			for _, st := range tt.steps {
				c.auth(st.fields)
				if st.refused == "" {
					c.expect(typeReady)
					break
				}
				m := c.expect(typeAuthFailed)
				if !strings.Contains(m.str("message"), st.refused) || m["retry"] != true {
					t.Fatalf("auth_failed %v, want %q and a retry", m, st.refused)
				}
			}
			c.run("id -un", testUser)
			c.typeText("exit\r")
			if end := c.expectEnd(endExit); end["exit_status"] != 0.0 {
				t.Errorf("end %v", end)
			}
			h.waitServed()
			if n := h.sessionCount(); n != tt.sessions {
				t.Errorf("%d sessions opened, want %d", n, tt.sessions)
			}
			if n := h.sessionCount(); n > 1 && h.session(0).EndReason() != broker.ReasonAuthFailed {
				t.Errorf("refused attempt ended with %q", h.session(0).EndReason())
			}
		})
	}
}

func TestWrongPassword(t *testing.T) {
	d := startSSHD(t, sshdConfig{})
	t.Run("retry", func(t *testing.T) {
		h := newHarness(t, d, d.addr(false), nil)
		c := h.dial()
		c.expect(typeHello)
		c.auth(map[string]any{"password": "wrong-" + d.password})
		if m := c.expect(typeAuthFailed); m.str("message") != "Wrong login name or password." || m["retry"] != true {
			t.Errorf("auth_failed %v", m)
		}
		c.auth(map[string]any{"password": d.password})
		c.expect(typeReady)
		c.run("id -un", testUser)
		c.typeText("exit\r")
		c.expectEnd(endExit)
		h.waitServed()
		if r := h.session(0).EndReason(); r != broker.ReasonAuthFailed {
			t.Errorf("failed attempt ended with %q, want %q", r, broker.ReasonAuthFailed)
		}
		if r := h.session(1).EndReason(); r != "remote exit (status 0)" {
			t.Errorf("second attempt ended with %q", r)
		}
	})
	t.Run("three times", func(t *testing.T) {
		h := newHarness(t, d, d.addr(false), nil)
		c := h.dial()
		c.expect(typeHello)
		for i := range maxAttempts {
			c.auth(map[string]any{"password": fmt.Sprintf("wrong-%d", i)})
			if m := c.expect(typeAuthFailed); m["retry"] != (i < maxAttempts-1) {
				t.Errorf("attempt %d: %v", i+1, m)
			}
		}
		c.expectEnd(endAuthFailed)
		h.waitServed()
		if n := h.sessionCount(); n != maxAttempts {
			t.Fatalf("%d sessions opened, want %d", n, maxAttempts)
		}
		for i := range maxAttempts {
			if r := h.session(i).EndReason(); r != broker.ReasonAuthFailed {
				t.Errorf("attempt %d ended with %q", i+1, r)
			}
		}
	})
	t.Run("nothing entered", func(t *testing.T) {
		h := newHarness(t, d, d.addr(false), nil)
		c := h.dial()
		c.expect(typeHello)
		c.auth(nil) // this machine asks no questions
		if m := c.expect(typeAuthFailed); m.str("message") != "Enter a password or a private key." || m["retry"] != true {
			t.Errorf("auth_failed %v", m)
		}
		c.auth(map[string]any{"password": d.password})
		c.expect(typeReady)
	})
	t.Run("login not allowed", func(t *testing.T) {
		h := newHarness(t, d, d.addr(false), nil)
		c := h.dial()
		c.expect(typeHello)
		c.auth(map[string]any{"login": "root", "password": d.password})
		if m := c.expectEnd(endDenied); m.str("message") != "You may not log in to vm1 as root." {
			t.Errorf("end %v", m)
		}
		h.waitServed()
		if n := h.sessionCount(); n != 0 {
			t.Errorf("%d sessions opened for a login the policy refuses", n)
		}
	})
}

func TestKeyboardInteractive(t *testing.T) {
	d := startSSHD(t, sshdConfig{pam: true})
	t.Run("password answers the prompt", func(t *testing.T) {
		h := newHarness(t, d, d.addr(false), nil)
		c := h.dial()
		c.login(map[string]any{"password": d.password})
		c.run("id -un", testUser)
	})
	t.Run("prompts relayed", func(t *testing.T) {
		h := newHarness(t, d, d.addr(false), nil)
		c := h.dial()
		c.expect(typeHello)
		c.auth(nil)
		p := c.expect(typePrompt)
		prompts, _ := p["prompts"].([]any)
		if len(prompts) != 1 {
			t.Fatalf("prompt %v", p)
		}
		if q := prompts[0].(map[string]any); !strings.Contains(q["text"].(string), "assword") || q["echo"] != false {
			t.Errorf("prompt %v", q)
		}
		c.send(map[string]any{"type": typeAnswers, "answers": []string{d.password}})
		c.expect(typeReady)
		c.run("id -un", testUser)
	})
	t.Run("wrong answers", func(t *testing.T) {
		h := newHarness(t, d, d.addr(false), nil)
		c := h.dial()
		c.expect(typeHello)
		c.auth(nil)
		c.expect(typePrompt)
		c.send(map[string]any{"type": typeAnswers, "answers": []string{"wrong-" + d.password}})
		if m := c.expect(typeAuthFailed); m.str("message") != "Wrong login name or answers." || m["retry"] != true {
			t.Errorf("auth_failed %v", m)
		}
		c.auth(map[string]any{"password": d.password})
		c.expect(typeReady)
	})
	t.Run("wrong password", func(t *testing.T) {
		h := newHarness(t, d, d.addr(false), nil)
		c := h.dial()
		c.expect(typeHello)
		c.auth(map[string]any{"password": "wrong-" + d.password})
		if m := c.expect(typeAuthFailed); m.str("message") != "Wrong login name or password." {
			t.Errorf("auth_failed %v", m)
		}
	})
	t.Run("answers time out", func(t *testing.T) {
		h := newHarness(t, d, d.addr(false), func(p *Params) { p.CredentialTimeout = 500 * time.Millisecond })
		c := h.dial()
		c.expect(typeHello)
		c.auth(nil)
		c.expect(typePrompt)
		c.expectEnd(endError)
		h.waitServed()
		if r := h.session(0).EndReason(); !strings.HasPrefix(r, broker.ReasonClientError) {
			t.Errorf("session ended with %q", r)
		}
	})
}

func TestCertificate(t *testing.T) {
	d := startSSHD(t, sshdConfig{})
	var mu sync.Mutex
	var signed []*ssh.Certificate
	var signedFor []string
	h := newHarness(t, d, d.addr(false), func(p *Params) {
		p.Certificate = true
		p.CertSigned = func(s Session, login string, cert *ssh.Certificate) {
			mu.Lock()
			defer mu.Unlock()
			signed, signedFor = append(signed, cert), append(signedFor, s.ID()+" "+login)
		}
	})
	c := h.dial()
	if hello := c.expect(typeHello); hello["certificate"] != true {
		t.Errorf("hello %v", hello)
	}
	c.auth(nil)
	c.expect(typeReady)
	c.run("id -un", testUser)
	h.mu.Lock()
	ids := h.keyIDs
	h.mu.Unlock()
	if len(ids) != 1 || !strings.Contains(ids[0], "alice") || !strings.Contains(ids[0], h.session(0).id) {
		t.Errorf("certificate key IDs %q, want one naming the user and the session", ids)
	}
	// CertSigned was told, for the audit trail, before the login.
	mu.Lock()
	defer mu.Unlock()
	if len(signed) != 1 || signedFor[0] != h.session(0).id+" "+testUser || signed[0].KeyId != ids[0] ||
		len(signed[0].ValidPrincipals) != 1 || signed[0].ValidPrincipals[0] != testUser {
		t.Errorf("CertSigned got %v for %q", signed, signedFor)
	}
}

func TestHostKey(t *testing.T) {
	d := startSSHD(t, sshdConfig{})
	other, _, _ := newKey("")
	tests := []struct {
		name     string
		check    ssh.HostKeyCallback
		end      string
		reason   string
		mismatch bool
	}{
		{"mismatch", pinned(other), endHostKeyChanged, "host key mismatch: ", true},
		{"not pinned", func(host string, _ net.Addr, key ssh.PublicKey) error {
			return fmt.Errorf("hostkeys: %s: %w; seen %s", host, hostkeys.ErrNotPinned, ssh.FingerprintSHA256(key))
		}, endHostKeyUnknown, "host key not pinned: ", false},
		{"no check", nil, endHostKeyUnknown, "host key not pinned: ", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var mu sync.Mutex
			var refused []string
			h := newHarness(t, d, d.addr(false), func(p *Params) {
				p.HostKeys = func(string) (ssh.HostKeyCallback, []string) { return tt.check, nil }
				p.HostKeyRefused = func(s Session, login string, mismatch bool, err error) {
					mu.Lock()
					defer mu.Unlock()
					refused = append(refused, fmt.Sprintf("%s %s %v %v", s.ID(), login, mismatch, err != nil))
				}
			})
			c := h.dial()
			c.expect(typeHello)
			c.auth(map[string]any{"password": d.password})
			m := c.expectEnd(tt.end)
			if !strings.Contains(m.str("message"), "vm1") || !strings.Contains(m.str("message"), "administrator") {
				t.Errorf("message %q", m.str("message"))
			}
			h.waitServed()
			if r := h.session(0).EndReason(); !strings.HasPrefix(r, tt.reason) {
				t.Errorf("session ended with %q, want %q…", r, tt.reason)
			}
			mu.Lock()
			defer mu.Unlock()
			if want := fmt.Sprintf("%s %s %v true", h.session(0).id, testUser, tt.mismatch); len(refused) != 1 || refused[0] != want {
				t.Errorf("HostKeyRefused got %q, want %q", refused, want)
			}
		})
	}
}

func TestPaste(t *testing.T) {
	d := startSSHD(t, sshdConfig{})
	for _, allowed := range []bool{true, false} {
		t.Run(fmt.Sprintf("clipboard=%v", allowed), func(t *testing.T) {
			h := newHarness(t, d, d.addr(false), func(p *Params) { p.Clipboard = allowed })
			c := h.dial()
			if hello := c.expect(typeHello); hello["clipboard"] != allowed {
				t.Errorf("hello %v", hello)
			}
			c.auth(map[string]any{"password": d.password})
			c.expect(typeReady)
			c.send(map[string]any{"type": typePaste, "data": "echo PASTED-$((2*3))\r"})
			c.run("echo TYPED-$((3*3))", "TYPED-9")
			if got := strings.Contains(c.out.String(), "PASTED-6"); got != allowed {
				t.Errorf("paste ran: %v, want %v (terminal %q)", got, allowed, c.out.String())
			}
			if refused := h.logged("paste refused: the clipboard is disabled for this session"); refused == allowed {
				t.Errorf("paste refusal logged: %v", refused)
			}
		})
	}
}

func TestRecording(t *testing.T) {
	d := startSSHD(t, sshdConfig{})
	dir := filepath.Join(t.TempDir(), "recordings")
	h := newHarness(t, d, d.addr(false), func(p *Params) { p.Record, p.RecordDir = true, dir })
	c := h.dial()
	if hello := c.expect(typeHello); hello["recorded"] != true {
		t.Errorf("hello %v", hello)
	}
	c.auth(map[string]any{"password": d.password})
	c.expect(typeReady)
	c.run("echo REC-$((6*7))", "REC-42")
	// A password typed at a prompt that does not echo it, as at sudo.
	typed := "typed-" + randomHex(6)
	h.secrets = append(h.secrets, typed)
	c.run("stty -echo; echo READY-$((1+1)); read -r x; stty echo; echo got-${#x}-chars", "READY-2")
	c.typeText(typed + "\r")
	c.waitFor(fmt.Sprintf("got-%d-chars", len(typed)))
	c.send(map[string]any{"type": typeResize, "cols": 100, "rows": 30})
	c.run("stty size", "30 100")
	c.typeText("exit\r")
	c.expectEnd(endExit)
	h.waitServed()

	path := filepath.Join(dir, h.session(0).id+".cast.gz")
	if h.recording != path {
		t.Errorf("SetRecording got %q, want %q", h.recording, path)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode() != 0o600 {
		t.Errorf("recording mode %v", fi.Mode())
	}
	if sum, _ := recording.FileSHA256(path); h.recordingSum != sum || sum == "" {
		t.Errorf("RecordingClosed got SHA-256 %q, the file's is %q", h.recordingSum, sum)
	}
	cast := string(gunzip(t, path))
	header, _, _ := strings.Cut(cast, "\n")
	for _, want := range []string{`"version":2`, `"width":120`, `"height":40`, `"title":"` + testUser + `@vm1 by alice"`} {
		if !strings.Contains(header, want) {
			t.Errorf("header %s lacks %s", header, want)
		}
	}
	for _, want := range []string{"REC-42", fmt.Sprintf("got-%d-chars", len(typed)), `"r", "100x30"`, "30 100"} {
		if !strings.Contains(cast, want) {
			t.Errorf("recording lacks %q", want)
		}
	}
	for _, secret := range []string{d.password, typed} {
		if strings.Contains(cast, secret) {
			t.Errorf("recording holds a secret the user typed: %q", secret)
		}
	}
}

func TestRecordingFails(t *testing.T) {
	d := startSSHD(t, sshdConfig{})
	file := filepath.Join(t.TempDir(), "not-a-directory")
	os.WriteFile(file, nil, 0o600)
	h := newHarness(t, d, d.addr(false), func(p *Params) { p.Record, p.RecordDir = true, file })
	c := h.dial()
	c.expect(typeHello)
	c.auth(map[string]any{"password": d.password})
	c.expectEnd(endError)
	h.waitServed()
	if r := h.session(0).EndReason(); !strings.HasPrefix(r, broker.ReasonRecordingFailed+": ") {
		t.Errorf("session ended with %q", r)
	}
	if ev := h.audited(audit.RecordingFailed); len(ev) != 1 || ev[0].Reason != "create_failed" || ev[0].Session != h.session(0).id {
		t.Errorf("recording_failed events %+v", ev)
	}
}

// TestRecordingDiskFull: a recorded session on a full file system is
// refused before its shell opens, and one whose disk fills up while it
// runs is ended; both say why, to the user and in the session's record.
func TestRecordingDiskFull(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a small tmpfs (a full disk)")
	}
	d := startSSHD(t, sshdConfig{})
	dir := filepath.Join(t.TempDir(), "recordings")
	os.Mkdir(dir, 0o700)
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs: %v: %s", err, out)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(dir, 0); err != nil {
			t.Errorf("unmount: %v", err)
		}
	})
	filler := filepath.Join(dir, "filler")
	fill := func() {
		f, _ := os.OpenFile(filler, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
		defer f.Close()
		for buf := make([]byte, 1024); ; {
			if _, err := f.Write(buf); err != nil {
				return
			}
		}
	}
	h := newHarness(t, d, d.addr(true), func(p *Params) { p.Record, p.RecordDir = true, dir })

	t.Run("while it runs", func(t *testing.T) {
		c := h.dial()
		c.expect(typeHello)
		c.auth(map[string]any{"password": d.password})
		c.expect(typeReady)
		c.run("echo BEFORE-$((2+2))", "BEFORE-4")
		fill()
		// Output that does not compress, until the recording fails.
		c.typeText("head -c 3000000 /dev/urandom | base64\r")
		m := c.expectEnd(endError)
		if msg := m.str("message"); !strings.Contains(msg, "recording failed (no space left on device)") {
			t.Errorf("end message %q", msg)
		}
		h.waitServed()
		if r := h.session(0).EndReason(); r != broker.ReasonRecordingFailed+": no space left on device" {
			t.Errorf("session ended with %q", r)
		}
		if ev := h.audited(audit.RecordingFailed); len(ev) != 1 || ev[0].Reason != "write_failed" {
			t.Errorf("recording_failed events %+v", ev)
		}
	})
	t.Run("refused at start", func(t *testing.T) {
		fill()
		c := h.dial()
		c.expect(typeHello)
		c.auth(map[string]any{"password": d.password})
		m := c.expectEnd(endError)
		if msg := m.str("message"); !strings.Contains(msg, "cannot write its recording (no space left on device), so it was not opened") {
			t.Errorf("end message %q", msg)
		}
		h.waitServed()
		if r := h.session(1).EndReason(); r != broker.ReasonRecordingFailed+": no space left on device" {
			t.Errorf("session ended with %q", r)
		}
		if ev := h.audited(audit.RecordingFailed); len(ev) != 2 || ev[1].Reason != "create_failed" || ev[1].Client == "" {
			t.Errorf("recording_failed events %+v", ev)
		}
		t.Logf("example line: %s", audit.Marshal(h.audited(audit.RecordingFailed)[1]))
	})
}

func TestIdleWarning(t *testing.T) {
	d := startSSHD(t, sshdConfig{})
	// Warned at 3 seconds of inactivity (three quarters of 4).
	h := newHarness(t, d, d.addr(false), func(p *Params) { p.IdleTimeout = func() time.Duration { return 4 * time.Second } })
	c := h.dial()
	if hello := c.expect(typeHello); hello["idle_timeout"] != 4.0 {
		t.Errorf("hello %v", hello)
	}
	c.auth(map[string]any{"password": d.password})
	c.expect(typeReady)
	start := time.Now()
	w := c.expect(typeIdleWarning)
	if s, _ := w["seconds"].(float64); s < 1 || s > 2 {
		t.Errorf("idle_warning %v, want about 1 second left", w)
	}
	if waited := time.Since(start); waited < 2*time.Second {
		t.Errorf("warned after %v", waited)
	}
	c.typeText("\r")
	c.expect(typeActive)
	h.session(0).End(broker.ReasonIdle)
	c.expectEnd(endIdle)
}

func TestBrokerEnds(t *testing.T) {
	d := startSSHD(t, sshdConfig{})
	tests := []struct {
		name      string
		reason    string // "": cancel Serve's context
		end       string
		reconnect bool
		busy      bool // the shell writes without pause when the session ends
	}{
		{"killed", broker.ReasonKilled + "by root: maintenance", endKilled, false, false},
		{"access revoked", broker.ReasonAccessRevoked, endAccessRevoked, false, false},
		{"max duration", broker.ReasonMaxDuration, endMaxDuration, false, false},
		{"unreachable", broker.ReasonTargetUnreachable, endNetwork, true, false},
		{"broker shutdown", broker.ReasonShutdown, endShutdown, true, false},
		{"serve shutdown", "", endShutdown, true, false},
		// The end message is the page's last, however much output the
		// machine's connection still held.
		{"broker shutdown during output", broker.ReasonShutdown, endShutdown, true, true},
		{"killed during output", broker.ReasonKilled + "by root: maintenance", endKilled, false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, d, d.addr(false), nil)
			c := h.dial()
			c.login(map[string]any{"password": d.password})
			c.run("echo up-$((1+1))", "up-2")
			if tt.busy {
				c.run("yes busy-$((2+2)) | head -c 50000000", "busy-4\r\nbusy-4\r\nbusy-4")
			}
			if tt.reason == "" {
				h.cancel()
			} else {
				h.session(0).End(tt.reason)
			}
			m := c.expectEnd(tt.end)
			if m["reconnect"] != tt.reconnect {
				t.Errorf("end %v, want reconnect %v", m, tt.reconnect)
			}
			if tt.end == endKilled && !strings.Contains(m.str("message"), "maintenance") {
				t.Errorf("end %v", m)
			}
			h.waitServed()
			if tt.reason == "" && h.session(0).EndReason() != broker.ReasonShutdown {
				t.Errorf("session ended with %q", h.session(0).EndReason())
			}
		})
	}
}

func TestOpenRefused(t *testing.T) {
	tests := []struct {
		name      string
		err       error
		end       string
		reconnect bool
	}{
		{"capacity", &broker.Error{Kind: broker.KindCapacity, Msg: "bastion at capacity"}, endCapacity, true},
		{"user limit", &broker.Error{Kind: broker.KindUserLimit, Msg: "you have 10 sessions open, the most allowed"}, endUserLimit, true},
		{"unreachable", &broker.Error{Kind: broker.KindUnreachable, Msg: "vm1 does not answer on port 22 (timed out)"}, endUnreachable, true},
		{"closing", &broker.Error{Kind: broker.KindClosed, Msg: "the bastion is shutting down"}, endShutdown, true},
		{"refused", &broker.Error{Kind: broker.KindRefused, Msg: "vm1 is not dialled"}, endError, false},
		{"other", errors.New("boom"), endError, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, nil, "", func(p *Params) {
				p.Open = func(context.Context, string, []string) (Session, error) { return nil, tt.err }
			})
			c := h.dial()
			c.expect(typeHello)
			c.auth(map[string]any{"password": "x"})
			if m := c.expectEnd(tt.end); m["reconnect"] != tt.reconnect || m.str("message") == "" {
				t.Errorf("end %v", m)
			}
		})
	}
}

func TestProtocolErrors(t *testing.T) {
	tests := []struct {
		name string
		send func(c *client)
	}{
		{"nothing sent", func(*client) {}},
		{"resize first", func(c *client) { c.send(map[string]any{"type": typeResize, "cols": 80, "rows": 24}) }},
		{"keystrokes first", func(c *client) { c.typeText("ls\r") }},
		{"not JSON", func(c *client) { c.ws.Write(context.Background(), websocket.MessageText, []byte("{")) }},
		{"no terminal size", func(c *client) { c.send(map[string]any{"type": typeAuth, "login": testUser, "password": "x"}) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, nil, "", func(p *Params) { p.CredentialTimeout = 300 * time.Millisecond })
			c := h.dial()
			c.expect(typeHello)
			tt.send(c)
			c.expectEnd(endError)
			h.waitServed()
			if n := h.sessionCount(); n != 0 {
				t.Errorf("%d sessions opened", n)
			}
		})
	}
	t.Run("page closes at the prompt", func(t *testing.T) {
		h := newHarness(t, nil, "", nil)
		c := h.dial()
		c.expect(typeHello)
		c.ws.Close(websocket.StatusGoingAway, "")
		h.waitServed()
	})
}

func TestParamsRequired(t *testing.T) {
	p := Params{Logger: zap.NewNop(), Certificate: true}
	err := p.setDefaults()
	if err == nil {
		t.Fatal("empty Params accepted")
	}
	for _, field := range []string{"Target", "User", "Authorize", "Open", "HostKeys", "Sign"} {
		if !strings.Contains(err.Error(), field) {
			t.Errorf("%v does not name %s", err, field)
		}
	}
}

// BenchmarkKeystrokeEcho measures a keystroke's round trip: from the page
// through the bastion to a program in sshd's PTY that echoes it (cat, in
// raw mode, as a line editor would), and back.
func BenchmarkKeystrokeEcho(b *testing.B) {
	d := startSSHD(b, sshdConfig{})
	h := newHarness(b, d, d.addr(false), nil)
	c := h.dial()
	c.login(map[string]any{"password": d.password})
	c.run("stty raw -echo; echo RAW-$((1+1)); cat", "RAW-2")
	key, got := []byte("x"), make([]byte, 64)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if err := c.ws.Write(ctx, websocket.MessageBinary, key); err != nil {
			b.Fatal(err)
		}
		for echoed := false; !echoed; {
			typ, r, err := c.ws.Reader(ctx)
			if err != nil {
				b.Fatal(err)
			}
			for {
				n, err := r.Read(got)
				if typ == websocket.MessageBinary && n > 0 {
					echoed = true
				}
				if err != nil {
					break
				}
			}
		}
	}
	b.StopTimer()
	h.session(0).End(broker.ReasonKilled + "benchmark over")
	c.expectEnd(endKilled)
}

// TestNotSSH: a machine that answers with something other than SSH ends
// the session with an error, and the handshake failure is counted.
func TestNotSSH(t *testing.T) {
	ln, err := net.Listen("tcp", "[::1]:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Write([]byte("HTTP/1.1 400 Bad Request\r\n\r\n"))
			c.Close()
		}
	}()
	var failed atomic.Int32
	h := newHarness(t, nil, ln.Addr().String(), func(p *Params) {
		p.HostKeys = func(string) (ssh.HostKeyCallback, []string) { return ssh.InsecureIgnoreHostKey(), nil }
		p.HandshakeFailed = func() { failed.Add(1) }
	})
	c := h.dial()
	c.expect(typeHello)
	c.auth(map[string]any{"password": "x"})
	c.expectEnd(endError)
	h.waitServed()
	if failed.Load() != 1 {
		t.Errorf("HandshakeFailed called %d times, want 1", failed.Load())
	}
}

// TestRecordingClosedAfterKill: when the broker ends a recorded session
// (a kill), its end record is written before the recording is complete:
// the recording's hash follows in a recording_closed event.
func TestRecordingClosedAfterKill(t *testing.T) {
	d := startSSHD(t, sshdConfig{})
	dir := filepath.Join(t.TempDir(), "recordings")
	h := newHarness(t, d, d.addr(true), func(p *Params) { p.Record, p.RecordDir = true, dir })
	c := h.dial()
	c.login(map[string]any{"password": d.password})
	c.run("echo KILL-$((6*7))", "KILL-42")
	h.session(0).End(broker.ReasonKilled + "by root: test")
	c.expectEnd(endKilled)
	h.waitServed()
	ev := h.audited(audit.RecordingClosed)
	path := filepath.Join(dir, h.session(0).id+".cast.gz")
	sum, _ := recording.FileSHA256(path)
	if len(ev) != 1 || ev[0].RecordingSHA256 != sum || sum == "" || ev[0].Recording != path || ev[0].Session != h.session(0).id {
		t.Errorf("recording_closed events %+v, file's hash %q", ev, sum)
	}
	t.Logf("example line: %s", audit.Marshal(ev[0]))
}
