package api

import "time"

// TokenRequest is the body of POST /api/tokens: `bastionctl login`.
type TokenRequest struct {
	User     string   `json:"user"`
	Password string   `json:"password"`
	Code     string   `json:"code,omitempty"`
	Scopes   []string `json:"scopes,omitempty"`
	// TTL is a Go duration ("12h"); empty for the default.
	TTL     string `json:"ttl,omitempty"`
	Comment string `json:"comment,omitempty"`
}

// TokenResponse carries a new token's secret, shown once, and the token.
type TokenResponse struct {
	Secret string `json:"token"`
	Token
}

// Token is one API token as the bastion shows it, without its secret: in
// the answer to POST /api/tokens and in the admin socket's token list.
type Token struct {
	ID      string    `json:"id"`
	User    string    `json:"user"`
	Scopes  []string  `json:"scopes"`
	Comment string    `json:"comment,omitempty"`
	Created time.Time `json:"created"`
	Expires time.Time `json:"expires"`
	// Source is the address the token was issued to.
	Source string `json:"source,omitempty"`
}

// Error is the body of every answer other than 200, on the HTTP API and
// on the admin socket.
type Error struct {
	Error string `json:"error"`
}

// SSOPath is where bastionctl sends the browser to sign in through a single
// sign-on provider: SSOPath + PROVIDER, with the query SSOPortParam (its
// loopback port, 0 when no browser can open there) and SSOChallengeParam
// (base64url(SHA-256(verifier)), RFC 7636's S256). The browser comes back to
// http://127.0.0.1:PORT/callback?code=CODE, or the page shows CODE to type.
const (
	SSOPath           = "/sso/"
	SSOPortParam      = "cli_port"
	SSOChallengeParam = "cli_challenge"
	// SSOTokenPath redeems CODE for an API token (POST SSOTokenRequest).
	SSOTokenPath = "/api/sso/token"
	// SSOProvidersPath lists the providers (GET, []SSOProvider).
	SSOProvidersPath = "/api/sso/providers"
)

// SSOTokenRequest redeems a single sign-on's result for an API token.
type SSOTokenRequest struct {
	Code string `json:"code"`
	// Verifier is the PKCE verifier whose challenge began the sign-in.
	Verifier string   `json:"verifier"`
	Scopes   []string `json:"scopes,omitempty"`
	TTL      string   `json:"ttl,omitempty"`
	Comment  string   `json:"comment,omitempty"`
}

// SSOProvider is a single sign-on provider the bastion offers.
type SSOProvider struct {
	Name  string `json:"name"`
	Title string `json:"title"`
}
