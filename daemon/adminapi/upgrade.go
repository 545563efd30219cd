package adminapi

import (
	"context"
	"net/http"

	"go.uber.org/zap"
)

// Upgrade replaces the running binary with the one installed at its path,
// without dropping a session (see the daemon's upgrade.go), and reports
// the outcome; on error the running process still serves.
type Upgrade func(ctx context.Context) (UpgradeResult, error)

func (s *Server) upgradeRoutes(mux *http.ServeMux, up Upgrade) {
	mux.HandleFunc("POST /v1/upgrade", func(w http.ResponseWriter, r *http.Request) {
		s.log.Info("upgrade requested", peerField(r))
		res, err := up(r.Context())
		if err != nil {
			writeJSON(w, http.StatusInternalServerError, apiError{Error: err.Error()})
			return
		}
		s.log.Info("upgraded", peerField(r), zap.Int("new_pid", res.NewPID))
		writeJSON(w, http.StatusOK, res)
	})
}
