package oidc

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/bastiond/bastiond/internal/statedb"
)

// idp is a provider for these tests: discovery, JWKS and a token endpoint
// that checks PKCE and answers with the ID token its test sets. The lab's
// real provider (Dex) is in test/e2e; this one makes the tokens a real
// provider would never send (another issuer, an expired one, a key it does
// not publish), which is what a refusal needs to be tested against.
type idp struct {
	t   *testing.T
	srv *httptest.Server
	url string

	mu sync.Mutex
	// keys are published in the JWKS; signer signs the tokens.
	keys     []jose.JSONWebKey
	signer   *ecdsa.PrivateKey
	signerID string
	// claims returns the ID token's claims for a request's nonce.
	claims func(nonce string) map[string]any
	// challenges maps codes to their PKCE challenge and nonce.
	codes map[string][2]string
	used  map[string]bool
	// reuse lets a code be redeemed twice (a careless provider).
	reuse bool
	down  bool
}

func newIdP(t *testing.T, host string) *idp {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		t.Skipf("no %s here: %v", host, err)
	}
	p := &idp{t: t, codes: map[string][2]string{}, used: map[string]bool{}}
	p.rotate("k1", true)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(p.serve))
	srv.Listener.Close()
	srv.Listener = ln
	srv.StartTLS()
	t.Cleanup(srv.Close)
	p.srv, p.url = srv, srv.URL+"/dex"
	p.claims = func(nonce string) map[string]any {
		return map[string]any{"iss": p.url, "aud": "bastiond", "sub": "CiQwOGE4Njg0Yi1kYjg4", "nonce": nonce,
			"exp": time.Now().Add(time.Hour).Unix(), "iat": time.Now().Unix(),
			"email": "Ana@Lab.Example", "email_verified": true, "groups": []any{"lab-ops", "everyone"}}
	}
	return p
}

// rotate makes a new signing key called id; keep publishes the old ones too.
func (p *idp) rotate(id string, keep bool) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		p.t.Fatal(err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if !keep {
		p.keys = nil
	}
	p.keys = append(p.keys, jose.JSONWebKey{Key: &k.PublicKey, KeyID: id, Algorithm: "ES256", Use: "sig"})
	p.signer, p.signerID = k, id
}

func (p *idp) serve(w http.ResponseWriter, r *http.Request) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.down {
		http.Error(w, "down", http.StatusServiceUnavailable)
		return
	}
	switch r.URL.Path {
	case "/dex/.well-known/openid-configuration":
		json.NewEncoder(w).Encode(map[string]any{"issuer": p.url, "authorization_endpoint": p.url + "/auth",
			"token_endpoint": p.url + "/token", "jwks_uri": p.url + "/keys", "end_session_endpoint": p.url + "/logout",
			"id_token_signing_alg_values_supported": []string{"ES256"}, "response_types_supported": []string{"code"}})
	case "/dex/keys":
		json.NewEncoder(w).Encode(jose.JSONWebKeySet{Keys: p.keys})
	case "/dex/token":
		r.ParseForm()
		code := r.PostForm.Get("code")
		c, ok := p.codes[code]
		sum := sha256.Sum256([]byte(r.PostForm.Get("code_verifier")))
		user, secret, _ := r.BasicAuth()
		switch {
		case !ok || (p.used[code] && !p.reuse):
			w.WriteHeader(http.StatusBadRequest)
			json.NewEncoder(w).Encode(map[string]string{"error": "invalid_grant"})
			return
		case base64.RawURLEncoding.EncodeToString(sum[:]) != c[0]:
			w.WriteHeader(http.StatusBadRequest)
			json.NewEncoder(w).Encode(map[string]string{"error": "invalid_grant", "error_description": "PKCE"})
			return
		case user != "bastiond" || secret != "s3cret":
			w.WriteHeader(http.StatusUnauthorized)
			json.NewEncoder(w).Encode(map[string]string{"error": "invalid_client"})
			return
		}
		p.used[code] = true
		payload, _ := json.Marshal(p.claims(c[1]))
		signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: p.signer},
			(&jose.SignerOptions{}).WithHeader("kid", p.signerID))
		if err != nil {
			p.t.Error(err)
			return
		}
		jws, _ := signer.Sign(payload)
		idt, _ := jws.CompactSerialize()
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{"access_token": "at", "token_type": "Bearer", "expires_in": 3600, "id_token": idt})
	default:
		http.NotFound(w, r)
	}
}

// authorize plays the user at the provider: it reads the authorization
// URL and returns the code the provider would send back with its state.
func (p *idp) authorize(t *testing.T, authURL string) Answer {
	t.Helper()
	u, err := url.Parse(authURL)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	if q.Get("code_challenge_method") != "S256" || q.Get("nonce") == "" || q.Get("state") == "" || q.Get("client_id") != "bastiond" {
		t.Fatalf("authorization URL lacks PKCE, nonce, state or client: %s", authURL)
	}
	code := random()
	p.mu.Lock()
	p.codes[code] = [2]string{q.Get("code_challenge"), q.Get("nonce")}
	p.mu.Unlock()
	return Answer{State: q.Get("state"), Code: code}
}

func (p *idp) pool() *x509.CertPool {
	pool := x509.NewCertPool()
	pool.AddCert(p.srv.Certificate())
	return pool
}

func newSet(t *testing.T, p *idp, mod func(*Provider)) (*Set, *time.Time) {
	t.Helper()
	db, err := statedb.Open(filepath.Join(t.TempDir(), "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	prov := Provider{Name: "lab", Title: "Lab SSO", Issuer: p.url, ClientID: "bastiond", ClientSecret: "s3cret", RootCAs: p.pool(),
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
			p := newIdP(t, host)
			s, _ := newSet(t, p, func(pr *Provider) { pr.EmailDomains = []string{"lab.example"} })
			authURL, cookie, err := s.Begin(context.Background(), "lab", nil)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.HasPrefix(authURL, p.url+"/auth?") || !strings.Contains(authURL, "scope=openid+email+groups") {
				t.Fatalf("authorization URL %s", authURL)
			}
			id, f, err := s.Finish(context.Background(), cookie, p.authorize(t, authURL))
			if err != nil {
				t.Fatal(err)
			}
			if id.Name != "ana@lab.example" || id.Subject != "CiQwOGE4Njg0Yi1kYjg4" || id.Provider != "lab" ||
				strings.Join(id.Groups, ",") != "everyone,lab-ops" || f.Provider != "lab" {
				t.Fatalf("identity %+v, flow %+v", id, f)
			}
			if got := s.EndSessionURL("lab", "https://bastion.lab.example/"); got != p.url+"/logout?client_id=bastiond&post_logout_redirect_uri=https%3A%2F%2Fbastion.lab.example%2F" {
				t.Errorf("end session URL %s", got)
			}
		})
	}
}

// TestRefusals is each bad answer the issue names, and the others a
// provider or an attacker can send, refused with its reason.
func TestRefusals(t *testing.T) {
	claim := func(k string, v any) func(*idp) {
		return func(p *idp) {
			old := p.claims
			p.claims = func(n string) map[string]any {
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
		idp    func(*idp)
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
		{name: "wrong nonce", idp: func(p *idp) {
			old := p.claims
			p.claims = func(string) map[string]any { return old("another flow's nonce") }
		}, reason: ReasonNonce},
		{name: "unpublished key", idp: func(p *idp) {
			keys := p.keys
			p.rotate("k2", false)
			p.keys = keys // signs with k2, publishes k1 only
		}, reason: ReasonTokenInvalid},
		{name: "no user claim", idp: claim("email", nil), reason: ReasonClaims},
		{name: "unusable user claim", idp: claim("email", "ana lab@lab.example"), reason: ReasonClaims},
		{name: "email domain", idp: claim("email", "ana@elsewhere.example"), prov: func(p *Provider) { p.EmailDomains = []string{"lab.example"} }, reason: ReasonEmailDomain},
		{name: "email unverified", idp: claim("email_verified", false), prov: func(p *Provider) { p.EmailDomains = []string{"lab.example"} }, reason: ReasonEmailDomain},
		{name: "no subject", idp: claim("sub", ""), reason: ReasonClaims},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newIdP(t, "127.0.0.1")
			if tc.idp != nil {
				tc.idp(p)
			}
			s, now := newSet(t, p, tc.prov)
			authURL, cookie, err := s.Begin(context.Background(), "lab", nil)
			if err != nil {
				t.Fatal(err)
			}
			a := p.authorize(t, authURL)
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
			for _, secret := range []string{"s3cret", a.Code, cookie} {
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
		p := newIdP(t, "127.0.0.1")
		p.reuse = reuse
		s, _ := newSet(t, p, nil)
		authURL, cookie, _ := s.Begin(context.Background(), "lab", nil)
		a := p.authorize(t, authURL)
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
	p := newIdP(t, "::1")
	s, _ := newSet(t, p, nil)
	signIn := func() error {
		authURL, cookie, err := s.Begin(context.Background(), "lab", nil)
		if err != nil {
			return err
		}
		_, _, err = s.Finish(context.Background(), cookie, p.authorize(t, authURL))
		return err
	}
	if err := signIn(); err != nil {
		t.Fatal(err)
	}
	p.rotate("k2", false)
	if err := signIn(); err != nil {
		t.Fatalf("after the provider rotated its key: %v", err)
	}
}

// TestUnreachable: a provider down at start is discovered once it is up;
// meanwhile each attempt is refused as unreachable, with no flow begun.
func TestUnreachable(t *testing.T) {
	p := newIdP(t, "127.0.0.1")
	p.down = true
	s, now := newSet(t, p, nil)
	if _, _, err := s.Begin(context.Background(), "lab", nil); reason(err) != ReasonUnreachable {
		t.Fatalf("down: %v", err)
	}
	p.mu.Lock()
	p.down = false
	p.mu.Unlock()
	*now = now.Add(6 * time.Second) // past RetryAfter
	authURL, cookie, err := s.Begin(context.Background(), "lab", nil)
	if err != nil {
		t.Fatalf("up again: %v", err)
	}
	// Down between the start and the answer: the token endpoint fails.
	p.mu.Lock()
	p.down = true
	p.mu.Unlock()
	if _, _, err := s.Finish(context.Background(), cookie, p.authorize(t, authURL)); reason(err) != ReasonCodeRefused && reason(err) != ReasonUnreachable {
		t.Fatalf("down at the answer: %v", err)
	}
	if _, _, err := s.Begin(context.Background(), "nowhere", nil); reason(err) != ReasonUnknownProvider {
		t.Fatalf("unknown provider: %v", err)
	}
}

func TestCLICode(t *testing.T) {
	p := newIdP(t, "127.0.0.1")
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
