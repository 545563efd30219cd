package portal

import (
	"crypto/hmac"
	"crypto/sha1"
	"encoding/base32"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"net/http"
	"net/netip"
	"net/url"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/bastiond/bastiond/internal/audit"
	"github.com/bastiond/bastiond/internal/statedb"
	"github.com/bastiond/bastiond/proxy/auth"
	"github.com/bastiond/bastiond/proxy/auth/passkeytest"
	"github.com/bastiond/bastiond/proxy/authz"
	"github.com/bastiond/bastiond/proxy/websession"
)

// passkeyServer is a portal whose authenticator sends its audit events to
// sink too, with alice, bob and carol; mfa is access.mfa.
func passkeyServer(t *testing.T, mfa string) (*Portal, *audit.Capture) {
	t.Helper()
	log := zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel))
	db, err := statedb.Open(filepath.Join(t.TempDir(), "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	st, err := auth.NewStore(db)
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range []string{"alice", "bob", "carol"} {
		if err := st.AddUser(u, testPassword, nil); err != nil {
			t.Fatal(err)
		}
	}
	sink := &audit.Capture{}
	a, err := auth.NewAuthenticator(auth.AuthenticatorConfig{Store: st, Logger: log, Audit: sink})
	if err != nil {
		t.Fatal(err)
	}
	az, err := authz.New(authz.Config{Logger: log, Access: testPolicy(), Audit: sink})
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(Config{Logger: log, Audit: sink, ServerName: testName, Authz: az, MFA: mfa}, a)
	if err != nil {
		t.Fatal(err)
	}
	return s, sink
}

var remotes = []string{"192.0.2.10:50000", "[2001:db8::10]:50000"}

// addPasskey registers a passkey for b's signed-in user (csrf its
// session's token) and returns it.
func addPasskey(t *testing.T, b *browser, csrf, name string) *passkeytest.Credential {
	t.Helper()
	r := b.postJSON("/security/passkeys/begin", struct{}{}, map[string]string{"X-CSRF-Token": csrf})
	if r.code != http.StatusOK {
		t.Fatalf("begin: %d %s", r.code, r.body)
	}
	var ch auth.Challenge
	if err := json.Unmarshal([]byte(r.body), &ch); err != nil {
		t.Fatal(err)
	}
	body, cred, err := passkeytest.Create(ch.Options, "https://"+testName)
	if err != nil {
		t.Fatal(err)
	}
	r = b.postJSON("/security/passkeys/finish", map[string]any{"ceremony": ch.ID, "name": name, "credential": json.RawMessage(body)},
		map[string]string{"X-CSRF-Token": csrf})
	if r.code != http.StatusOK {
		t.Fatalf("finish: %d %s", r.code, r.body)
	}
	return cred
}

// passkeySignIn signs b in with cred alone; it returns the finish's reply.
func passkeySignIn(t *testing.T, b *browser, cred *passkeytest.Credential) reply {
	t.Helper()
	tok := csrfOf(t, b.get("/").body)
	r := b.postJSON("/login/passkey/begin", struct{}{}, map[string]string{"X-CSRF-Token": tok})
	if r.code != http.StatusOK {
		t.Fatalf("begin: %d %s", r.code, r.body)
	}
	var ch auth.Challenge
	if err := json.Unmarshal([]byte(r.body), &ch); err != nil {
		t.Fatal(err)
	}
	body, err := cred.Get(ch.Options, "https://"+testName)
	if err != nil {
		t.Fatal(err)
	}
	return b.postJSON("/login/passkey/finish", map[string]any{"ceremony": ch.ID, "credential": json.RawMessage(body)},
		map[string]string{"X-CSRF-Token": tok})
}

func TestPasskeyOnThePortal(t *testing.T) {
	for _, remote := range remotes {
		t.Run(remote, func(t *testing.T) {
			s, sink := passkeyServer(t, "")
			h := s.routes()
			b := newBrowser(t, h)
			b.remote = remote
			csrf := b.signIn("alice")
			if p := b.get("/"); !strings.Contains(p.body, `href="/security"`) {
				t.Fatalf("the portal's header has no link to the Security page:\n%s", p.body)
			}
			page := b.get("/security")
			if page.code != http.StatusOK || !strings.Contains(page.body, "Add a passkey") || !strings.Contains(page.body, "/static/app/passkey.js") {
				t.Fatalf("security page: %d\n%s", page.code, page.body)
			}
			cred := addPasskey(t, b, csrf, "laptop")
			if p := b.get("/security"); !strings.Contains(p.body, `value="laptop"`) || !strings.Contains(p.body, cred.IDString()) {
				t.Fatalf("the new passkey is not listed:\n%s", p.body)
			}
			if !hasEvent(sink.Take(), audit.PasskeyAdded, "alice") {
				t.Fatal("no passkey_added event")
			}

			// Another browser signs in with the passkey alone.
			b2 := newBrowser(t, h)
			b2.remote = remote
			if r := passkeySignIn(t, b2, cred); r.code != http.StatusOK || !strings.Contains(r.body, `"redirect":"/"`) {
				t.Fatalf("passkey sign-in: %d %s", r.code, r.body)
			}
			if p := b2.get("/"); !strings.Contains(p.body, "vm1") {
				t.Fatalf("signed in with a passkey, the portal shows:\n%s", p.body)
			}
			if !hasEvent(sink.Take(), audit.SigninSucceeded, "alice") {
				t.Fatal("no signin_succeeded event")
			}

			// Removed, it signs in no more.
			r := b.post("/security/passkeys/remove", url.Values{"csrf": {csrf}, "id": {cred.IDString()}})
			if r.code != http.StatusSeeOther {
				t.Fatalf("remove: %d %s", r.code, r.body)
			}
			if !hasEvent(sink.Take(), audit.PasskeyRemoved, "alice") {
				t.Fatal("no passkey_removed event")
			}
			b3 := newBrowser(t, h)
			b3.remote = remote
			if r := passkeySignIn(t, b3, cred); r.code != http.StatusUnauthorized || b3.cookies[websession.CookieName] != nil {
				t.Fatalf("removed passkey: %d %s", r.code, r.body)
			}
			if !hasReason(sink.Take(), audit.SigninFailed, "passkey_unknown") {
				t.Fatal("no signin_failed passkey_unknown")
			}
		})
	}
}

func hasEvent(es []audit.Event, event, user string) bool {
	for _, e := range es {
		if e.Event == event && e.User == user {
			return true
		}
	}
	return false
}

func hasReason(es []audit.Event, event, reason string) bool {
	for _, e := range es {
		if e.Event == event && e.Reason == reason {
			return true
		}
	}
	return false
}

// TestPasskeyPortalRefused: the ceremonies' requests without what a page
// of this bastion sends are refused before any ceremony.
func TestPasskeyPortalRefused(t *testing.T) {
	s, _ := passkeyServer(t, "")
	h := s.routes()
	b := newBrowser(t, h)
	csrf := b.signIn("alice")
	cred := addPasskey(t, b, csrf, "laptop")

	t.Run("registration without the CSRF token", func(t *testing.T) {
		if r := b.postJSON("/security/passkeys/begin", struct{}{}, nil); r.code != http.StatusForbidden {
			t.Fatalf("%d %s", r.code, r.body)
		}
	})
	t.Run("registration from another origin", func(t *testing.T) {
		o := newBrowser(t, h)
		o.cookies, o.origin = b.cookies, "https://evil.example"
		if r := o.postJSON("/security/passkeys/begin", struct{}{}, map[string]string{"X-CSRF-Token": csrf}); r.code != http.StatusForbidden {
			t.Fatalf("%d %s", r.code, r.body)
		}
	})
	t.Run("sign-in without the form token", func(t *testing.T) {
		o := newBrowser(t, h)
		o.get("/")
		if r := o.postJSON("/login/passkey/begin", struct{}{}, map[string]string{"X-CSRF-Token": "x"}); r.code != http.StatusForbidden {
			t.Fatalf("%d %s", r.code, r.body)
		}
	})
	t.Run("sign-in from another origin", func(t *testing.T) {
		o := newBrowser(t, h)
		tok := csrfOf(t, o.get("/").body)
		o.origin = "https://evil.example"
		if r := o.postJSON("/login/passkey/begin", struct{}{}, map[string]string{"X-CSRF-Token": tok}); r.code != http.StatusForbidden {
			t.Fatalf("%d %s", r.code, r.body)
		}
	})
	t.Run("an answer signed for another origin", func(t *testing.T) {
		o := newBrowser(t, h)
		tok := csrfOf(t, o.get("/").body)
		r := o.postJSON("/login/passkey/begin", struct{}{}, map[string]string{"X-CSRF-Token": tok})
		var ch auth.Challenge
		json.Unmarshal([]byte(r.body), &ch)
		body, _ := cred.Get(ch.Options, "https://evil.example")
		r = o.postJSON("/login/passkey/finish", map[string]any{"ceremony": ch.ID, "credential": json.RawMessage(body)},
			map[string]string{"X-CSRF-Token": tok})
		if r.code != http.StatusUnauthorized || o.cookies[websession.CookieName] != nil {
			t.Fatalf("%d %s", r.code, r.body)
		}
	})
	t.Run("a ceremony answered twice", func(t *testing.T) {
		o := newBrowser(t, h)
		tok := csrfOf(t, o.get("/").body)
		r := o.postJSON("/login/passkey/begin", struct{}{}, map[string]string{"X-CSRF-Token": tok})
		var ch auth.Challenge
		json.Unmarshal([]byte(r.body), &ch)
		body, _ := cred.Get(ch.Options, "https://"+testName)
		req := map[string]any{"ceremony": ch.ID, "credential": json.RawMessage(body)}
		if r := o.postJSON("/login/passkey/finish", req, map[string]string{"X-CSRF-Token": tok}); r.code != http.StatusOK {
			t.Fatalf("first: %d %s", r.code, r.body)
		}
		o2 := newBrowser(t, h)
		tok2 := csrfOf(t, o2.get("/").body)
		if r := o2.postJSON("/login/passkey/finish", req, map[string]string{"X-CSRF-Token": tok2}); r.code != http.StatusUnauthorized {
			t.Fatalf("replayed: %d %s", r.code, r.body)
		}
	})
}

var challengeAttr = regexp.MustCompile(`data-challenge="([^"]+)"`)

// TestPasskeySecondFactor: under access.mfa webauthn the password of a
// user with a passkey leads to the passkey's ceremony, not to a session.
func TestPasskeySecondFactor(t *testing.T) {
	for _, remote := range remotes {
		t.Run(remote, func(t *testing.T) {
			s, sink := passkeyServer(t, "webauthn")
			h := s.routes()
			b := newBrowser(t, h)
			b.remote = remote
			csrf := b.signIn("alice") // no passkey yet: the password alone
			cred := addPasskey(t, b, csrf, "laptop")
			sink.Take()

			o := newBrowser(t, h)
			o.remote = remote
			tok := csrfOf(t, o.get("/").body)
			r := o.post("/login", url.Values{"csrf": {tok}, "user": {"alice"}, "password": {testPassword}})
			m := challengeAttr.FindStringSubmatch(r.body)
			if r.code != http.StatusOK || m == nil || o.cookies[websession.CookieName] != nil {
				t.Fatalf("password under mfa webauthn: %d, session cookie %v\n%s", r.code, o.cookies[websession.CookieName], r.body)
			}
			// The second factor skipped: still signed out.
			if p := o.get("/"); !strings.Contains(p.body, "Sign in") || strings.Contains(p.body, "vm1") {
				t.Fatalf("signed in by the password alone:\n%s", p.body)
			}
			if es := sink.Take(); hasEvent(es, audit.SigninSucceeded, "alice") {
				t.Fatalf("signin_succeeded after the password alone: %+v", es)
			}
			// The ceremony is bound to the sign-in form it came from.
			var ch auth.Challenge
			if err := json.Unmarshal([]byte(htmlUnescape(m[1])), &ch); err != nil {
				t.Fatal(err)
			}
			body, err := cred.Get(ch.Options, "https://"+testName)
			if err != nil {
				t.Fatal(err)
			}
			o2 := newBrowser(t, h)
			o2.remote = remote
			tok2 := csrfOf(t, o2.get("/").body)
			r = o2.post("/login", url.Values{"csrf": {tok2}, "user": {"alice"}, "password": {testPassword}})
			m2 := challengeAttr.FindStringSubmatch(r.body)
			var ch2 auth.Challenge
			json.Unmarshal([]byte(htmlUnescape(m2[1])), &ch2)
			body2, _ := cred.Get(ch2.Options, "https://"+testName)
			// Another form's token does not finish it.
			if r := o2.postJSON("/login/passkey/finish", map[string]any{"ceremony": ch.ID, "credential": json.RawMessage(body)},
				map[string]string{"X-CSRF-Token": tok2}); r.code != http.StatusUnauthorized {
				t.Fatalf("another form's ceremony: %d %s", r.code, r.body)
			}
			if r := o2.postJSON("/login/passkey/finish", map[string]any{"ceremony": ch2.ID, "credential": json.RawMessage(body2)},
				map[string]string{"X-CSRF-Token": tok2}); r.code != http.StatusOK {
				t.Fatalf("second factor: %d %s", r.code, r.body)
			}
			if !hasReason(sink.Take(), audit.SigninSucceeded, "password_passkey") {
				t.Fatal("no signin_succeeded password_passkey")
			}
			if p := o2.get("/"); !strings.Contains(p.body, "vm1") {
				t.Fatalf("after the passkey:\n%s", p.body)
			}
		})
	}
}

func htmlUnescape(s string) string {
	return strings.NewReplacer("&#34;", `"`, "&quot;", `"`, "&amp;", "&", "&lt;", "<", "&gt;", ">", "&#43;", "+", "&#39;", "'").Replace(s)
}

// TestSecurityFreshProof: a session signed in long ago changes no second
// factor until its user gives the password again.
func TestSecurityFreshProof(t *testing.T) {
	s, sink := passkeyServer(t, "")
	s.freshFor = 0 // every session's sign-in is old news
	h := s.routes()
	b := newBrowser(t, h)
	csrf := b.signIn("alice")
	if r := b.postJSON("/security/passkeys/begin", struct{}{}, map[string]string{"X-CSRF-Token": csrf}); r.code != http.StatusForbidden {
		t.Fatalf("begin without a fresh proof: %d %s", r.code, r.body)
	}
	if r := b.post("/security/totp/begin", url.Values{"csrf": {csrf}}); r.code != http.StatusForbidden {
		t.Fatalf("TOTP without a fresh proof: %d", r.code)
	}
	if !hasReason(sink.Take(), audit.SigninRefused, "not_fresh") {
		t.Fatal("no signin_refused not_fresh")
	}
	if r := b.post("/security/proof", url.Values{"csrf": {csrf}, "password": {"not the password"}}); r.code != http.StatusUnauthorized {
		t.Fatalf("wrong password: %d", r.code)
	}
	if !hasReason(sink.Take(), audit.SigninFailed, "bad_password") {
		t.Fatal("a wrong proof is no failed sign-in")
	}
	if r := b.post("/security/proof", url.Values{"csrf": {csrf}, "password": {testPassword}}); r.code != http.StatusSeeOther {
		t.Fatalf("proof: %d %s", r.code, r.body)
	}
	addPasskey(t, b, csrf, "laptop")
}

// TestSecurityTOTPEnrolment: the QR code and the secret, confirmed by a
// first code; then the sign-in asks for a code.
func TestSecurityTOTPEnrolment(t *testing.T) {
	s, sink := passkeyServer(t, "")
	h := s.routes()
	b := newBrowser(t, h)
	csrf := b.signIn("alice")
	if r := b.post("/security/totp/begin", url.Values{"csrf": {csrf}}); r.code != http.StatusSeeOther {
		t.Fatalf("begin: %d %s", r.code, r.body)
	}
	p := b.get("/security").body
	secret := regexp.MustCompile(`id="totp-secret">([A-Z2-7]+)<`).FindStringSubmatch(p)
	if !strings.Contains(p, `src="data:image/png;base64,`) || secret == nil {
		t.Fatalf("no QR code or secret:\n%s", p)
	}
	if r := b.post("/security/totp/confirm", url.Values{"csrf": {csrf}, "code": {"000000"}}); r.code != http.StatusBadRequest {
		t.Fatalf("a wrong code: %d", r.code)
	}
	code := totpNow(t, secret[1])
	if r := b.post("/security/totp/confirm", url.Values{"csrf": {csrf}, "code": {code}}); r.code != http.StatusSeeOther {
		t.Fatalf("confirm: %d %s", r.code, r.body)
	}
	if !hasEvent(sink.Take(), audit.TOTPEnrolled, "alice") {
		t.Fatal("no totp_enrolled")
	}
	o := newBrowser(t, h)
	tok := csrfOf(t, o.get("/").body)
	if r := o.post("/login", url.Values{"csrf": {tok}, "user": {"alice"}, "password": {testPassword}}); r.code != http.StatusUnauthorized {
		t.Fatalf("the password alone after the enrolment: %d", r.code)
	}
	if r := b.post("/security/totp/remove", url.Values{"csrf": {csrf}}); r.code != http.StatusSeeOther {
		t.Fatalf("remove: %d", r.code)
	}
	if !hasEvent(sink.Take(), audit.TOTPRemoved, "alice") {
		t.Fatal("no totp_removed")
	}
}

// TestSecuritySSOUser: an account of a provider has nothing to change.
func TestSecuritySSOUser(t *testing.T) {
	s, _ := passkeyServer(t, "")
	if err := s.auth.Store().Update("bob", func(u *auth.User) error { u.Provider = "lab"; return nil }); err != nil {
		t.Fatal(err)
	}
	b := newBrowser(t, s.routes())
	// bob signs in as the provider's user would: a session made directly.
	cookie, sess, err := s.sessions.New("bob", netip.MustParseAddr("192.0.2.10"))
	if err != nil {
		t.Fatal(err)
	}
	b.cookies[websession.CookieName] = &http.Cookie{Name: websession.CookieName, Value: cookie}
	p := b.get("/security")
	if !strings.Contains(p.body, "through your organisation") || strings.Contains(p.body, "Add a passkey") || strings.Contains(p.body, "totp") {
		t.Fatalf("SSO user's security page:\n%s", p.body)
	}
	if r := b.postJSON("/security/passkeys/begin", struct{}{}, map[string]string{"X-CSRF-Token": sess.CSRF}); r.code != http.StatusForbidden {
		t.Fatalf("begin for an SSO user: %d", r.code)
	}
}

// totpNow is the current code of a base32 secret (RFC 6238: SHA-1, 30 s, 6 digits).
func totpNow(t *testing.T, secret string) string {
	t.Helper()
	key, err := base32.StdEncoding.WithPadding(base32.NoPadding).DecodeString(secret)
	if err != nil {
		t.Fatal(err)
	}
	var msg [8]byte
	binary.BigEndian.PutUint64(msg[:], uint64(time.Now().Unix()/30))
	mac := hmac.New(sha1.New, key)
	mac.Write(msg[:])
	sum := mac.Sum(nil)
	off := sum[len(sum)-1] & 0x0f
	return fmt.Sprintf("%06d", (binary.BigEndian.Uint32(sum[off:])&0x7fffffff)%1_000_000)
}
