package adminapi

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"

	"go.uber.org/zap"

	"github.com/bastiond/bastiond/proxy/recording"
)

// Recordings is the recordings store as the admin API offers it. The
// daemon implements it with the recordings directory and the audit trail.
type Recordings interface {
	// List describes every recording, oldest first.
	List() ([]RecordingInfo, error)
	// Export opens the recording id for actor (an admin, named for the
	// audit trail's recording_exported event): decompressed, or as it is
	// on disk when raw. It returns recording.ErrNotFound for an unknown id.
	Export(id, actor string, raw bool) (io.ReadCloser, RecordingInfo, error)
	// Verify checks the files of the recordings ids (all of them, and
	// every recording the audit trail names, when ids is empty) against
	// the SHA-256 their session's end record holds.
	Verify(ids []string) ([]RecordingCheck, error)
}

func (s *Server) recordingRoutes(mux *http.ServeMux, rs Recordings) {
	mux.HandleFunc("GET /v1/recordings", func(w http.ResponseWriter, r *http.Request) {
		list, err := rs.List()
		if err != nil {
			writeJSON(w, http.StatusInternalServerError, apiError{Error: err.Error()})
			return
		}
		if list == nil {
			list = []RecordingInfo{}
		}
		writeJSON(w, http.StatusOK, list)
	})
	mux.HandleFunc("GET /v1/recordings/{id}", func(w http.ResponseWriter, r *http.Request) {
		id := r.PathValue("id")
		raw := r.URL.Query().Get("raw") == "1"
		rc, info, err := rs.Export(id, peerName(r), raw)
		switch {
		case errors.Is(err, recording.ErrNotFound):
			writeJSON(w, http.StatusNotFound, apiError{Error: fmt.Sprintf("no recording %q (see bastionctl recordings list)", id)})
			return
		case err != nil:
			writeJSON(w, http.StatusInternalServerError, apiError{Error: err.Error()})
			return
		}
		defer rc.Close()
		s.log.Info("recording exported", peerField(r), zap.String("recording", info.Path), zap.Bool("raw", raw))
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("X-Recording-File", info.Path)
		if raw {
			w.Header().Set("Content-Length", strconv.FormatInt(info.Size, 10))
		}
		if _, err := io.Copy(w, rc); err != nil {
			// The client sees a short body; a decompression error mid-way
			// (a recording cut short by a crash) ends it too.
			s.log.Warn("recording export cut short", zap.String("recording", info.Path), zap.Error(err))
			panic(http.ErrAbortHandler)
		}
	})
	mux.HandleFunc("GET /v1/recordings-verify", func(w http.ResponseWriter, r *http.Request) {
		var ids []string
		if v := r.URL.Query().Get("ids"); v != "" {
			ids = strings.Split(v, ",")
		}
		checks, err := rs.Verify(ids)
		if err != nil {
			writeJSON(w, http.StatusInternalServerError, apiError{Error: err.Error()})
			return
		}
		if checks == nil {
			checks = []RecordingCheck{}
		}
		writeJSON(w, http.StatusOK, checks)
	})
}
