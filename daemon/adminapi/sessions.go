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
)

// Sessions is the session registry as the admin API offers it. The daemon
// implements it with the broker.
type Sessions interface {
	List() []broker.Info
	Kill(id, reason string) error
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
