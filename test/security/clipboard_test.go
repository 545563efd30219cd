package security

import (
	"crypto/rand"
	"encoding/hex"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bastiond/bastiond/test/e2e"
	"github.com/bastiond/bastiond/web/browsertest"
)

// lastChars is the end of s, at most n bytes of it.
func lastChars(s string, n int) string { return s[max(0, len(s)-n):] }

// invariant18RDPClipboard: a desktop whose role disables the clipboard
// carries nothing, either way, even when the page asks for the clipboard
// anyway. The server is vm2's second desktop (GNOME Remote Desktop), which
// offers the clipboard: alice's session opens its clipboard channel (the
// control, proving the sign that is looked for); bob's, over IPv6 from the
// page as served, says "Copy and paste disabled", and over IPv4 from a page
// altered to ask for the clipboard, the gateway renames the channel. In
// both, GNOME Remote Desktop opens no clipboard channel, the browser's copy
// never reaches vm2's CLIPBOARD selection and vm2's never reaches the
// browser's clipboard, although keys typed after each copy do arrive.
func invariant18RDPClipboard(t *testing.T) {
	b := e2e.StartBrowser(t, "invariant18-rdp-clipboard")
	e2e.DeskViewport(t, b)
	v4, v6 := e2e.LabValue(t, "VM2_DESK_4"), e2e.LabValue(t, "VM2_DESK_6")
	d := e2e.StartDaemonWith(t, e2e.ViaFDs, func(dir string) string { return e2e.DeskAt(e2e.WebRDPConfig(dir, false, ""), v4) })
	removeFirewallAtEnd(t)
	e2e.AddLabUsers(t, d, "alice", "bob")
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("the daemon's log ends:\n%s", lastChars(d.Log.String(), 4000))
			t.Logf("GNOME Remote Desktop's log ends:\n%s", lastChars(e2e.DeskGRDLog(t), 2000))
		}
	})
	if out, err := d.Ctl(nil, "hostkeys", "scan", e2e.DeskTarget, "--pin"); err != nil {
		t.Fatalf("hostkeys scan %s --pin: %v\n%s", e2e.DeskTarget, err, out)
	}
	at := func(addr string) {
		t.Helper()
		d.WriteConfig(e2e.DeskAt(e2e.WebRDPConfig(d.Dir, false, ""), addr))
		d.Signal(syscall.SIGHUP)
		d.WaitNotify("READY=1", 10*time.Second)
	}
	base := "https://" + e2e.ServerName + "/"
	open := func(t *testing.T, user string) {
		t.Helper()
		b.Goto(t, base)
		if b.Count(t, "form.login") == 0 {
			b.Click(t, `header form[action="/logout"] button`)
			b.WaitVisible(t, "form.login")
		}
		b.PortalLogin(t, base, user, e2e.TunnelPassword)
		b.OpenDesktop(t, e2e.DeskTarget)
		e2e.DesktopSignIn(t, b, e2e.LabValue(t, "LAB_PASSWORD"))
		e2e.WaitClientState(t, b, "connected")
		e2e.WaitDeskInput(t, b, "probe")
	}
	disconnect := func(t *testing.T) {
		t.Helper()
		time.Sleep(500 * time.Millisecond) // iron-remote-desktop rescales 150 ms after showing
		b.Click(t, `#client button.disconnect`)
		e2e.WaitClientState(t, b, "ended")
	}
	nonce := func() string {
		n := make([]byte, 4)
		rand.Read(n)
		return hex.EncodeToString(n)
	}
	// nothingEitherWay copies each way and proves that nothing arrived: keys
	// typed after the copy reach vm2 (the session carries what it may), and
	// the other side's clipboard still holds what it held.
	nothingEitherWay := func(t *testing.T, channels int) {
		t.Helper()
		sentinel := "vm2 sentinel " + nonce()
		e2e.SetDeskClipboard(t, sentinel)
		e2e.SetBrowserClipboard(t, b, "browser secret "+nonce())
		marker := "after the browser's copy " + nonce()
		e2e.TypeKeys(t, b, marker)
		e2e.WaitDeskLine(t, marker)
		if got, _ := e2e.DeskClipboard(t); got != sentinel {
			t.Errorf("vm2's clipboard holds %q, not %q: the browser's copy went through", got, sentinel)
		}

		before := e2e.BrowserClipboard(t, b)
		e2e.SetDeskClipboard(t, "vm2 secret "+nonce())
		marker = "after vm2's copy " + nonce()
		e2e.TypeKeys(t, b, marker)
		e2e.WaitDeskLine(t, marker)
		if got := e2e.BrowserClipboard(t, b); got != before {
			t.Errorf("the browser's clipboard holds %q, not %q: vm2's copy went through", got, before)
		}
		if n := e2e.DeskClipboardChannels(t); n != channels {
			t.Errorf("GNOME Remote Desktop opened %d clipboard channels, had %d before", n, channels)
		}
	}

	if !t.Run("control: alice's desktop opens the clipboard channel", func(t *testing.T) {
		before := e2e.DeskClipboardChannels(t)
		open(t, "alice")
		defer disconnect(t)
		e2e.NeedDeskClipboard(t, d, before)
	}) {
		t.Fatal("without the control, a desktop that opens no clipboard channel proves nothing")
	}

	t.Run("IPv6: bob's page as served", func(t *testing.T) {
		at(v6)
		channels := e2e.DeskClipboardChannels(t)
		open(t, "bob")
		if !b.Visible(t, `#client .badge:has-text("Copy and paste disabled")`) {
			t.Error("bob's page does not say that copy and paste are disabled")
		}
		nothingEitherWay(t, channels)
		b.Screenshot(t, "bob-v6")
		disconnect(t)
	})

	// A page altered to ask for the clipboard gets a channel the machine
	// does not know (the gateway renamed it). GNOME Remote Desktop closes
	// such a session, mostly while it is set up (the page then ends it,
	// saying the machine closed the connection), sometimes once the client
	// writes to that channel; a machine that ignores the channel lets the
	// session carry on. Either way nothing crosses.
	t.Run("IPv4: bob's page altered to ask for the clipboard", func(t *testing.T) {
		at(v4)
		channels := e2e.DeskClipboardChannels(t)
		removed := strings.Count(d.Log.String(), "rdp clipboard channel removed")
		sentinel, secret := "vm2 sentinel "+nonce(), "browser secret "+nonce()
		e2e.SetDeskClipboard(t, sentinel)
		undo := askForClipboard(t, b)
		defer undo()
		b.Goto(t, base)
		if b.Count(t, "form.login") == 0 {
			b.Click(t, `header form[action="/logout"] button`)
			b.WaitVisible(t, "form.login")
		}
		b.PortalLogin(t, base, "bob", e2e.TunnelPassword)
		e2e.SetBrowserClipboard(t, b, secret)
		b.OpenDesktop(t, e2e.DeskTarget)
		if b.Visible(t, `#client .badge:has-text("Copy and paste disabled")`) {
			t.Fatal("the page was not altered: it still says copy and paste are disabled")
		}
		e2e.DesktopSignIn(t, b, e2e.LabValue(t, "LAB_PASSWORD"))
		marker, typed := "after the altered page's copy "+nonce(), false
		for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(200 * time.Millisecond) {
			state := e2e.ClientState(t, b)
			if state == "connected" && !typed {
				e2e.TypeKeys(t, b, marker)
				typed = true
			}
			if typed && slices.Contains(strings.Split(e2e.DeskTyped(t), "\n"), marker) {
				t.Log("the session carried on without the clipboard")
				break
			}
			if state == "ended" {
				t.Logf("the machine ended the session: %q", b.Text(t, "#client"))
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("the altered page's session neither carried the keys typed nor ended: the page is %q", state)
			}
		}
		if n := strings.Count(d.Log.String(), "rdp clipboard channel removed"); n == removed {
			t.Error("the gateway did not rename the clipboard channel the altered page asked for")
		}
		if got, _ := e2e.DeskClipboard(t); got != sentinel {
			t.Errorf("vm2's clipboard holds %q, not %q: the browser's copy went through", got, sentinel)
		}
		if got := e2e.BrowserClipboard(t, b); got != secret {
			t.Errorf("the browser's clipboard holds %q, not %q: vm2's copy went through", got, secret)
		}
		if n := e2e.DeskClipboardChannels(t); n != channels {
			t.Errorf("GNOME Remote Desktop opened %d clipboard channels, had %d before", n, channels)
		}
		b.Screenshot(t, "bob-v4-altered")
		if e2e.ClientState(t, b) == "connected" {
			disconnect(t)
		}
	})
}

// askForClipboard makes the current tab's next pages ask for the clipboard
// whatever the server says: before the desktop's script reads
// data-clipboard (module scripts run after the document turns
// "interactive"), it is set to true. The returned function undoes it.
func askForClipboard(t *testing.T, b *browsertest.Browser) func() {
	t.Helper()
	var r struct{ Identifier string }
	b.CDP(t, "Page.enable", nil, nil) // a session's scripts run on new documents once its Page domain is on
	b.CDP(t, "Page.addScriptToEvaluateOnNewDocument", map[string]any{"source": `document.addEventListener("readystatechange", () => {
  const c = document.getElementById("client");
  if (document.readyState === "interactive" && c && c.dataset.protocol === "rdp") c.dataset.clipboard = "true";
});`}, &r)
	return func() {
		b.CDP(t, "Page.removeScriptToEvaluateOnNewDocument", map[string]any{"identifier": r.Identifier}, nil)
	}
}
