package portal

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/bastiond/bastiond/proxy/access"
	"github.com/bastiond/bastiond/proxy/webrdp"
)

// TestDesktopPage: carol's RDP ticket opens the desktop page, with the
// desktop's module, its CSP and the clipboard and files her role allows
// (files go through the clipboard: none without it).
func TestDesktopPage(t *testing.T) {
	for _, c := range []struct {
		name      string
		noClip    bool
		noFiles   bool
		clipboard string
	}{
		{"clipboard allowed", false, false, `data-clipboard="true" data-file-transfer="true"`},
		{"clipboard disabled", true, false, `data-clipboard="false" data-file-transfer="false"`},
		{"files disabled", false, true, `data-clipboard="true" data-file-transfer="false"`},
	} {
		t.Run(c.name, func(t *testing.T) {
			pol := access.New(testName, []access.Target{{Name: "vm2", RDP: 3389}}, nil, []access.Role{
				{Name: "win", Subjects: []string{"user:carol"}, Targets: []string{"vm2"}, Protocols: []string{access.RDP}, DisableClipboard: c.noClip, DisableFileTransfer: c.noFiles}})
			h := newTestServer(t, testConfig{Access: pol}).routes()
			carol := newBrowser(t, h)
			csrf := carol.signIn("carol")
			r := carol.post("/connect", url.Values{"csrf": {csrf}, "target": {"vm2"}, "protocol": {"rdp"}})
			if r.code != http.StatusSeeOther {
				t.Fatalf("connect: %d %s", r.code, r.body)
			}
			page := carol.get(r.header.Get("Location"))
			if page.code != http.StatusOK || !strings.Contains(page.body, `<script src="/static/app/desktop.js" type="module">`) ||
				!strings.Contains(page.body, `href="/static/app/desktop.css"`) || !strings.Contains(page.body, c.clipboard) ||
				strings.Contains(page.body, "connect.js") {
				t.Errorf("page: %d\n%s", page.code, page.body)
			}
			if got := page.header.Get("Content-Security-Policy"); got != desktopCSP {
				t.Errorf("CSP %q", got)
			}
			// Without a broker the desktop is unavailable, and says so.
			ws := carol.do(http.MethodGet, "/ws/rdp", nil, map[string]string{"Origin": carol.origin})
			if ws.code != http.StatusServiceUnavailable {
				t.Errorf("/ws/rdp without a broker: %d", ws.code)
			}
		})
	}
}

// TestOutcomes: an outcome is for the web session that held the ticket,
// for a while, and the store stays bounded.
func TestOutcomes(t *testing.T) {
	s := newOutcomeStore()
	now := time.Unix(1e9, 0)
	s.now = func() time.Time { return now }
	s.put("tk1", "sess-a", webrdp.Outcome{Class: webrdp.ClassKilled, Message: "An administrator ended the session."})
	if o, ok := s.get("tk1", "sess-a"); !ok || o.Class != webrdp.ClassKilled {
		t.Errorf("get: %+v %v", o, ok)
	}
	if _, ok := s.get("tk1", "sess-b"); ok {
		t.Error("another web session read the outcome")
	}
	if _, ok := s.get("tk2", "sess-a"); ok {
		t.Error("an unknown ticket has an outcome")
	}
	now = now.Add(outcomeTTL + time.Second)
	if _, ok := s.get("tk1", "sess-a"); ok {
		t.Error("the outcome outlived its time")
	}
	for i := range maxOutcomes + 10 {
		s.put(strings.Repeat("x", i%7)+string(rune('a'+i%26))+time.Duration(i).String(), "sess-a", webrdp.Outcome{})
		now = now.Add(time.Millisecond)
	}
	if len(s.m) > maxOutcomes {
		t.Errorf("%d outcomes kept, at most %d", len(s.m), maxOutcomes)
	}
}

// TestOutcomeAPI: only a signed-in browser asks, and a ticket it never
// used has no outcome.
func TestOutcomeAPI(t *testing.T) {
	s := newTestServer(t, testConfig{})
	h := s.routes()
	anon := newBrowser(t, h)
	if r := anon.get("/api/rdp/outcome?ticket=x"); r.code != http.StatusForbidden {
		t.Errorf("signed out: %d", r.code)
	}
	carol := newBrowser(t, h)
	carol.signIn("carol")
	if r := carol.get("/api/rdp/outcome?ticket=x"); r.code != http.StatusNotFound {
		t.Errorf("unknown ticket: %d", r.code)
	}
}
