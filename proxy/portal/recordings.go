package portal

import (
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/bastiond/bastiond/internal/audit"
	"github.com/bastiond/bastiond/proxy/recording"
)

// maxListed bounds the recordings page: the newest ones.
const maxListed = 500

// recordingID is a session ID, the name of its recording without
// ".cast.gz" (or ".cast" for the recordings of earlier releases).
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
	// Clipboard says that the recorded client asked for a clipboard
	// channel: the player's client asks for one too, so that the channels
	// the server numbered are the ones it asked for.
	Clipboard bool
}

// auditorCaller returns the caller of a request to the recordings, which
// only users with an auditor role may see. Others get a 403 page (or,
// signed out, the sign-in form).
func (s *Portal) auditorCaller(w http.ResponseWriter, r *http.Request) (caller, bool) {
	c, ok := s.sessionCaller(r)
	if !ok {
		s.loginPage(w, http.StatusUnauthorized, "")
		return caller{}, false
	}
	if !s.auditor(c) {
		s.log.Info("recordings refused: not an auditor", zap.String("user", c.user.Name), zap.String("path", r.URL.Path))
		s.render(w, http.StatusForbidden, "denied.html", pageData{Title: "Not allowed", User: c.user.Name, CSRF: c.session.CSRF,
			Error: "Only users with an auditor role may see session recordings."})
		return caller{}, false
	}
	return c, true
}

// recordingsPage is GET /recordings: the newest recordings, for auditors.
func (s *Portal) recordingsPage(w http.ResponseWriter, r *http.Request) {
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
func (s *Portal) playerPage(w http.ResponseWriter, r *http.Request) {
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

// castFile is GET /api/recordings/{id}: the asciicast itself. A
// compressed recording goes as it is on disk, with Content-Encoding: gzip
// (the browser inflates it), unless the client does not take gzip or the
// recording is still being written (its gzip stream is not finished yet):
// then it is inflated here. Every view is an audit event
// (recording_played): the auditors are audited too.
func (s *Portal) castFile(w http.ResponseWriter, r *http.Request) {
	c, ok := s.sessionCaller(r)
	if !ok || !s.auditor(c) {
		writeJSON(w, http.StatusForbidden, apiError{Error: "only auditors may play recordings"})
		return
	}
	cfg := s.cfg.Load()
	id := strings.TrimSuffix(r.PathValue("id"), ".cast")
	if !recordingID.MatchString(id) {
		writeJSON(w, http.StatusNotFound, apiError{Error: "no such recording"})
		return
	}
	f, info, err := recording.Open(cfg.SSH.RecordDir, id)
	if err != nil || info.Protocol != "ssh" {
		if f != nil {
			f.Close()
		}
		writeJSON(w, http.StatusNotFound, apiError{Error: "no such recording"})
		return
	}
	defer f.Close()
	src := clientAddr(r)
	s.log.Info("recording played", zap.String("user", c.user.Name), zap.String("recording", id), zap.Stringer("source", src))
	e := audit.Event{Event: audit.RecordingPlayed, Actor: c.user.Name, Source: audit.ActorAnonymous, Session: id,
		Protocol: info.Protocol, Recording: info.Path, Bytes: info.Size}
	if src.IsValid() {
		e.Source = src.String()
	}
	cfg.Audit.Audit(e)
	w.Header().Set("Content-Type", "application/x-asciicast")
	w.Header().Set("Vary", "Accept-Encoding")
	if info.Compressed && acceptsGzip(r) && !recording.Writing(info.Path) {
		w.Header().Set("Content-Encoding", "gzip")
		w.Header().Set("Content-Length", strconv.FormatInt(info.Size, 10))
		io.Copy(w, f)
		return
	}
	rd, err := recording.Decompressed(f, info)
	if err != nil {
		writeJSON(w, http.StatusInternalServerError, apiError{Error: "the recording cannot be read"})
		return
	}
	defer rd.Close()
	io.Copy(w, rd) // a recording being written ends at its last flush
}

// recording describes the SSH recording id, if there is one.
func (s *Portal) recording(id string) (Recording, bool) {
	if !recordingID.MatchString(id) {
		return Recording{}, false
	}
	info, err := recording.Find(s.cfg.Load().SSH.RecordDir, id)
	if err != nil || info.Protocol != "ssh" {
		return Recording{}, false
	}
	rec, err := readRecording(info)
	return rec, err == nil
}

// listRecordings describes the newest n SSH recordings in dir, newest
// first. A missing dir is an empty list.
func listRecordings(dir string, n int) ([]Recording, error) {
	list, err := recording.List(dir) // oldest first
	if err != nil {
		return nil, err
	}
	var out []Recording
	for i := len(list) - 1; i >= 0 && len(out) < n; i-- {
		if list[i].Protocol != "ssh" {
			continue
		}
		if rec, err := readRecording(list[i]); err == nil {
			out = append(out, rec)
		}
	}
	return out, nil
}

// readRecording describes an SSH recording from its header, and its
// duration from its last write (the recorder flushes at least every
// second while output flows).
func readRecording(info recording.Info) (Recording, error) {
	h, err := recording.ReadCast(info)
	if err != nil {
		return Recording{}, err
	}
	return Recording{ID: info.ID, Title: h.Title, Start: h.Start,
		Duration: max(0, info.Modified.Sub(h.Start).Round(time.Second)), Size: info.Size}, nil
}
