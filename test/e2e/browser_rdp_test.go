package e2e

import (
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bastiond/bastiond/internal/testcert"
)

// TestBrowserRDP drives Debian's Chromium through the portal to vm2's
// FreeRDP shadow servers with IronRDP's web client: NLA and TLS, the
// remote screen drawn in the page, a kill and a reconnect, a wrong
// password, a negotiation failure, a certificate mismatch, the clipboard
// disabled by role, and the expired page. Screenshots are kept under
// test/artifacts/browser-rdp.
func TestBrowserRDP(t *testing.T) {
	b := startBrowser(t, "browser-rdp")
	d := StartDaemonWith(t, ViaFDs, func(dir string) string { return WebRDPConfig(dir, false, "") })
	AddLabUsers(t, d, "alice", "bob")
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("the daemon's log ends:\n%s", tail(d.Log.String(), 6000))
		}
	})
	if out, err := d.Ctl(nil, "hostkeys", "scan", "vm2", "--pin"); err != nil {
		t.Fatalf("hostkeys scan vm2 --pin: %v\n%s", err, out)
	}
	reload := func(cfg string) {
		t.Helper()
		d.WriteConfig(cfg)
		d.Signal(syscall.SIGHUP)
		d.WaitNotify("READY=1", 10*time.Second)
	}
	base := "https://" + ServerName + "/"
	run := func(name string, f func(t *testing.T)) {
		t.Run(name, func(t *testing.T) {
			defer func() {
				if t.Failed() {
					b.Screenshot(t, "failed-"+name)
				}
			}()
			f(t)
		})
	}
	state := func() string {
		var s string
		b.Eval(t, `document.querySelector("#client").dataset.state || ""`, &s)
		return s
	}
	waitState := func(t *testing.T, want string) {
		t.Helper()
		deadline := time.Now().Add(60 * time.Second)
		for state() != want {
			if time.Now().After(deadline) {
				t.Fatalf("the page is %q, not %q; it says %q", state(), want, b.Text(t, "#client"))
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	signIn := func(t *testing.T, password string) {
		t.Helper()
		b.WaitVisible(t, `#client input[name="user"]`)
		b.Fill(t, `#client input[name="user"]`, lab["LAB_USER"])
		b.Fill(t, `#client input[name="password"]`, password)
		b.Click(t, `#client form button[type="submit"]`)
	}
	// shown waits until the canvas shows vm2's screen: the clock's white
	// face on a dark background, not a blank or single-colour canvas.
	shown := func(t *testing.T) pixels {
		t.Helper()
		var p pixels
		deadline := time.Now().Add(30 * time.Second)
		for {
			b.Eval(t, desktopPixels, &p)
			if p.Colors >= 3 && p.White > 0.04 && p.White < 0.3 && p.Dark > 0.5 {
				return p
			}
			if time.Now().After(deadline) {
				t.Fatalf("the desktop canvas does not show vm2's screen: %+v", p)
			}
			time.Sleep(300 * time.Millisecond)
		}
	}
	// disconnect presses Disconnect, a moment after the desktop appeared:
	// iron-remote-desktop 0.11 rescales 150 ms after it is shown, and
	// throws if it is gone by then.
	disconnect := func(t *testing.T) {
		t.Helper()
		time.Sleep(500 * time.Millisecond)
		b.Click(t, `#client button.disconnect`)
	}
	endMessage := func(t *testing.T) string {
		t.Helper()
		waitState(t, "ended")
		return b.Text(t, "#client-end-message")
	}
	noProblems := func(t *testing.T, when string) {
		t.Helper()
		p := b.TakeProblems(t)
		if len(p.Violations)+len(p.Exceptions) > 0 {
			t.Errorf("%s: CSP violations %q, exceptions %q", when, p.Violations, p.Exceptions)
		}
	}

	var usedURL string
	run("NLA: the desktop, a kill, a reconnect, a disconnect", func(t *testing.T) {
		b.PortalLogin(t, base, "alice", TunnelPassword)
		b.OpenDesktop(t, "vm2")
		usedURL = b.URL(t)
		signIn(t, lab["LAB_PASSWORD"])
		waitState(t, "connected")
		p := shown(t)
		t.Logf("desktop %dx%d, %d colours sampled", p.Width, p.Height, p.Colors)
		b.Screenshot(t, "desktop-nla")
		// The toolbar: Ctrl+Alt+Del goes to the desktop and leaves it
		// running; Full screen takes the page's client and gives it back.
		b.Click(t, `#client button:text("Ctrl+Alt+Del")`)
		b.Click(t, `#client button:text("Full screen")`)
		var full bool
		for i := 0; i < 20 && !full; i++ {
			b.Eval(t, `document.fullscreenElement === document.querySelector("#client")`, &full)
			time.Sleep(100 * time.Millisecond)
		}
		if !full {
			t.Error("Full screen did not take the page's client")
		}
		b.Click(t, `#client button:text("Exit full screen")`)
		if state() != "connected" {
			t.Errorf("after Ctrl+Alt+Del and full screen the page is %q", state())
		}
		if b.Visible(t, `#client .badge:has-text("Copy and paste disabled")`) {
			t.Error("alice's clipboard is shown as disabled")
		}
		noProblems(t, "the desktop")

		out, err := d.Ctl(nil, "sessions", "--json")
		var live []struct{ ID, Target, Protocol, Via string }
		if err != nil || json.Unmarshal([]byte(out), &live) != nil || len(live) != 1 || live[0].Protocol != "rdp" || live[0].Via != "browser" {
			t.Fatalf("live sessions: %v %s", err, out)
		}
		if out, err := d.Ctl(nil, "sessions", "kill", live[0].ID, "--reason", "maintenance"); err != nil {
			t.Fatalf("kill: %v\n%s", err, out)
		}
		if msg := endMessage(t); !strings.Contains(msg, "administrator") || !strings.Contains(msg, "maintenance") {
			t.Errorf("after a kill the page says %q", msg)
		}
		b.Screenshot(t, "killed")
		b.Click(t, `#client button:text("Reconnect")`)
		signIn(t, lab["LAB_PASSWORD"])
		waitState(t, "connected")
		shown(t)
		disconnect(t)
		if msg := endMessage(t); msg != "The session ended." {
			t.Errorf("after Disconnect the page says %q", msg)
		}
		// Disconnect asks the server to end the session (a Shutdown
		// Request), and the server closes the connection.
		recs := EndedRecords(d, "vm2")
		if last := recs[len(recs)-1]; len(recs) < 2 || !strings.HasPrefix(recs[len(recs)-2]["reason"].(string), "killed: ") ||
			last["reason"] != "target closed" && last["reason"] != "client closed" || last["bytes_down"].(float64) < 10000 {
			t.Errorf("end records: %v", recs)
		}
		noProblems(t, "the reconnect")
	})

	run("wrong password", func(t *testing.T) {
		b.Goto(t, base)
		b.OpenDesktop(t, "vm2")
		signIn(t, "not-"+lab["LAB_PASSWORD"])
		// FreeRDP's server closes the connection on a failed NLA sign-in
		// without saying why; a Windows server's refusal reads "Wrong
		// user name or password."
		if msg := endMessage(t); !strings.Contains(msg, "user name") || !strings.Contains(msg, "password") {
			t.Errorf("the page says %q", msg)
		}
		t.Logf("after a wrong password: %q (%s)", b.Text(t, "#client-end-message"), b.Text(t, "#client .box .detail"))
		b.Screenshot(t, "wrong-password")
		b.Click(t, `#client button:text("Try again")`)
		signIn(t, lab["LAB_PASSWORD"])
		waitState(t, "connected")
		shown(t)
		disconnect(t)
		waitState(t, "ended")
	})

	run("TLS to vm2's IPv6 address", func(t *testing.T) {
		reload(WebRDPConfig(d.Dir, true, ""))
		defer reload(WebRDPConfig(d.Dir, false, ""))
		b.Goto(t, base)
		b.OpenDesktop(t, "vm2")
		signIn(t, lab["LAB_PASSWORD"])
		waitState(t, "connected")
		shown(t)
		b.Screenshot(t, "desktop-tls")
		disconnect(t)
		waitState(t, "ended")
	})

	run("a server with standard RDP security only", func(t *testing.T) {
		stop := startShadow(t, "3392", "/sec:rdp") // 3391 is vm2's second desktop
		defer stop()
		reload(strings.Replace(WebRDPConfig(d.Dir, false, ""), "ports: {rdp: "+lab["VM2_RDP_NLA_PORT"], "ports: {rdp: 3392", 1))
		defer reload(WebRDPConfig(d.Dir, false, ""))
		b.Goto(t, base)
		b.OpenDesktop(t, "vm2")
		signIn(t, lab["LAB_PASSWORD"])
		if msg := endMessage(t); !strings.Contains(msg, "standard RDP security") {
			t.Errorf("the page says %q", msg)
		}
		b.Screenshot(t, "negotiation-failure")
	})

	run("a certificate that is not the pinned one", func(t *testing.T) {
		other := filepath.Join(t.TempDir(), "other.pem")
		os.WriteFile(other, testcert.PEM(testcert.New(t, testcert.Options{Name: "vm2"})), 0o600)
		for _, args := range [][]string{{"forget", "vm2"}, {"pin", "vm2", "--cert-file", other}} {
			if out, err := d.Ctl(nil, append([]string{"hostkeys"}, args...)...); err != nil {
				t.Fatalf("hostkeys %v: %v\n%s", args, err, out)
			}
		}
		defer func() {
			d.Ctl(nil, "hostkeys", "forget", "vm2")
			d.Ctl(nil, "hostkeys", "scan", "vm2", "--pin")
		}()
		b.Goto(t, base)
		b.OpenDesktop(t, "vm2")
		signIn(t, lab["LAB_PASSWORD"])
		if msg := endMessage(t); !strings.Contains(msg, "has changed") {
			t.Errorf("the page says %q", msg)
		}
		b.Screenshot(t, "certificate-mismatch")
		if recs := EndedRecords(d, "vm2"); !strings.HasPrefix(recs[len(recs)-1]["reason"].(string), "host key mismatch: ") {
			t.Errorf("end record: %v", recs[len(recs)-1])
		}
	})

	run("the clipboard disabled by role", func(t *testing.T) {
		b.Goto(t, base)
		b.Click(t, `header form[action="/logout"] button`)
		b.WaitVisible(t, "form.login")
		b.PortalLogin(t, base, "bob", TunnelPassword)
		b.OpenDesktop(t, "vm2")
		signIn(t, lab["LAB_PASSWORD"])
		waitState(t, "connected")
		shown(t)
		if !b.Visible(t, `#client .badge:has-text("Copy and paste disabled")`) {
			t.Error("bob's page does not say that copy and paste are disabled")
		}
		b.Screenshot(t, "no-clipboard")
		disconnect(t)
		waitState(t, "ended")
	})

	// Invariant 10: what users typed never reaches a log or a record, TLS
	// alone (the password inside the relayed stream) included.
	run("passwords stay out of the logs", func(t *testing.T) {
		audit, _ := os.ReadFile(d.AuditFile())
		for _, secret := range []string{lab["LAB_PASSWORD"], "not-" + lab["LAB_PASSWORD"]} {
			if strings.Contains(d.Log.String(), secret) || strings.Contains(string(audit), secret) {
				t.Errorf("a password typed in the desktop's form is in the daemon's log or audit file")
			}
		}
	})

	run("a used link", func(t *testing.T) {
		b.Goto(t, usedURL)
		if !strings.Contains(b.Text(t, "main"), "Your session has expired") {
			t.Errorf("a used link shows %q", b.Text(t, "main"))
		}
		b.Screenshot(t, "expired")
	})
}

// startShadow starts another FreeRDP shadow server of vm2's display on
// port, with the security options given, and returns what stops it.
func startShadow(t *testing.T, port string, security ...string) func() {
	t.Helper()
	home := t.TempDir()
	args := append([]string{"netns", "exec", lab["NS_VM2"], "env", "HOME=" + home, "DISPLAY=" + lab["LAB_DISPLAY"],
		"freerdp-shadow-cli", "/port:" + port, "/bind-address:[::]", "-auth"}, security...)
	c := exec.Command("ip", args...)
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	stop := func() { c.Process.Kill(); c.Wait() }
	for i := 0; ; i++ {
		if InNetns(lab["NS_BASTION"], func() error {
			conn, err := (&net.Dialer{Timeout: time.Second}).Dial("tcp", net.JoinHostPort(lab["VM2_4"], port))
			if err == nil {
				conn.Close()
			}
			return err
		}) == nil {
			return stop
		}
		if i == 50 {
			stop()
			t.Fatalf("the shadow server on port %s does not answer", port)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
