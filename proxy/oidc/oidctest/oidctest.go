// Package oidctest is an OpenID Connect provider for tests of the bastion's
// single sign-on: discovery, keys and a token endpoint, on loopback.
package oidctest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// Secret is the client secret of the client "bastiond".
const Secret = "s3cret"

// IdP is a provider for tests: discovery, JWKS and a token endpoint that
// checks PKCE and the client's secret and answers with the ID token its
// test sets. The lab's real provider (Dex) is in test/e2e; this one makes
// the tokens a real provider would never send (another issuer, an expired
// one, a key it does not publish), which is what a refusal needs to be
// tested against.
type IdP struct {
	t   *testing.T
	srv *httptest.Server
	// URL is the issuer.
	URL string

	mu sync.Mutex
	// keys are published in the JWKS; signer signs the tokens.
	keys     []jose.JSONWebKey // published
	signer   *ecdsa.PrivateKey
	signerID string
	// Claims returns the ID token's claims for a request's nonce. Set it
	// before the flow begins.
	Claims func(nonce string) map[string]any
	// challenges maps codes to their PKCE challenge and nonce.
	codes map[string][3]string
	used  map[string]bool
	// Reuse lets a code be redeemed twice (a careless provider); Down
	// answers 503 to everything. Set them with Set.
	Reuse bool
	Down  bool
}

// New starts an IdP on host (127.0.0.1 or ::1), issuer URL+"/dex", whose
// client is "bastiond" with the secret Secret. It signs in ana@lab.example
// (groups lab-ops, everyone) unless Claims says otherwise.
func New(t *testing.T, host string) *IdP {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		t.Skipf("no %s here: %v", host, err)
	}
	p := &IdP{t: t, codes: map[string][3]string{}, used: map[string]bool{}}
	p.Rotate("k1", true)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(p.serve))
	srv.Listener.Close()
	srv.Listener = ln
	srv.StartTLS()
	t.Cleanup(srv.Close)
	p.srv, p.URL = srv, srv.URL+"/dex"
	p.Claims = func(nonce string) map[string]any {
		return map[string]any{"iss": p.URL, "aud": "bastiond", "sub": "CiQwOGE4Njg0Yi1kYjg4", "nonce": nonce,
			"exp": time.Now().Add(time.Hour).Unix(), "iat": time.Now().Unix(),
			"email": "Ana@Lab.Example", "email_verified": true, "groups": []any{"lab-ops", "everyone"}}
	}
	return p
}

// Rotate makes a new signing key called id; keep publishes the old ones too.
func (p *IdP) Rotate(id string, keep bool) {
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

func (p *IdP) serve(w http.ResponseWriter, r *http.Request) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.Down {
		http.Error(w, "down", http.StatusServiceUnavailable)
		return
	}
	switch r.URL.Path {
	case "/dex/.well-known/openid-configuration":
		json.NewEncoder(w).Encode(map[string]any{"issuer": p.URL, "authorization_endpoint": p.URL + "/auth",
			"token_endpoint": p.URL + "/token", "jwks_uri": p.URL + "/keys", "end_session_endpoint": p.URL + "/logout",
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
		case !ok || (p.used[code] && !p.Reuse):
			w.WriteHeader(http.StatusBadRequest)
			json.NewEncoder(w).Encode(map[string]string{"error": "invalid_grant"})
			return
		case base64.RawURLEncoding.EncodeToString(sum[:]) != c[0]:
			w.WriteHeader(http.StatusBadRequest)
			json.NewEncoder(w).Encode(map[string]string{"error": "invalid_grant", "error_description": "PKCE"})
			return
		case r.PostForm.Get("redirect_uri") != c[2]:
			w.WriteHeader(http.StatusBadRequest)
			json.NewEncoder(w).Encode(map[string]string{"error": "invalid_grant", "error_description": "redirect_uri"})
			return
		case user != "bastiond" || secret != Secret:
			w.WriteHeader(http.StatusUnauthorized)
			json.NewEncoder(w).Encode(map[string]string{"error": "invalid_client"})
			return
		}
		p.used[code] = true
		payload, _ := json.Marshal(p.Claims(c[1]))
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

// Authorize plays the user at the provider: it reads the authorization
// URL and returns the state and the code the provider sends back.
func (p *IdP) Authorize(t *testing.T, authURL string) (state, code string) {
	t.Helper()
	u, err := url.Parse(authURL)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	if q.Get("code_challenge_method") != "S256" || q.Get("nonce") == "" || q.Get("state") == "" || q.Get("client_id") != "bastiond" {
		t.Fatalf("authorization URL lacks PKCE, nonce, state or client: %s", authURL)
	}
	var b [18]byte
	rand.Read(b[:])
	code = base64.RawURLEncoding.EncodeToString(b[:])
	p.mu.Lock()
	p.codes[code] = [3]string{q.Get("code_challenge"), q.Get("nonce"), q.Get("redirect_uri")}
	p.mu.Unlock()
	return q.Get("state"), code
}

// Pool trusts the IdP's certificate.
func (p *IdP) Pool() *x509.CertPool {
	pool := x509.NewCertPool()
	pool.AddCert(p.srv.Certificate())
	return pool
}

// Set changes the IdP under its lock.
func (p *IdP) Set(change func(p *IdP)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	change(p)
}

// Keys are the published keys.
func (p *IdP) Keys() []jose.JSONWebKey {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]jose.JSONWebKey{}, p.keys...)
}

// SetKeys replaces the published keys.
func (p *IdP) SetKeys(keys []jose.JSONWebKey) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.keys = keys
}
