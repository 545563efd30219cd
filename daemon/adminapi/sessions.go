package adminapi

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"

	"go.uber.org/zap"

	"github.com/bastiond/bastiond/internal/audit"
	"github.com/bastiond/bastiond/proxy/broker"
	"github.com/bastiond/bastiond/proxy/registry"
)

// Sessions is the session registry as the admin API offers it. The daemon
// implements it with the broker, and in a cluster with the registry of
// every instance's sessions (proxy/registry).
type Sessions interface {
	// List is every live session (of every instance, in a cluster).
	List() ([]broker.Info, error)
	// Kill ends a session; broker.ErrNoSession when none has that ID.
	Kill(id, reason string) error
}

func (s *Server) sessionRoutes(mux *http.ServeMux, ss Sessions) {
	mux.HandleFunc("GET /v1/sessions", func(w http.ResponseWriter, r *http.Request) {
		list, err := ss.List()
		if err != nil {
			writeJSON(w, http.StatusServiceUnavailable, apiError{Error: err.Error()})
			return
		}
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
		who := peerName(r)
		if s.instance != "" {
			who += " on instance " + s.instance
		}
		reason := "by " + who + ": " + req.Reason
		// Whose session it was, for the record: looked up first, as a
		// killed session leaves the registry.
		var info broker.Info
		list, _ := ss.List()
		if i := slices.IndexFunc(list, func(i broker.Info) bool { return i.ID == id }); i >= 0 {
			info = list[i]
		}
		err := ss.Kill(id, reason)
		switch {
		case errors.Is(err, broker.ErrNoSession):
			writeJSON(w, http.StatusNotFound, apiError{Error: fmt.Sprintf("no live session %q (see bastionctl sessions)", id)})
			return
		case errors.Is(err, registry.ErrInstanceDead):
			writeJSON(w, http.StatusServiceUnavailable, apiError{Error: err.Error()})
			return
		case err != nil:
			writeJSON(w, http.StatusInternalServerError, apiError{Error: err.Error()})
			return
		}
		s.log.Info("session killed", peerField(r), zap.String("session", id), zap.String("reason", req.Reason))
		e := audit.Event{Event: audit.SessionKilled, Session: id, User: info.User, Target: info.Target,
			Protocol: info.Protocol, Detail: req.Reason}
		if info.Instance != "" && info.Instance != s.instance {
			e.Detail += " (carried by instance " + info.Instance + ")"
		}
		if info.Client.IsValid() {
			e.Client = info.Client.Addr().Unmap().String()
		}
		s.audit(r, e)
		writeJSON(w, http.StatusOK, struct{}{})
	})
}
