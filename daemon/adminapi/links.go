package adminapi

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/bastiond/bastiond/api/admin"
	"github.com/bastiond/bastiond/internal/audit"
	"github.com/bastiond/bastiond/proxy/link"
)

// LinkSettings are the shareable links as the configuration in force has
// them.
type LinkSettings struct {
	// Store keeps the links. Required.
	Store *link.Store
	// Enabled, MaxValid and MaxUses are links.enabled, max_valid and
	// max_uses.
	Enabled  bool
	MaxValid time.Duration
	MaxUses  int
	// ServerName is the name in a link's URL (listen.server_name).
	ServerName string
	// Check says why protocol on target is no inventory target's, or nil.
	Check func(target, protocol string) error
	// Revoked ends the live sessions of a link just revoked (on every
	// instance) and returns how many there were here. Optional.
	Revoked func(id string) int
}

// prunedAfter is how long a link that expired or was revoked stays listed.
const prunedAfter = 30 * 24 * time.Hour

func linkInfo(l link.Link, now time.Time) admin.Link {
	a := admin.Link{ID: l.ID, Target: l.Target, Protocol: l.Protocol, Login: l.Login, CreatedBy: l.CreatedBy, Created: l.Created,
		Expires: l.Expires, Uses: l.Uses, Spent: l.Spent, Left: l.Left(), State: l.State(now)}
	if !l.Revoked.IsZero() {
		a.Revoked = new(l.Revoked)
	}
	return a
}

func linkEvent(event string, l link.Link) audit.Event {
	return audit.Event{Event: event, Link: l.ID, User: link.User(l.ID), Target: l.Target, Protocol: l.Protocol, Login: l.Login,
		Expires: new(l.Expires), Uses: l.Uses}
}

func (s *Server) linkRoutes(mux *http.ServeMux, settings func() LinkSettings) {
	mux.HandleFunc("POST /v1/links", func(w http.ResponseWriter, r *http.Request) {
		ls := settings()
		if !ls.Enabled {
			writeJSON(w, http.StatusConflict, apiError{Error: "shareable links are off: set links.enabled: true in the configuration, " +
				"then bastionctl reload (README, \"Shareable links\")"})
			return
		}
		var req admin.LinkRequest
		dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 4<<10))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&req); err != nil {
			writeJSON(w, http.StatusBadRequest, apiError{Error: "malformed request: " + err.Error()})
			return
		}
		valid, err := parseValid(req.Valid)
		switch {
		case err != nil:
			writeJSON(w, http.StatusBadRequest, apiError{Error: err.Error()})
			return
		case valid > ls.MaxValid:
			writeJSON(w, http.StatusBadRequest, apiError{Error: fmt.Sprintf("valid: %s is longer than links.max_valid (%s)", req.Valid, ls.MaxValid)})
			return
		case req.Uses > ls.MaxUses:
			writeJSON(w, http.StatusBadRequest, apiError{Error: fmt.Sprintf("uses: %d is more than links.max_uses (%d)", req.Uses, ls.MaxUses)})
			return
		}
		if ls.Check != nil {
			if err := ls.Check(req.Target, req.Protocol); err != nil {
				writeJSON(w, http.StatusBadRequest, apiError{Error: err.Error()})
				return
			}
		}
		l, secret, err := ls.Store.Create(link.New{Target: req.Target, Protocol: req.Protocol, Login: req.Login, CreatedBy: peerName(r),
			Valid: valid, Uses: req.Uses})
		if err != nil {
			code := http.StatusServiceUnavailable
			if errors.Is(err, link.ErrInvalid) {
				code = http.StatusBadRequest
			}
			writeJSON(w, code, apiError{Error: err.Error()})
			return
		}
		s.log.Info("link created", peerField(r), zap.String("link", l.ID), zap.String("target", l.Target), zap.String("protocol", l.Protocol),
			zap.String("login", l.Login), zap.Time("expires", l.Expires), zap.Int("uses", l.Uses))
		s.audit(r, linkEvent(audit.LinkCreated, l))
		if n, err := ls.Store.Prune(time.Now().Add(-prunedAfter)); err != nil {
			s.log.Warn("cannot remove old links", zap.Error(err))
		} else if n > 0 {
			s.log.Info("old links removed", zap.Int("links", n))
		}
		writeJSON(w, http.StatusOK, admin.LinkCreated{Link: linkInfo(l, time.Now()), URL: "https://" + ls.ServerName + "/l/" + secret})
	})
	mux.HandleFunc("GET /v1/links", func(w http.ResponseWriter, r *http.Request) {
		list, err := settings().Store.List()
		if err != nil {
			writeJSON(w, http.StatusServiceUnavailable, apiError{Error: err.Error()})
			return
		}
		now := time.Now()
		out := make([]admin.Link, 0, len(list))
		for _, l := range list {
			out = append(out, linkInfo(l, now))
		}
		writeJSON(w, http.StatusOK, out)
	})
	mux.HandleFunc("POST /v1/links/{id}/revoke", func(w http.ResponseWriter, r *http.Request) {
		ls := settings()
		l, err := ls.Store.Revoke(r.PathValue("id"))
		switch {
		case errors.Is(err, link.ErrNoLink):
			writeJSON(w, http.StatusNotFound, apiError{Error: fmt.Sprintf("no link %q (see bastionctl links)", r.PathValue("id"))})
			return
		case err != nil:
			writeJSON(w, http.StatusServiceUnavailable, apiError{Error: err.Error()})
			return
		}
		s.log.Info("link revoked", peerField(r), zap.String("link", l.ID))
		s.audit(r, linkEvent(audit.LinkRevoked, l))
		if ls.Revoked != nil {
			ls.Revoked(l.ID)
		}
		writeJSON(w, http.StatusOK, linkInfo(l, time.Now()))
	})
}

// parseValid reads a validity: a Go duration, or whole days ("7d").
func parseValid(s string) (time.Duration, error) {
	d, err := time.ParseDuration(s)
	if days, ok := strings.CutSuffix(s, "d"); ok && err != nil {
		var n int
		if _, e := fmt.Sscanf(days, "%d", &n); e == nil && fmt.Sprint(n) == days && n > 0 && n <= 3650 {
			d, err = time.Duration(n)*24*time.Hour, nil
		}
	}
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("valid: %q is not a duration (such as 30m, 2h or 7d)", s)
	}
	return d, nil
}
