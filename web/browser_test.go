package web

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/bastiond/bastiond/web/browsertest"
)

// The browser tests load the built pages in headless Chromium under the
// production CSP, with a fake bastiond (site_test.go) on the other end of
// the WebSocket. They need `make web` first, and skip without it. Set
// BASTIOND_ARTIFACTS to keep the screenshots.

func startBrowser(t *testing.T) (*site, *browsertest.Browser) {
	t.Helper()
	if !Built() {
		t.Skip("web/dist is not built: run make web")
	}
	cfg := browsertest.Config{WebDir: ".", Artifacts: os.Getenv("BASTIOND_ARTIFACTS")}
	if cfg.Artifacts == "" {
		cfg.Artifacts = t.TempDir()
	}
	if why := browsertest.Missing(cfg); why != "" {
		t.Skip("browser tests: " + why)
	}
	s := newSite(t)
	b := browsertest.Start(t, cfg)
	t.Logf("screenshots in %s", cfg.Artifacts)
	return s, b
}

// hello is the server's first message, with fields replaced by over.
func hello(over map[string]any) map[string]any {
	msg := map[string]any{"type": "hello", "target": testTarget, "certificate": false, "clipboard": true, "recorded": false, "idle_timeout": 1200}
	for k, v := range over {
		msg[k] = v
	}
	return msg
}

// noProblems fails the test on CSP violations and script errors since the
// last check. Console errors are logged only: failed requests (a 403 the
// test asked for) show up there.
func noProblems(t *testing.T, b *browsertest.Browser) {
	t.Helper()
	p := b.TakeProblems(t)
	for _, v := range p.Violations {
		t.Errorf("CSP violation: %s", v)
	}
	for _, e := range p.Exceptions {
		t.Errorf("page error: %s", e)
	}
	for _, c := range p.Console {
		t.Logf("console error: %s", c)
	}
}

// open loads the connect page for ticket and returns the WebSocket it opened.
func open(t *testing.T, s *site, b *browsertest.Browser, ticket string) *peer {
	t.Helper()
	b.TakeProblems(t) // a failed subtest's leftovers are not this one's
	b.Viewport(t, 1000, 700)
	b.Goto(t, s.URL+"/connect/"+ticket)
	p := s.accept(t)
	if p.ticket != ticket || p.subprotocol != "bastion-ssh.v1" {
		t.Fatalf("WebSocket with ticket %q and subprotocol %q, want %q and bastion-ssh.v1", p.ticket, p.subprotocol, ticket)
	}
	return p
}

// ready opens the shell, writes output and waits until the terminal shows
// its last line.
func ready(t *testing.T, p *peer, b *browsertest.Browser, output string) {
	t.Helper()
	p.send(t, map[string]any{"type": "ready", "session": "5f2c0a9e13b7"})
	p.output(t, output)
	b.WaitTerminalText(t, strings.TrimSpace(output[strings.LastIndex(output, "\n")+1:]))
}

// checkAuth checks an auth message's fields other than cols and rows, which
// must be positive, and returns those.
func checkAuth(t *testing.T, msg map[string]any, want map[string]any) (cols, rows float64) {
	t.Helper()
	cols, _ = msg["cols"].(float64)
	rows, _ = msg["rows"].(float64)
	if cols < 2 || rows < 2 {
		t.Errorf("auth with %v cols and %v rows", msg["cols"], msg["rows"])
	}
	delete(msg, "cols")
	delete(msg, "rows")
	if want["type"] = "auth"; !reflect.DeepEqual(msg, want) {
		t.Errorf("auth is %v, want %v", msg, want)
	}
	return cols, rows
}

// inPage reports whether secret appears in the document, in a form field or in the URL.
func inPage(t *testing.T, b *browsertest.Browser, secret string) bool {
	t.Helper()
	var found bool
	b.Eval(t, fmt.Sprintf(`(() => {
		const s = %q;
		return document.documentElement.outerHTML.includes(s) || location.href.includes(s) ||
			Array.from(document.querySelectorAll("input, textarea"), (e) => e.value).some((v) => v.includes(s));
	})()`, secret), &found)
	return found
}

func expectPaste(t *testing.T, p *peer, want string) {
	t.Helper()
	if got := p.expect(t, "paste")["data"]; got != want {
		t.Errorf("paste data %q, want %q", got, want)
	}
}

const (
	reconnectButton = `#client .overlay button:text("Reconnect")`
	submitButton    = `#client form.signin button[type=submit]`
)

func TestConnectPage(t *testing.T) {
	s, b := startBrowser(t)

	t.Run("password sign-in and terminal", func(t *testing.T) {
		const password = "s3cret-pw-7Qx"
		p := open(t, s, b, "first-ticket")
		p.send(t, hello(map[string]any{"logins": []string{"lab", "admin"}, "recorded": true}))

		b.WaitVisible(t, "#client form.signin select")
		var logins []string
		b.Eval(t, `Array.from(document.querySelectorAll("#client select option"), (o) => o.value)`, &logins)
		if !reflect.DeepEqual(logins, []string{"lab", "admin"}) {
			t.Errorf("login choices %q, want lab and admin", logins)
		}
		if !b.Visible(t, "#client .badge.recorded") {
			t.Error("no recorded indicator")
		}
		b.Select(t, "#client form.signin select", "admin")
		b.Fill(t, "#client form.signin input[type=password]", password)
		b.Screenshot(t, "signin")
		b.Click(t, submitButton)
		cols, rows := checkAuth(t, p.expect(t, "auth"), map[string]any{"login": "admin", "password": password})
		if inPage(t, b, password) {
			t.Error("the password is still in the page after sign-in")
		}

		ready(t, p, b, "Welcome to vm1\r\n\x1b[31mred\x1b[0m \x1b[38;2;255;100;0mtruecolor\x1b[0m\r\nadmin@vm1:~$ ")
		// xterm.js's default red comes from its theme rules, the orange from a
		// truecolor cell style: what the CSP blocks without build.mjs's patches.
		var colours []string
		b.Eval(t, `(() => {
			const spans = Array.from(document.querySelectorAll("#client .xterm-rows span"));
			return ["red", "truecolor"].map((w) => { const s = spans.find((s) => s.textContent === w); return s ? getComputedStyle(s).color : "missing"; });
		})()`, &colours)
		if want := []string{"rgb(204, 0, 0)", "rgb(255, 100, 0)"}; !reflect.DeepEqual(colours, want) {
			t.Errorf("terminal colours %q, want %q", colours, want)
		}
		var focused bool
		b.Eval(t, `document.activeElement?.classList.contains("xterm-helper-textarea") ?? false`, &focused)
		if !focused {
			t.Error("the terminal does not have the focus once ready")
		}
		b.Screenshot(t, "terminal")

		// Ctrl+Shift+C copies the selection (a double-click selects a word).
		b.DoubleClick(t, `#client .xterm-rows span:text-is("truecolor")`)
		b.Press(t, "Control+Shift+C")
		var copied string
		b.Eval(t, `navigator.clipboard.readText()`, &copied)
		if copied != "truecolor" {
			t.Errorf("Ctrl+Shift+C copied %q, want the selected word", copied)
		}

		// Keystrokes, UTF-8 encoded, in binary frames.
		b.Type(t, "ls é\r")
		p.expectInput(t, "ls é\r")

		// A smaller window: one resize with the new size.
		b.Viewport(t, 640, 420)
		rs := p.expect(t, "resize")
		if c, r := rs["cols"].(float64), rs["rows"].(float64); c >= cols || r >= rows || c < 2 || r < 2 {
			t.Errorf("resize to %vx%v from %vx%v", c, r, cols, rows)
		}
		b.Screenshot(t, "terminal-small")

		// Paste arrives as a paste message, prepared as xterm.js would type it.
		if !b.Paste(t, "echo one\necho two") {
			t.Error("the paste event went on to its default action")
		}
		expectPaste(t, p, "echo one\recho two")
		p.output(t, "\x1b[?2004hbracketed$ ")
		b.WaitTerminalText(t, "bracketed$")
		b.Paste(t, "x\x1b[201~y")
		expectPaste(t, p, "\x1b[200~xy\x1b[201~")
		p.output(t, "\x1b[?2004l\r\nplain$ ")
		b.WaitTerminalText(t, "plain$")
		b.Eval(t, `navigator.clipboard.writeText("from the clipboard").then(() => true)`, nil)
		b.RightClick(t, "#client .xterm-screen")
		expectPaste(t, p, "from the clipboard")
		// A long paste comes in several messages, each well under 64 KiB.
		long := strings.Repeat("0123456789\u2603\x01", 1500) + "😀"
		b.Paste(t, long)
		var got string
		for len(got) < len(long) {
			f, err := p.next(10 * time.Second)
			if err != nil || f.binary || len(f.data) > 64<<10 {
				t.Fatalf("long paste: frame of %d bytes (binary %v), error %v", len(f.data), f.binary, err)
			}
			var msg struct{ Type, Data string }
			json.Unmarshal(f.data, &msg)
			got += msg.Data
		}
		if got != long {
			t.Error("the long paste arrived changed")
		}

		// An idle warning shows a countdown until "active" or a keystroke.
		p.send(t, map[string]any{"type": "idle_warning", "seconds": 45})
		b.WaitVisible(t, "#client .banner")
		if text := b.Text(t, "#client .banner"); !strings.Contains(text, "45 s") && !strings.Contains(text, "44 s") {
			t.Errorf("idle banner says %q", text)
		}
		b.Screenshot(t, "idle-warning")
		p.send(t, map[string]any{"type": "active"})
		b.WaitHidden(t, "#client .banner")
		p.send(t, map[string]any{"type": "idle_warning", "seconds": 45})
		b.WaitVisible(t, "#client .banner")
		b.Type(t, "k")
		p.expectInput(t, "k")
		b.WaitHidden(t, "#client .banner")

		// Auditors watching: the header says who, until they leave.
		p.send(t, map[string]any{"type": "watchers", "watchers": []string{"carol"}})
		b.WaitText(t, "#client .badge.watched", "carol is watching this session")
		p.send(t, map[string]any{"type": "watchers", "watchers": []string{"carol", "dave"}})
		b.WaitText(t, "#client .badge.watched", "carol and dave are watching this session")
		b.Screenshot(t, "watched")
		p.send(t, map[string]any{"type": "watchers", "watchers": []string{}})
		b.WaitHidden(t, "#client .badge.watched")

		// End with reconnect: the message and a Reconnect button.
		p.send(t, map[string]any{"type": "end", "reason": "network", "message": "vm1 stopped answering.", "reconnect": true})
		p.conn.Close(websocket.StatusNormalClosure, "")
		b.WaitText(t, "#client .overlay", "vm1 stopped answering.")
		b.WaitVisible(t, reconnectButton)
		b.Screenshot(t, "ended")

		// Reconnect: a new ticket from /api/connect, a new WebSocket, the prompt again with the login kept.
		b.Click(t, reconnectButton)
		p2 := s.accept(t)
		calls := s.takeConnectCalls()
		want := []connectCall{{CSRF: testCSRF, Body: map[string]any{"target": testTarget, "protocol": "ssh"}}}
		if !reflect.DeepEqual(calls, want) {
			t.Errorf("POST /api/connect calls %+v, want %+v", calls, want)
		}
		if p2.ticket != "reconnect-1" {
			t.Errorf("reconnected with ticket %q, want reconnect-1", p2.ticket)
		}
		// The page's own location: Playwright's idea of the URL follows
		// history.replaceState a moment later.
		var u string
		b.Eval(t, "location.href", &u)
		if !strings.HasSuffix(u, "/connect/reconnect-1") {
			t.Errorf("page address %s after reconnect", u)
		}
		p2.send(t, hello(map[string]any{"logins": []string{"lab", "admin"}}))
		b.WaitVisible(t, "#client form.signin select")
		var login string
		b.Eval(t, `document.querySelector("#client form.signin select").value`, &login)
		if login != "admin" {
			t.Errorf("login %q offered after reconnect, want admin", login)
		}
		if b.Visible(t, "#client .badge.recorded") {
			t.Error("the recorded indicator stayed for a session that is not recorded")
		}
		noProblems(t, b)
	})

	t.Run("clipboard disabled", func(t *testing.T) {
		p := open(t, s, b, "no-clipboard")
		p.send(t, hello(map[string]any{"clipboard": false}))
		b.WaitVisible(t, "#client form.signin input[type=text]") // no logins: a text field
		if !b.Visible(t, `#client .badge:text("Copy and paste disabled by policy")`) {
			t.Error("no note that copy and paste are disabled")
		}
		b.SignIn(t, "ops", "pw")
		checkAuth(t, p.expect(t, "auth"), map[string]any{"login": "ops", "password": "pw"})
		ready(t, p, b, "ops@vm1:~$ ")

		if !b.Paste(t, "rm -rf /tmp/x") {
			t.Error("the paste event went on to its default action")
		}
		b.Eval(t, `navigator.clipboard.writeText("from the clipboard").then(() => true)`, nil)
		b.RightClick(t, "#client .xterm-screen")
		// The keystroke is the next frame: no paste message came before it.
		b.Type(t, "z")
		p.expectInput(t, "z")

		var copied struct {
			Prevented bool
			Data      string
		}
		b.Eval(t, `(() => {
			const dt = new DataTransfer();
			dt.setData("text/plain", "stale");
			const ev = new ClipboardEvent("copy", { clipboardData: dt, bubbles: true, cancelable: true });
			document.querySelector(".xterm-helper-textarea").dispatchEvent(ev);
			return { prevented: ev.defaultPrevented, data: dt.getData("text/plain") };
		})()`, &copied)
		if !copied.Prevented || copied.Data != "" {
			t.Errorf("copy event: prevented %v, data %q; want prevented and emptied", copied.Prevented, copied.Data)
		}
		b.Screenshot(t, "clipboard-disabled")
		noProblems(t, b)
	})

	t.Run("keyboard-interactive and a key after a failure", func(t *testing.T) {
		const key = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAACmFlczI1Ni1jdHIAAAAGYmNyeXB0AAAAGAAAABBTESTKEY\n-----END OPENSSH PRIVATE KEY-----\n"
		p := open(t, s, b, "kbd-interactive")
		p.send(t, hello(nil))
		b.SignIn(t, "ops", "first-password")
		checkAuth(t, p.expect(t, "auth"), map[string]any{"login": "ops", "password": "first-password"})

		p.send(t, map[string]any{"type": "prompt", "name": "", "instruction": "Second factor required.", "prompts": []map[string]any{
			{"text": "Code: ", "echo": true}, {"text": "PIN: ", "echo": false},
		}})
		b.WaitText(t, "#client form.signin", "Second factor required.")
		var types []string
		b.Eval(t, `Array.from(document.querySelectorAll("#client form.signin input"), (i) => i.type)`, &types)
		if !reflect.DeepEqual(types, []string{"text", "password"}) {
			t.Errorf("prompt inputs %q, want a text field and a password field", types)
		}
		b.Fill(t, "#client form.signin input[type=text]", "123456")
		b.Fill(t, "#client form.signin input[type=password]", "4321")
		b.Click(t, submitButton)
		if got := p.expect(t, "answers")["answers"]; !reflect.DeepEqual(got, []any{"123456", "4321"}) {
			t.Errorf("answers %v", got)
		}

		p.send(t, map[string]any{"type": "auth_failed", "message": "wrong login name or credentials", "retry": true})
		b.WaitText(t, "#client form.signin .error", "wrong login name or credentials")
		var fields struct{ Login, Password string }
		b.Eval(t, `({ login: document.querySelector("#client form.signin input[type=text]").value,
			password: document.querySelector("#client form.signin input[type=password]").value })`, &fields)
		if fields.Login != "ops" || fields.Password != "" {
			t.Errorf("after a failure the form holds login %q and password %q; want ops and nothing", fields.Login, fields.Password)
		}
		b.Click(t, `#client form.signin label:has-text("Private key")`)
		b.Fill(t, "#client form.signin textarea", key)
		b.Fill(t, `#client form.signin label:has-text("Passphrase") input`, "pass phrase")
		b.Screenshot(t, "private-key")
		b.Click(t, submitButton)
		checkAuth(t, p.expect(t, "auth"), map[string]any{"login": "ops", "private_key": key, "passphrase": "pass phrase"})
		if inPage(t, b, "BTESTKEY") {
			t.Error("the private key is still in the page after sign-in")
		}

		p.send(t, map[string]any{"type": "auth_failed", "message": "wrong login name or credentials", "retry": false})
		p.send(t, map[string]any{"type": "end", "reason": "auth_failed", "message": "Sign-in failed three times.", "reconnect": false})
		b.WaitText(t, "#client .overlay", "Sign-in failed three times.")
		if n := b.Count(t, "#client .overlay button"); n != 0 {
			t.Errorf("%d buttons on an end without reconnect", n)
		}
		noProblems(t, b)
	})

	t.Run("certificate and disconnect", func(t *testing.T) {
		p := open(t, s, b, "certificate")
		p.send(t, hello(map[string]any{"certificate": true, "logins": []string{"lab"}}))
		b.WaitVisible(t, "#client form.signin select")
		if n := b.Count(t, "#client form.signin input[type=password]"); n != 0 {
			t.Errorf("%d password fields with a certificate", n)
		}
		b.SignIn(t, "lab", "")
		checkAuth(t, p.expect(t, "auth"), map[string]any{"login": "lab"})
		ready(t, p, b, "lab@vm1:~$ ")

		b.Click(t, "#client .disconnect")
		p.expectClosed(t)
		b.WaitText(t, "#client .overlay", "You disconnected.")
		b.WaitVisible(t, reconnectButton)
		noProblems(t, b)
	})

	t.Run("connection lost, then the web session expired", func(t *testing.T) {
		p := open(t, s, b, "lost")
		b.Viewport(t, 360, 640) // a phone, and the longest header
		p.send(t, hello(map[string]any{"recorded": true, "clipboard": false}))
		b.WaitVisible(t, "#client form.signin")
		b.Screenshot(t, "signin-narrow")
		p.conn.CloseNow() // no end message, no close frame: the network went away
		b.WaitText(t, "#client .overlay", "The connection to the bastion was lost.")

		s.setConnectStatus(http.StatusForbidden)
		defer s.setConnectStatus(0)
		b.Click(t, reconnectButton)
		b.WaitText(t, "#client .overlay", "Your session has expired")
		if n := b.Count(t, `#client .overlay a[href="/"]`); n != 1 {
			t.Errorf("%d links to the portal, want 1", n)
		}
		if n := b.Count(t, reconnectButton); n != 0 {
			t.Error("a Reconnect button with an expired web session")
		}
		if calls := s.takeConnectCalls(); len(calls) != 1 {
			t.Errorf("%d calls to /api/connect, want 1", len(calls))
		}
		b.Screenshot(t, "session-expired")
		noProblems(t, b)
	})
}

func TestPlayerPage(t *testing.T) {
	s, b := startBrowser(t)
	b.Goto(t, s.URL+"/recordings/demo")
	b.WaitVisible(t, "#player .ap-player")
	b.Click(t, "#player .ap-player")
	b.WaitText(t, "#player .ap-term", "recorded in green")
	b.Screenshot(t, "player")
	noProblems(t, b)
}
