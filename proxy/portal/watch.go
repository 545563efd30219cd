package portal

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"net/http"
	"regexp"
	"slices"
	"sync"
	"time"

	"github.com/coder/websocket"
	"go.uber.org/zap"

	"github.com/bastiond/bastiond/internal/audit"
	"github.com/bastiond/bastiond/proxy/broker"
	"github.com/bastiond/bastiond/proxy/watch"
	"github.com/bastiond/bastiond/proxy/webrdp"
	"github.com/bastiond/bastiond/proxy/webssh"
)

// Live view. Auditors (the users who may play recordings) list the live
// browser sessions at GET /sessions and watch one at GET /watch/{id}, whose
// page connects to GET /ws/watch/{id}: a terminal's output in the
// bastion-watch.v1 protocol (webssh.Watch), or a desktop's server side to
// an IronRDP client (webrdp.Watch). A session is watchable whether it is
// recorded or not: watching is the same right as playing its recording
// later, and the watched user is told either way (the terminal's
// "watchers" message, the desktop page's GET /api/rdp/watchers). Each
// watcher is a watch_start and a watch_end event, each refusal a
// watch_refused one, and the session's end record lists its watchers.
//
// In a cluster a session lives on the instance that carries it: a request
// for it on another instance is answered with a page that names that
// instance. Proxying the stream between instances would need a channel
// between them that the cluster does not have (instances share only the
// database), and the watcher's page can be opened on the right instance
// (bastionctl sessions names it).

// sessionIDPattern is a broker session's ID.
var sessionIDPattern = regexp.MustCompile(`^[0-9a-f]{12}$`)

// LiveSession is a live browser session as the sessions page lists it.
type LiveSession struct {
	ID, User, Target, Protocol, Instance string
	Start                                time.Time
	BytesUp, BytesDown                   int64
	Recorded                             bool
	Watchers                             []string
	// Watchable: on this instance, in a browser.
	Watchable bool
}

// watchData is the watch page's.
type watchData struct {
	Session                   LiveSession
	Width, Height             int  // a desktop's size
	Clipboard                 bool // its client asked for a clipboard channel (Recording.Clipboard)
	Elsewhere, Ended, Unknown bool
	Instance                  string
}

// watchRefused writes the watch_refused event of c's request for id.
func (s *Portal) watchRefused(r *http.Request, c caller, id, reason, detail string) {
	s.log.Info("watch refused", zap.String("user", c.user.Name), zap.String("session", id), zap.String("reason", reason))
	s.replayAudit(audit.Event{Event: audit.WatchRefused, Actor: c.user.Name, Source: auditSource(r), User: c.user.Name,
		Client: r.RemoteAddr, Session: id, Watcher: c.user.Name, Reason: reason, Detail: detail})
}

// watchCaller returns the caller of a live view request, who must be an
// auditor; a refusal is a watch_refused event (with the session's ID, if
// the path names one) and a 403 page.
func (s *Portal) watchCaller(w http.ResponseWriter, r *http.Request) (caller, bool) {
	c, ok := s.sessionCaller(r)
	if !ok {
		s.loginPage(w, http.StatusUnauthorized, "")
		return caller{}, false
	}
	if !s.auditor(c) {
		s.watchRefused(r, c, r.PathValue("id"), "not_auditor", "only auditors may watch live sessions")
		s.render(w, http.StatusForbidden, "denied.html", pageData{Title: "Not allowed", User: c.user.Name, CSRF: c.session.CSRF,
			Error: "Only users with an auditor role may watch live sessions."})
		return caller{}, false
	}
	return c, true
}

// liveSessions are the live sessions, this instance's first: the broker's
// (for the byte counts), then, in a cluster, the other instances'.
func (s *Portal) liveSessions() []LiveSession {
	cfg := s.cfg.Load()
	var list []LiveSession
	seen := map[string]bool{}
	add := func(i broker.Info, local bool) {
		if seen[i.ID] || i.Via != "browser" {
			return
		}
		seen[i.ID] = true
		l := LiveSession{ID: i.ID, User: i.User, Target: i.Target, Protocol: i.Protocol, Instance: i.Instance, Start: i.Start,
			BytesUp: i.BytesUp, BytesDown: i.BytesDown, Recorded: i.Recording != ""}
		if st, ok := s.watch.Get(i.ID); ok && local {
			l.Watchable, l.Watchers = true, st.Watchers()
		}
		list = append(list, l)
	}
	if cfg.Broker != nil {
		for _, i := range cfg.Broker.Sessions() {
			add(i, true)
		}
	}
	// Streams the broker does not list (a session it has just forgotten,
	// or a bastion without one in tests) are shown as they are.
	for _, i := range s.watch.List() {
		if st, ok := s.watch.Get(i.Session); ok && !seen[i.Session] {
			seen[i.Session] = true
			list = append(list, LiveSession{ID: i.Session, User: i.User, Target: i.Target, Protocol: i.Protocol, Start: i.Start,
				Recorded: i.Recorded, Watchable: true, Watchers: st.Watchers()})
		}
	}
	if cfg.ClusterSessions != nil {
		if all, err := cfg.ClusterSessions(); err == nil {
			for _, i := range all {
				add(i, false)
			}
		} else {
			s.log.Warn("list the cluster's sessions", zap.Error(err))
		}
	}
	return list
}

// sessionsPage is GET /sessions: the live browser sessions, for auditors.
func (s *Portal) sessionsPage(w http.ResponseWriter, r *http.Request) {
	c, ok := s.watchCaller(w, r)
	if !ok {
		return
	}
	s.render(w, http.StatusOK, "sessions.html", pageData{Title: "Live sessions", User: c.user.Name, CSRF: c.session.CSRF,
		Auditor: true, Live: s.liveSessions()})
}

// locate says where session id is: its stream on this instance, or the
// instance that carries it, or neither (ended or unknown).
func (s *Portal) locate(id string) (*watch.Stream, string) {
	if st, ok := s.watch.Get(id); ok {
		return st, ""
	}
	if f := s.cfg.Load().SessionOwner; f != nil && sessionIDPattern.MatchString(id) {
		if owner, err := f(id); err == nil {
			return nil, owner
		}
	}
	return nil, ""
}

// watchPage is GET /watch/{id}: the live view of session id.
func (s *Portal) watchPage(w http.ResponseWriter, r *http.Request) {
	c, ok := s.watchCaller(w, r)
	if !ok {
		return
	}
	id := r.PathValue("id")
	st, owner := s.locate(id)
	d := &watchData{Session: LiveSession{ID: id}}
	code := http.StatusOK
	switch {
	case st != nil:
		i := st.Info()
		d.Session = LiveSession{ID: id, User: i.User, Target: i.Target, Protocol: i.Protocol, Start: i.Start, Recorded: i.Recorded,
			Watchable: true}
		if i.Protocol == "rdp" {
			d.Width, d.Height, d.Clipboard = desktopSize(st.Size())
		}
	case owner != "":
		d.Elsewhere, d.Instance, code = true, owner, http.StatusConflict
		s.watchRefused(r, c, id, "elsewhere", "the session is on instance "+owner)
	default:
		d.Unknown, code = true, http.StatusNotFound
		s.watchRefused(r, c, id, "unknown", "no live session has that ID (it ended, or never was)")
	}
	data := pageData{Title: "Watching " + id, User: c.user.Name, CSRF: c.session.CSRF, Auditor: true, Watch: d}
	if d.Session.Protocol == "rdp" {
		w.Header().Set("Content-Security-Policy", desktopCSP)
		data.Page, data.Script = "wide", "/static/app/desktop.js"
		data.Styles = []string{"/static/app/rdpplayer.css"}
	} else {
		data.Script = "/static/app/watch.js"
		data.Styles = []string{"/static/app/watch.css"}
	}
	s.render(w, code, "watch.html", data)
}

// desktopSize reads {"width":W,"height":H,"channels":[...]} (the
// recording's RDPMeta): 0, 0 if unknown, and whether the client asked for a
// clipboard channel.
func desktopSize(b []byte) (w, h int, clipboard bool) {
	var sz struct {
		Width, Height int
		Channels      []string
	}
	if b == nil || json.Unmarshal(b, &sz) != nil {
		return 0, 0, false
	}
	return sz.Width, sz.Height, webrdp.AsksClipboard(sz.Channels)
}

// watchSocket is GET /ws/watch/{id}: the watcher's WebSocket.
func (s *Portal) watchSocket(w http.ResponseWriter, r *http.Request) {
	c, ok := s.signedInSocket(w, r)
	if !ok {
		return
	}
	id := r.PathValue("id")
	if !s.auditor(c) {
		s.watchRefused(r, c, id, "not_auditor", "only auditors may watch live sessions")
		http.Error(w, "only auditors may watch live sessions", http.StatusForbidden)
		return
	}
	st, owner := s.locate(id)
	if st == nil {
		if owner != "" {
			s.watchRefused(r, c, id, "elsewhere", "the session is on instance "+owner)
			http.Error(w, "the session is on instance "+owner, http.StatusConflict)
			return
		}
		s.watchRefused(r, c, id, "unknown", "no live session has that ID (it ended, or never was)")
		http.Error(w, "no live session has that ID", http.StatusNotFound)
		return
	}
	wt, err := st.Subscribe(c.user.Name)
	if err != nil {
		reason := "ended"
		if errors.Is(err, watch.ErrTooMany) {
			reason = "too_many"
		}
		s.watchRefused(r, c, id, reason, err.Error())
		http.Error(w, err.Error(), http.StatusConflict)
		return
	}
	info := st.Info()
	var opts *websocket.AcceptOptions
	if info.Protocol == "ssh" {
		opts = &websocket.AcceptOptions{Subprotocols: []string{webssh.WatchSubprotocol}}
	}
	ws, err := websocket.Accept(w, r, opts)
	if err != nil {
		wt.Leave()
		return
	}
	event := audit.Event{Event: audit.WatchStart, Actor: c.user.Name, Source: auditSource(r), User: c.user.Name, Client: r.RemoteAddr,
		Session: id, Watcher: c.user.Name, WatchedUser: info.User, Target: info.Target, Protocol: info.Protocol}
	s.replayAudit(event)
	log := s.log.Named("watch").With(zap.String("session", id), zap.String("watcher", c.user.Name))
	log.Info("watch started")
	// The watcher's connection ends with the session, or at shutdown
	// through the hijacked connection's close.
	ctx := context.WithoutCancel(r.Context())
	var werr error
	if info.Protocol == "rdp" {
		ws.SetReadLimit(maxDesktopMessage)
		conn := websocket.NetConn(ctx, ws, websocket.MessageBinary)
		werr = webrdp.Watch(ctx, conn, wt, s.cfg.Load().HandshakeTimeout, log)
		conn.Close()
	} else {
		werr = webssh.Watch(ctx, ws, wt, log)
	}
	event.Event, event.Time = audit.WatchEnd, time.Time{}
	switch {
	case errors.Is(werr, watch.ErrEnded):
		event.Reason = "session_ended"
	case errors.Is(werr, watch.ErrBehind):
		event.Reason = "fell_behind"
	default:
		event.Reason = "watcher_left"
	}
	s.replayAudit(event)
	log.Info("watch ended", zap.String("reason", event.Reason))
}

// desktopWatchers keeps the watchers of live desktops by the ticket they
// were opened with, for their pages' banner (GET /api/rdp/watchers): a
// desktop page knows its ticket, not its session's ID.
type desktopWatchers struct {
	mu sync.Mutex
	m  map[[32]byte]desktopWatched
}

type desktopWatched struct {
	webSession string
	watchers   []string
}

func (d *desktopWatchers) set(ticket, webSession string, names []string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.m == nil {
		d.m = make(map[[32]byte]desktopWatched)
	}
	d.m[sha256.Sum256([]byte(ticket))] = desktopWatched{webSession: webSession, watchers: slices.Clone(names)}
}

func (d *desktopWatchers) forget(ticket string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	delete(d.m, sha256.Sum256([]byte(ticket)))
}

func (d *desktopWatchers) get(ticket, webSession string) []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	e, ok := d.m[sha256.Sum256([]byte(ticket))]
	if !ok || e.webSession != webSession {
		return []string{}
	}
	return e.watchers
}

// rdpWatchers is GET /api/rdp/watchers?ticket=T: who watches the desktop
// the page opened with ticket T, for its banner: {"watchers":[…]}.
func (s *Portal) rdpWatchers(w http.ResponseWriter, r *http.Request) {
	c, ok := s.sessionCaller(r)
	if !ok {
		writeJSON(w, http.StatusForbidden, apiError{Error: "your session has expired"})
		return
	}
	writeJSON(w, http.StatusOK, map[string][]string{"watchers": s.desktopWatchers.get(r.URL.Query().Get("ticket"), c.session.ID)})
}
