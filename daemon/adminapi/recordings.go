package adminapi

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

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

// RecordingInfo is one recording as `bastionctl recordings list` shows it:
// the file, and its session as the audit trail recorded it.
type RecordingInfo struct {
	recording.Info
	User   string    `json:"user,omitempty"`
	Target string    `json:"target,omitempty"`
	Login  string    `json:"login,omitempty"`
	Start  time.Time `json:"start,omitzero"`
	// Duration is the session's, from its end record; for a session still
	// open (or a recording the trail does not know), up to the file's last
	// write.
	Duration time.Duration `json:"duration"`
	// SHA256 is the file's hash at close, from the session's end record.
	SHA256 string `json:"sha256,omitempty"`
}

// Outcomes of a recording's check.
const (
	CheckOK       = "ok"        // the file's hash is the one the end record holds
	CheckMismatch = "mismatch"  // the file changed since its session ended
	CheckMissing  = "missing"   // the end record names a file that is gone, and retention did not remove it
	CheckNoRecord = "no_record" // no end record holds a hash for it: an older release's, or a session still open
	CheckRemoved  = "removed"   // retention removed it (recording_removed in the trail)
)

// RecordingCheck is the outcome of one recording's check.
type RecordingCheck struct {
	ID      string `json:"id"`
	Path    string `json:"path,omitempty"`
	Outcome string `json:"outcome"`
	// Want is the hash in the end record, Got the file's.
	Want string `json:"want,omitempty"`
	Got  string `json:"got,omitempty"`
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

// Recordings lists the recordings, oldest first.
func (c *Client) Recordings(ctx context.Context) ([]RecordingInfo, error) {
	var v []RecordingInfo
	return v, c.do(ctx, http.MethodGet, "/v1/recordings", &v)
}

// VerifyRecordings checks recordings against the audit trail; no ids: all.
func (c *Client) VerifyRecordings(ctx context.Context, ids []string) ([]RecordingCheck, error) {
	var v []RecordingCheck
	path := "/v1/recordings-verify"
	if len(ids) > 0 {
		path += "?ids=" + url.QueryEscape(strings.Join(ids, ","))
	}
	return v, c.do(ctx, http.MethodGet, path, &v)
}

// ExportRecording copies the recording id to w: decompressed, or as
// stored when raw. It is not bounded by the client's timeout (a large
// recording takes as long as it takes); ctx bounds it.
func (c *Client) ExportRecording(ctx context.Context, id string, raw bool, w io.Writer) (int64, error) {
	path := "/v1/recordings/" + url.PathEscape(id)
	if raw {
		path += "?raw=1"
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://bastiond"+path, nil)
	if err != nil {
		return 0, err
	}
	hc := &http.Client{Transport: c.http.Transport}
	resp, err := hc.Do(req)
	if err != nil {
		return 0, c.callError(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, answerError(resp)
	}
	n, err := io.Copy(w, resp.Body)
	if err != nil {
		return n, fmt.Errorf("export of %s cut short after %d bytes: %w", id, n, err)
	}
	if resp.ContentLength >= 0 && n != resp.ContentLength {
		return n, fmt.Errorf("export of %s cut short after %d of %d bytes", id, n, resp.ContentLength)
	}
	return n, nil
}
