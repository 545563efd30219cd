package proxy

import (
	"bufio"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"go.uber.org/zap"
)

// maxListed bounds the recordings page: the newest ones.
const maxListed = 500

// recordingID is a session ID, the name of its recording without ".cast".
var recordingID = regexp.MustCompile(`^[0-9a-f]{12}$`)

// Recording is one recorded session as the recordings page lists it.
type Recording struct {
	ID       string
	Title    string
	Start    time.Time
	Duration time.Duration
	Size     int64
	// RDP recordings (RECORDDIR/ID.rdp.gz): the desktop's size, for the
	// player's client to ask for.
	RDP           bool
	Width, Height int
}

// auditorCaller returns the caller of a request to the recordings, which
// only users with an auditor role may see. Others get a 403 page (or,
// signed out, the sign-in form).
func (s *Server) auditorCaller(w http.ResponseWriter, r *http.Request) (caller, bool) {
	c, ok := s.sessionCaller(r)
	if !ok {
		s.loginPage(w, http.StatusUnauthorized, "")
		return caller{}, false
	}
	if !s.policy().Auditor(c.user.Name, c.user.Roles) {
		s.log.Info("recordings refused: not an auditor", zap.String("user", c.user.Name), zap.String("path", r.URL.Path))
		s.render(w, http.StatusForbidden, "denied.html", pageData{Title: "Not allowed", User: c.user.Name, CSRF: c.session.CSRF,
			Error: "Only users with an auditor role may see session recordings."})
		return caller{}, false
	}
	return c, true
}

// recordingsPage is GET /recordings: the newest recordings, for auditors.
func (s *Server) recordingsPage(w http.ResponseWriter, r *http.Request) {
	c, ok := s.auditorCaller(w, r)
	if !ok {
		return
	}
	list, err := listRecordings(s.cfg.Load().SSH.RecordDir, maxListed)
	if err != nil {
		s.log.Warn("list recordings", zap.Error(err))
	}
	list = withRDPRecordings(list, s.cfg.Load().SSH.RecordDir, maxListed)
	s.render(w, http.StatusOK, "recordings.html", pageData{Title: "Recordings", User: c.user.Name, CSRF: c.session.CSRF,
		Auditor: true, Recordings: list})
}

// playerPage is GET /recordings/{id}: the player for one recording.
func (s *Server) playerPage(w http.ResponseWriter, r *http.Request) {
	c, ok := s.auditorCaller(w, r)
	if !ok {
		return
	}
	rec, ok := s.recording(r.PathValue("id"))
	if !ok {
		if rec, ok := s.rdpRecording(r.PathValue("id")); ok {
			s.rdpPlayerPage(w, c, rec)
			return
		}
		s.render(w, http.StatusNotFound, "denied.html", pageData{Title: "No such recording", User: c.user.Name, CSRF: c.session.CSRF, Auditor: true})
		return
	}
	w.Header().Set("Content-Security-Policy", playerCSP)
	s.render(w, http.StatusOK, "player.html", pageData{Title: "Recording " + rec.ID, User: c.user.Name, CSRF: c.session.CSRF,
		Auditor: true, Styles: []string{"/static/app/player.css"}, Recordings: []Recording{rec}})
}

// castFile is GET /api/recordings/{id}: the asciicast itself. Every view
// is logged: the auditors are audited too.
func (s *Server) castFile(w http.ResponseWriter, r *http.Request) {
	c, ok := s.sessionCaller(r)
	if !ok || !s.policy().Auditor(c.user.Name, c.user.Roles) {
		writeJSON(w, http.StatusForbidden, apiError{Error: "only auditors may play recordings"})
		return
	}
	id := strings.TrimSuffix(r.PathValue("id"), ".cast")
	if !recordingID.MatchString(id) {
		writeJSON(w, http.StatusNotFound, apiError{Error: "no such recording"})
		return
	}
	f, err := os.Open(filepath.Join(s.cfg.Load().SSH.RecordDir, id+".cast"))
	if err != nil {
		writeJSON(w, http.StatusNotFound, apiError{Error: "no such recording"})
		return
	}
	defer f.Close()
	s.log.Info("recording played", zap.String("user", c.user.Name), zap.String("recording", id), zap.Stringer("source", clientAddr(r)))
	w.Header().Set("Content-Type", "application/x-asciicast")
	io.Copy(w, f)
}

// recording describes the recording id, if there is one.
func (s *Server) recording(id string) (Recording, bool) {
	if !recordingID.MatchString(id) {
		return Recording{}, false
	}
	rec, err := readRecording(filepath.Join(s.cfg.Load().SSH.RecordDir, id+".cast"))
	return rec, err == nil
}

// listRecordings describes the newest n recordings in dir, newest first.
// A missing dir is an empty list.
func listRecordings(dir string, n int) ([]Recording, error) {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	type named struct {
		path string
		mod  time.Time
	}
	var files []named
	for _, e := range ents {
		id, ok := strings.CutSuffix(e.Name(), ".cast")
		if !ok || !recordingID.MatchString(id) || !e.Type().IsRegular() {
			continue
		}
		if fi, err := e.Info(); err == nil {
			files = append(files, named{filepath.Join(dir, e.Name()), fi.ModTime()})
		}
	}
	slices.SortFunc(files, func(a, b named) int { return b.mod.Compare(a.mod) })
	var out []Recording
	for _, f := range files[:min(n, len(files))] {
		if rec, err := readRecording(f.path); err == nil {
			out = append(out, rec)
		}
	}
	return out, nil
}

// readRecording describes an asciicast v2 file from its header, and its
// duration from its last write (the recorder flushes at least every
// second while output flows).
func readRecording(path string) (Recording, error) {
	f, err := os.Open(path)
	if err != nil {
		return Recording{}, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return Recording{}, err
	}
	line, err := bufio.NewReaderSize(f, 4096).ReadSlice('\n')
	if err != nil {
		return Recording{}, err
	}
	var h struct {
		Version   int    `json:"version"`
		Timestamp int64  `json:"timestamp"`
		Title     string `json:"title"`
	}
	if err := json.Unmarshal(line, &h); err != nil || h.Version != 2 {
		return Recording{}, errors.New("not an asciicast v2 file")
	}
	start := time.Unix(h.Timestamp, 0)
	return Recording{ID: strings.TrimSuffix(filepath.Base(path), ".cast"), Title: h.Title, Start: start,
		Duration: max(0, fi.ModTime().Sub(start).Round(time.Second)), Size: fi.Size()}, nil
}
