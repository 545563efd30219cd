package portal

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"
	"go.uber.org/zap"

	"github.com/bastiond/bastiond/internal/audit"
	"github.com/bastiond/bastiond/proxy/recording"
	"github.com/bastiond/bastiond/proxy/webrdp"
)

// The RDP player: GET /recordings/{id} renders the page of a recorded
// desktop (rdpPlayerPage), whose IronRDP client connects to
// /ws/replay/{id}?player=P&from=MS&speed=N, where the recording is played
// to it (webrdp.Replay). P is a random name the page gives its player; it
// pauses, resumes and changes the speed of it at POST /api/replay/{P} and
// reads its position at GET /api/replay/{P}. A seek is a new connection
// with the same P. Only auditors may do any of it, and the first connection
// of a player is a recording_played audit event.

// playerName is the name a page gives its player.
var playerName = regexp.MustCompile(`^[A-Za-z0-9_-]{16,64}$`)

// maxPlayers bounds the players kept; idle ones go after playerTTL.
const (
	maxPlayers = 1000
	playerTTL  = time.Hour
)

// players are the live replays' clocks, by web session and name.
type players struct {
	mu sync.Mutex
	m  map[string]*playerEntry
}

type playerEntry struct {
	p         *webrdp.Player
	recording string
	used      time.Time
}

// get returns the player name of session for recording id; created says
// it is new.
// gen is the seek the new connection plays.
func (ps *players) get(session, name, id string, from time.Duration, speed int) (p *webrdp.Player, gen int, created bool, ok bool) {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	if ps.m == nil {
		ps.m = make(map[string]*playerEntry)
	}
	now := time.Now()
	k := session + "/" + name
	if e, found := ps.m[k]; found && e.recording == id {
		e.used = now
		return e.p, e.p.Seek(from, speed), false, true
	}
	for k, e := range ps.m {
		if now.Sub(e.used) > playerTTL {
			delete(ps.m, k)
		}
	}
	if len(ps.m) >= maxPlayers {
		return nil, 0, false, false
	}
	e := &playerEntry{p: webrdp.NewPlayer(from, speed), recording: id, used: now}
	ps.m[k] = e
	return e.p, e.p.Generation(), true, true
}

// lookup returns the player name of session.
func (ps *players) lookup(session, name string) (*webrdp.Player, bool) {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	e, ok := ps.m[session+"/"+name]
	if ok {
		e.used = time.Now()
		return e.p, true
	}
	return nil, false
}

// rdpRecordingPath is where recording id is, if it is an RDP recording.
func (s *Portal) rdpRecordingPath(id string) (string, bool) {
	if !recordingID.MatchString(id) {
		return "", false
	}
	return filepath.Join(s.cfg.Load().SSH.RecordDir, id+recording.RDPExt), true
}

// signedInSocket admits the WebSocket of a page of this bastion (its
// Origin) whose web session is signed in (the players and the live view);
// otherwise it answers 403 and returns false.
func (s *Portal) signedInSocket(w http.ResponseWriter, r *http.Request) (caller, bool) {
	if !s.sameOrigin(r) {
		s.log.Info("websocket refused: origin", zap.String("origin", r.Header.Get("Origin")), zap.Stringer("source", clientAddr(r)))
		http.Error(w, "forbidden", http.StatusForbidden)
		return caller{}, false
	}
	c, ok := s.sessionCaller(r)
	if !ok {
		http.Error(w, "your session has expired", http.StatusForbidden)
	}
	return c, ok
}

// replayRDP is GET /ws/replay/{id}: recording id played to the page's
// desktop client.
func (s *Portal) replayRDP(w http.ResponseWriter, r *http.Request) {
	c, ok := s.signedInSocket(w, r)
	if !ok {
		return
	}
	id := r.PathValue("id")
	if !s.auditor(c) {
		s.log.Info("recording playback refused: not an auditor", zap.String("user", c.user.Name), zap.String("recording", id))
		s.replayAudit(audit.Event{Event: audit.ConnectRefused, Actor: c.user.Name, Source: auditSource(r), Recording: id,
			Reason: "not_auditor", Detail: "only auditors may play recordings"})
		http.Error(w, "only auditors may play recordings", http.StatusForbidden)
		return
	}
	q := r.URL.Query()
	name := q.Get("player")
	from, _ := strconv.ParseInt(q.Get("from"), 10, 64)
	speed, _ := strconv.Atoi(q.Get("speed"))
	path, ok := s.rdpRecordingPath(id)
	if !ok || !playerName.MatchString(name) || from < 0 || from > int64(100*24*time.Hour/time.Millisecond) {
		http.Error(w, "no such recording", http.StatusNotFound)
		return
	}
	rec, err := recording.OpenRDP(path)
	if err != nil {
		http.Error(w, "no such recording", http.StatusNotFound)
		return
	}
	defer rec.Close()
	p, gen, created, ok := s.players.get(c.session.ID, name, id, time.Duration(from)*time.Millisecond, speed)
	if !ok {
		http.Error(w, "too many players", http.StatusServiceUnavailable)
		return
	}
	if created {
		h := rec.Header
		s.log.Info("recording played", zap.String("user", c.user.Name), zap.String("recording", id), zap.Stringer("source", clientAddr(r)))
		s.replayAudit(audit.Event{Event: audit.RecordingPlayed, Actor: c.user.Name, Source: auditSource(r),
			Session: h.Session, User: h.User, Target: h.Target, Protocol: "rdp", Recording: filepath.Base(path)})
	}
	ws, err := websocket.Accept(w, r, nil)
	if err != nil {
		return
	}
	ws.SetReadLimit(maxDesktopMessage)
	conn := websocket.NetConn(r.Context(), ws, websocket.MessageBinary)
	err = webrdp.Replay(r.Context(), conn, webrdp.ReplayParams{Recording: rec, Player: p, Generation: gen,
		HandshakeTimeout: s.cfg.Load().HandshakeTimeout, Logger: s.log.Named("replay")})
	if err != nil {
		s.log.Info("rdp replay", zap.String("recording", id), zap.Error(err))
		ws.Close(websocket.StatusInternalError, "replay failed")
		return
	}
	conn.Close()
}

// replayState is GET /api/replay/{player}: where the player is.
func (s *Portal) replayState(w http.ResponseWriter, r *http.Request) {
	c, ok := s.sessionCaller(r)
	if !ok || !s.auditor(c) {
		writeJSON(w, http.StatusForbidden, apiError{Error: "only auditors may play recordings"})
		return
	}
	p, ok := s.players.lookup(c.session.ID, r.PathValue("player"))
	if !ok {
		writeJSON(w, http.StatusNotFound, apiError{Error: "no such player"})
		return
	}
	writeJSON(w, http.StatusOK, p.State())
}

// replayControl is POST /api/replay/{player} {"action":"pause"|"play"|"speed","speed":N}.
func (s *Portal) replayControl(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 1024)
	c, ok := s.browserCaller(r)
	if !ok || !s.auditor(c) {
		writeJSON(w, http.StatusForbidden, apiError{Error: "only auditors may play recordings"})
		return
	}
	p, ok := s.players.lookup(c.session.ID, r.PathValue("player"))
	if !ok {
		writeJSON(w, http.StatusNotFound, apiError{Error: "no such player"})
		return
	}
	var req struct {
		Action string `json:"action"`
		Speed  int    `json:"speed"`
	}
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		writeJSON(w, http.StatusBadRequest, apiError{Error: "a JSON body {action, speed} is expected"})
		return
	}
	switch req.Action {
	case "pause":
		p.SetPaused(true)
	case "play":
		p.SetPaused(false)
	case "speed":
		p.SetSpeed(req.Speed)
	default:
		writeJSON(w, http.StatusBadRequest, apiError{Error: "action must be pause, play or speed"})
		return
	}
	writeJSON(w, http.StatusOK, p.State())
}

// auditSource is the client's address as an audit event's source.
func auditSource(r *http.Request) string {
	if a := clientAddr(r); a.IsValid() {
		return a.String()
	}
	return audit.ActorAnonymous
}

// replayAudit sends e to the audit trail.
func (s *Portal) replayAudit(e audit.Event) {
	if a := s.cfg.Load().Audit; a != nil {
		a.Audit(e)
	}
}

// rdpRecording describes the RDP recording id: its header, desktop size
// and duration (from its last write), without reading it whole.
func (s *Portal) rdpRecording(id string) (Recording, bool) {
	path, ok := s.rdpRecordingPath(id)
	if !ok {
		return Recording{}, false
	}
	sum, err := recording.ProbeRDP(path)
	if err != nil || sum.Width <= 0 || sum.Height <= 0 {
		return Recording{}, false
	}
	rec := Recording{ID: id, Title: rdpTitle(sum.Header), Start: sum.Header.Start, Duration: sum.Duration.Round(time.Second),
		RDP: true, Width: sum.Width, Height: sum.Height, Clipboard: webrdp.AsksClipboard(sum.Channels)}
	if fi, err := os.Stat(path); err == nil {
		rec.Size = fi.Size()
	}
	return rec, true
}

func rdpTitle(h recording.RDPHeader) string {
	return h.User + " on " + h.Target + " (remote desktop)"
}

// rdpPlayerPage is GET /recordings/{id} for an RDP recording.
func (s *Portal) rdpPlayerPage(w http.ResponseWriter, c caller, rec Recording) {
	w.Header().Set("Content-Security-Policy", desktopCSP)
	s.render(w, http.StatusOK, "rdpplayer.html", pageData{Title: "Recording " + rec.ID, User: c.user.Name, CSRF: c.session.CSRF,
		Auditor: true, Page: "wide", Styles: []string{"/static/app/rdpplayer.css"}, Recordings: []Recording{rec}})
}

// withRDPRecordings adds the newest n RDP recordings in dir to list, newest
// first, and keeps the newest n of both. Their duration is the time from
// the start to the file's last write (the recorder flushes every second
// while the desktop changes).
func withRDPRecordings(list []Recording, dir string, n int) []Recording {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return list
	}
	for _, e := range ents {
		id, ok := strings.CutSuffix(e.Name(), recording.RDPExt)
		if !ok || !recordingID.MatchString(id) || !e.Type().IsRegular() {
			continue
		}
		fi, err := e.Info()
		if err != nil {
			continue
		}
		r, err := recording.OpenRDP(filepath.Join(dir, e.Name()))
		if err != nil {
			continue
		}
		h := r.Header
		r.Close()
		list = append(list, Recording{ID: id, Title: rdpTitle(h), Start: h.Start, RDP: true, Size: fi.Size(),
			Duration: max(0, fi.ModTime().Sub(h.Start).Round(time.Second))})
	}
	slices.SortStableFunc(list, func(a, b Recording) int { return b.Start.Compare(a.Start) })
	return list[:min(n, len(list))]
}
