package adminapi

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"

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
	// ResetPasskeys removes every passkey of name and says how many.
	ResetPasskeys(name string) (int, error)
	Tokens(user string) ([]TokenInfo, error)
	RevokeToken(id string) error
	RevokeTokens(user string) (int, error)
}

// ErrNotFound marks a user or token that does not exist (404).
var ErrNotFound = errors.New("not found")

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
	change("POST /v1/users/{name}/passkeys/reset", "passkeys removed", func(n string, _ UserRequest) (any, []audit.Event, error) {
		k, err := u.ResetPasskeys(n)
		return nil, one(audit.PasskeyRemoved, fmt.Sprintf("every passkey of the account (%d) removed by an administrator", k)), err
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
