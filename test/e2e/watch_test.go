package e2e

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/bastiond/bastiond/api/admin"
	"github.com/bastiond/bastiond/web/browsertest"
)

// watchAccess: alice's SSH on vm1 and desktop on vm2, carol audits.
const watchAccess = `access:
  groups:
    ops: [alice]
    auditors: [carol]
  roles:
    - name: ops
      subjects: [group:ops]
      targets: [vm1, vm2]
      protocols: [ssh, rdp]
    - name: audit
      subjects: [group:auditors]
      auditor: true
limits:
  target_timeout: 2s
`

// liveID waits for alice's live browser session to target and returns its
// ID, as `bastionctl sessions` shows it.
func liveID(t *testing.T, d *Daemon, target string) string {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		out, err := d.Ctl(nil, "sessions", "--json")
		var list []admin.Session
		if err == nil && json.Unmarshal([]byte(out), &list) == nil {
			for _, s := range list {
				if s.Target == target && s.User == "alice" && s.Via == "browser" {
					return s.ID
				}
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no live session of alice's to %s: %v\n%s", target, err, out)
		}
	}
}

// TestBrowserWatch: in Chromium, alice (over IPv6) works in a terminal on
// vm1 and a desktop on vm2, and carol, an auditor in another browser (over
// IPv4), finds them on the Live sessions page and watches each: carol's
// page shows what alice's shows, from a catch-up on, and alice's header says
// carol is watching, until she leaves. `bastionctl sessions watch ID` prints
// the page's address. Screenshots of both sides are kept under
// test/artifacts/browser-watch.
func TestBrowserWatch(t *testing.T) {
	pub4, pub6 := LabValue(t, "BASTION_PUB4"), LabValue(t, "BASTION_PUB6")
	alice := StartBrowser(t, "browser-watch", "--host-resolver-rules=MAP "+ServerName+" ["+pub6+"]")
	carol := StartBrowser(t, "browser-watch", "--host-resolver-rules=MAP "+ServerName+" "+pub4)
	d := StartDaemonWith(t, ViaFDs, func(dir string) string { return LabConfig(dir, watchAccess) })
	AddLabUsers(t, d, "alice", "carol")
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("the daemon's log ends:\n%s", tail(d.Log.String(), 6000))
		}
	})
	PinVM1(t, d)
	PinVM2(t, d)
	base := "https://" + ServerName + "/"
	run := func(name string, f func(t *testing.T)) {
		t.Run(name, func(t *testing.T) {
			defer func() {
				if t.Failed() {
					alice.Screenshot(t, "failed-"+name+"-alice")
					carol.Screenshot(t, "failed-"+name+"-carol")
				}
			}()
			f(t)
		})
	}
	watchState := func(b *browsertest.Browser) string {
		var s string
		b.Eval(t, `document.querySelector("#watch")?.dataset.state || ""`, &s)
		return s
	}
	waitWatching := func(t *testing.T, b *browsertest.Browser) {
		t.Helper()
		for deadline := time.Now().Add(60 * time.Second); watchState(b) != "watching"; time.Sleep(200 * time.Millisecond) {
			if time.Now().After(deadline) || watchState(b) == "ended" || watchState(b) == "failed" {
				var reason string
				b.Eval(t, `document.querySelector("#watch")?.dataset.reason || ""`, &reason)
				t.Fatalf("the live view is %q (%q): %q; the page's problems: %+v", watchState(b), reason, b.Text(t, "main"), b.TakeProblems(t))
			}
		}
	}
	watchedText := func(b *browsertest.Browser) string {
		var s string
		b.Eval(t, `Array.from(document.querySelectorAll("#watch .xterm-rows > div")).map(d => d.textContent).join("\n")`, &s)
		return s
	}
	waitWatched := func(t *testing.T, want string) {
		t.Helper()
		for deadline := time.Now().Add(20 * time.Second); !strings.Contains(watchedText(carol), want); time.Sleep(200 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("the live view does not show %q:\n%s", want, watchedText(carol))
			}
		}
	}
	alice.PortalLogin(t, base, "alice", TunnelPassword)
	carol.PortalLogin(t, base, "carol", TunnelPassword)

	run("terminal", func(t *testing.T) {
		alice.OpenTerminal(t, "vm1")
		alice.SignIn(t, lab["LAB_USER"], lab["LAB_PASSWORD"])
		alice.WaitTerminalText(t, "$ ")
		alice.Type(t, "echo before-$((6*7))\n")
		alice.WaitTerminalText(t, "before-42")
		id := liveID(t, d, "vm1")
		if out, err := d.Ctl(nil, "sessions", "watch", id); err != nil || strings.TrimSpace(out) != base+"watch/"+id {
			t.Errorf("sessions watch: %v %q", err, out)
		}

		carol.Goto(t, base+"sessions")
		carol.WaitVisible(t, `a[href="/watch/`+id+`"]`)
		carol.Screenshot(t, "sessions")
		carol.Click(t, `a[href="/watch/`+id+`"]`)
		waitWatching(t, carol)
		waitWatched(t, "before-42") // the catch-up
		alice.WaitText(t, "#client .badge.watched", "carol is watching this session")
		alice.Type(t, "echo live-$((7*6))\n")
		waitWatched(t, "live-42")
		carol.Press(t, "x") // a watcher's key goes nowhere
		carol.Screenshot(t, "live-view-terminal")
		alice.Screenshot(t, "watched-terminal")
		if p := carol.TakeProblems(t); len(p.Violations)+len(p.Exceptions) > 0 {
			t.Errorf("the live view: CSP violations %q, exceptions %q", p.Violations, p.Exceptions)
		}
		carol.Goto(t, base)
		alice.WaitHidden(t, "#client .badge.watched")
		alice.Type(t, "exit\n")
		alice.WaitText(t, "#client .overlay", "exited")
	})

	run("desktop", func(t *testing.T) {
		alice.Goto(t, base)
		alice.OpenDesktop(t, "vm2")
		DesktopSignIn(t, alice, lab["LAB_PASSWORD"])
		WaitClientState(t, alice, "connected")
		DesktopShown(t, alice)
		id := liveID(t, d, "vm2")

		carol.Goto(t, base+"watch/"+id)
		waitWatching(t, carol)
		DesktopShown(t, carol)
		alice.WaitText(t, "#client .badge.watched", "carol is watching this session")
		carol.Screenshot(t, "live-view-desktop")
		alice.Screenshot(t, "watched-desktop")
		carol.Goto(t, base)
		alice.WaitHidden(t, "#client .badge.watched")
	})
}
