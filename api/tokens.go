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
