package admin

import (
	"time"

	"github.com/bastiond/bastiond/api"
)

// UserInfo is one account as `bastionctl users list` shows it.
type UserInfo struct {
	Name     string `json:"name"`
	Disabled bool   `json:"disabled"`
	TOTP     bool   `json:"totp"`
	// Granted are roles granted with `bastionctl users grant`.
	Granted []string `json:"granted,omitempty"`
	// Roles are every role that applies, from the configuration and grants.
	Roles       []string  `json:"roles"`
	LockedUntil time.Time `json:"locked_until,omitzero"`
	// LockedBy are the sources whose failures caused the lockout.
	LockedBy        []string  `json:"locked_by,omitempty"`
	Created         time.Time `json:"created"`
	PasswordChanged time.Time `json:"password_changed"`
	Tokens          int       `json:"tokens"`
	// Provider is the single sign-on provider of an SSO account ("" for
	// a local one); Groups its groups there at LastSignIn.
	Provider   string    `json:"provider,omitempty"`
	Groups     []string  `json:"groups,omitempty"`
	LastSignIn time.Time `json:"last_sign_in,omitzero"`
}

// Ended is what disabling an account ended.
type Ended struct {
	WebSessions int `json:"web_sessions"`
	// Tokens are the API tokens revoked.
	Tokens int `json:"tokens"`
	// Sessions are the live SSH, RDP and tunnel sessions ended.
	Sessions int `json:"sessions"`
}

// TOTPEnrolment is what an authenticator app needs.
type TOTPEnrolment struct {
	URI    string `json:"uri"`
	Secret string `json:"secret"`
	// QR is the URI as a QR code drawn with Unicode blocks.
	QR string `json:"qr"`
}

// TokenInfo is one API token, without its secret.
type TokenInfo = api.Token

// UserRequest is the body of user changes.
type UserRequest struct {
	Name     string   `json:"name,omitempty"`
	Password string   `json:"password,omitempty"`
	Roles    []string `json:"roles,omitempty"`
	Code     string   `json:"code,omitempty"`
}
