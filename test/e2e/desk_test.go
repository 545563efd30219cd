package e2e

import (
	"crypto/rand"
	"encoding/hex"
	"net"
	"syscall"
	"testing"
	"time"
)

// TestBrowserDesk drives Debian's Chromium to vm2's second desktop (GNOME
// Remote Desktop, desk.go): keys typed on a keyboard whose layout the
// machine does not have (é ß ü ñ 中 Ω, AltGr's € and @, a dead key's ê)
// arrive as those characters in the desktop's xterm, over IPv4 and over
// IPv6; the Scancodes toggle still types ASCII and is remembered by the
// browser; text copied goes both ways between the browser's clipboard and
// the desktop's CLIPBOARD selection. One daemon and one browser for all.
// Screenshots are kept under test/artifacts/browser-desk.
func TestBrowserDesk(t *testing.T) {
	b := startBrowser(t, "browser-desk")
	DeskViewport(t, b)
	d := StartDaemonWith(t, ViaFDs, func(dir string) string { return DeskAt(WebRDPConfig(dir, false, ""), lab["VM2_DESK_4"]) })
	AddLabUsers(t, d, "alice")
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("the daemon's log ends:\n%s", tail(d.Log.String(), 6000))
			t.Logf("GNOME Remote Desktop's log ends:\n%s", tail(DeskGRDLog(t), 12000))
		}
	})
	if out, err := d.Ctl(nil, "hostkeys", "scan", DeskTarget, "--pin"); err != nil {
		t.Fatalf("hostkeys scan %s --pin: %v\n%s", DeskTarget, err, out)
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
	const scancodes = `#client button.tool:text("Scancodes")`
	open := func(t *testing.T) {
		t.Helper()
		b.Goto(t, base)
		b.OpenDesktop(t, DeskTarget)
		DesktopSignIn(t, b, lab["LAB_PASSWORD"])
		WaitClientState(t, b, "connected")
		WaitDeskInput(t, b, "probe")
	}
	disconnect := func(t *testing.T) {
		t.Helper()
		time.Sleep(500 * time.Millisecond) // iron-remote-desktop rescales 150 ms after showing (browser_rdp_test.go)
		b.Click(t, `#client button.disconnect`)
		WaitClientState(t, b, "ended")
	}
	pressed := func(t *testing.T) string {
		t.Helper()
		var s string
		b.Eval(t, `[...document.querySelectorAll("#client button.tool")].find((e) => e.textContent === "Scancodes")?.getAttribute("aria-pressed") || ""`, &s)
		return s
	}
	// typeAll types prefix and the characters of other layouts, then
	// AltGr's, then a dead key's, then Enter; it returns the line the
	// desktop must have received.
	typeAll := func(t *testing.T, prefix string) string {
		t.Helper()
		text := prefix + " é ß ü ñ 中 Ω "
		for _, r := range text {
			Press(t, b, Char(r))
		}
		AltGr(t, b, Key{Key: "€", Code: "KeyE", Text: "€"})
		AltGr(t, b, Key{Key: "@", Code: "KeyQ", Text: "@"})
		DeadKey(t, b, "BracketLeft", Key{Key: "ê", Code: "KeyE", Text: "ê"})
		Press(t, b, Enter)
		return text + "€@ê"
	}
	family := func(t *testing.T, want string) {
		t.Helper()
		addrs := SessionAddresses(d, DeskTarget)
		if len(addrs) == 0 {
			t.Fatalf("no session_start to %s", DeskTarget)
		}
		if host, _, _ := net.SplitHostPort(addrs[len(addrs)-1]); host != want {
			t.Errorf("the gateway dialled %s, want %s", addrs[len(addrs)-1], want)
		}
	}

	run("IPv4: unicode keys arrive as the characters typed", func(t *testing.T) {
		b.PortalLogin(t, base, "alice", TunnelPassword)
		open(t)
		if got := pressed(t); got != "false" {
			t.Errorf("a first desktop's Scancodes toggle is %q, want unicode (false)", got)
		}
		WaitDeskLine(t, typeAll(t, "v4"))
		family(t, lab["VM2_DESK_4"])
		b.Screenshot(t, "unicode-v4")
		disconnect(t)
	})

	// An input method composes in an editable element: the page's text
	// area inside the desktop. Chromium's IME emulation composes "中Ω" and
	// commits it, with no key events, as a Chinese input method would.
	run("an input method's text arrives as composed", func(t *testing.T) {
		open(t)
		for _, r := range "ime " {
			Press(t, b, Char(r))
		}
		b.CDP(t, "Input.imeSetComposition", map[string]any{"text": "中", "selectionStart": 1, "selectionEnd": 1}, nil)
		b.CDP(t, "Input.imeSetComposition", map[string]any{"text": "中Ω", "selectionStart": 2, "selectionEnd": 2}, nil)
		b.CDP(t, "Input.insertText", map[string]any{"text": "中Ω"}, nil)
		Press(t, b, Enter)
		WaitDeskLine(t, "ime 中Ω")
		disconnect(t)
	})

	run("Scancodes: ASCII still arrives, and the choice is remembered", func(t *testing.T) {
		open(t)
		b.Click(t, scancodes)
		if got := pressed(t); got != "true" {
			t.Fatalf("after a click the Scancodes toggle is %q", got)
		}
		TypeKeys(t, b, "scancodes 42")
		WaitDeskLine(t, "scancodes 42")
		disconnect(t)
		open(t)
		if got := pressed(t); got != "true" {
			t.Errorf("the next desktop's Scancodes toggle is %q: the choice was not remembered", got)
		}
		b.Click(t, scancodes) // back to unicode, for the cases below and the next desktop
		if got := pressed(t); got != "false" {
			t.Errorf("after a second click the Scancodes toggle is %q", got)
		}
		WaitDeskLine(t, typeAll(t, "back"))
		disconnect(t)
	})

	run("IPv6: unicode keys arrive as the characters typed", func(t *testing.T) {
		reload(DeskAt(WebRDPConfig(d.Dir, false, ""), lab["VM2_DESK_6"]))
		open(t)
		WaitDeskLine(t, typeAll(t, "v6"))
		family(t, lab["VM2_DESK_6"])
		disconnect(t)
	})

	run("the clipboard both ways", func(t *testing.T) {
		channels := DeskClipboardChannels(t)
		open(t)
		defer disconnect(t)
		NeedDeskClipboard(t, d, channels)

		nonce := make([]byte, 4)
		rand.Read(nonce)
		toDesk := "from the browser é 中 " + hex.EncodeToString(nonce)
		SetBrowserClipboard(t, b, toDesk)
		for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(200 * time.Millisecond) {
			if got, _ := DeskClipboard(t); got == toDesk {
				break
			}
			if time.Now().After(deadline) {
				got, ok := DeskClipboard(t)
				t.Fatalf("the browser's copy did not reach vm2's clipboard: %q (%v)", got, ok)
			}
		}

		toBrowser := "from vm2 ß Ω " + hex.EncodeToString(nonce)
		SetDeskClipboard(t, toBrowser)
		for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(200 * time.Millisecond) {
			if got := BrowserClipboard(t, b); got == toBrowser {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("vm2's copy did not reach the browser's clipboard: %q", BrowserClipboard(t, b))
			}
		}
		b.Screenshot(t, "clipboard")
		if p := b.TakeProblems(t); len(p.Violations)+len(p.Exceptions) > 0 {
			t.Errorf("CSP violations %q, exceptions %q", p.Violations, p.Exceptions)
		}
	})
}
