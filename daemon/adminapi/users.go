package adminapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"time"

	"go.uber.org/zap"

	"github.com/bastiond/bastiond/internal/audit"
)

// Users is account administration as the admin API offers it. The daemon
// implements it. Passwords arrive in request bodies and go straight to the
// hashing; nothing here logs a body.
type Users interface {
	List() ([]UserInfo, error)
	Add(name, password string, roles []string) error
	SetPassword(name, password string) error
	// Disable disables an account and ends what it holds: web sessions,
	// API tokens (revoked, so that Enable brings none back) and live
	// sessions.
	Disable(name string) (Ended, error)
	Enable(name string) error
	Unlock(name string) error
	Grant(name string, roles []string) error
	Revoke(name string, roles []string) error
	Delete(name string) error
	BeginTOTP(name string) (TOTPEnrolment, error)
	ConfirmTOTP(name, code string) error
	ResetTOTP(name string) error
	Tokens(user string) ([]TokenInfo, error)
	RevokeToken(id string) error
	RevokeTokens(user string) (int, error)
}

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
type TokenInfo struct {
	ID      string    `json:"id"`
	User    string    `json:"user"`
	Scopes  []string  `json:"scopes"`
	Comment string    `json:"comment,omitempty"`
	Created time.Time `json:"created"`
	Expires time.Time `json:"expires"`
	Source  string    `json:"source,omitempty"`
}

// ErrNotFound marks a user or token that does not exist (404).
var ErrNotFound = errors.New("not found")

// UserRequest is the body of user changes.
type UserRequest struct {
	Name     string   `json:"name,omitempty"`
	Password string   `json:"password,omitempty"`
	Roles    []string `json:"roles,omitempty"`
	Code     string   `json:"code,omitempty"`
}

func (s *Server) userRoutes(mux *http.ServeMux, u Users) {
	answer := func(w http.ResponseWriter, v any, err error) {
		switch {
		case errors.Is(err, ErrNotFound):
			writeJSON(w, http.StatusNotFound, apiError{Error: err.Error()})
		case err != nil:
			writeJSON(w, http.StatusBadRequest, apiError{Error: err.Error()})
		case v == nil:
			writeJSON(w, http.StatusOK, struct{}{})
		default:
			writeJSON(w, http.StatusOK, v)
		}
	}
	body := func(w http.ResponseWriter, r *http.Request) (UserRequest, bool) {
		var req UserRequest
		dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&req); err != nil {
			writeJSON(w, http.StatusBadRequest, apiError{Error: "malformed request: " + err.Error()})
			return req, false
		}
		return req, true
	}
	// change serves one change to an account; do returns the answer and
	// the audit events the change is (Actor and Source filled here).
	change := func(path, what string, do func(name string, req UserRequest) (any, []audit.Event, error)) {
		mux.HandleFunc(path, func(w http.ResponseWriter, r *http.Request) {
			req, ok := body(w, r)
			if !ok {
				return
			}
			name := r.PathValue("name")
			if name == "" {
				name = req.Name
			}
			v, events, err := do(name, req)
			if err == nil {
				s.log.Info("account changed", zap.String("change", what), zap.String("user", name), peerField(r))
				for _, e := range events {
					e.User = name
					s.audit(r, e)
				}
			}
			answer(w, v, err)
		})
	}
	one := func(event, detail string) []audit.Event { return []audit.Event{{Event: event, Detail: detail}} }
	perRole := func(event string, roles []string) []audit.Event {
		out := make([]audit.Event, len(roles))
		for i, role := range roles {
			out[i] = audit.Event{Event: event, Role: role}
		}
		return out
	}
	mux.HandleFunc("GET /v1/users", func(w http.ResponseWriter, r *http.Request) {
		v, err := u.List()
		answer(w, v, err)
	})
	change("POST /v1/users", "added", func(n string, q UserRequest) (any, []audit.Event, error) {
		return nil, []audit.Event{{Event: audit.UserCreated, Roles: q.Roles}}, u.Add(n, q.Password, q.Roles)
	})
	change("POST /v1/users/{name}/password", "password set", func(n string, q UserRequest) (any, []audit.Event, error) {
		return nil, one(audit.PasswordSet, "the account's web sessions were ended and its API tokens revoked"), u.SetPassword(n, q.Password)
	})
	change("POST /v1/users/{name}/disable", "disabled", func(n string, _ UserRequest) (any, []audit.Event, error) {
		e, err := u.Disable(n)
		return e, one(audit.UserDisabled, fmt.Sprintf("ended %d web sessions, revoked %d API tokens, ended %d live sessions",
			e.WebSessions, e.Tokens, e.Sessions)), err
	})
	change("POST /v1/users/{name}/enable", "enabled", func(n string, _ UserRequest) (any, []audit.Event, error) {
		return nil, one(audit.UserEnabled, ""), u.Enable(n)
	})
	change("POST /v1/users/{name}/unlock", "unlocked", func(n string, _ UserRequest) (any, []audit.Event, error) {
		return nil, one(audit.UserUnlocked, ""), u.Unlock(n)
	})
	change("POST /v1/users/{name}/grant", "roles granted", func(n string, q UserRequest) (any, []audit.Event, error) {
		return nil, perRole(audit.GrantAdded, q.Roles), u.Grant(n, q.Roles)
	})
	change("POST /v1/users/{name}/revoke", "roles revoked", func(n string, q UserRequest) (any, []audit.Event, error) {
		return nil, perRole(audit.GrantRemoved, q.Roles), u.Revoke(n, q.Roles)
	})
	change("POST /v1/users/{name}/delete", "deleted", func(n string, _ UserRequest) (any, []audit.Event, error) {
		return nil, one(audit.UserDeleted, ""), u.Delete(n)
	})
	change("POST /v1/users/{name}/totp", "TOTP enrolment started", func(n string, _ UserRequest) (any, []audit.Event, error) {
		e, err := u.BeginTOTP(n)
		return e, []audit.Event{{Event: audit.UserChanged, Reason: "totp_enrolment_started",
			Detail: "TOTP enrolment started: a new secret, in force once confirmed with a code"}}, err
	})
	change("POST /v1/users/{name}/totp/confirm", "TOTP enrolled", func(n string, q UserRequest) (any, []audit.Event, error) {
		return nil, one(audit.TOTPEnrolled, ""), u.ConfirmTOTP(n, q.Code)
	})
	change("POST /v1/users/{name}/totp/reset", "TOTP removed", func(n string, _ UserRequest) (any, []audit.Event, error) {
		return nil, one(audit.TOTPRemoved, ""), u.ResetTOTP(n)
	})
	mux.HandleFunc("GET /v1/tokens", func(w http.ResponseWriter, r *http.Request) {
		v, err := u.Tokens(r.URL.Query().Get("user"))
		answer(w, v, err)
	})
	mux.HandleFunc("POST /v1/tokens/revoke", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			ID   string `json:"id,omitempty"`
			User string `json:"user,omitempty"`
		}
		if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 4<<10)).Decode(&req); err != nil || (req.ID == "") == (req.User == "") {
			writeJSON(w, http.StatusBadRequest, apiError{Error: "give a token id or a user, not both"})
			return
		}
		// The tokens about to go, for the record: whose each one is.
		before, _ := u.Tokens(req.User)
		var n int
		var err error
		if req.ID != "" {
			err, n = u.RevokeToken(req.ID), 1
		} else {
			n, err = u.RevokeTokens(req.User)
		}
		if err == nil {
			s.log.Info("tokens revoked", zap.String("id", req.ID), zap.String("user", req.User), zap.Int("count", n), peerField(r))
			if req.ID != "" {
				// Whose it was, if it was listed a moment ago.
				gone := TokenInfo{ID: req.ID}
				if i := slices.IndexFunc(before, func(t TokenInfo) bool { return t.ID == req.ID }); i >= 0 {
					gone.User = before[i].User
				}
				before = []TokenInfo{gone}
			}
			for _, t := range before {
				s.audit(r, audit.Event{Event: audit.TokenRevoked, User: t.User, Token: t.ID})
			}
		}
		answer(w, map[string]int{"revoked": n}, err)
	})
}

// Users lists the accounts.
func (c *Client) Users(ctx context.Context) ([]UserInfo, error) {
	var v []UserInfo
	return v, c.call(ctx, http.MethodGet, "/v1/users", nil, &v)
}

// UserChange posts a change to an account: action is "" (add), password,
// enable, unlock, grant, revoke, delete, totp/confirm or totp/reset.
func (c *Client) UserChange(ctx context.Context, name, action string, req UserRequest) error {
	path := "/v1/users"
	if action != "" {
		path += "/" + url.PathEscape(name) + "/" + action
	} else {
		req.Name = name
	}
	return c.call(ctx, http.MethodPost, path, req, &struct{}{})
}

// DisableUser disables the account name and returns what that ended.
func (c *Client) DisableUser(ctx context.Context, name string) (Ended, error) {
	var v Ended
	return v, c.call(ctx, http.MethodPost, "/v1/users/"+url.PathEscape(name)+"/disable", UserRequest{}, &v)
}

// BeginTOTP starts a TOTP enrolment for name.
func (c *Client) BeginTOTP(ctx context.Context, name string) (TOTPEnrolment, error) {
	var v TOTPEnrolment
	return v, c.call(ctx, http.MethodPost, "/v1/users/"+url.PathEscape(name)+"/totp", UserRequest{}, &v)
}

// Tokens lists API tokens, of user or of everyone for "".
func (c *Client) Tokens(ctx context.Context, user string) ([]TokenInfo, error) {
	var v []TokenInfo
	return v, c.call(ctx, http.MethodGet, "/v1/tokens?user="+url.QueryEscape(user), nil, &v)
}

// RevokeTokens revokes the token id, or every token of user.
func (c *Client) RevokeTokens(ctx context.Context, id, user string) (int, error) {
	var v map[string]int
	err := c.call(ctx, http.MethodPost, "/v1/tokens/revoke", map[string]string{"id": id, "user": user}, &v)
	return v["revoked"], err
}
