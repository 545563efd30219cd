package e2e

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
	"unicode/utf16"

	"github.com/coder/websocket"

	"github.com/bastiond/bastiond/proxy/recording"
)

// RecordedRDPConfig is WebRDPConfig with alice's and bob's desktops
// recorded and carol an auditor.
func RecordedRDPConfig(dir string, tlsV6 bool, limits string) string {
	cfg := WebRDPConfig(dir, tlsV6, limits)
	cfg = strings.Replace(cfg, "    ops: [alice]\n", "    ops: [alice]\n    auditors: [carol]\n", 1)
	cfg = strings.Replace(cfg, "      protocols: [rdp]\n", "      protocols: [rdp]\n      record: true\n", 2)
	return strings.Replace(cfg, "limits:\n", "    - name: audit\n      subjects: [group:auditors]\n      auditor: true\nlimits:\n", 1)
}

// utf16le is s as the Client Info PDU carries it (INFO_UNICODE).
func utf16le(s string) []byte {
	var b []byte
	for _, u := range utf16.Encode([]rune(s)) {
		b = append(b, byte(u), byte(u>>8))
	}
	return b
}

// rdpRecordings are the RDP recordings in the daemon's recordings store, by ID.
func rdpRecordings(t *testing.T, d *Daemon) map[string]string {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(d.Dir, "state", "recordings", "*"+recording.RDPExt))
	out := map[string]string{}
	for _, f := range files {
		out[strings.TrimSuffix(filepath.Base(f), recording.RDPExt)] = f
	}
	return out
}

// TestRDPRecording records alice's desktops on vm2 (NLA, then TLS alone on
// vm2's IPv6 address) and checks that the recordings hold the desktop but
// not the password typed in the page; then carol, an auditor, plays one in
// Chromium (the desktop drawn, pause, speeds, a seek), and bob may not.
// Screenshots are kept under test/artifacts/rdp-recording.
func TestRDPRecording(t *testing.T) {
	b := startBrowser(t, "rdp-recording")
	// The recordings' store is a FUSE loopback that the last subtest makes
	// read-only; mounted before the daemon starts, in whose mount
	// namespace (ip netns exec) a later mount would not appear.
	var ffs *faultFS
	var noFUSE error
	d := StartDaemonWith(t, ViaFDs, func(dir string) string {
		store := filepath.Join(dir, "state", "recordings")
		if err := os.MkdirAll(store, 0o700); err != nil {
			t.Fatal(err)
		}
		ffs, noFUSE = mountFaultFS(t, t.TempDir(), store)
		return RecordedRDPConfig(dir, false, "")
	})
	AddLabUsers(t, d, "alice", "bob", "carol")
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
	waitAttr := func(t *testing.T, sel, want string) {
		t.Helper()
		deadline := time.Now().Add(60 * time.Second)
		for {
			var s string
			b.Eval(t, `(document.querySelector("`+sel+`") || {dataset: {}}).dataset.state || ""`, &s)
			if s == want {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s is %q, not %q; it says %q", sel, s, want, b.Text(t, "main"))
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	shown := func(t *testing.T) pixels {
		t.Helper()
		var p pixels
		deadline := time.Now().Add(60 * time.Second)
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
	session := func(t *testing.T, shot string) string {
		t.Helper()
		before := rdpRecordings(t, d)
		b.Goto(t, base)
		b.OpenDesktop(t, "vm2")
		b.WaitVisible(t, `#client input[name="user"]`)
		b.Fill(t, `#client input[name="user"]`, lab["LAB_USER"])
		b.Fill(t, `#client input[name="password"]`, lab["LAB_PASSWORD"])
		b.Click(t, `#client form button[type="submit"]`)
		waitAttr(t, "#client", "connected")
		shown(t)
		b.Screenshot(t, shot)
		time.Sleep(3 * time.Second) // a few seconds of the clock
		time.Sleep(500 * time.Millisecond)
		b.Click(t, `#client button.disconnect`)
		waitAttr(t, "#client", "ended")
		for id, f := range rdpRecordings(t, d) {
			if _, ok := before[id]; !ok {
				return f
			}
		}
		t.Fatal("the session left no RDP recording")
		return ""
	}
	// check reads the recording at f whole and looks for the password.
	check := func(t *testing.T, f string) recording.RDPSummary {
		t.Helper()
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		zr, err := gzip.NewReader(bytes.NewReader(raw))
		if err != nil {
			t.Fatal(err)
		}
		plain, err := io.ReadAll(zr)
		if err != nil {
			t.Fatalf("decompress %s: %v", f, err)
		}
		pw := lab["LAB_PASSWORD"]
		for _, secret := range [][]byte{[]byte(pw), utf16le(pw)} {
			if bytes.Contains(plain, secret) {
				t.Errorf("the password typed in the page is in the recording %s", f)
			}
		}
		sum, err := recording.SummarizeRDP(f)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: %d bytes compressed, %d decompressed (server %d, client %d), %v, desktop %dx%d",
			filepath.Base(f), len(raw), len(plain), sum.ServerBytes, sum.ClientBytes, sum.Duration, sum.Width, sum.Height)
		if sum.Width == 0 || sum.ServerBytes < 10000 || sum.Header.User != "alice" || sum.Header.Target != "vm2" {
			t.Errorf("recording %s: %+v", f, sum)
		}
		return sum
	}

	// The first request for the client's files has the daemon compress
	// them all (6 MB of desktop script): made here, without the browser's
	// time limit, on a busy machine.
	warm := *NewWebUser(t, lab["BASTION_PUB4"]).c
	warm.Timeout = 3 * time.Minute
	if resp, err := warm.Get(base + "static/app/desktop.js"); err != nil {
		t.Fatal(err)
	} else {
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}

	var nla, tls string
	t.Run("NLA session recorded", func(t *testing.T) {
		b.PortalLogin(t, base, "alice", TunnelPassword)
		nla = session(t, "desktop-nla")
		check(t, nla)
		recs := EndedRecords(d, "vm2")
		if r := recs[len(recs)-1]; r["recording"] != nla {
			t.Errorf("the end record names the recording %v, not %s", r["recording"], nla)
		}
	})
	t.Run("TLS session recorded", func(t *testing.T) {
		reload(RecordedRDPConfig(d.Dir, true, ""))
		defer reload(RecordedRDPConfig(d.Dir, false, ""))
		tls = session(t, "desktop-tls")
		check(t, tls)
	})
	if nla == "" {
		t.FailNow()
	}
	nlaID := strings.TrimSuffix(filepath.Base(nla), recording.RDPExt)

	t.Run("an auditor plays the recording", func(t *testing.T) {
		b.Goto(t, base)
		b.Click(t, `header form[action="/logout"] button`)
		b.WaitVisible(t, "form.login")
		b.PortalLogin(t, base, "carol", TunnelPassword)
		b.Click(t, `header a:text("Recordings")`)
		b.WaitVisible(t, "table.recordings")
		if n := b.Count(t, `table.recordings td:has-text("remote desktop")`); n < 1 {
			t.Errorf("the recordings page lists %d RDP recordings", n)
		}
		b.Goto(t, base+"recordings/"+nlaID)
		waitAttr(t, "#rdpplayer", "playing")
		p := shown(t)
		t.Logf("replayed desktop %dx%d, %d colours, white %.2f, dark %.2f", p.Width, p.Height, p.Colors, p.White, p.Dark)
		b.Screenshot(t, "replay")
		b.Click(t, `#rdpplayer button.speed:text("8×")`)
		b.Click(t, `#rdpplayer button.play`)
		waitAttr(t, "#rdpplayer", "paused")
		b.Click(t, `#rdpplayer button.play`)
		waitAttr(t, "#rdpplayer", "playing")
		// A seek: the page reconnects and the bastion fast-forwards.
		b.Eval(t, `(() => { const s = document.querySelector("#rdpplayer input.seek"); s.value = String(Math.floor(Number(s.max) / 2)); s.dispatchEvent(new Event("change")); return true; })()`, new(bool))
		waitAttr(t, "#rdpplayer", "playing")
		shown(t)
		waitAttr(t, "#rdpplayer", "ended")
		shown(t)
		b.Screenshot(t, "replay-ended")
		p2 := b.TakeProblems(t)
		if len(p2.Violations)+len(p2.Exceptions) > 0 {
			t.Errorf("CSP violations %q, exceptions %q", p2.Violations, p2.Exceptions)
		}
		played := auditEvents(t, d, func(e map[string]any) bool {
			return e["event"] == "recording_played" && e["actor"] == "carol" && e["protocol"] == "rdp"
		})
		if played != 1 {
			t.Errorf("%d recording_played events for carol's playback (a seek is the same playback), want 1", played)
		}
	})

	t.Run("others may not play recordings", func(t *testing.T) {
		b.Goto(t, base)
		b.Click(t, `header form[action="/logout"] button`)
		b.WaitVisible(t, "form.login")
		b.PortalLogin(t, base, "bob", TunnelPassword)
		b.Goto(t, base+"recordings/"+nlaID)
		b.WaitText(t, "body", "Not allowed")
		u := SignedIn(t, lab["BASTION_PUB6"], "bob")
		ws, resp, err := u.dialReplay(nlaID)
		if err == nil {
			ws.CloseNow()
			t.Fatal("bob opened the replay WebSocket")
		}
		if resp == nil || resp.StatusCode != 403 {
			t.Errorf("bob's replay WebSocket: %v", err)
		}
		refused := auditEvents(t, d, func(e map[string]any) bool {
			return e["event"] == "connect_refused" && e["actor"] == "bob" && e["reason"] == "not_auditor"
		})
		if refused != 1 {
			t.Errorf("%d connect_refused events for bob's replay, want 1", refused)
		}
	})

	// Recorded or refused: a recording that cannot be created refuses the
	// desktop, one that fails ends it, and the page and the record say so.
	t.Run("a recording that cannot be written", func(t *testing.T) {
		if ffs == nil {
			t.Skipf("no FUSE here: %v", noFUSE)
		}
		ffs.readOnly.Store(true)
		b.Goto(t, base)
		b.OpenDesktop(t, "vm2")
		b.WaitVisible(t, `#client input[name="user"]`)
		b.Fill(t, `#client input[name="user"]`, lab["LAB_USER"])
		b.Fill(t, `#client input[name="password"]`, lab["LAB_PASSWORD"])
		b.Click(t, `#client form button[type="submit"]`)
		waitAttr(t, "#client", "ended")
		if msg := b.Text(t, "#client-end-message"); !strings.Contains(msg, "cannot record") {
			t.Errorf("refused, the page says %q", msg)
		}
		b.Screenshot(t, "recording-unavailable")
		recs := EndedRecords(d, "vm2")
		if r := recs[len(recs)-1]; !strings.HasPrefix(r["reason"].(string), "recording failed: ") {
			t.Errorf("end record of the refused desktop: %v", r)
		}

		ffs.readOnly.Store(false)
		b.Click(t, `#client button:text("Try again")`)
		b.WaitVisible(t, `#client input[name="user"]`)
		b.Fill(t, `#client input[name="user"]`, lab["LAB_USER"])
		b.Fill(t, `#client input[name="password"]`, lab["LAB_PASSWORD"])
		b.Click(t, `#client form button[type="submit"]`)
		waitAttr(t, "#client", "connected")
		shown(t)
		ffs.readOnly.Store(true)
		waitAttr(t, "#client", "ended")
		if msg := b.Text(t, "#client-end-message"); !strings.Contains(msg, "could not record") {
			t.Errorf("ended, the page says %q", msg)
		}
		b.Screenshot(t, "recording-failed")
		recs = EndedRecords(d, "vm2")
		if r := recs[len(recs)-1]; !strings.HasPrefix(r["reason"].(string), "recording failed: ") {
			t.Errorf("end record of the desktop whose recording failed: %v", r)
		} else {
			t.Logf("end record: %v", r["reason"])
		}
	})
}

// dialReplay opens the replay WebSocket of recording id, as the player page does.
func (u *WebUser) dialReplay(id string) (*websocket.Conn, *http.Response, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return websocket.Dial(ctx, "wss://"+ServerName+"/ws/replay/"+id+"?player=0123456789abcdef0123&from=0&speed=1",
		&websocket.DialOptions{HTTPClient: u.c, HTTPHeader: http.Header{"Origin": {u.base}}})
}

// auditEvents counts the events of d's audit file that match, logging
// them. Events are written with the next group commit: it waits up to 5 s
// for a first one.
func auditEvents(t *testing.T, d *Daemon, match func(map[string]any) bool) int {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		data, _ := os.ReadFile(d.AuditFile())
		var lines []string
		for _, line := range strings.Split(string(data), "\n") {
			var e map[string]any
			if json.Unmarshal([]byte(line), &e) == nil && match(e) {
				lines = append(lines, line)
			}
		}
		if len(lines) > 0 || time.Now().After(deadline) {
			for _, l := range lines {
				t.Logf("audit: %s", l)
			}
			return len(lines)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
