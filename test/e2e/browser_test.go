package e2e

import (
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"

	"github.com/bastiond/bastiond/web/browsertest"
)

// startBrowser starts Chromium in the client namespace (StartBrowser).
func startBrowser(t testing.TB, name string) *browsertest.Browser {
	t.Helper()
	return StartBrowser(t, name)
}

// terminalSize runs stty size in the terminal and returns rows, cols. The
// line it waits for ("size R C MARK-5") is the output, never the command
// as typed ("... MARK-$((2+3))").
func terminalSize(t testing.TB, b *browsertest.Browser, mark string) (rows, cols int) {
	t.Helper()
	b.Type(t, "echo size $(stty size) "+mark+"-$((2+3))\n")
	b.WaitTerminalText(t, mark+"-5")
	m := regexp.MustCompile(`size (\d+) (\d+) ` + mark + `-5`).FindStringSubmatch(b.TerminalText(t))
	if m == nil {
		t.Fatalf("no stty size output for %s in:\n%s", mark, b.TerminalText(t))
	}
	rows, _ = strconv.Atoi(m[1])
	cols, _ = strconv.Atoi(m[2])
	return rows, cols
}

// TestBrowserSSH drives Debian's Chromium through the portal to vm1's real
// sshd: sign in, click SSH, authenticate, run commands, resize, paste and
// copy (allowed and disabled), the host key mismatch and expired pages,
// and an auditor's playback. Screenshots are kept under test/artifacts.
func TestBrowserSSH(t *testing.T) {
	b := startBrowser(t, "browser-ssh")
	d := StartDaemonWith(t, ViaFDs, func(dir string) string { return WebSSHConfig(dir, "", "") })
	AddLabUsers(t, d, "alice", "bob", "carol")
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("the daemon's log ends:\n%s", tail(d.Log.String(), 6000))
		}
	})
	PinVM1(t, d)
	base := "https://" + ServerName + "/"
	const submit = `#client form.signin button[type=submit]`
	signOut := func() {
		b.Goto(t, base)
		b.Click(t, `header form[action="/logout"] button`)
		b.WaitVisible(t, "form.login")
	}
	noProblems := func(when string) {
		if p := b.TakeProblems(t); len(p.Violations)+len(p.Exceptions) > 0 {
			t.Errorf("%s: CSP violations %q, exceptions %q", when, p.Violations, p.Exceptions)
		}
	}

	// A failing step leaves a screenshot named after its subtest.
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

	var connectURL string
	run("password, command, resize, copy and paste", func(t *testing.T) {
		b.PortalLogin(t, base, "alice", TunnelPassword)
		b.Screenshot(t, "portal")
		b.OpenTerminal(t, "vm1")
		connectURL = b.URL(t)
		b.SignIn(t, lab["LAB_USER"], lab["LAB_PASSWORD"])
		b.WaitTerminalText(t, "$ ") // the shell's prompt
		b.Type(t, "echo browser-$((6*7))\n")
		b.WaitTerminalText(t, "browser-42")

		var shown int
		b.Eval(t, `document.querySelectorAll("#client .xterm-rows > div").length`, &shown)
		rows, cols := terminalSize(t, b, "m1")
		if rows != shown || cols < 40 {
			t.Errorf("stty size %d %d; the page shows %d rows", rows, cols, shown)
		}
		b.Viewport(t, 640, 420)
		rows2, cols2 := 0, 0
		for i := 0; i < 20 && (rows2 == 0 || rows2 >= rows); i++ { // the resize is debounced
			rows2, cols2 = terminalSize(t, b, fmt.Sprintf("m2x%d", i))
		}
		if rows2 >= rows || cols2 >= cols {
			t.Errorf("after shrinking the window stty size is %d %d, was %d %d", rows2, cols2, rows, cols)
		}
		b.Viewport(t, 1000, 700)

		// bash asks for bracketed paste: the pasted line waits for Enter.
		if !b.Paste(t, "echo pasted-$((2+3))") {
			t.Error("the paste went on to the browser's default action")
		}
		b.WaitTerminalText(t, "echo pasted-$((2+3))")
		b.Type(t, "\n")
		b.WaitTerminalText(t, "pasted-5")
		b.Type(t, "clear; echo copy-$((6*7))\n")
		b.WaitTerminalText(t, "copy-42")
		b.DoubleClick(t, `#client .xterm-rows span:text-is("copy-42")`)
		b.Press(t, "Control+Shift+C")
		var copied string
		b.Eval(t, `navigator.clipboard.readText()`, &copied)
		if copied != "copy-42" {
			t.Errorf("copied %q, want copy-42", copied)
		}
		b.Screenshot(t, "terminal")
		b.Type(t, "exit\n")
		b.WaitText(t, "#client .overlay", "exited")
		b.Screenshot(t, "ended")
		noProblems("terminal")
	})

	run("a used connect link shows the expired page", func(t *testing.T) {
		b.Goto(t, connectURL)
		b.WaitText(t, "body", "Your session has expired")
		b.Screenshot(t, "expired")
	})

	run("private key", func(t *testing.T) {
		key, err := os.ReadFile(lab["LAB_KEY"])
		if err != nil {
			t.Fatal(err)
		}
		b.Goto(t, base)
		b.OpenTerminal(t, "vm1")
		b.WaitVisible(t, "#client form.signin")
		b.Fill(t, "#client form.signin input[type=text]", lab["LAB_USER"])
		b.Click(t, `#client form.signin label:has-text("Private key")`)
		b.Fill(t, "#client form.signin textarea", string(key))
		b.Click(t, submit)
		b.WaitTerminalText(t, "$ ")
		b.Type(t, "echo key-$((40+2))\n")
		b.WaitTerminalText(t, "key-42")
		b.Type(t, "exit\n")
		b.WaitText(t, "#client .overlay", "exited")
		signOut()
	})

	run("clipboard disabled by the role", func(t *testing.T) {
		b.PortalLogin(t, base, "bob", TunnelPassword)
		b.OpenTerminal(t, "vm1")
		b.SignIn(t, lab["LAB_USER"], lab["LAB_PASSWORD"])
		b.WaitTerminalText(t, "$ ") // the shell's prompt
		b.Type(t, "echo typed-$((1+1))\n")
		b.WaitTerminalText(t, "typed-2")
		b.WaitText(t, "#client", "disabled")
		b.Paste(t, "echo pasted-$((2+3))")
		b.Type(t, "\necho after-paste\n")
		b.WaitTerminalText(t, "after-paste")
		if strings.Contains(b.TerminalText(t), "pasted-5") {
			t.Error("a paste reached the machine with the clipboard disabled")
		}
		b.Eval(t, `navigator.clipboard.writeText("clipboard unchanged").then(() => true)`, nil)
		b.DoubleClick(t, `#client .xterm-rows span:text-is("typed-2")`)
		b.Press(t, "Control+Shift+C")
		var copied string
		b.Eval(t, `navigator.clipboard.readText()`, &copied)
		if copied != "clipboard unchanged" {
			t.Errorf("copy went through with the clipboard disabled: %q", copied)
		}
		b.Screenshot(t, "clipboard-disabled")
		b.Type(t, "exit\n")
		b.WaitText(t, "#client .overlay", "exited")
		signOut()
	})

	run("host key mismatch", func(t *testing.T) {
		pub, _, _ := ed25519.GenerateKey(rand.Reader)
		impostor, _ := ssh.NewPublicKey(pub)
		d.Ctl(nil, "hostkeys", "forget", "vm1")
		if out, err := d.CtlStdin(string(ssh.MarshalAuthorizedKey(impostor)), "hostkeys", "pin", "vm1", "--key-file", "-"); err != nil {
			t.Fatalf("pin: %v\n%s", err, out)
		}
		defer func() {
			d.Ctl(nil, "hostkeys", "forget", "vm1")
			PinVM1(t, d)
		}()
		b.PortalLogin(t, base, "alice", TunnelPassword)
		b.OpenTerminal(t, "vm1")
		defer signOut()
		b.SignIn(t, lab["LAB_USER"], lab["LAB_PASSWORD"])
		b.WaitText(t, "#client .overlay", "identity")
		if b.Visible(t, `#client .overlay button:text("Reconnect")`) {
			t.Error("a host key mismatch offers Reconnect")
		}
		b.Screenshot(t, "host-key-mismatch")
	})

	run("an auditor plays the recording", func(t *testing.T) {
		b.PortalLogin(t, base, "carol", TunnelPassword)
		defer signOut()
		b.Click(t, `header a:text("Recordings")`)
		b.WaitVisible(t, "table.recordings")
		b.Click(t, `table.recordings a:text("Play")`)
		b.WaitVisible(t, "#player .ap-player")
		b.Click(t, "#player .ap-player")
		b.WaitText(t, "#player .ap-term", "key-42") // the newest recording: alice's key session
		b.Screenshot(t, "playback")
		noProblems("player")
	})

	run("others may not play recordings", func(t *testing.T) {
		b.PortalLogin(t, base, "bob", TunnelPassword)
		if b.Count(t, `header a:text("Recordings")`) != 0 {
			t.Error("bob sees the recordings link")
		}
		b.Goto(t, base+"recordings")
		b.WaitText(t, "body", "Not allowed")
	})

	// Keys typed on a keyboard whose layout vm1 does not have (desk.go's
	// key events: other layouts' characters, AltGr's, a dead key's) reach
	// the shell as UTF-8, byte for byte. As bob: alice's sessions are
	// recorded, and the auditor's case above plays the newest of them.
	run("UTF-8 typed in the terminal", func(t *testing.T) {
		if b.Goto(t, base); b.Count(t, "form.login") > 0 {
			b.PortalLogin(t, base, "bob", TunnelPassword)
		}
		defer signOut()
		b.OpenTerminal(t, "vm1")
		b.SignIn(t, lab["LAB_USER"], lab["LAB_PASSWORD"])
		b.WaitTerminalText(t, "$ ")
		name := fmt.Sprintf("utf8-%d.txt", os.Getpid())
		file := lab["LAB_DIR"] + "/vm1/home/" + lab["LAB_USER"] + "/" + name
		defer os.Remove(file)
		b.Type(t, "cat > "+name+"\n")
		text := "é ß ü ñ 中 Ω "
		for _, r := range text {
			Press(t, b, Char(r))
		}
		AltGr(t, b, Key{Key: "€", Code: "KeyE", Text: "€"})
		AltGr(t, b, Key{Key: "@", Code: "KeyQ", Text: "@"})
		DeadKey(t, b, "BracketLeft", Key{Key: "ê", Code: "KeyE", Text: "ê"})
		Press(t, b, Enter)
		b.Press(t, "Control+D") // end of cat's input
		b.Type(t, "echo written-$((6*7))\n")
		b.WaitTerminalText(t, "written-42")
		want := text + "€@ê\n"
		if got, err := os.ReadFile(file); err != nil || string(got) != want {
			t.Errorf("vm1's file holds %q (%v), want %q", got, err, want)
		}
		b.Type(t, "exit\n")
		b.WaitText(t, "#client .overlay", "exited")
	})
}
