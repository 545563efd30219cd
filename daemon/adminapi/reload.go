package adminapi

import (
	"context"
	"net/http"
)

// Reload reloads the configuration file, as SIGHUP does, and reports the
// outcome: a refused configuration leaves the running one in force. The
// error is for a reload that could not be tried (an upgrade under way).
type Reload func(ctx context.Context) (ReloadResult, error)

func (s *Server) reloadRoutes(mux *http.ServeMux, reload Reload) {
	mux.HandleFunc("POST /v1/reload", func(w http.ResponseWriter, r *http.Request) {
		s.log.Info("reload requested", peerField(r))
		res, err := reload(r.Context())
		if err != nil {
			writeJSON(w, http.StatusConflict, apiError{Error: err.Error()})
			return
		}
		writeJSON(w, http.StatusOK, res)
	})
}
