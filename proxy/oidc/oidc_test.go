package oidc

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bastiond/bastiond/internal/statedb"
	"github.com/bastiond/bastiond/internal/store"
	"github.com/bastiond/bastiond/proxy/oidc/oidctest"
)

// answer is what p sends back to the redirect URI for authURL.
func answer(t *testing.T, p *oidctest.IdP, authURL string) Answer {
	state, code := p.Authorize(t, authURL)
	return Answer{State: state, Code: code}
}

func newSet(t *testing.T, p *oidctest.IdP, mod func(*Provider)) (*Set, *time.Time) {
	t.Helper()
	db, err := statedb.Open(filepath.Join(t.TempDir(), "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	prov := Provider{Name: "lab", Title: "Lab SSO", Issuer: p.URL, ClientID: "bastiond", ClientSecret: oidctest.Secret, RootCAs: p.Pool(),
		Scopes: []string{"email", "groups"}}
	if mod != nil {
		mod(&prov)
	}
	now := time.Now()
	key := make([]byte, 32)
	rand.Read(key)
	s, err := New(Config{Providers: []Provider{prov}, RedirectURL: "https://bastion.lab.example/sso/callback", Key: key, DB: db,
		Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	return s, &now
}

func reason(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Reason
	}
	if err == nil {
		return ""
	}
	return "not an *Error: " + err.Error()
}

func TestSignIn(t *testing.T) {
	for _, host := range []string{"127.0.0.1", "::1"} {
		t.Run(host, func(t *testing.T) {
			p := oidctest.New(t, host)
			s, _ := newSet(t, p, func(pr *Provider) { pr.EmailDomains = []string{"lab.example"} })
			authURL, cookie, err := s.Begin(context.Background(), "lab", nil, "")
			if err != nil {
				t.Fatal(err)
			}
			if !strings.HasPrefix(authURL, p.URL+"/auth?") || !strings.Contains(authURL, "scope=openid+email+groups") {
				t.Fatalf("authorization URL %s", authURL)
			}
			id, f, err := s.Finish(context.Background(), cookie, answer(t, p, authURL))
			if err != nil {
				t.Fatal(err)
			}
			if id.Name != "ana@lab.example" || id.Subject != "CiQwOGE4Njg0Yi1kYjg4" || id.Provider != "lab" ||
				strings.Join(id.Groups, ",") != "everyone,lab-ops" || f.Provider != "lab" {
				t.Fatalf("identity %+v, flow %+v", id, f)
			}
			if got := s.EndSessionURL("lab", "https://bastion.lab.example/"); got != p.URL+"/logout?client_id=bastiond&post_logout_redirect_uri=https%3A%2F%2Fbastion.lab.example%2F" {
				t.Errorf("end session URL %s", got)
			}
		})
	}
}

// TestRefusals is each bad answer the issue names, and the others a
// provider or an attacker can send, refused with its reason.
func TestRefusals(t *testing.T) {
	claim := func(k string, v any) func(*oidctest.IdP) {
		return func(p *oidctest.IdP) {
			old := p.Claims
			p.Claims = func(n string) map[string]any {
				c := old(n)
				if v == nil {
					delete(c, k)
				} else {
					c[k] = v
				}
				return c
			}
		}
	}
	for _, tc := range []struct {
		name   string
		idp    func(*oidctest.IdP)
		prov   func(*Provider)
		answer func(a *Answer, cookie *string, now *time.Time)
		reason string
	}{
		{name: "wrong state", answer: func(a *Answer, _ *string, _ *time.Time) { a.State = random() }, reason: ReasonState},
		{name: "no cookie", answer: func(_ *Answer, c *string, _ *time.Time) { *c = "" }, reason: ReasonState},
		{name: "forged cookie", answer: func(_ *Answer, c *string, _ *time.Time) {
			b, _ := base64.RawURLEncoding.DecodeString(*c)
			b[len(b)-1] ^= 1
			*c = base64.RawURLEncoding.EncodeToString(b)
		}, reason: ReasonState},
		{name: "flow expired", answer: func(_ *Answer, _ *string, now *time.Time) { *now = now.Add(11 * time.Minute) }, reason: ReasonState},
		{name: "provider error", answer: func(a *Answer, _ *string, _ *time.Time) { a.Code, a.Error = "", "access_denied" }, reason: ReasonProviderError},
		{name: "unknown code", answer: func(a *Answer, _ *string, _ *time.Time) { a.Code = "made-up" }, reason: ReasonCodeRefused},
		{name: "other issuer", idp: claim("iss", "https://evil.example/dex"), reason: ReasonTokenInvalid},
		{name: "other audience", idp: claim("aud", "someone-else"), reason: ReasonTokenInvalid},
		{name: "expired token", idp: claim("exp", time.Now().Add(-time.Minute).Unix()), reason: ReasonTokenExpired},
		{name: "wrong nonce", idp: func(p *oidctest.IdP) {
			old := p.Claims
			p.Claims = func(string) map[string]any { return old("another flow's nonce") }
		}, reason: ReasonNonce},
		{name: "unpublished key", idp: func(p *oidctest.IdP) {
			keys := p.Keys()
			p.Rotate("k2", false)
			p.SetKeys(keys) // signs with k2, publishes k1 only
		}, reason: ReasonTokenInvalid},
		{name: "no user claim", idp: claim("email", nil), reason: ReasonClaims},
		{name: "unusable user claim", idp: claim("email", "ana lab@lab.example"), reason: ReasonClaims},
		{name: "email domain", idp: claim("email", "ana@elsewhere.example"), prov: func(p *Provider) { p.EmailDomains = []string{"lab.example"} }, reason: ReasonEmailDomain},
		{name: "email unverified", idp: claim("email_verified", false), prov: func(p *Provider) { p.EmailDomains = []string{"lab.example"} }, reason: ReasonEmailDomain},
		{name: "no subject", idp: claim("sub", ""), reason: ReasonClaims},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := oidctest.New(t, "127.0.0.1")
			if tc.idp != nil {
				tc.idp(p)
			}
			s, now := newSet(t, p, tc.prov)
			authURL, cookie, err := s.Begin(context.Background(), "lab", nil, "")
			if err != nil {
				t.Fatal(err)
			}
			a := answer(t, p, authURL)
			if tc.answer != nil {
				tc.answer(&a, &cookie, now)
			}
			id, _, err := s.Finish(context.Background(), cookie, a)
			if got := reason(err); got != tc.reason {
				t.Fatalf("reason %q, want %q (err %v, identity %+v)", got, tc.reason, err, id)
			}
			var e *Error
			errors.As(err, &e)
			if e.Message == "" {
				t.Error("no message for the user")
			}
			for _, secret := range []string{oidctest.Secret, a.Code, cookie} {
				if secret != "" && (strings.Contains(err.Error(), secret) || strings.Contains(e.Message, secret)) {
					t.Errorf("the error shows a secret: %v / %s", err, e.Message)
				}
			}
		})
	}
}

// TestReplay: an answer used once is refused the second time, whether the
// provider refuses its code (as it should) or redeems it again.
func TestReplay(t *testing.T) {
	for _, reuse := range []bool{false, true} {
		p := oidctest.New(t, "127.0.0.1")
		p.Set(func(p *oidctest.IdP) { p.Reuse = reuse })
		s, _ := newSet(t, p, nil)
		authURL, cookie, _ := s.Begin(context.Background(), "lab", nil, "")
		a := answer(t, p, authURL)
		if _, _, err := s.Finish(context.Background(), cookie, a); err != nil {
			t.Fatal(err)
		}
		_, _, err := s.Finish(context.Background(), cookie, a)
		want := ReasonCodeRefused
		if reuse {
			want = ReasonReplayed
		}
		if got := reason(err); got != want {
			t.Errorf("provider redeems codes twice %v: replay refused as %q, want %q", reuse, got, want)
		}
	}
}

// TestKeyRotation: the provider's new signing key is fetched when a token
// names it; tokens signed by the old key it no longer publishes fail.
func TestKeyRotation(t *testing.T) {
	p := oidctest.New(t, "::1")
	s, _ := newSet(t, p, nil)
	signIn := func() error {
		authURL, cookie, err := s.Begin(context.Background(), "lab", nil, "")
		if err != nil {
			return err
		}
		_, _, err = s.Finish(context.Background(), cookie, answer(t, p, authURL))
		return err
	}
	if err := signIn(); err != nil {
		t.Fatal(err)
	}
	p.Rotate("k2", false)
	if err := signIn(); err != nil {
		t.Fatalf("after the provider rotated its key: %v", err)
	}
}

// TestUnreachable: a provider down at start is discovered once it is up;
// meanwhile each attempt is refused as unreachable, with no flow begun.
func TestUnreachable(t *testing.T) {
	p := oidctest.New(t, "127.0.0.1")
	p.Set(func(p *oidctest.IdP) { p.Down = true })
	s, now := newSet(t, p, nil)
	if _, _, err := s.Begin(context.Background(), "lab", nil, ""); reason(err) != ReasonUnreachable {
		t.Fatalf("down: %v", err)
	}
	p.Set(func(p *oidctest.IdP) { p.Down = false })
	*now = now.Add(6 * time.Second) // past RetryAfter
	authURL, cookie, err := s.Begin(context.Background(), "lab", nil, "")
	if err != nil {
		t.Fatalf("up again: %v", err)
	}
	// Down between the start and the answer: the token endpoint fails.
	p.Set(func(p *oidctest.IdP) { p.Down = true })
	if _, _, err := s.Finish(context.Background(), cookie, answer(t, p, authURL)); reason(err) != ReasonUnreachable ||
		strings.Contains(err.Error(), "down") || !strings.Contains(err.Error(), "HTTP 503") {
		t.Fatalf("down at the answer: %v (the status, not the provider's body)", err)
	}
	if _, _, err := s.Begin(context.Background(), "nowhere", nil, ""); reason(err) != ReasonUnknownProvider {
		t.Fatalf("unknown provider: %v", err)
	}
}

func TestCLICode(t *testing.T) {
	p := oidctest.New(t, "127.0.0.1")
	s, now := newSet(t, p, nil)
	verifier := random()
	sum := sha256.Sum256([]byte(verifier))
	cli := CLI{Port: 41234, Challenge: base64.RawURLEncoding.EncodeToString(sum[:])}
	code, err := s.IssueCLICode("ana@lab.example", "lab", cli)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.RedeemCLICode(code, "another verifier"); !errors.Is(err, ErrCLICode) {
		t.Fatalf("wrong verifier: %v", err)
	}
	// The wrong verifier spent it.
	if _, _, err := s.RedeemCLICode(code, verifier); !errors.Is(err, ErrCLICode) {
		t.Fatalf("after a wrong verifier: %v", err)
	}
	code, _ = s.IssueCLICode("ana@lab.example", "lab", cli)
	user, prov, err := s.RedeemCLICode(code, verifier)
	if err != nil || user != "ana@lab.example" || prov != "lab" {
		t.Fatalf("redeem: %q %q %v", user, prov, err)
	}
	if _, _, err := s.RedeemCLICode(code, verifier); !errors.Is(err, ErrCLICode) {
		t.Fatalf("twice: %v", err)
	}
	code, _ = s.IssueCLICode("ana@lab.example", "lab", cli)
	*now = now.Add(CLITTL + time.Second)
	if _, _, err := s.RedeemCLICode(code, verifier); !errors.Is(err, ErrCLICode) {
		t.Fatalf("expired: %v", err)
	}
	for _, bad := range []string{"", "x", strings.Repeat("A", 43), "!!!"} {
		if _, _, err := s.RedeemCLICode(bad, verifier); !errors.Is(err, ErrCLICode) {
			t.Errorf("code %q: %v", bad, err)
		}
	}
}

func TestGroupsClaim(t *testing.T) {
	for _, tc := range []struct {
		in   any
		want string
	}{
		{[]any{"b", "a", "b", 3, "", strings.Repeat("x", 300), "c\nd"}, "a,b"},
		{"solo", "solo"},
		{nil, ""},
		{map[string]any{"a": 1}, ""},
	} {
		if got := strings.Join(groups(tc.in), ","); got != tc.want {
			t.Errorf("groups(%v) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// TestSweepExpired: the keys whose expiry (their first 8 bytes) has
// passed go, the others stay.
func TestSweepExpired(t *testing.T) {
	db, err := statedb.Open(filepath.Join(t.TempDir(), "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	key := func(exp uint64, tag byte) []byte { return append(binary.BigEndian.AppendUint64(nil, exp), tag) }
	db.Update(func(tx store.Tx) error {
		for i, exp := range []uint64{100, 200, 300, 400} {
			tx.Bucket(Bucket).Put(key(exp, byte(i)), []byte{1})
		}
		return nil
	})
	if err := db.Update(func(tx store.Tx) error { return sweepExpired(tx.Bucket(Bucket), 250) }); err != nil {
		t.Fatal(err)
	}
	var left []uint64
	db.View(func(tx store.Tx) error {
		return tx.Bucket(Bucket).ForEach(nil, func(k, _ []byte) error { left = append(left, binary.BigEndian.Uint64(k)); return nil })
	})
	if len(left) != 2 || left[0] != 300 || left[1] != 400 {
		t.Fatalf("left %v, want [300 400]", left)
	}
}
