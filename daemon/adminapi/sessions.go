package adminapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"

	"go.uber.org/zap"

	"github.com/bastiond/bastiond/internal/audit"
	"github.com/bastiond/bastiond/proxy/broker"
)

// Sessions is the session registry as the admin API offers it. The daemon
// implements it with the broker.
type Sessions interface {
	List() []broker.Info
	Kill(id, reason string) error
}

// KillRequest is the body of POST /v1/sessions/{id}/kill.
type KillRequest struct {
	// Reason is recorded in the session's end record, after who asked.
	Reason string `json:"reason"`
}

func (s *Server) sessionRoutes(mux *http.ServeMux, ss Sessions) {
	mux.HandleFunc("GET /v1/sessions", func(w http.ResponseWriter, r *http.Request) {
		list := ss.List()
		if list == nil {
			list = []broker.Info{}
		}
		writeJSON(w, http.StatusOK, list)
	})
	mux.HandleFunc("POST /v1/sessions/{id}/kill", func(w http.ResponseWriter, r *http.Request) {
		var req KillRequest
		if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 4<<10)).Decode(&req); err != nil || req.Reason == "" {
			writeJSON(w, http.StatusBadRequest, apiError{Error: "a reason is required (it goes into the session's record)"})
			return
		}
		id := r.PathValue("id")
		reason := "by " + peerName(r) + ": " + req.Reason
		// Whose session it was, for the record: looked up first, as a
		// killed session leaves the registry.
		var info broker.Info
		list := ss.List()
		if i := slices.IndexFunc(list, func(i broker.Info) bool { return i.ID == id }); i >= 0 {
			info = list[i]
		}
		err := ss.Kill(id, reason)
		switch {
		case errors.Is(err, broker.ErrNoSession):
			writeJSON(w, http.StatusNotFound, apiError{Error: fmt.Sprintf("no live session %q (see bastionctl sessions)", id)})
			return
		case err != nil:
			writeJSON(w, http.StatusInternalServerError, apiError{Error: err.Error()})
			return
		}
		s.log.Info("session killed", peerField(r), zap.String("session", id), zap.String("reason", req.Reason))
		e := audit.Event{Event: audit.SessionKilled, Session: id, User: info.User, Target: info.Target,
			Protocol: info.Protocol, Detail: req.Reason}
		if info.Client.IsValid() {
			e.Client = info.Client.Addr().Unmap().String()
		}
		s.audit(r, e)
		writeJSON(w, http.StatusOK, struct{}{})
	})
}

// Sessions lists the live sessions.
func (c *Client) Sessions(ctx context.Context) ([]broker.Info, error) {
	var v []broker.Info
	return v, c.do(ctx, http.MethodGet, "/v1/sessions", &v)
}

// Kill ends a live session; reason is recorded.
func (c *Client) Kill(ctx context.Context, id, reason string) error {
	return c.call(ctx, http.MethodPost, "/v1/sessions/"+url.PathEscape(id)+"/kill", KillRequest{Reason: reason}, &struct{}{})
}
