package portal

import (
	"io"
	"net/http"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/bastiond/bastiond/proxy/webssh"
)

// filesPrefix is where the browser terminal's file panel sends its
// requests: /api/files/{session}/{op}, session being the terminal's broker
// session (its "ready" message names it) and op one of webssh's File*
// operations.
const filesPrefix = "/api/files/"

// isFileUpload reports whether r is an upload of the file panel, whose
// body is a file of any size: the front door lets it through unread, and
// apiFiles checks the caller before it reads a byte.
func isFileUpload(r *http.Request) bool {
	return r.Method == http.MethodPut && strings.HasPrefix(r.URL.Path, filesPrefix) &&
		strings.HasSuffix(r.URL.Path, "/"+webssh.FileUpload) && strings.Count(r.URL.Path, "/") == 4
}

// apiFiles is /api/files/{session}/{op}: the file panel of a live browser
// terminal of the caller's own web session. Reads (list, download) need
// the web session's cookie, which SameSite=Strict keeps from other sites;
// writes (upload, mkdir) also the page's Origin and the session's CSRF
// token in X-CSRF-Token. Those are checked from the headers alone: an
// upload's body is read only after, and then under a deadline that each
// piece of it pushes back (a stalled upload ends, a slow one goes on).
func (s *Portal) apiFiles(w http.ResponseWriter, r *http.Request) {
	c, err := s.signedIn(r)
	if err == nil && r.Method != http.MethodGet && r.Method != http.MethodHead &&
		(!s.sameOrigin(r) || !c.session.CheckCSRF(r.Header.Get("X-CSRF-Token"))) {
		err = errSignedOut
	}
	if err != nil {
		s.log.Info("file request refused: origin, session or CSRF token", zap.String("path", truncate(r.URL.Path, 64)),
			zap.Stringer("source", clientAddr(r)))
		w.Header().Set("Connection", "close") // an unread upload is not drained
		writeJSON(w, http.StatusForbidden, webssh.FileError{Code: "signed_out",
			Error: "Sign in again from the portal (session, origin or CSRF token missing)."})
		return
	}
	if isFileUpload(r) {
		r.Body = &progressBody{r: r.Body, rc: http.NewResponseController(w), idle: s.cfg.Load().HandshakeTimeout}
	}
	s.files.Serve(w, r, r.PathValue("session"), c.session.ID, r.PathValue("op"))
}

// progressBody is an upload's body read under a deadline that each read
// pushes back by idle.
type progressBody struct {
	r    io.ReadCloser
	rc   *http.ResponseController
	idle time.Duration
}

func (b *progressBody) Read(p []byte) (int, error) {
	b.rc.SetReadDeadline(time.Now().Add(b.idle)) // an error: a writer without deadlines (tests)
	return b.r.Read(p)
}

func (b *progressBody) Close() error { return b.r.Close() }
