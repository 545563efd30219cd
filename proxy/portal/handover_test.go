package portal

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/bastiond/bastiond/proxy/websession"
)

// TestHandoverSessions: a browser signed in on the old server is signed
// in on the new one, its ticket works there, and what expired stays out.
func TestHandoverSessions(t *testing.T) {
	rr := &relayRecorder{}
	old := newTunedTestServer(t, testConfig{}, tuning{relay: rr.relay})
	alice, bob := newBrowser(t, old.routes()), newBrowser(t, old.routes())
	csrf := alice.signIn("alice")
	bob.signIn("bob")
	connect := func() string {
		t.Helper()
		r := alice.post("/connect", url.Values{"csrf": {csrf}, "target": {"vm1"}, "protocol": {"ssh"}})
		if r.code != http.StatusSeeOther {
			t.Fatalf("connect: %d", r.code)
		}
		return strings.TrimPrefix(r.header.Get("Location"), "/connect/")
	}
	ws := func(tk string) int {
		return alice.do(http.MethodGet, "/ws/ssh?ticket="+tk, nil, map[string]string{"Origin": alice.origin}).code
	}
	tk, used := connect(), connect()
	if code := ws(used); code != http.StatusSwitchingProtocols {
		t.Fatalf("relay: %d", code)
	}
	// The new server is made first: making it takes a while under load
	// (password hashes), which must not count against alice's idle time.
	s := newTunedTestServer(t, testConfig{WebSessions: websession.Config{Idle: time.Second}}, tuning{relay: rr.relay})
	// bob idles past the new server's idle limit; alice does not.
	time.Sleep(1100 * time.Millisecond)
	alice.get("/")

	web, tickets, err := old.ExportSessions()
	if err != nil {
		t.Fatal(err)
	}
	// The cookie and the ticket travel as hashes. (The CSRF token travels
	// as it is: the export is secret, see ExportSessions.)
	for _, secret := range []string{alice.cookies[websession.CookieName].Value, tk} {
		if strings.Contains(string(web), secret) || strings.Contains(string(tickets), secret) {
			t.Fatal("the export holds a cookie or ticket as it is")
		}
	}
	if err := s.ImportSessions(web, tickets); err != nil {
		t.Fatal(err)
	}
	alice.h, bob.h = s.routes(), s.routes()

	if r := alice.get("/"); r.code != http.StatusOK || strings.Contains(r.body, `action="/login"`) {
		t.Fatalf("alice is signed out after the hand-over: %d", r.code)
	}
	if r := alice.get("/connect/" + tk); r.code != http.StatusOK || !strings.Contains(r.body, `data-ticket="`+tk+`"`) {
		t.Errorf("the ticket's page after the hand-over: %d", r.code)
	}
	if code := ws(tk); code != http.StatusSwitchingProtocols {
		t.Errorf("the ticket after the hand-over: %d", code)
	}
	if code := ws(used); code != http.StatusForbidden {
		t.Errorf("a used ticket after the hand-over: %d", code)
	}
	// The CSRF token is the session's, and came along.
	if r := alice.post("/connect", url.Values{"csrf": {csrf}, "target": {"vm1"}, "protocol": {"ssh"}}); r.code != http.StatusSeeOther {
		t.Errorf("a form with the session's CSRF token: %d", r.code)
	}
	if r := bob.get("/"); !strings.Contains(r.body, `action="/login"`) {
		t.Error("an expired session came along")
	}
}
