package e2e

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/net/html"
	"golang.org/x/oauth2"
)

// TestLabIdP proves the lab's OpenID provider works as the daemon will use
// it, without the daemon: the bastion finds it (discovery, JWKS) by its name
// over IPv4 and IPv6 with the lab's CA, and a user in the client's namespace
// signs in through its password form (authorization code with PKCE), the
// bastion redeeming the code with the client secret and getting an ID token
// that names the user's groups.
func TestLabIdP(t *testing.T) {
	NeedLab(t)
	p := LabIdP(t)

	t.Run("discovery", func(t *testing.T) {
		for _, fam := range []struct{ network, addr, name string }{
			{"tcp4", p.Addr4, "idp-v4"}, {"tcp6", p.Addr6, "idp-v6"},
		} {
			t.Run(fam.network, func(t *testing.T) {
				c := LabHTTPClient(t, "bastion", fam.network, p.CertPool(t))
				var mu sync.Mutex
				var remote []string // mu guards it
				dial := c.Transport.(*http.Transport).DialContext
				c.Transport.(*http.Transport).DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
					conn, err := dial(ctx, network, addr)
					if err == nil {
						mu.Lock()
						remote = append(remote, conn.RemoteAddr().String())
						mu.Unlock()
					}
					return conn, err
				}
				ctx, cancel := context.WithTimeout(oidc.ClientContext(context.Background(), c), 30*time.Second)
				defer cancel()
				prov, err := oidc.NewProvider(ctx, p.Issuer)
				if err != nil {
					t.Fatalf("discovery of %s over %s from the bastion: %v", p.Issuer, fam.network, err)
				}
				var meta struct {
					JWKS    string   `json:"jwks_uri"`
					PKCE    []string `json:"code_challenge_methods_supported"`
					Grants  []string `json:"grant_types_supported"`
					Scopes  []string `json:"scopes_supported"`
					Claims  []string `json:"claims_supported"`
					Token   string   `json:"token_endpoint"`
					Issuer  string   `json:"issuer"`
					AuthURL string   `json:"authorization_endpoint"`
				}
				if err := prov.Claims(&meta); err != nil {
					t.Fatal(err)
				}
				if !slices.Contains(meta.PKCE, "S256") || !slices.Contains(meta.Grants, "authorization_code") ||
					!slices.Contains(meta.Scopes, "groups") || !strings.HasPrefix(meta.Token, p.Issuer+"/") {
					t.Errorf("discovery document: %+v", meta)
				}
				keys := getJSON(t, c, meta.JWKS)
				ks, _ := keys["keys"].([]any)
				if len(ks) == 0 {
					t.Errorf("JWKS at %s has no keys: %v", meta.JWKS, keys)
				}
				for _, k := range ks {
					if k, _ := k.(map[string]any); k["use"] != "sig" || k["kid"] == "" {
						t.Errorf("JWKS key: %v", k)
					}
				}
				want := net.JoinHostPort(fam.addr, p.Port)
				mu.Lock()
				went := slices.Clone(remote)
				mu.Unlock()
				if len(went) == 0 || slices.ContainsFunc(went, func(r string) bool { return r != want }) {
					t.Errorf("%s: connections went to %v, want %s only", fam.network, went, want)
				}
				// The family's own name is in the bastion's hosts file and in
				// the certificate.
				getJSON(t, c, "https://"+net.JoinHostPort(fam.name, p.Port)+"/dex/.well-known/openid-configuration")
			})
		}
	})

	t.Run("only its own addresses", func(t *testing.T) {
		// Dex listens on the client's namespace; the client's own address
		// is not the IdP.
		for _, a := range []string{LabValue(t, "CLIENT4"), LabValue(t, "CLIENT6")} {
			err := InNetns(LabValue(t, "NS_BASTION"), func() error {
				c, err := net.DialTimeout("tcp", net.JoinHostPort(a, p.Port), 5*time.Second)
				if err == nil {
					c.Close()
				}
				return err
			})
			if err == nil {
				t.Errorf("%s port %s answers; only the IdP's addresses should", a, p.Port)
			}
		}
	})

	cases := []struct {
		name, user, network string
		groups              []string
	}{
		{"ana over IPv4", p.User, "tcp4", []string{IdPGroup}},
		{"ana over IPv6", p.User, "tcp6", []string{IdPGroup}},
		{"ned over IPv4", p.NoRoleUser, "tcp4", []string{IdPNoRoleGroup}},
		{"ned over IPv6", p.NoRoleUser, "tcp6", []string{IdPNoRoleGroup}},
	}
	for _, tc := range cases {
		t.Run("code flow/"+tc.name, func(t *testing.T) {
			f := newIdPFlow(t, p, tc.network)
			code := f.signIn(t, tc.user, p.Password)
			tok, err := f.cfg.Exchange(f.ctx, code, oauth2.VerifierOption(f.verifier))
			if err != nil {
				t.Fatalf("code exchange from the bastion: %v", err)
			}
			raw, _ := tok.Extra("id_token").(string)
			if raw == "" {
				t.Fatal("token response without id_token")
			}
			idt, err := f.prov.Verifier(&oidc.Config{ClientID: p.ClientID}).Verify(f.ctx, raw)
			if err != nil {
				t.Fatalf("ID token: %v", err)
			}
			if idt.Nonce != f.nonce {
				t.Errorf("nonce %q, sent %q", idt.Nonce, f.nonce)
			}
			var claims struct {
				Email    string   `json:"email"`
				Verified bool     `json:"email_verified"`
				Groups   []string `json:"groups"`
				Name     string   `json:"name"`
			}
			if err := idt.Claims(&claims); err != nil {
				t.Fatal(err)
			}
			if claims.Email != tc.user || !claims.Verified || !slices.Equal(claims.Groups, tc.groups) {
				t.Errorf("ID token claims %+v; want email %s (verified), groups %v", claims, tc.user, tc.groups)
			}
			t.Logf("%s: sub %s, groups %v, expires in %s", claims.Email, idt.Subject, claims.Groups, time.Until(idt.Expiry).Round(time.Minute))

			// A code is redeemed once.
			if _, err := f.cfg.Exchange(f.ctx, code, oauth2.VerifierOption(f.verifier)); err == nil {
				t.Error("the same code was redeemed twice")
			}
		})
	}

	t.Run("refusals", func(t *testing.T) {
		f := newIdPFlow(t, p, "tcp4")
		// A wrong password leaves the user on the form, with no code.
		resp := f.submit(t, f.form(t), p.User, "not-"+p.Password)
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		_, _, formErr := passwordForm(strings.NewReader(string(body)))
		if resp.StatusCode != http.StatusUnauthorized || formErr != nil || !strings.Contains(string(body), "Invalid") {
			t.Errorf("wrong password: %s at %s (location %q), want 401 and the form again saying Invalid: %.300s",
				resp.Status, resp.Request.URL, resp.Header.Get("Location"), body)
		}
		// PKCE holds: the code with another verifier, and then with no
		// client secret, is refused.
		code := f.signIn(t, p.User, p.Password)
		if _, err := f.cfg.Exchange(f.ctx, code, oauth2.VerifierOption(oauth2.GenerateVerifier())); err == nil {
			t.Error("the code was redeemed with another PKCE verifier")
		}
		f = newIdPFlow(t, p, "tcp6")
		code = f.signIn(t, p.User, p.Password)
		noSecret := *f.cfg
		noSecret.ClientSecret = "not-the-secret"
		if _, err := noSecret.Exchange(f.ctx, code, oauth2.VerifierOption(f.verifier)); err == nil {
			t.Error("the code was redeemed with a wrong client secret")
		}
	})
}

// idPFlow is one authorization code flow against the lab's IdP: the user's
// browser in the client's namespace, the relying party (what bastiond will
// be) in the bastion's.
type idPFlow struct {
	ctx                    context.Context // carries the bastion's HTTP client for oauth2 and go-oidc
	prov                   *oidc.Provider
	cfg                    *oauth2.Config
	browser                *http.Client
	state, nonce, verifier string
}

func newIdPFlow(t *testing.T, p IdP, network string) *idPFlow {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	ctx = oidc.ClientContext(ctx, LabHTTPClient(t, "bastion", network, p.CertPool(t)))
	prov, err := oidc.NewProvider(ctx, p.Issuer)
	if err != nil {
		t.Fatalf("discovery from the bastion: %v", err)
	}
	return &idPFlow{
		ctx:  ctx,
		prov: prov,
		cfg: &oauth2.Config{
			ClientID: p.ClientID, ClientSecret: p.ClientSecret(t), Endpoint: prov.Endpoint(),
			RedirectURL: p.RedirectURI(), Scopes: []string{oidc.ScopeOpenID, "email", "profile", "groups"},
		},
		browser:  p.HTTPClient(t, "client", network),
		state:    rand.Text(),
		nonce:    rand.Text(),
		verifier: oauth2.GenerateVerifier(),
	}
}

// form opens the authorization URL in the browser and follows it to the
// IdP's password form; it returns the form's absolute action URL.
func (f *idPFlow) form(t *testing.T) *url.URL {
	t.Helper()
	authURL := f.cfg.AuthCodeURL(f.state, oauth2.S256ChallengeOption(f.verifier), oidc.Nonce(f.nonce))
	resp, err := f.browser.Get(authURL)
	if err != nil {
		t.Fatalf("authorization URL from the client: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("authorization URL: %s at %s: %.300s", resp.Status, resp.Request.URL, b)
	}
	action, fields, err := passwordForm(resp.Body)
	if err != nil {
		t.Fatalf("the IdP's login page at %s: %v", resp.Request.URL, err)
	}
	if !slices.Contains(fields, "login") || !slices.Contains(fields, "password") {
		t.Fatalf("the IdP's login form has fields %v, want login and password", fields)
	}
	u, err := resp.Request.URL.Parse(action)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// submit posts the credentials to the form; the response is the IdP's
// answer after its own redirects, stopping at the bastion's callback.
func (f *idPFlow) submit(t *testing.T, form *url.URL, user, password string) *http.Response {
	t.Helper()
	resp, err := f.browser.PostForm(form.String(), url.Values{"login": {user}, "password": {password}})
	if err != nil {
		t.Fatalf("posting the login form: %v", err)
	}
	return resp
}

// signIn runs the browser's part and returns the code the IdP sent to the
// bastion's callback, checking the state came back unchanged.
func (f *idPFlow) signIn(t *testing.T, user, password string) string {
	t.Helper()
	resp := f.submit(t, f.form(t), user, password)
	resp.Body.Close()
	loc, err := resp.Location()
	if err != nil {
		t.Fatalf("after the login form: %s, no redirect to the callback: %v", resp.Status, err)
	}
	if want := f.cfg.RedirectURL; loc.Scheme+"://"+loc.Host+loc.Path != want {
		t.Fatalf("redirected to %s, want the callback %s", loc, want)
	}
	q := loc.Query()
	if q.Get("state") != f.state || q.Get("code") == "" || q.Get("error") != "" {
		t.Fatalf("callback %s: want state %s and a code", loc, f.state)
	}
	return q.Get("code")
}

// passwordForm finds the first form with a password field in an HTML page:
// its action and the names of its inputs.
func passwordForm(r io.Reader) (action string, fields []string, err error) {
	doc, err := html.Parse(r)
	if err != nil {
		return "", nil, err
	}
	attr := func(n *html.Node, key string) string {
		for _, a := range n.Attr {
			if a.Key == key {
				return a.Val
			}
		}
		return ""
	}
	// find returns the first node below n (n included) that match accepts.
	var find func(n *html.Node, match func(*html.Node) bool) []*html.Node
	find = func(n *html.Node, match func(*html.Node) bool) []*html.Node {
		var out []*html.Node
		if match(n) {
			out = append(out, n)
		}
		for c := n.FirstChild; c != nil; c = c.NextSibling {
			out = append(out, find(c, match)...)
		}
		return out
	}
	element := func(tag string) func(*html.Node) bool {
		return func(n *html.Node) bool { return n.Type == html.ElementNode && n.Data == tag }
	}
	for _, form := range find(doc, element("form")) {
		var names []string
		password := false
		for _, in := range find(form, element("input")) {
			names = append(names, attr(in, "name"))
			password = password || attr(in, "type") == "password"
		}
		if password {
			return attr(form, "action"), names, nil
		}
	}
	return "", nil, fmt.Errorf("no form with a password field")
}

// getJSON GETs a JSON object with c, failing the test on any error.
func getJSON(t *testing.T, c *http.Client, u string) map[string]any {
	t.Helper()
	resp, err := c.Get(u)
	if err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
	defer resp.Body.Close()
	var v map[string]any
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s", u, resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
	return v
}
