package portal

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"

	"github.com/bastiond/bastiond/proxy/access"
	"github.com/bastiond/bastiond/proxy/authz"
	"github.com/bastiond/bastiond/proxy/ticket"
	"github.com/bastiond/bastiond/proxy/websession"
)

// browser drives the portal's handler as a browser on https://testName
// would: it keeps cookies and sends its Origin.
type browser struct {
	t       *testing.T
	h       http.Handler
	origin  string
	cookies map[string]*http.Cookie
	remote  string
	// host, when set, is the Host the requests name (with a port).
	host string
}

func newBrowser(t *testing.T, h http.Handler) *browser {
	return &browser{t: t, h: h, origin: "https://" + testName, cookies: map[string]*http.Cookie{}, remote: "[2001:db8::10]:50000"}
}

type reply struct {
	code    int
	header  http.Header
	body    string
	cookies []*http.Cookie
}

func (b *browser) do(method, path string, body io.Reader, header map[string]string) reply {
	b.t.Helper()
	host := testName
	if b.host != "" {
		host = b.host
	}
	r := httptest.NewRequest(method, "https://"+host+path, body)
	r.RemoteAddr = b.remote
	if b.origin != "" && method != http.MethodGet {
		r.Header.Set("Origin", b.origin)
	}
	for k, v := range header {
		r.Header.Set(k, v)
	}
	for _, c := range b.cookies {
		r.AddCookie(c)
	}
	rec := httptest.NewRecorder()
	b.h.ServeHTTP(rec, r)
	res := rec.Result()
	for _, c := range res.Cookies() {
		if c.MaxAge < 0 {
			delete(b.cookies, c.Name)
		} else {
			b.cookies[c.Name] = c
		}
	}
	checkHeaders(b.t, method+" "+path, res.Header)
	return reply{code: res.StatusCode, header: res.Header, body: rec.Body.String(), cookies: res.Cookies()}
}

func (b *browser) get(path string) reply { return b.do(http.MethodGet, path, nil, nil) }

func (b *browser) post(path string, form url.Values) reply {
	return b.do(http.MethodPost, path, strings.NewReader(form.Encode()), map[string]string{"Content-Type": "application/x-www-form-urlencoded"})
}

func (b *browser) postJSON(path string, v any, header map[string]string) reply {
	data, _ := json.Marshal(v)
	h := map[string]string{"Content-Type": "application/json"}
	for k, v := range header {
		h[k] = v
	}
	return b.do(http.MethodPost, path, bytes.NewReader(data), h)
}

var csrfField = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

// csrf returns the CSRF token in the last page's forms.
func csrfOf(t *testing.T, page string) string {
	t.Helper()
	m := csrfField.FindStringSubmatch(page)
	if m == nil {
		t.Fatalf("no CSRF token in page:\n%s", page)
	}
	return m[1]
}

// signIn signs b in as user and returns the session's CSRF token.
func (b *browser) signIn(user string) string {
	b.t.Helper()
	login := b.get("/")
	r := b.post("/login", url.Values{"csrf": {csrfOf(b.t, login.body)}, "user": {user}, "password": {testPassword}})
	if r.code != http.StatusSeeOther {
		b.t.Fatalf("sign in as %s: %d\n%s", user, r.code, r.body)
	}
	return csrfOf(b.t, b.get("/").body)
}

func TestLogin(t *testing.T) {
	s := newTestServer(t, testConfig{})
	h := s.routes()

	t.Run("cookie attributes", func(t *testing.T) {
		b := newBrowser(t, h)
		b.signIn("alice")
		c := b.cookies[websession.CookieName]
		if c == nil || !c.HttpOnly || !c.Secure || c.SameSite != http.SameSiteStrictMode || c.Path != "/" || c.Domain != "" {
			t.Fatalf("session cookie %+v", c)
		}
		if p := b.get("/"); !strings.Contains(p.body, "vm1") || strings.Contains(p.body, "vm2") {
			t.Errorf("alice's portal should list vm1 only:\n%s", p.body)
		}
	})

	t.Run("one message for every failure", func(t *testing.T) {
		var msgs []string
		for _, creds := range [][2]string{{"alice", "wrong password here"}, {"nobody", testPassword}, {"alice", ""}} {
			b := newBrowser(t, h)
			login := b.get("/")
			r := b.post("/login", url.Values{"csrf": {csrfOf(t, login.body)}, "user": {creds[0]}, "password": {creds[1]}})
			if r.code != http.StatusUnauthorized || b.cookies[websession.CookieName] != nil {
				t.Fatalf("%v: %d, cookies %v", creds, r.code, b.cookies)
			}
			msgs = append(msgs, regexp.MustCompile(`<p class="error"[^>]*>([^<]*)`).FindStringSubmatch(r.body)[1])
		}
		for _, m := range msgs[1:] {
			if m != msgs[0] {
				t.Errorf("failure messages differ: %q", msgs)
			}
		}
	})

	t.Run("login CSRF", func(t *testing.T) {
		for name, tamper := range map[string]func(b *browser, form url.Values){
			"no form token":         func(b *browser, f url.Values) { f.Del("csrf") },
			"wrong form token":      func(b *browser, f url.Values) { f.Set("csrf", otherFirstChar(f.Get("csrf"))) },
			"no login cookie":       func(b *browser, f url.Values) { delete(b.cookies, loginCookie) },
			"foreign origin":        func(b *browser, f url.Values) { b.origin = "https://evil.example" },
			"no origin":             func(b *browser, f url.Values) { b.origin = "" },
			"http origin":           func(b *browser, f url.Values) { b.origin = "http://" + testName },
			"origin of a subdomain": func(b *browser, f url.Values) { b.origin = "https://x." + testName },
		} {
			t.Run(name, func(t *testing.T) {
				b := newBrowser(t, h)
				form := url.Values{"csrf": {csrfOf(t, b.get("/").body)}, "user": {"alice"}, "password": {testPassword}}
				tamper(b, form)
				if r := b.post("/login", form); r.code != http.StatusForbidden || b.cookies[websession.CookieName] != nil {
					t.Fatalf("%d, cookies %v", r.code, b.cookies)
				}
			})
		}
	})

	t.Run("logout", func(t *testing.T) {
		b := newBrowser(t, h)
		csrf := b.signIn("alice")
		stolen := *b.cookies[websession.CookieName]
		if r := b.post("/logout", url.Values{"csrf": {"forged"}}); r.code != http.StatusForbidden {
			t.Fatalf("logout without the CSRF token: %d", r.code)
		}
		if r := b.post("/logout", url.Values{"csrf": {csrf}}); r.code != http.StatusSeeOther {
			t.Fatalf("logout: %d", r.code)
		}
		if b.cookies[websession.CookieName] != nil {
			t.Error("logout left the cookie")
		}
		b.cookies[stolen.Name] = &stolen
		if r := b.get("/"); !strings.Contains(r.body, `action="/login"`) {
			t.Error("the old cookie still opens the portal after logout")
		}
	})
}

// TestCSRF: every state-changing request of a signed-in browser needs the
// session's token and our Origin.
func TestCSRF(t *testing.T) {
	h := newTestServer(t, testConfig{}).routes()
	b := newBrowser(t, h)
	csrf := b.signIn("alice")
	req := map[string]string{"target": "vm1", "protocol": "ssh"}
	for _, tc := range []struct {
		name   string
		origin string
		header map[string]string
		code   int
	}{
		{"no CSRF header", b.origin, nil, http.StatusForbidden},
		{"wrong CSRF header", b.origin, map[string]string{"X-CSRF-Token": csrf + "x"}, http.StatusForbidden},
		{"foreign origin", "https://evil.example", map[string]string{"X-CSRF-Token": csrf}, http.StatusForbidden},
		{"right token, right origin", b.origin, map[string]string{"X-CSRF-Token": csrf}, http.StatusOK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b.origin = tc.origin
			if r := b.postJSON("/api/connect", req, tc.header); r.code != tc.code {
				t.Fatalf("%d, want %d: %s", r.code, tc.code, r.body)
			}
		})
	}
	b.origin = "https://" + testName
	if r := b.post("/connect", url.Values{"target": {"vm1"}, "protocol": {"ssh"}}); r.code != http.StatusForbidden {
		t.Errorf("connect form without token: %d", r.code)
	}
}

// relayRecorder is a Relay that records the tickets it is handed.
type relayRecorder struct {
	mu  sync.Mutex
	got []ticket.Ticket
}

func (rr *relayRecorder) relay(w http.ResponseWriter, _ *http.Request, t ticket.Ticket) {
	rr.mu.Lock()
	rr.got = append(rr.got, t)
	rr.mu.Unlock()
	w.WriteHeader(http.StatusSwitchingProtocols)
}

func TestTickets(t *testing.T) {
	rr := &relayRecorder{}
	srv := newTunedTestServer(t, testConfig{}, tuning{relay: rr.relay})
	h := srv.routes()
	alice := newBrowser(t, h)
	csrf := alice.signIn("alice")
	connect := func() string {
		t.Helper()
		r := alice.post("/connect", url.Values{"csrf": {csrf}, "target": {"vm1"}, "protocol": {"ssh"}})
		loc := r.header.Get("Location")
		if r.code != http.StatusSeeOther || !strings.HasPrefix(loc, "/connect/") {
			t.Fatalf("connect: %d %q", r.code, loc)
		}
		return strings.TrimPrefix(loc, "/connect/")
	}
	expired := func(r reply) bool {
		return r.code == http.StatusForbidden && strings.Contains(r.body, "Your session has expired, start again from the portal") &&
			!strings.Contains(r.body, "vm1") && !strings.Contains(r.body, "alice")
	}
	ws := func(b *browser, tk, protocol string) reply {
		return b.do(http.MethodGet, "/ws/"+protocol+"?ticket="+tk, nil, map[string]string{"Origin": b.origin})
	}

	t.Run("page, then one relay, then replay refused", func(t *testing.T) {
		tk := connect()
		if r := alice.get("/connect/" + tk); r.code != http.StatusOK || !strings.Contains(r.body, `data-ticket="`+tk+`"`) {
			t.Fatalf("connect page: %d\n%s", r.code, r.body)
		}
		if r := ws(alice, tk, "ssh"); r.code != http.StatusSwitchingProtocols {
			t.Fatalf("relay: %d %s", r.code, r.body)
		}
		if got := rr.got[len(rr.got)-1]; got.User != "alice" || got.Target != "vm1" || got.Protocol != "ssh" || got.Port != 22 {
			t.Errorf("relay got %+v", got)
		}
		if r := ws(alice, tk, "ssh"); r.code != http.StatusForbidden {
			t.Errorf("replayed ticket: %d", r.code)
		}
		if r := alice.get("/connect/" + tk); !expired(r) {
			t.Errorf("used ticket's page: %d\n%s", r.code, r.body)
		}
	})
	t.Run("copied link in another browser", func(t *testing.T) {
		tk := connect()
		if r := newBrowser(t, h).get("/connect/" + tk); !expired(r) {
			t.Errorf("%d\n%s", r.code, r.body)
		}
	})
	t.Run("another user's session", func(t *testing.T) {
		tk := connect()
		bob := newBrowser(t, h)
		bob.signIn("bob")
		if r := ws(bob, tk, "ssh"); r.code != http.StatusForbidden {
			t.Fatalf("bob used alice's ticket: %d", r.code)
		}
		// Shown to the wrong session, the ticket is burnt for alice too.
		if r := alice.get("/connect/" + tk); !expired(r) {
			t.Errorf("ticket survived use by another session: %d", r.code)
		}
	})
	t.Run("foreign origin leaves the ticket unused", func(t *testing.T) {
		tk := connect()
		alice.origin = "https://evil.example"
		r := ws(alice, tk, "ssh")
		alice.origin = "https://" + testName
		if r.code != http.StatusForbidden {
			t.Fatalf("foreign origin: %d", r.code)
		}
		if r := ws(alice, tk, "ssh"); r.code != http.StatusSwitchingProtocols {
			t.Errorf("after a refused origin the ticket should still work: %d", r.code)
		}
	})
	t.Run("not allowed", func(t *testing.T) {
		r := alice.post("/connect", url.Values{"csrf": {csrf}, "target": {"vm2"}, "protocol": {"rdp"}})
		if r.code != http.StatusForbidden || r.header.Get("Location") != "" {
			t.Errorf("alice got rdp on vm2: %d", r.code)
		}
		r = alice.postJSON("/api/connect", map[string]string{"target": "nope", "protocol": "ssh"}, map[string]string{"X-CSRF-Token": csrf})
		if r.code != http.StatusForbidden {
			t.Errorf("unknown target: %d", r.code)
		}
	})
	t.Run("after logout", func(t *testing.T) {
		tk := connect()
		alice.post("/logout", url.Values{"csrf": {csrf}})
		csrf = alice.signIn("alice")
		if r := alice.get("/connect/" + tk); !expired(r) {
			t.Errorf("ticket of a logged-out session: %d", r.code)
		}
	})
}

func TestAPITokens(t *testing.T) {
	s := newTestServer(t, testConfig{})
	h := s.routes()
	cli := newBrowser(t, h)
	cli.origin = ""
	r := cli.postJSON("/api/tokens", TokenRequest{User: "carol", Password: testPassword, TTL: "1h", Comment: "laptop"}, nil)
	if r.code != http.StatusOK {
		t.Fatalf("issue: %d %s", r.code, r.body)
	}
	var tr TokenResponse
	json.Unmarshal([]byte(r.body), &tr)
	bearer := map[string]string{"Authorization": "Bearer " + tr.Secret}
	if r := cli.do(http.MethodGet, "/api/targets", nil, bearer); r.code != http.StatusOK || !strings.Contains(r.body, `"vm2"`) || strings.Contains(r.body, `"vm1"`) {
		t.Fatalf("targets: %d %s", r.code, r.body)
	}
	r = cli.postJSON("/api/connect", ConnectRequest{Target: "vm2", Protocol: "tunnel", Port: 5985}, bearer)
	if r.code != http.StatusOK {
		t.Fatalf("connect with a token: %d %s", r.code, r.body)
	}
	if r := cli.postJSON("/api/connect", ConnectRequest{Target: "vm2", Protocol: "tunnel", Port: 3389}, bearer); r.code != http.StatusForbidden {
		t.Errorf("tunnel to a port outside the role: %d", r.code)
	}
	if r := cli.do(http.MethodGet, "/api/tokens", nil, bearer); !strings.Contains(r.body, tr.ID) || strings.Contains(r.body, "verifier\":\"") && !strings.Contains(r.body, "verifier\":\"\"") {
		t.Errorf("list: %s", r.body)
	}
	if r := cli.do(http.MethodDelete, "/api/tokens/current", nil, bearer); r.code != http.StatusOK {
		t.Fatalf("revoke: %d %s", r.code, r.body)
	}
	if r := cli.do(http.MethodGet, "/api/targets", nil, bearer); r.code != http.StatusUnauthorized {
		t.Errorf("revoked token: %d", r.code)
	}
	if r := cli.postJSON("/api/tokens", TokenRequest{User: "carol", Password: "not the password"}, nil); r.code != http.StatusUnauthorized {
		t.Errorf("wrong password: %d", r.code)
	}
	if r := cli.do(http.MethodPost, "/api/tokens", strings.NewReader(`{"user":"carol"}`), map[string]string{"Content-Type": "text/plain"}); r.code != http.StatusUnsupportedMediaType {
		t.Errorf("text/plain body: %d", r.code)
	}
	if r := cli.postJSON("/api/tokens", map[string]any{"user": "carol", "password": testPassword, "admin": true}, nil); r.code != http.StatusBadRequest {
		t.Errorf("unknown field: %d", r.code)
	}
}

// FuzzLoginForm: no body posted to /login crashes the handler, answers with
// a server error or signs anyone in without the password.
func FuzzLoginForm(f *testing.F) {
	f.Add("user=alice&password=correct+horse+battery&csrf=T", "T")
	f.Add("user=alice&password=%ZZ", "T")
	f.Add(strings.Repeat("a=b&", 5000), "")
	f.Add("user=alice&user=bob&password=x&csrf=T&csrf=U", "T")
	s := newTestServerF(f)
	h := s.routes()
	f.Fuzz(func(t *testing.T, body, cookie string) {
		r := httptest.NewRequest(http.MethodPost, "https://"+testName+"/login", strings.NewReader(body))
		r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		r.Header.Set("Origin", "https://"+testName)
		r.AddCookie(&http.Cookie{Name: loginCookie, Value: cookie})
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, r)
		if rec.Code >= 500 {
			t.Fatalf("%d for %q", rec.Code, body)
		}
		if rec.Code == http.StatusSeeOther && !strings.Contains(body, "correct+horse+battery") && !strings.Contains(body, "correct%20horse") {
			t.Fatalf("signed in without the password: %q", body)
		}
	})
}

// FuzzSessionCookie: no cookie value opens the portal but a real one.
func FuzzSessionCookie(f *testing.F) {
	s := newTestServerF(f)
	good, _, err := s.sessions.New("alice", clientAddr(httptest.NewRequest("GET", "/", nil)))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add("")
	f.Add(strings.Repeat("A", 43))
	h := s.routes()
	f.Fuzz(func(t *testing.T, v string) {
		r := httptest.NewRequest(http.MethodGet, "https://"+testName+"/api/targets", nil)
		r.Header.Set("Cookie", websession.CookieName+"="+v)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, r)
		if rec.Code == http.StatusOK && v != good {
			t.Fatalf("cookie %q accepted", v)
		}
	})
}

// TestReloadTakesRights: a reload that removes a role applies to the next
// request, and to a ticket issued before it when the relay redeems it.
func TestReloadTakesRights(t *testing.T) {
	rr := &relayRecorder{}
	s := newTunedTestServer(t, testConfig{}, tuning{relay: rr.relay})
	h := s.routes()
	alice := newBrowser(t, h)
	csrf := alice.signIn("alice")
	r := alice.post("/connect", url.Values{"csrf": {csrf}, "target": {"vm1"}, "protocol": {"ssh"}})
	tk := strings.TrimPrefix(r.header.Get("Location"), "/connect/")
	if r.code != http.StatusSeeOther || tk == "" {
		t.Fatalf("connect before reload: %d", r.code)
	}

	// A reload swaps the policy of the authorizer the portal asks.
	pol := access.New(testName, []access.Target{{Name: "vm1", Tags: []string{"linux"}, SSH: 22}}, nil, nil)
	if err := s.authz().SetConfig(authz.Config{Access: pol}); err != nil {
		t.Fatal(err)
	}
	if r := alice.do(http.MethodGet, "/ws/ssh?ticket="+tk, nil, map[string]string{"Origin": alice.origin}); r.code != http.StatusForbidden || len(rr.got) != 0 || !strings.Contains(r.body, "not allowed") {
		t.Errorf("ticket from before the reload still relayed: %d", r.code)
	}
	if r := alice.post("/connect", url.Values{"csrf": {csrf}, "target": {"vm1"}, "protocol": {"ssh"}}); r.code != http.StatusForbidden {
		t.Errorf("connect after the role was removed: %d", r.code)
	}
	if p := alice.get("/"); strings.Contains(p.body, "vm1") {
		t.Error("the portal still lists vm1")
	}
}

// otherFirstChar returns token with its first character changed: a token that
// differs from the real one in one place, whatever that character was.
func otherFirstChar(token string) string {
	if strings.HasPrefix(token, "x") {
		return "y" + token[1:]
	}
	return "x" + token[1:]
}
