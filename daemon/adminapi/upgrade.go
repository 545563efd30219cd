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

// UpgradeResult is the answer to POST /v1/upgrade.
type UpgradeResult struct {
	OldPID int    `json:"old_pid"`
	NewPID int    `json:"new_pid"`
	Binary string `json:"binary"`
	// Sessions is how many live sessions the old process keeps serving
	// (for up to limits.upgrade_grace).
	Sessions int `json:"sessions"`
}

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

// Upgrade asks the daemon to replace itself with the binary installed at
// its path.
func (c *Client) Upgrade(ctx context.Context) (UpgradeResult, error) {
	var res UpgradeResult
	return res, c.call(ctx, http.MethodPost, "/v1/upgrade", struct{}{}, &res)
}
