package portal

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/bastiond/bastiond/api"
	"github.com/bastiond/bastiond/internal/audit"
	"github.com/bastiond/bastiond/internal/statedb"
	"github.com/bastiond/bastiond/proxy/access"
	"github.com/bastiond/bastiond/proxy/auth"
	"github.com/bastiond/bastiond/proxy/authz"
	"github.com/bastiond/bastiond/proxy/oidc"
	"github.com/bastiond/bastiond/proxy/oidc/oidctest"
	"github.com/bastiond/bastiond/proxy/websession"
)

// ssoPortal is a portal with the single sign-on provider "lab" (an
// oidctest.IdP), the local account alice, a role for the IdP's group
// lab-ops, and everything it logs and audits kept.
type ssoPortal struct {
	*Portal
	idp    *oidctest.IdP
	events *audit.Capture
	logs   *observer.ObservedLogs
	mu     sync.Mutex
	// changed are the AccessChanged calls.
	changed []string
}

func newSSOPortal(t *testing.T, host string) *ssoPortal {
	t.Helper()
	core, logs := observer.New(zapcore.DebugLevel)
	log := zap.New(core)
	events := &audit.Capture{}
	db, err := statedb.Open(filepath.Join(t.TempDir(), "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	st, _ := auth.NewStore(db)
	if err := st.AddUser("alice", testPassword, nil); err != nil {
		t.Fatal(err)
	}
	a, err := auth.NewAuthenticator(auth.AuthenticatorConfig{Store: st, Logger: log, Audit: events})
	if err != nil {
		t.Fatal(err)
	}
	policy := testPolicy(access.Role{Name: "sso-ops", Subjects: []string{"oidc-group:lab/lab-ops"}, Targets: []string{"vm2"},
		Protocols: []string{access.RDP}})
	az, err := authz.New(authz.Config{Logger: log, Access: policy, Audit: events})
	if err != nil {
		t.Fatal(err)
	}
	p := &ssoPortal{idp: oidctest.New(t, host), events: events, logs: logs}
	key := make([]byte, 32)
	rand.Read(key)
	set, err := oidc.New(oidc.Config{Providers: []oidc.Provider{{Name: "lab", Title: "Lab SSO", Issuer: p.idp.URL, ClientID: "bastiond",
		ClientSecret: oidctest.Secret, RootCAs: p.idp.Pool(), Scopes: []string{"email", "groups"}}},
		RedirectURL: "https://" + testName + "/sso/callback", Key: key, DB: db, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	p.Portal, err = New(Config{Logger: log, Audit: events, ServerName: testName, Authz: az, SSO: set,
		AccessChanged: func(why string) { p.mu.Lock(); p.changed = append(p.changed, why); p.mu.Unlock() }}, a)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// signInSSO walks b through the provider: the portal's button, the
// provider (which signs the user its Claims name in), and back. It returns
// the callback's reply.
func (p *ssoPortal) signInSSO(t *testing.T, b *browser, start string) reply {
	t.Helper()
	r := b.get(start)
	if r.code != http.StatusSeeOther {
		t.Fatalf("GET %s: %d %s", start, r.code, r.body)
	}
	if c := b.cookies[oidc.CookieName]; c == nil || c.SameSite != http.SameSiteLaxMode || !c.HttpOnly || !c.Secure {
		t.Fatalf("flow cookie %+v", c)
	}
	state, code := p.idp.Authorize(t, r.header.Get("Location"))
	return b.get("/sso/callback?" + url.Values{"state": {state}, "code": {code}}.Encode())
}

func (p *ssoPortal) eventsOf(kind string) []audit.Event {
	var out []audit.Event
	for _, e := range p.events.Take() {
		if e.Event == kind {
			out = append(out, e)
		}
	}
	return out
}

// TestSSOSignIn: the sign-in page's button, the provider, and back to the
// portal with the machines the user's groups allow, over IPv4 and IPv6.
func TestSSOSignIn(t *testing.T) {
	for _, host := range []string{"127.0.0.1", "::1"} {
		t.Run(host, func(t *testing.T) {
			p := newSSOPortal(t, host)
			h := p.routes()
			b := newBrowser(t, h)
			if page := b.get("/"); !strings.Contains(page.body, `<a class="button" href="/sso/lab">Sign in with Lab SSO</a>`) {
				t.Fatalf("sign-in page without the provider's button:\n%s", page.body)
			}
			r := p.signInSSO(t, b, "/sso/lab")
			if r.code != http.StatusOK || !strings.Contains(r.body, `<meta http-equiv="refresh" content="0;url=/">`) ||
				r.header.Get("Referrer-Policy") != "no-referrer" {
				t.Fatalf("callback: %d %v\n%s", r.code, r.header, r.body)
			}
			if c := b.cookies[websession.CookieName]; c == nil || c.SameSite != http.SameSiteStrictMode {
				t.Fatalf("no session cookie: %v", b.cookies)
			}
			if b.cookies[oidc.CookieName] != nil {
				t.Error("the flow cookie outlived the flow")
			}
			portal := b.get("/")
			if !strings.Contains(portal.body, "ana@lab.example") || !strings.Contains(portal.body, "vm2") || strings.Contains(portal.body, ">vm1<") {
				t.Fatalf("ana's portal should list vm2 (group lab-ops) only:\n%s", portal.body)
			}
			ok := p.eventsOf(audit.SigninSucceeded)
			if len(ok) != 1 || ok[0].User != "ana@lab.example" || ok[0].Reason != "sso" || ok[0].Via != "sso" ||
				!strings.Contains(ok[0].Detail, "groups: everyone, lab-ops") || ok[0].Source != "2001:db8::10" {
				t.Fatalf("signin_succeeded events %+v", ok)
			}
			u, err := p.auth.Store().User("ana@lab.example")
			if err != nil || u.Provider != "lab" || u.Subject == "" || u.PasswordHash != "" {
				t.Fatalf("account %+v, %v", u, err)
			}
			// The account has no password: the form treats it as unknown.
			b2 := newBrowser(t, h)
			login := b2.get("/")
			if r := b2.post("/login", url.Values{"csrf": {csrfOf(t, login.body)}, "user": {"ana@lab.example"}, "password": {""}}); r.code != http.StatusUnauthorized {
				t.Errorf("password sign-in of an SSO account: %d", r.code)
			}
		})
	}
}

// TestSSONoRole: a user the provider knows whose groups map to no role
// signs in, sees no machines and gets no ticket, and the sign-in is an
// audit event of its own.
func TestSSONoRole(t *testing.T) {
	p := newSSOPortal(t, "127.0.0.1")
	old := p.idp.Claims
	p.idp.Claims = func(n string) map[string]any {
		c := old(n)
		c["email"], c["sub"], c["groups"] = "ned@lab.example", "ned-sub", []any{"visitors"}
		return c
	}
	b := newBrowser(t, p.routes())
	if r := p.signInSSO(t, b, "/sso/lab"); r.code != http.StatusOK {
		t.Fatalf("callback %d", r.code)
	}
	evs := p.events.Take()
	if !slices.ContainsFunc(evs, func(e audit.Event) bool {
		return e.Event == audit.SigninNoRole && e.User == "ned@lab.example" && strings.Contains(e.Detail, "groups visitors at lab")
	}) {
		t.Fatalf("no signin_no_role event: %+v", evs)
	}
	page := b.get("/")
	if !strings.Contains(page.body, "No machine is open to you") {
		t.Fatalf("portal:\n%s", page.body)
	}
	csrf := csrfOf(t, page.body)
	r := b.postJSON("/api/connect", map[string]any{"target": "vm2", "protocol": "rdp"}, map[string]string{"X-CSRF-Token": csrf})
	if r.code == http.StatusOK {
		t.Fatalf("a user with no role got a ticket: %s", r.body)
	}
	if !slices.ContainsFunc(p.events.Take(), func(e audit.Event) bool {
		return e.Event == audit.ConnectRefused && e.User == "ned@lab.example" && e.Reason == authz.NoRole
	}) {
		t.Error("no connect_refused no_role event")
	}
}

// TestSSORefusals: what a stranger or a broken provider sends back is
// refused with a clear page and an audit event, and signs nobody in.
func TestSSORefusals(t *testing.T) {
	for _, tc := range []struct {
		name   string
		mod    func(p *ssoPortal, b *browser, q url.Values)
		code   int
		reason string
		msg    string
	}{
		{"wrong state", func(_ *ssoPortal, _ *browser, q url.Values) { q.Set("state", "forged") }, http.StatusUnauthorized, oidc.ReasonState, "not started here"},
		{"no flow cookie", func(_ *ssoPortal, b *browser, _ url.Values) { delete(b.cookies, oidc.CookieName) }, http.StatusUnauthorized, oidc.ReasonState, "not started here"},
		{"provider error", func(_ *ssoPortal, _ *browser, q url.Values) { q.Del("code"); q.Set("error", "access_denied") }, http.StatusUnauthorized, oidc.ReasonProviderError, "did not sign you in (access_denied)"},
		{"unknown code", func(_ *ssoPortal, _ *browser, q url.Values) { q.Set("code", "made-up") }, http.StatusUnauthorized, oidc.ReasonCodeRefused, "refused this sign-in"},
		{"other audience", func(p *ssoPortal, _ *browser, _ url.Values) {
			old := p.idp.Claims
			p.idp.Claims = func(n string) map[string]any { c := old(n); c["aud"] = "another-app"; return c }
		}, http.StatusUnauthorized, oidc.ReasonTokenInvalid, "could not be verified"},
		{"expired token", func(p *ssoPortal, _ *browser, _ url.Values) {
			old := p.idp.Claims
			p.idp.Claims = func(n string) map[string]any { c := old(n); c["exp"] = time.Now().Add(-time.Hour).Unix(); return c }
		}, http.StatusUnauthorized, oidc.ReasonTokenExpired, "has expired"},
		{"provider down", func(p *ssoPortal, _ *browser, _ url.Values) { p.idp.Set(func(i *oidctest.IdP) { i.Down = true }) },
			http.StatusBadGateway, oidc.ReasonUnreachable, "cannot be reached"},
		{"name of a local account", func(p *ssoPortal, _ *browser, _ url.Values) {
			old := p.idp.Claims
			p.idp.Claims = func(n string) map[string]any { c := old(n); c["email"] = "alice"; return c }
		}, http.StatusForbidden, "sso_name_taken", "cannot sign in here"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newSSOPortal(t, "127.0.0.1")
			b := newBrowser(t, p.routes())
			r := b.get("/sso/lab")
			state, code := p.idp.Authorize(t, r.header.Get("Location"))
			q := url.Values{"state": {state}, "code": {code}}
			tc.mod(p, b, q)
			r = b.get("/sso/callback?" + q.Encode())
			if r.code != tc.code || !strings.Contains(r.body, tc.msg) || b.cookies[websession.CookieName] != nil {
				t.Fatalf("%d, want %d with %q; session cookie %v\n%s", r.code, tc.code, tc.msg, b.cookies[websession.CookieName], r.body)
			}
			failed := p.eventsOf(audit.SigninFailed)
			if len(failed) != 1 || failed[0].Reason != tc.reason || failed[0].Via != "sso" || failed[0].Source != "2001:db8::10" {
				t.Fatalf("signin_failed events %+v, want one with reason %s", failed, tc.reason)
			}
			for _, secret := range []string{code, oidctest.Secret} {
				if strings.Contains(failed[0].Detail, secret) || strings.Contains(r.body, secret) {
					t.Errorf("a secret in the event or the page: %+v", failed[0])
				}
			}
		})
	}
}

// TestSSOReplay: the provider's answer, replayed in the same browser after
// it signed in, signs nobody in again.
func TestSSOReplay(t *testing.T) {
	p := newSSOPortal(t, "::1")
	b := newBrowser(t, p.routes())
	r := b.get("/sso/lab")
	flow := b.cookies[oidc.CookieName]
	state, code := p.idp.Authorize(t, r.header.Get("Location"))
	cb := "/sso/callback?" + url.Values{"state": {state}, "code": {code}}.Encode()
	if r := b.get(cb); r.code != http.StatusOK {
		t.Fatalf("first answer: %d", r.code)
	}
	p.events.Take()
	replay := newBrowser(t, p.routes())
	replay.cookies[oidc.CookieName] = flow
	if r := replay.get(cb); r.code != http.StatusUnauthorized || replay.cookies[websession.CookieName] != nil {
		t.Fatalf("replayed answer: %d", r.code)
	}
	if f := p.eventsOf(audit.SigninFailed); len(f) != 1 || f[0].Reason != oidc.ReasonCodeRefused {
		t.Fatalf("events %+v", f)
	}
}

// TestSSOGroupLost: a user who signs in again without a group they had
// makes the portal ask for the sessions that group gave to end.
func TestSSOGroupLost(t *testing.T) {
	p := newSSOPortal(t, "127.0.0.1")
	h := p.routes()
	p.signInSSO(t, newBrowser(t, h), "/sso/lab")
	if len(p.changed) != 0 {
		t.Fatalf("first sign-in changed access: %v", p.changed)
	}
	old := p.idp.Claims
	p.idp.Claims = func(n string) map[string]any { c := old(n); c["groups"] = []any{"everyone"}; return c }
	p.signInSSO(t, newBrowser(t, h), "/sso/lab")
	if len(p.changed) != 1 || !strings.Contains(p.changed[0], "ana@lab.example") {
		t.Fatalf("AccessChanged calls %v", p.changed)
	}
	u, _ := p.auth.Store().User("ana@lab.example")
	if strings.Join(u.Groups, ",") != "everyone" {
		t.Errorf("groups %v", u.Groups)
	}
}

// TestSSOForCLI: bastionctl's sign-in, with a loopback redirect and with a
// code typed by hand, ends in an API token of the same kind as a
// password's, redeemed once with the verifier only.
func TestSSOForCLI(t *testing.T) {
	p := newSSOPortal(t, "127.0.0.1")
	h := p.routes()
	verifier := "a-verifier-of-bastionctl-that-is-long-enough-0123456789"
	sum := sha256.Sum256([]byte(verifier))
	challenge := base64.RawURLEncoding.EncodeToString(sum[:])
	codeOf := func(t *testing.T, port int) string {
		b := newBrowser(t, h)
		r := p.signInSSO(t, b, fmt.Sprintf("/sso/lab?cli_port=%d&cli_challenge=%s", port, challenge))
		if b.cookies[websession.CookieName] != nil {
			t.Error("a bastionctl sign-in signed the browser in to the portal")
		}
		if port != 0 {
			loc, _ := url.Parse(r.header.Get("Location"))
			if r.code != http.StatusSeeOther || loc == nil || loc.Host != fmt.Sprintf("127.0.0.1:%d", port) || loc.Path != "/callback" {
				t.Fatalf("loopback redirect: %d %s", r.code, r.header.Get("Location"))
			}
			return loc.Query().Get("code")
		}
		m := regexp.MustCompile(`<code id="code">([A-Za-z0-9_-]+)</code>`).FindStringSubmatch(r.body)
		if r.code != http.StatusOK || m == nil {
			t.Fatalf("code page: %d\n%s", r.code, r.body)
		}
		return m[1]
	}
	for _, port := range []int{41234, 0} {
		t.Run(fmt.Sprintf("port %d", port), func(t *testing.T) {
			code := codeOf(t, port)
			cli := newBrowser(t, h)
			cli.origin = ""
			if r := cli.postJSON(api.SSOTokenPath, api.SSOTokenRequest{Code: code, Verifier: "another verifier"}, nil); r.code != http.StatusUnauthorized {
				t.Fatalf("wrong verifier: %d %s", r.code, r.body)
			}
			code = codeOf(t, port)
			r := cli.postJSON(api.SSOTokenPath, api.SSOTokenRequest{Code: code, Verifier: verifier, TTL: "1h", Comment: "laptop"}, nil)
			var tok api.TokenResponse
			if r.code != http.StatusOK || json.Unmarshal([]byte(r.body), &tok) != nil || tok.User != "ana@lab.example" || tok.Secret == "" {
				t.Fatalf("token: %d %s", r.code, r.body)
			}
			if r := cli.postJSON(api.SSOTokenPath, api.SSOTokenRequest{Code: code, Verifier: verifier}, nil); r.code != http.StatusUnauthorized {
				t.Fatalf("code redeemed twice: %d", r.code)
			}
			targets := cli.do(http.MethodGet, "/api/targets", nil, map[string]string{"Authorization": "Bearer " + tok.Secret})
			if targets.code != http.StatusOK || !strings.Contains(targets.body, `"vm2"`) || strings.Contains(targets.body, `"vm1"`) {
				t.Fatalf("targets with the token: %d %s", targets.code, targets.body)
			}
			issued := p.eventsOf(audit.TokenIssued)
			if len(issued) != 1 || !strings.Contains(issued[0].Detail, "signed in through lab") {
				t.Errorf("token_issued %+v", issued)
			}
		})
	}
	b := newBrowser(t, h)
	for _, bad := range []string{"/sso/lab?cli_port=70000&cli_challenge=" + challenge, "/sso/lab?cli_port=1&cli_challenge=short", "/sso/lab?cli_port=x"} {
		if r := b.get(bad); r.code != http.StatusBadRequest || !strings.Contains(r.body, "malformed") {
			t.Errorf("%s: %d", bad, r.code)
		}
	}
}

// TestSSOLogout: signing out of an SSO session ends the bastion's session
// and sends the browser on to the provider's end-session endpoint.
func TestSSOLogout(t *testing.T) {
	p := newSSOPortal(t, "127.0.0.1")
	h := p.routes()
	b := newBrowser(t, h)
	p.signInSSO(t, b, "/sso/lab")
	csrf := csrfOf(t, b.get("/").body)
	r := b.post("/logout", url.Values{"csrf": {csrf}})
	want := p.idp.URL + "/logout?client_id=bastiond&amp;post_logout_redirect_uri=https%3A%2F%2F" + testName + "%2F"
	if r.code != http.StatusOK || !strings.Contains(r.body, want) {
		t.Fatalf("logout: %d, want a page sending on to %s\n%s", r.code, want, r.body)
	}
	if b.cookies[websession.CookieName] != nil {
		t.Fatal("still signed in")
	}
	if page := b.get("/"); !strings.Contains(page.body, `action="/login"`) {
		t.Fatal("the portal still shows the machines")
	}
}

// TestSSOSecretsNotLogged: nothing the daemon logs or audits during
// sign-ins, refusals and bastionctl's token holds a code, the client
// secret, an ID token or the flow cookie (invariant 10).
func TestSSOSecretsNotLogged(t *testing.T) {
	p := newSSOPortal(t, "127.0.0.1")
	h := p.routes()
	var secrets []string
	b := newBrowser(t, h)
	r := b.get("/sso/lab")
	secrets = append(secrets, b.cookies[oidc.CookieName].Value, oidctest.Secret)
	state, code := p.idp.Authorize(t, r.header.Get("Location"))
	secrets = append(secrets, code)
	b.get("/sso/callback?" + url.Values{"state": {state}, "code": {code}}.Encode())
	b.get("/sso/callback?" + url.Values{"state": {state}, "code": {code}}.Encode())
	var lines []string
	for _, e := range p.logs.All() {
		lines = append(lines, e.Message)
		for k, v := range e.ContextMap() {
			lines = append(lines, fmt.Sprint(k, "=", v))
		}
	}
	for _, e := range p.events.Take() {
		data, _ := json.Marshal(e)
		lines = append(lines, string(data))
	}
	all := strings.Join(lines, "\n")
	for _, s := range secrets {
		if strings.Contains(all, s) {
			t.Errorf("a secret (%.8s...) is in the logs or the audit trail", s)
		}
	}
	if strings.Contains(all, "eyJ") {
		t.Error("something like a JWT is in the logs or the audit trail")
	}
}

// TestSSOThroughAForward: a bastion the browser reaches on another port
// (a forward, as the demo's 8443) asks the provider to send it back there,
// and redeems the code with the same redirect URI.
func TestSSOThroughAForward(t *testing.T) {
	p := newSSOPortal(t, "127.0.0.1")
	b := newBrowser(t, p.routes())
	b.host = testName + ":8443"
	b.origin = "https://" + b.host
	r := b.get("/sso/lab")
	loc, _ := url.Parse(r.header.Get("Location"))
	if got := loc.Query().Get("redirect_uri"); got != "https://"+testName+":8443/sso/callback" {
		t.Fatalf("redirect_uri %q", got)
	}
	state, code := p.idp.Authorize(t, r.header.Get("Location"))
	if r := b.get("/sso/callback?" + url.Values{"state": {state}, "code": {code}}.Encode()); r.code != http.StatusOK {
		t.Fatalf("callback through the forward: %d\n%s", r.code, r.body)
	}
	csrf := csrfOf(t, b.get("/").body)
	if r := b.post("/logout", url.Values{"csrf": {csrf}}); !strings.Contains(r.body, "post_logout_redirect_uri=https%3A%2F%2F"+testName+"%3A8443%2F") {
		t.Errorf("logout's way back does not name the forward's port:\n%s", r.body)
	}
}
