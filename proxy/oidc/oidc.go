package oidc

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	gooidc "github.com/coreos/go-oidc/v3/oidc"
	"go.uber.org/zap"
	"golang.org/x/oauth2"

	"github.com/bastiond/bastiond/internal/store"
)

// Provider is one configured OpenID Connect provider.
type Provider struct {
	// Name is the provider's short name: in its URL (/sso/NAME), in the
	// subjects of roles (oidc-group:NAME/GROUP), in the audit trail.
	Name string
	// Title is what its button says ("Sign in with TITLE"). Default Name.
	Title string
	// Issuer is the provider's issuer URL, whose discovery document is at
	// ISSUER/.well-known/openid-configuration.
	Issuer       string
	ClientID     string
	ClientSecret string
	// RootCAs verify the provider's TLS certificate. nil: the system's.
	RootCAs *x509.CertPool
	// Scopes asked for; "openid" is always asked. Default openid, email,
	// profile.
	Scopes []string
	// UserClaim is the ID token's claim that names the user. Default email.
	UserClaim string
	// GroupsClaim is the claim that lists the user's groups. Default groups.
	GroupsClaim string
	// EmailDomains, if any, are the only domains a user's email claim may
	// be in, and the provider must not say the email is unverified.
	EmailDomains []string
}

// Config configures a Set.
type Config struct {
	Providers []Provider
	// RedirectURL is the bastion's callback, https://SERVER_NAME/sso/callback,
	// registered at every provider. Required.
	RedirectURL string
	// Key seals the flows' cookies: 32 bytes, the same on every instance
	// of a cluster (a callback may land on any). Required.
	Key []byte
	// DB remembers the states of completed sign-ins until their flows
	// expire. Required.
	DB store.DB
	// Logger records what happens to flows (never a secret). Default none.
	Logger *zap.Logger
	// Timeout bounds each request to a provider. Default 10s.
	Timeout time.Duration
	// FlowTTL is how long a started flow may take. Default 10m.
	FlowTTL time.Duration
	// RetryAfter is how long a failed discovery is not retried. Default 5s.
	RetryAfter time.Duration
	// Now is the clock. Default time.Now.
	Now func() time.Time
}

// Set is the configured providers.
type Set struct {
	cfg       Config
	aead      cipher.AEAD
	providers map[string]*provider
	order     []string
}

// provider is a Provider and what was learnt of it.
type provider struct {
	cfg    Provider
	client *http.Client

	// mu guards the fields below: the discovered provider, or the last
	// failure to discover it.
	mu         sync.Mutex
	disc       *gooidc.Provider
	verifier   *gooidc.IDTokenVerifier
	endSession string
	failedAt   time.Time
	failure    error
}

// Bucket is the store bucket of the states of completed sign-ins.
const Bucket = "sso_used"

// nameRule is what a user claim's value must look like, lowercased, to
// name an account: an email address or a plain user name.
var nameRule = regexp.MustCompile(`^[a-z0-9][a-z0-9._@+-]{0,127}$`)

// providerName is the rule for Provider.Name.
var providerName = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,31}$`)

// New checks cfg and returns a Set. It contacts no provider.
func New(cfg Config) (*Set, error) {
	if cfg.RedirectURL == "" || cfg.DB == nil {
		return nil, errors.New("oidc: RedirectURL and DB are required")
	}
	if len(cfg.Key) != 32 {
		return nil, errors.New("oidc: Key must be 32 bytes")
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 10 * time.Second
	}
	if cfg.FlowTTL == 0 {
		cfg.FlowTTL = 10 * time.Minute
	}
	if cfg.RetryAfter == 0 {
		cfg.RetryAfter = 5 * time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	block, err := aes.NewCipher(cfg.Key)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	s := &Set{cfg: cfg, aead: aead, providers: map[string]*provider{}}
	for _, p := range cfg.Providers {
		if !providerName.MatchString(p.Name) {
			return nil, fmt.Errorf("oidc: provider name %q: lowercase letters, digits and '-', up to 32", p.Name)
		}
		if _, dup := s.providers[p.Name]; dup {
			return nil, fmt.Errorf("oidc: provider %q twice", p.Name)
		}
		if p.Issuer == "" || p.ClientID == "" {
			return nil, fmt.Errorf("oidc: provider %s: issuer and client id are required", p.Name)
		}
		if p.Title == "" {
			p.Title = p.Name
		}
		if len(p.Scopes) == 0 {
			p.Scopes = []string{"email", "profile"}
		}
		if !slices.Contains(p.Scopes, gooidc.ScopeOpenID) {
			p.Scopes = append([]string{gooidc.ScopeOpenID}, p.Scopes...)
		}
		if p.UserClaim == "" {
			p.UserClaim = "email"
		}
		if p.GroupsClaim == "" {
			p.GroupsClaim = "groups"
		}
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.TLSClientConfig = &tls.Config{RootCAs: p.RootCAs, MinVersion: tls.VersionTLS12}
		tr.Proxy = nil
		client := &http.Client{Transport: tr, Timeout: cfg.Timeout,
			// A provider's endpoints answer; they do not send the bastion on.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
		s.providers[p.Name] = &provider{cfg: p, client: client}
		s.order = append(s.order, p.Name)
	}
	return s, nil
}

// Info is what the sign-in page shows of a provider.
type Info struct {
	Name, Title string
}

// Providers are the configured providers, in configuration order.
func (s *Set) Providers() []Info {
	out := make([]Info, 0, len(s.order))
	for _, n := range s.order {
		out = append(out, Info{Name: n, Title: s.providers[n].cfg.Title})
	}
	return out
}

// Title is the title of the provider called name, or name.
func (s *Set) Title(name string) string {
	if p, ok := s.providers[name]; ok {
		return p.cfg.Title
	}
	return name
}

// Reasons of refused sign-ins (Error.Reason), as the audit trail records them.
const (
	ReasonUnknownProvider = "sso_unknown_provider"
	ReasonState           = "sso_bad_state"      // no flow cookie, or one that does not match the state, or expired
	ReasonReplayed        = "sso_replayed"       // a state that already signed someone in
	ReasonProviderError   = "sso_provider_error" // the provider answered with an error (e.g. access_denied)
	ReasonUnreachable     = "sso_unreachable"    // the provider could not be reached or discovered
	ReasonCodeRefused     = "sso_code_refused"   // the token endpoint refused the code (replayed, expired, wrong verifier)
	ReasonTokenInvalid    = "sso_token_invalid"  // no ID token, bad signature or unknown key, wrong issuer or audience
	ReasonTokenExpired    = "sso_token_expired"
	ReasonNonce           = "sso_bad_nonce"
	ReasonClaims          = "sso_bad_claims"   // no usable user claim
	ReasonEmailDomain     = "sso_email_domain" // the email is not in email_domains, or not verified
	ReasonUnavailable     = "unavailable"      // the store cannot be reached
)

// Error is a refused sign-in.
type Error struct {
	Provider string
	// Reason is the class the audit trail records (the Reason* constants).
	Reason string
	// Message is what the user reads.
	Message string
	// Detail is for the log and the audit trail: what exactly was wrong,
	// never a secret.
	Detail string
	Err    error
}

func (e *Error) Error() string {
	msg := "oidc: " + e.Reason
	if e.Detail != "" {
		msg += ": " + e.Detail
	}
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	return msg
}

func (e *Error) Unwrap() error { return e.Err }

// discovered returns p's discovery, discovering it if need be.
func (s *Set) discovered(ctx context.Context, p *provider) (*gooidc.Provider, *gooidc.IDTokenVerifier, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.disc != nil {
		return p.disc, p.verifier, nil
	}
	now := s.cfg.Now()
	if p.failure != nil && now.Sub(p.failedAt) < s.cfg.RetryAfter {
		return nil, nil, p.failure
	}
	ctx, cancel := context.WithTimeout(gooidc.ClientContext(ctx, p.client), s.cfg.Timeout)
	defer cancel()
	disc, err := gooidc.NewProvider(ctx, p.cfg.Issuer)
	if err != nil {
		p.failedAt, p.failure = now, err
		s.cfg.Logger.Warn("SSO provider cannot be discovered", zap.String("provider", p.cfg.Name), zap.String("issuer", p.cfg.Issuer), zap.Error(err))
		return nil, nil, err
	}
	var extra struct {
		EndSession string `json:"end_session_endpoint"`
	}
	disc.Claims(&extra)
	p.disc, p.endSession, p.failure = disc, extra.EndSession, nil
	p.verifier = disc.Verifier(&gooidc.Config{ClientID: p.cfg.ClientID, Now: s.cfg.Now})
	s.cfg.Logger.Info("SSO provider discovered", zap.String("provider", p.cfg.Name), zap.String("issuer", p.cfg.Issuer),
		zap.Bool("end_session", p.endSession != ""))
	return disc, p.verifier, nil
}

func (p *provider) oauth(disc *gooidc.Provider, redirect string) *oauth2.Config {
	return &oauth2.Config{ClientID: p.cfg.ClientID, ClientSecret: p.cfg.ClientSecret, Endpoint: disc.Endpoint(),
		RedirectURL: redirect, Scopes: p.cfg.Scopes}
}

// CLI binds a flow to a bastionctl waiting for its result (RFC 8252).
type CLI struct {
	// Port is bastionctl's loopback port (http://127.0.0.1:PORT/callback);
	// 0: no browser on its machine, the page shows a code to type.
	Port int `json:"port,omitempty"`
	// Challenge is base64url(SHA-256(verifier)) of bastionctl's own
	// verifier, which it shows when it redeems the result.
	Challenge string `json:"challenge"`
}

// Flow is a started sign-in, as its cookie holds it.
type Flow struct {
	Provider string    `json:"p"`
	State    string    `json:"s"`
	Nonce    string    `json:"n"`
	Verifier string    `json:"v"`
	Expires  time.Time `json:"e"`
	CLI      *CLI      `json:"c,omitempty"`
	// Redirect is the redirect URI the flow asked for, when not
	// Config.RedirectURL: the token request must name the same.
	Redirect string `json:"r,omitempty"`
}

// redirect is the flow's redirect URI: its own, or def.
func (f Flow) redirect(def string) string {
	if f.Redirect != "" {
		return f.Redirect
	}
	return def
}

// CookieName is the flow's cookie. It is SameSite=Lax, not Strict like
// the session's: the provider's redirect back is a navigation from
// another site, on which a Strict cookie is not sent.
const CookieName = "__Host-bastion-sso"

// Begin starts a sign-in at the provider called name. It returns where to
// send the browser and the flow's cookie (sealed; its lifetime is FlowTTL).
// redirect, when not "", is the redirect URI to use instead of
// Config.RedirectURL: the bastion as the browser reaches it, on another
// port (a forward); the provider must know it too.
func (s *Set) Begin(ctx context.Context, name string, cli *CLI, redirect string) (authURL, cookie string, err error) {
	p, ok := s.providers[name]
	if !ok {
		return "", "", &Error{Provider: name, Reason: ReasonUnknownProvider, Message: "There is no such sign-in provider."}
	}
	disc, _, err := s.discovered(ctx, p)
	if err != nil {
		return "", "", s.unreachable(p, err)
	}
	f := Flow{Provider: name, State: random(), Nonce: random(), Verifier: oauth2.GenerateVerifier(),
		Expires: s.cfg.Now().Add(s.cfg.FlowTTL).UTC().Truncate(time.Second), CLI: cli}
	if redirect != s.cfg.RedirectURL {
		f.Redirect = redirect
	}
	cookie, err = s.seal(f)
	if err != nil {
		return "", "", err
	}
	authURL = p.oauth(disc, f.redirect(s.cfg.RedirectURL)).AuthCodeURL(f.State, gooidc.Nonce(f.Nonce), oauth2.S256ChallengeOption(f.Verifier))
	return authURL, cookie, nil
}

func (s *Set) unreachable(p *provider, err error) *Error {
	return &Error{Provider: p.cfg.Name, Reason: ReasonUnreachable, Err: err,
		Message: p.cfg.Title + " cannot be reached just now. Please try again in a moment, or sign in with a local account.",
		Detail:  "the provider's discovery document at " + p.cfg.Issuer + " could not be read"}
}

// Identity is who a provider says signed in.
type Identity struct {
	Provider string
	// Subject is the provider's stable identifier of the user (sub).
	Subject string
	// Name is the user claim, lowercased: the account's name.
	Name   string
	Email  string
	Groups []string
	// Expiry is the ID token's: when the provider's own assertion ends.
	Expiry time.Time
}

// Answer is what the provider's redirect back brought: the query of
// /sso/callback.
type Answer struct {
	State, Code string
	// Error and ErrorDescription are the provider's error, when it sent
	// one instead of a code.
	Error, ErrorDescription string
}

// Finish completes the flow of cookie with the provider's answer. The flow
// is returned, once its cookie opened, even with an error.
func (s *Set) Finish(ctx context.Context, cookie string, ans Answer) (Identity, Flow, error) {
	f, err := s.open(cookie)
	if err != nil {
		return Identity{}, Flow{}, &Error{Reason: ReasonState, Err: err,
			Message: "This sign-in was not started here, or it took too long. Please start again.",
			Detail:  "the answer came without a valid flow cookie from this browser"}
	}
	p, ok := s.providers[f.Provider]
	if !ok {
		return Identity{}, f, &Error{Provider: f.Provider, Reason: ReasonUnknownProvider, Message: "There is no such sign-in provider."}
	}
	refuse := func(reason, msg, detail string, err error) (Identity, Flow, error) {
		return Identity{}, f, &Error{Provider: p.cfg.Name, Reason: reason, Message: msg, Detail: detail, Err: err}
	}
	if !s.cfg.Now().Before(f.Expires) {
		return refuse(ReasonState, "This sign-in took too long. Please start again.", "the flow expired", nil)
	}
	if subtle.ConstantTimeCompare([]byte(f.State), []byte(ans.State)) != 1 {
		return refuse(ReasonState, "This sign-in was not started here. Please start again.",
			"the answer's state is not the one this browser's flow sent", nil)
	}
	if ans.Error != "" {
		return refuse(ReasonProviderError, p.cfg.Title+" did not sign you in ("+printable(ans.Error, 64)+").",
			"the provider answered "+printable(ans.Error, 64)+": "+printable(ans.ErrorDescription, 200), nil)
	}
	if ans.Code == "" {
		return refuse(ReasonCodeRefused, p.cfg.Title+" sent no code. Please start again.", "the answer has no code", nil)
	}
	disc, verifier, err := s.discovered(ctx, p)
	if err != nil {
		return Identity{}, f, s.unreachable(p, err)
	}
	cctx, cancel := context.WithTimeout(gooidc.ClientContext(ctx, p.client), s.cfg.Timeout)
	defer cancel()
	tok, err := p.oauth(disc, f.redirect(s.cfg.RedirectURL)).Exchange(cctx, ans.Code, oauth2.VerifierOption(f.Verifier))
	if err != nil {
		var re *oauth2.RetrieveError
		if errors.As(err, &re) && re.Response != nil && re.Response.StatusCode < 500 {
			return refuse(ReasonCodeRefused, p.cfg.Title+" refused this sign-in's code (used already, or expired). Please start again.",
				"the token endpoint answered "+printable(re.ErrorCode, 64)+" (HTTP "+fmt.Sprint(re.Response.StatusCode)+")", nil)
		}
		if re != nil && re.Response != nil {
			// The status only: a failing endpoint's body is the
			// provider's words, which are no business of the log.
			err = fmt.Errorf("HTTP %d", re.Response.StatusCode)
		}
		return Identity{}, f, &Error{Provider: p.cfg.Name, Reason: ReasonUnreachable, Err: err,
			Message: p.cfg.Title + " cannot be reached just now. Please try again in a moment.",
			Detail:  "the token endpoint could not be reached or failed"}
	}
	raw, _ := tok.Extra("id_token").(string)
	if raw == "" {
		return refuse(ReasonTokenInvalid, p.cfg.Title+" sent no identity. Please ask your administrator to check the provider's scopes.",
			"the token response has no id_token", nil)
	}
	idt, err := verifier.Verify(cctx, raw)
	if err != nil {
		var expired *gooidc.TokenExpiredError
		if errors.As(err, &expired) {
			return refuse(ReasonTokenExpired, p.cfg.Title+"'s answer has expired. Please start again.",
				"the ID token expired at "+expired.Expiry.UTC().Format(time.RFC3339), nil)
		}
		return refuse(ReasonTokenInvalid, p.cfg.Title+"'s answer could not be verified. Please start again, or tell your administrator.",
			"the ID token failed verification: "+printable(err.Error(), 200), nil)
	}
	if subtle.ConstantTimeCompare([]byte(idt.Nonce), []byte(f.Nonce)) != 1 {
		return refuse(ReasonNonce, p.cfg.Title+"'s answer was not made for this sign-in. Please start again.",
			"the ID token's nonce is not this flow's", nil)
	}
	id, err := p.identity(idt)
	if err != nil {
		return Identity{}, f, err
	}
	fresh, err := s.consume(f)
	if err != nil {
		return Identity{}, f, &Error{Provider: p.cfg.Name, Reason: ReasonUnavailable, Err: err,
			Message: "The bastion cannot reach its database just now. Please try again in a moment."}
	}
	if !fresh {
		return refuse(ReasonReplayed, "This sign-in was used already. Please start again.", "the flow's state signed someone in before", nil)
	}
	return id, f, nil
}

// claims are the ID token's claims this package reads.
type claims map[string]any

// identity reads who signed in from a verified ID token.
func (p *provider) identity(idt *gooidc.IDToken) (Identity, error) {
	var c claims
	if err := idt.Claims(&c); err != nil {
		return Identity{}, &Error{Provider: p.cfg.Name, Reason: ReasonClaims, Err: err,
			Message: p.cfg.Title + "'s answer could not be read.", Detail: "the ID token's claims are not a JSON object"}
	}
	bad := func(reason, msg, detail string) (Identity, error) {
		return Identity{}, &Error{Provider: p.cfg.Name, Reason: reason, Message: msg, Detail: detail}
	}
	if idt.Subject == "" || len(idt.Subject) > 255 {
		return bad(ReasonClaims, p.cfg.Title+"'s answer names nobody.", "the ID token's sub is empty or longer than 255 bytes")
	}
	name, _ := c[p.cfg.UserClaim].(string)
	name = strings.ToLower(strings.TrimSpace(name))
	if !nameRule.MatchString(name) {
		return bad(ReasonClaims, p.cfg.Title+" did not say who you are in a way the bastion can use. Please tell your administrator.",
			fmt.Sprintf("the ID token's %s claim is missing or not a usable name (letters, digits, . _ @ + -, up to 128)", p.cfg.UserClaim))
	}
	email, _ := c["email"].(string)
	email = strings.ToLower(strings.TrimSpace(email))
	if len(p.cfg.EmailDomains) > 0 {
		_, domain, _ := strings.Cut(email, "@")
		if verified, ok := c["email_verified"].(bool); ok && !verified {
			return bad(ReasonEmailDomain, "Your email address at "+p.cfg.Title+" is not verified, so this bastion cannot let you in.",
				"the ID token says email_verified false")
		}
		if domain == "" || !slices.ContainsFunc(p.cfg.EmailDomains, func(d string) bool { return strings.EqualFold(d, domain) }) {
			return bad(ReasonEmailDomain, "Accounts of your email domain cannot sign in here.",
				"the email claim's domain "+printable(domain, 100)+" is not in email_domains")
		}
	}
	return Identity{Provider: p.cfg.Name, Subject: idt.Subject, Name: name, Email: email,
		Groups: groups(c[p.cfg.GroupsClaim]), Expiry: idt.Expiry}, nil
}

// Bounds of the groups taken from a claim.
const (
	maxGroups     = 512
	maxGroupBytes = 256
)

// groups reads a groups claim: a list of strings, or one string. Entries
// that are not strings, empty or too long are left out.
func groups(v any) []string {
	var in []any
	switch g := v.(type) {
	case string:
		in = []any{g}
	case []any:
		in = g
	}
	var out []string
	for _, e := range in {
		s, ok := e.(string)
		if !ok || s == "" || len(s) > maxGroupBytes || strings.ContainsAny(s, "\x00\n\r") || slices.Contains(out, s) {
			continue
		}
		out = append(out, s)
		if len(out) == maxGroups {
			break
		}
	}
	slices.Sort(out)
	return out
}

// consume records that f's state signed someone in, until f expires. It
// reports false if it had already. Expired records are swept on the way.
func (s *Set) consume(f Flow) (fresh bool, err error) {
	sum := sha256.Sum256([]byte(f.State))
	key := binary.BigEndian.AppendUint64(nil, uint64(f.Expires.Unix()))
	key = append(key, sum[:16]...)
	now := uint64(s.cfg.Now().Unix())
	err = s.cfg.DB.Update(func(tx store.Tx) error {
		fresh = false
		b := tx.Bucket(Bucket)
		v, err := b.Get(key)
		if err != nil || v != nil {
			return err
		}
		if err := sweepExpired(b, now); err != nil {
			return err
		}
		fresh = true
		return b.Put(key, []byte{1})
	})
	return fresh, err
}

// sweepExpired deletes up to 256 keys of b that begin with an expiry (8
// bytes, big-endian Unix seconds) before now: the first ones, in key order.
func sweepExpired(b store.Bucket, now uint64) error {
	var old [][]byte
	stop := errors.New("stop")
	err := b.ForEach(nil, func(k, _ []byte) error {
		if len(k) < 8 || binary.BigEndian.Uint64(k) >= now || len(old) == 256 {
			return stop
		}
		old = append(old, slices.Clone(k))
		return nil
	})
	if err != nil && err != stop {
		return err
	}
	for _, k := range old {
		if err := b.Delete(k); err != nil {
			return err
		}
	}
	return nil
}

// EndSessionURL is where to send a browser that signs out of a session
// that provider name began, so that it signs out there too (RP-initiated
// logout), coming back to back; "" when the provider offers no such
// endpoint or is not discovered. No ID token is kept to hint with: the
// client ID says which application asks.
func (s *Set) EndSessionURL(name, back string) string {
	p, ok := s.providers[name]
	if !ok {
		return ""
	}
	p.mu.Lock()
	end := p.endSession
	p.mu.Unlock()
	if end == "" {
		return ""
	}
	u, err := url.Parse(end)
	if err != nil {
		return ""
	}
	q := u.Query()
	q.Set("client_id", p.cfg.ClientID)
	q.Set("post_logout_redirect_uri", back)
	u.RawQuery = q.Encode()
	return u.String()
}

func (s *Set) seal(f Flow) (string, error) {
	plain, err := json.Marshal(f)
	if err != nil {
		return "", err
	}
	nonce := make([]byte, s.aead.NonceSize())
	rand.Read(nonce)
	sealed := s.aead.Seal(nonce, nonce, plain, []byte(CookieName))
	return base64.RawURLEncoding.EncodeToString(sealed), nil
}

// maxCookie bounds a flow cookie's length before it is decoded.
const maxCookie = 2048

func (s *Set) open(cookie string) (Flow, error) {
	if cookie == "" {
		return Flow{}, errors.New("no flow cookie")
	}
	if len(cookie) > maxCookie {
		return Flow{}, errors.New("flow cookie too long")
	}
	raw, err := base64.RawURLEncoding.DecodeString(cookie)
	if err != nil || len(raw) < s.aead.NonceSize()+s.aead.Overhead() {
		return Flow{}, errors.New("flow cookie malformed")
	}
	n := s.aead.NonceSize()
	plain, err := s.aead.Open(nil, raw[:n], raw[n:], []byte(CookieName))
	if err != nil {
		return Flow{}, errors.New("flow cookie not sealed by this bastion")
	}
	var f Flow
	if err := json.Unmarshal(plain, &f); err != nil {
		return Flow{}, errors.New("flow cookie unreadable")
	}
	return f, nil
}

func random() string {
	var b [24]byte
	rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// printable is s with anything but printable ASCII replaced, cut to max
// bytes: a provider's words, fit for a page and a log line.
func printable(s string, max int) string {
	b := []byte(s)
	if len(b) > max {
		b = b[:max]
	}
	for i, c := range b {
		if c < 0x20 || c > 0x7e {
			b[i] = '?'
		}
	}
	return string(b)
}
