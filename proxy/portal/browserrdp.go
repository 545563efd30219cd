package portal

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"
	"go.uber.org/zap"

	"github.com/bastiond/bastiond/internal/addrport"
	"github.com/bastiond/bastiond/internal/audit"
	"github.com/bastiond/bastiond/internal/gather"
	"github.com/bastiond/bastiond/proxy/access"
	"github.com/bastiond/bastiond/proxy/authz"
	"github.com/bastiond/bastiond/proxy/broker"
	"github.com/bastiond/bastiond/proxy/recording"
	"github.com/bastiond/bastiond/proxy/ticket"
	"github.com/bastiond/bastiond/proxy/webrdp"
)

// RDPConfig is what browser remote desktops need besides the broker and
// the policy.
type RDPConfig struct {
	// Certificate returns the check of the certificate the RDP server of
	// target presents from addr against the pinned one. nil makes the
	// desktop in the browser unavailable.
	Certificate func(target, addr string) func(tls.ConnectionState) error
}

// maxDesktopMessage bounds one WebSocket message from the desktop page:
// an RDP PDU reaches about 64 KiB (a large clipboard or bitmap cache
// message), with room to spare.
const maxDesktopMessage = 1 << 20

// serveRDP carries the remote desktop of the page on r, signed in as c.
// Unlike the terminal's, its ticket is not in the URL: the IronRDP client
// sends it in the RDCleanPath request (proxyAuth), read once the
// WebSocket is open.
func (s *Portal) serveRDP(w http.ResponseWriter, r *http.Request, c caller) {
	cfg := s.cfg.Load()
	if cfg.Broker == nil || cfg.RDP.Certificate == nil {
		http.Error(w, "the remote desktop in the browser is not available on this bastion", http.StatusServiceUnavailable)
		return
	}
	ws, err := websocket.Accept(w, r, nil)
	if err != nil {
		return // Accept has answered
	}
	ws.SetReadLimit(maxDesktopMessage)
	// The desktop outlives the request's context only through the
	// hijacked connection; the broker ends it on kill, timeout or drain.
	ctx := context.WithoutCancel(r.Context())
	// What the desktop sends in one read leaves in one write to the page,
	// however many TLS records it takes.
	conn := gather.Messages(websocket.NetConn(ctx, ws, websocket.MessageBinary), gather.FromContext(r.Context()))
	client := addrport.Parse(r.RemoteAddr)
	b := cfg.Broker
	log := s.log.Named("webrdp").With(zap.String("user", c.user.Name), zap.Stringer("client", client))
	var presented string
	var roles []string
	who := c.who(client.Addr(), "browser")
	who.Client = client
	refused := func(target, reason, detail string) {
		s.authz().Refuse(who, authz.What{Target: target, Protocol: access.RDP}, authz.Refusal{Reason: reason, Detail: detail})
	}
	var record bool
	p := webrdp.Params{
		Authorize: func(v string) (webrdp.Grant, error) {
			presented = v
			t, err := s.tickets.Redeem(v, c.session.ID)
			if err == nil && t.Protocol != access.RDP {
				err = &ticket.Error{Reason: ticket.ReasonBad, Detail: "a ticket for " + t.Protocol + " presented for rdp"}
			}
			if err != nil {
				log.Info("browser RDP refused: ticket", zap.Error(err))
				reason, detail := authz.TicketRefusal(err)
				refused(t.Target, reason, detail)
				return webrdp.Grant{}, err
			}
			if c.link != "" {
				record = s.cfg.Load().Links.Record
				return s.linkRDPGrant(c, t, client.Addr())
			}
			// Rights are checked again: a reload may have taken them away
			// since the ticket was issued.
			d := s.authz().Check(who, authz.What{Target: t.Target, Protocol: access.RDP})
			if !d.Allowed {
				return webrdp.Grant{}, &webrdp.Refusal{Status: http.StatusForbidden, Outcome: webrdp.Outcome{Class: webrdp.ClassDenied,
					Message: "You are no longer allowed to open a remote desktop on " + t.Target + "."}}
			}
			roles, record = d.Roles, d.Record
			return webrdp.Grant{Target: t.Target, Clipboard: !d.DisableClipboard, FileTransfer: !d.DisableFileTransfer}, nil
		},
		Open: func(ctx context.Context, target string) (webrdp.Session, error) {
			sess, err := b.Open(ctx, broker.Request{User: c.user.Name, Client: client, Target: target, Protocol: broker.RDP,
				Via: c.relayVia(), Roles: roles})
			if err != nil {
				refused(target, authz.BrokerRefusal(err), err.Error())
				return nil, err // not a nil *broker.Session in a non-nil interface
			}
			return sess, nil
		},
		Ping:             ws.Ping,
		Certificate:      cfg.RDP.Certificate,
		HandshakeTimeout: cfg.HandshakeTimeout,
		Logger:           log,
		HandshakeFailed:  func() { b.HandshakeFailed("rdp") },
		Record: func(sess webrdp.Session, h recording.RDPHeader) (*recording.RDPRecorder, error) {
			if !record {
				return nil, nil
			}
			h.User = c.user.Name
			rec, err := recording.CreateRDP(cfg.SSH.RecordDir, h)
			if err != nil {
				return nil, err
			}
			bs := sess.(*broker.Session)
			bs.SetRecording(rec.Path())
			if cfg.SSH.RecordingStarted != nil {
				cfg.SSH.RecordingStarted(bs.Info())
			}
			return rec, nil
		},
		RecordingClosed: func(sess webrdp.Session, rec *recording.RDPRecorder, err error) {
			sum, size := rec.SHA256()
			e := audit.Event{Event: audit.RecordingClosed, Actor: c.user.Name, Source: authz.AddrString(client.Addr()), User: c.user.Name,
				Client: client.String(), Session: sess.ID(), Protocol: access.RDP, Recording: rec.Path(), RecordingSHA256: sum, Bytes: size}
			if err != nil {
				f := e
				f.Event, f.RecordingSHA256, f.Bytes, f.Reason, f.Detail = audit.RecordingFailed, "", 0, "write_failed", err.Error()
				cfg.Audit.Audit(f)
			}
			cfg.Audit.Audit(e)
			if err == nil && cfg.SSH.RecordingClosed != nil {
				i := sess.(*broker.Session).Info()
				i.Recording, i.RecordingSHA256 = rec.Path(), sum
				cfg.SSH.RecordingClosed(i, size)
			}
			if cfg.SSH.RecordingWritten != nil {
				cfg.SSH.RecordingWritten()
			}
		},
		FileTransfer: func(sess webrdp.Session, ev webrdp.FileEvent) {
			cfg.Audit.Audit(fileTransferEvent(c.user.Name, client, sess, ev))
		},
	}
	p.Watch, p.User = s.watch, c.user.Name
	p.Watched = func(sess webrdp.Session, names []string) {
		sess.(*broker.Session).AddWatchers(names)
		s.desktopWatchers.set(presented, c.session.ID, names)
	}
	o := webrdp.Serve(ctx, conn, p)
	s.desktopWatchers.forget(presented)
	if presented != "" {
		s.outcomes.put(presented, c.session.ID, o)
	}
	if o.Class == webrdp.ClassCertificate {
		// The machine's certificate is not the pinned one, or none is
		// pinned; webrdp says which only in the message.
		reason := authz.HostKeyNew
		if strings.Contains(o.Message, "has changed") {
			reason = authz.HostKey
		}
		s.authz().Refuse(who, authz.What{Target: o.Target, Protocol: access.RDP},
			authz.Refusal{Reason: reason, Detail: o.Message, Session: o.Session})
	}
	switch o.Class {
	case webrdp.ClassClientClosed, webrdp.ClassTargetClosed:
		conn.Close()
	default:
		ws.Close(websocket.StatusInternalError, o.Class)
	}
}

// rdpOutcome is GET /api/rdp/outcome?ticket=T: how the desktop opened with
// ticket T ended, for the page to say why (the RDP client itself only
// sees the WebSocket close or an error code). Only the web session that
// held the ticket may ask.
func (s *Portal) rdpOutcome(w http.ResponseWriter, r *http.Request) {
	c, ok := s.sessionOrLinkCaller(r)
	if !ok {
		writeJSON(w, http.StatusForbidden, apiError{Error: ticket.ErrExpired.Error()})
		return
	}
	o, ok := s.outcomes.get(r.URL.Query().Get("ticket"), c.session.ID)
	if !ok {
		writeJSON(w, http.StatusNotFound, apiError{Error: "no desktop ended with that ticket"})
		return
	}
	writeJSON(w, http.StatusOK, o)
}

// outcomeTTL is how long the end of a desktop can be asked for.
const outcomeTTL = 10 * time.Minute

// maxOutcomes bounds the outcomes kept: the oldest go first.
const maxOutcomes = 10000

// outcomeStore keeps how recent desktops ended, by ticket, for the web
// session that held the ticket.
type outcomeStore struct {
	mu  sync.Mutex
	m   map[[32]byte]outcomeEntry
	now func() time.Time
}

type outcomeEntry struct {
	session string
	at      time.Time
	o       webrdp.Outcome
}

func newOutcomeStore() *outcomeStore {
	return &outcomeStore{m: make(map[[32]byte]outcomeEntry), now: time.Now}
}

// put keeps o for ticket v, presented by session.
func (s *outcomeStore) put(v, session string, o webrdp.Outcome) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	if len(s.m) >= maxOutcomes {
		var oldest [32]byte
		var at time.Time
		for k, e := range s.m {
			if now.Sub(e.at) > outcomeTTL {
				delete(s.m, k)
			} else if at.IsZero() || e.at.Before(at) {
				oldest, at = k, e.at
			}
		}
		if len(s.m) >= maxOutcomes {
			delete(s.m, oldest)
		}
	}
	s.m[sha256.Sum256([]byte(v))] = outcomeEntry{session: session, at: now, o: o}
}

// get returns the outcome of ticket v, if session held it.
func (s *outcomeStore) get(v, session string) (webrdp.Outcome, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.m[sha256.Sum256([]byte(v))]
	if !ok || e.session != session || s.now().Sub(e.at) > outcomeTTL {
		return webrdp.Outcome{}, false
	}
	return e.o, true
}
