package e2e

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/bastiond/bastiond/api/admin"
)

// TestLinks: an admin issues shareable links with bastionctl, and people
// without a bastion account open them: a terminal on vm1 as the lab user
// in Chromium over IPv4 (the machine's password typed in the page, a
// command run), the second use over IPv6 from another client, the third
// refused with the expired page, a revoked link too; the records name
// link:ID; an RDP link opens vm2's desktop. One daemon, one browser; each
// use starts with no cookie, as a new person would.
func TestLinks(t *testing.T) {
	b := StartBrowser(t, "links", "--host-resolver-rules=MAP "+ServerName+" "+lab["BASTION_PUB4"])
	d := StartDaemonWith(t, ViaFDs, func(dir string) string { return LabConfig(dir, "links:\n  enabled: true\n") })
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("the daemon's log ends:\n%s", tail(d.Log.String(), 6000))
		}
	})
	PinVM1(t, d)
	PinVM2(t, d)
	run := func(name string, f func(t *testing.T)) {
		t.Run(name, func(t *testing.T) {
			defer func() {
				if t.Failed() {
					t.Logf("the page says %q; the daemon's log ends:\n%s", b.Text(t, "body"), tail(d.Log.String(), 3000))
					b.Screenshot(t, "failed-"+name)
				}
			}()
			f(t)
		})
	}
	create := func(t *testing.T, args ...string) admin.LinkCreated {
		t.Helper()
		out, err := d.Ctl(nil, append([]string{"links", "create", "--json"}, args...)...)
		var c admin.LinkCreated
		if err != nil || json.Unmarshal([]byte(out), &c) != nil || !strings.HasPrefix(c.URL, "https://"+ServerName+"/l/") {
			t.Fatalf("links create: %v\n%s", err, out)
		}
		return c
	}
	// fresh forgets the browser's cookies: the next page is a stranger's.
	fresh := func(t *testing.T) { b.CDP(t, "Network.clearBrowserCookies", nil, nil) }
	refused := func(t *testing.T, id, reason string) {
		t.Helper()
		if auditEvents(t, d, func(e map[string]any) bool {
			return e["event"] == "link_refused" && e["link"] == id && e["reason"] == reason
		}) != 1 {
			t.Errorf("no link_refused %s of link %s", reason, id)
		}
	}

	ssh := create(t, "--target", "vm1", "--protocol", "ssh", "--login", lab["LAB_USER"], "--valid", "1h", "--uses", "2")
	id := ssh.Link.ID
	run("first use in Chromium over IPv4", func(t *testing.T) {
		fresh(t)
		b.Goto(t, ssh.URL)
		b.WaitText(t, "body", "vm1")
		b.Screenshot(t, "link-page")
		b.Click(t, "#open-link")
		b.WaitVisible(t, "#client")
		b.SignIn(t, lab["LAB_USER"], lab["LAB_PASSWORD"])
		b.WaitTerminalText(t, "$ ")
		b.Type(t, "echo link-$((6*7))\n")
		b.WaitTerminalText(t, "link-42")
		if n := b.Count(t, "#client form.signin select option"); n > 1 {
			t.Errorf("the terminal offered %d logins", n)
		}
		b.Screenshot(t, "link-terminal")
		b.Type(t, "exit\n")
		b.WaitText(t, "#client .overlay", "exited")
	})
	run("the link's session reaches nothing else", func(t *testing.T) {
		b.Goto(t, "https://"+ServerName+"/")
		b.WaitVisible(t, "form.login")
	})
	run("second use over IPv6, no browser account", func(t *testing.T) {
		u := NewWebUser(t, lab["BASTION_PUB6"])
		path := strings.TrimPrefix(ssh.URL, "https://"+ServerName)
		resp, page := u.do(http.MethodGet, path, nil)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("link page: %d\n%s", resp.StatusCode, page)
		}
		resp, page = u.do(http.MethodPost, path, url.Values{"csrf": {csrfIn(t, page)}})
		tk, ok := strings.CutPrefix(resp.Header.Get("Location"), "/connect/")
		if resp.StatusCode != http.StatusSeeOther || !ok {
			t.Fatalf("open: %d %s\n%s", resp.StatusCode, resp.Header.Get("Location"), page)
		}
		ws, _, err := u.DialTicket("ssh", tk)
		if err != nil {
			t.Fatal(err)
		}
		tc := linkTerminal(t, ws)
		if len(tc.Hello.Logins) != 1 || tc.Hello.Logins[0] != lab["LAB_USER"] {
			t.Errorf("the terminal offers %v", tc.Hello.Logins)
		}
		tc.Shell(lab["LAB_PASSWORD"])
		tc.TypeText("echo v6-$((6*7))\n")
		tc.ScreenHas("v6-42", 10*time.Second)
		tc.TypeText("exit\n")
		tc.Ended()
	})
	run("third use shows the expired page", func(t *testing.T) {
		fresh(t)
		b.Goto(t, ssh.URL)
		b.WaitText(t, "body", "Your session has expired")
		b.Screenshot(t, "link-used-up")
		refused(t, id, "used_up")
	})
	run("a revoked link shows the expired page", func(t *testing.T) {
		r := create(t, "--target", "vm1", "--protocol", "ssh", "--login", lab["LAB_USER"])
		if out, err := d.Ctl(nil, "links", "revoke", r.Link.ID); err != nil {
			t.Fatalf("revoke: %v\n%s", err, out)
		}
		fresh(t)
		b.Goto(t, r.URL)
		b.WaitText(t, "body", "Your session has expired")
		refused(t, r.Link.ID, "revoked")
		out, _ := d.Ctl(nil, "links")
		if !strings.Contains(out, r.Link.ID) || !strings.Contains(out, "revoked") || !strings.Contains(out, "used_up") {
			t.Errorf("links:\n%s", out)
		}
	})
	run("the records name the link", func(t *testing.T) {
		for deadline := time.Now().Add(10 * time.Second); len(EndedRecords(d, "vm1")) < 2 && time.Now().Before(deadline); {
			time.Sleep(100 * time.Millisecond)
		}
		recs := EndedRecords(d, "vm1")
		if len(recs) != 2 {
			t.Fatalf("%d session_end records of vm1", len(recs))
		}
		for _, r := range recs {
			if r["user"] != "link:"+id || r["via"] != "link" || r["login"] != lab["LAB_USER"] || r["recording"] == nil {
				t.Errorf("record %v", r)
			}
		}
		if n := auditEvents(t, d, func(e map[string]any) bool { return e["event"] == "link_used" && e["link"] == id }); n != 2 {
			t.Errorf("%d link_used events", n)
		}
	})
	run("an RDP link opens vm2's desktop", func(t *testing.T) {
		r := create(t, "--target", "vm2", "--protocol", "rdp", "--login", lab["LAB_USER"])
		fresh(t)
		b.Goto(t, r.URL)
		b.WaitText(t, "body", "remote desktop")
		b.Click(t, "#open-link")
		DesktopSignIn(t, b, lab["LAB_PASSWORD"])
		WaitClientState(t, b, "connected")
		DesktopShown(t, b)
		b.Screenshot(t, "link-desktop")
	})
}

// linkTerminal is the terminal on ws, opened with a link's ticket, once
// its hello has arrived (OpenTerminal, without asking for a ticket).
func linkTerminal(t *testing.T, ws *websocket.Conn) *TermClient {
	t.Helper()
	tc := &TermClient{t: t, ws: ws, wake: make(chan struct{}, 1)}
	t.Cleanup(func() { ws.CloseNow() })
	typ, data, err := ws.Read(context.Background())
	if err != nil || typ != websocket.MessageText || json.Unmarshal(data, &tc.Hello) != nil || tc.Hello.Type != "hello" {
		t.Fatalf("first message: %v %q %v", typ, data, err)
	}
	go tc.read()
	return tc
}
