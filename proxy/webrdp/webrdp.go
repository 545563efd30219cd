package webrdp

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/bastiond/bastiond/proxy/broker"
	"github.com/bastiond/bastiond/proxy/hostkeys"
	"github.com/bastiond/bastiond/proxy/rdcleanpath"
	"github.com/bastiond/bastiond/proxy/recording"
	"github.com/bastiond/bastiond/proxy/watch"
)

// Session is the broker session a desktop runs in.
type Session interface {
	ID() string
	// Target is the TCP connection to the machine.
	Target() net.Conn
	// RelayOver relays the page to the TLS connection over Target until
	// the session ends, and returns once its end record is written.
	RelayOver(client, target net.Conn)
	// End ends the session with reason (the first reason wins) and returns
	// once its record is written.
	End(reason string)
	// EndReason is why the session ended, or "" while it is live.
	EndReason() string
}

var _ Session = (*broker.Session)(nil)

// Params are one desktop's settings.
type Params struct {
	// Authorize redeems the connect ticket the request carries as its
	// proxyAuth and returns what it grants. A *Refusal says why it is
	// refused; any other error is a 401. Required.
	Authorize func(ticket string) (Grant, error)
	// Open opens the broker session to target. Required.
	Open func(ctx context.Context, target string) (Session, error)
	// Certificate returns the check of the certificate the server of
	// target presents from addr (hostkeys.Store.CertificateCheck).
	// Required.
	Certificate func(target, addr string) func(tls.ConnectionState) error
	// Ping pings the page (a WebSocket ping) and returns once it answers;
	// nil sends none. A page that does not answer within KeepAlive is gone:
	// its session ends, rather than wait for TCP to give up on it.
	Ping func(ctx context.Context) error
	// KeepAlive is the period of the pings, and how long one may wait for
	// its answer. Default 15s.
	KeepAlive time.Duration
	// HandshakeTimeout bounds the request from the page, then the
	// negotiation with the server. Default 30s.
	HandshakeTimeout time.Duration
	// Logger gets the desktop's refusals and failures. Required.
	Logger *zap.Logger
	// HandshakeFailed counts a negotiation that failed with the server.
	HandshakeFailed func()
	// FileTransfer, when set, is told of each file the clipboard carried
	// (once its last byte passed, or at the end of its offer or session if
	// it never did) and of each offer of files refused. Without it, a
	// desktop whose grant allows files does not have its clipboard read.
	FileTransfer func(sess Session, ev FileEvent)
	// Record, when set, starts the recording of sess once the negotiation
	// with the server is done (h has the session, target, protocol,
	// Confirm and certificates filled in), or returns nil, nil for a
	// session that is not recorded. An error refuses the session:
	// a session that must be recorded is recorded or refused. A recording
	// that fails later ends the session (broker.ReasonRecordingFailed).
	Record func(sess Session, h recording.RDPHeader) (*recording.RDPRecorder, error)
	// RecordingClosed, when set, is told of a recording Record started once
	// it is closed, after the session's end record: with its first
	// failure, if any (the recording's hash is then of what it holds).
	RecordingClosed func(sess Session, rec *recording.RDPRecorder, err error)
	// Watch, when set, lets auditors watch the desktop: the server's PDUs
	// (as the recording has them: after CredSSP, the auto-reconnect random
	// zeroed) and the desktop's size go to a stream of the hub, closed when
	// the session ends. Optional.
	Watch *watch.Hub
	// User is the bastion user, as watchers see the session.
	User string
	// Watched is told of the watchers each time one joins or leaves (the
	// page's banner, the session's end record). It must not block.
	// Optional.
	Watched func(sess Session, watchers []string)
}

// Grant is what a connect ticket allows.
type Grant struct {
	// Target is the inventory target the ticket names.
	Target string
	// Clipboard lets the desktop have its clipboard channel; without it the
	// gateway takes the channel out of the client's request (noClipboard).
	Clipboard bool
	// FileTransfer lets files pass through the clipboard; without it the
	// gateway takes the file formats out of the clipboard's format lists
	// and refuses any request for a file's contents (clipGate).
	FileTransfer bool
}

// Refusal is a request the bastion refuses before any session: Status is
// the HTTP-like code sent to the client, Outcome what the page shows.
type Refusal struct {
	Status  int
	Outcome Outcome
}

func (r *Refusal) Error() string { return "webrdp: refused: " + r.Outcome.Message }

// Classes of Outcome, for the page.
const (
	ClassCapacity     = "at_capacity"
	ClassDenied       = "denied"
	ClassExpired      = "expired"
	ClassUnreachable  = "unreachable"
	ClassCertificate  = "certificate"
	ClassNegotiation  = "negotiation"
	ClassKilled       = "killed"
	ClassIdle         = "idle_timeout"
	ClassMaxDuration  = "max_duration"
	ClassClientClosed = "client_closed"
	ClassTargetClosed = "target_closed"
	ClassError        = "error"
	ClassRecording    = "recording_failed"
)

// Outcome is how a desktop ended, as the page shows it.
type Outcome struct {
	// Class is one of the Class constants.
	Class string `json:"reason"`
	// Message is a sentence for the user.
	Message string `json:"message"`
	// Session is the broker session's ID, when one was opened.
	Session string `json:"session,omitempty"`
	// Target is the inventory target, once the ticket named it.
	Target string `json:"-"`
}

// Serve runs one desktop on conn, the page's WebSocket as a byte stream,
// until it ends, and returns how. It answers a failure before the relay with
// an RDCleanPath error and leaves conn open for the caller to close with
// the WebSocket status it chooses; once relaying, the session's end closes
// conn.
func Serve(ctx context.Context, conn net.Conn, p Params) Outcome {
	if p.HandshakeTimeout <= 0 {
		p.HandshakeTimeout = 30 * time.Second
	}
	if p.KeepAlive <= 0 {
		p.KeepAlive = 15 * time.Second
	}
	g := &gateway{p: p, conn: conn}
	return g.serve(ctx)
}

type gateway struct {
	p    Params
	conn net.Conn
	log  *zap.Logger
}

func (g *gateway) serve(ctx context.Context) Outcome {
	g.log = g.p.Logger
	g.conn.SetDeadline(time.Now().Add(g.p.HandshakeTimeout))
	req, err := rdcleanpath.Read(g.conn, rdcleanpath.MaxRequest)
	if err != nil {
		g.log.Info("rdp request refused: malformed", zap.Error(err))
		return g.refuse(rdcleanpath.GeneralError(400), Outcome{Class: ClassError,
			Message: "The page sent a request the bastion does not understand. Reload the page."})
	}
	cr, err := rdcleanpath.ParseConnectionRequest(req.X224ConnectionPDU)
	if err != nil {
		g.log.Info("rdp request refused: X.224 connection request", zap.Error(err))
		return g.refuse(rdcleanpath.GeneralError(400), Outcome{Class: ClassError,
			Message: "The page sent a connection request the bastion does not understand. Reload the page."})
	}
	grant, err := g.p.Authorize(req.ProxyAuth)
	target := grant.Target
	if err != nil {
		var r *Refusal
		if !errors.As(err, &r) {
			r = &Refusal{Status: 401, Outcome: Outcome{Class: ClassExpired, Message: "This connection link has expired. Open the machine again from the portal."}}
		}
		return g.refuse(rdcleanpath.GeneralError(r.Status), r.Outcome)
	}
	g.log = g.log.With(zap.String("target", target))
	if cr.Protocols&(rdcleanpath.ProtocolSSL|rdcleanpath.ProtocolHybrid|rdcleanpath.ProtocolHybridEx) == 0 {
		g.log.Info("rdp request refused: the client offers only standard RDP security", zap.Uint32("protocols", cr.Protocols))
		return g.refuse(rdcleanpath.GeneralError(400), Outcome{Class: ClassNegotiation, Target: target,
			Message: "The page asked for standard RDP security, which the bastion does not relay: only TLS or NLA."})
	}
	sess, err := g.p.Open(ctx, target)
	if err != nil {
		pdu, o := openRefusal(err)
		o.Target = target
		return g.refuse(pdu, o)
	}
	o := g.session(ctx, sess, grant, req)
	o.Session, o.Target = sess.ID(), target
	return o
}

// session negotiates with the server of sess, answers the page and relays.
func (g *gateway) session(ctx context.Context, sess Session, grant Grant, req *rdcleanpath.PDU) Outcome {
	target := grant.Target
	g.log = g.log.With(zap.String("session", sess.ID()))
	tconn := sess.Target()
	addr := tconn.RemoteAddr().String()
	hctx, cancel := context.WithTimeout(ctx, g.p.HandshakeTimeout)
	defer cancel()
	var pcb []byte
	if req.PreconnectionBlob != "" {
		pcb = rdcleanpath.PreconnectionPDU(req.PreconnectionBlob)
	}
	cfg := rdcleanpath.ClientTLS(g.p.Certificate(target, addr))
	cc, tc, err := rdcleanpath.Connect(hctx, tconn, pcb, req.X224ConnectionPDU, cfg)
	if err != nil {
		pdu, o, reason := g.negotiationFailure(target, cc, err)
		o = g.refuse(pdu, o)
		sess.End(reason)
		return o
	}
	var chain [][]byte
	for _, c := range tc.ConnectionState().PeerCertificates {
		chain = append(chain, c.Raw)
	}
	rec, refused := g.record(sess, target, cc, chain)
	if refused != nil {
		return *refused
	}
	if err := g.send(rdcleanpath.Response(cc, chain, addr)); err != nil {
		g.log.Info("rdp: the page went away during the negotiation", zap.Error(err))
		sess.End(broker.ReasonClientError + err.Error())
		if rec != nil {
			rec.Close()
		}
		return ended(sess.EndReason(), target)
	}
	g.conn.SetDeadline(time.Time{})
	tconn.SetDeadline(time.Time{})
	var client net.Conn = g.conn
	if !grant.Clipboard {
		client = &noClipboard{Conn: g.conn, removed: func(n int) {
			g.log.Info("rdp clipboard channel removed: the role disables the clipboard", zap.Int("channels", n))
		}}
	}
	var server net.Conn = tc
	stream := g.watchable(sess, target, cc, chain, rec != nil)
	if rec != nil || stream != nil {
		// The tap sees what the relay reads, after the clipboard's rewrite.
		c, _ := rdcleanpath.ParseConnectionConfirm(cc)
		tap := recording.NewRDPTap(tee{rec: rec, stream: stream}, c.Protocol)
		failed := func(err error) {
			g.log.Warn("rdp recording failed: session ended", zap.Error(err))
			sess.End(broker.ReasonRecordingFailed + ": " + err.Error())
		}
		client = &tapConn{Conn: client, record: tap.FromClient, failed: failed}
		server = &tapTLSConn{tapConn{Conn: tc, record: tap.FromServer, failed: failed}}
	}
	client, server, filesDone := g.clipboardFiles(sess, grant, client, server)
	defer filesDone()
	stop := g.keepAlive(sess)
	sess.RelayOver(client, server)
	stop()
	if stream != nil {
		stream.Close()
	}
	if rec != nil {
		err := rec.Close()
		if err != nil {
			g.log.Warn("rdp recording: close", zap.Error(err))
		}
		if g.p.RecordingClosed != nil {
			g.p.RecordingClosed(sess, rec, err)
		}
	}
	return ended(sess.EndReason(), target)
}

// record starts the recording of sess, if the desktop's role records it.
// An error has been answered and sess ended.
func (g *gateway) record(sess Session, target string, cc []byte, chain [][]byte) (*recording.RDPRecorder, *Outcome) {
	if g.p.Record == nil {
		return nil, nil
	}
	c, _ := rdcleanpath.ParseConnectionConfirm(cc)
	rec, err := g.p.Record(sess, recording.RDPHeader{Session: sess.ID(), Target: target, Protocol: c.Protocol,
		Confirm: cc, CertChain: chain})
	if err != nil {
		g.log.Warn("rdp recording cannot start: session refused", zap.Error(err))
		o := g.refuse(rdcleanpath.GeneralError(503), Outcome{Class: ClassRecording, Message: "Your role requires this session to be " +
			"recorded, and the bastion cannot record it at the moment (" + storageTrouble(err.Error()) + "), so it refuses the session."})
		sess.End(broker.ReasonRecordingFailed + ": " + err.Error())
		return nil, &o
	}
	return rec, nil // nil when the session is not recorded
}

// keepAlive pings the page every KeepAlive while sess is relayed, and ends
// sess when a ping goes unanswered. The function it returns stops it.
func (g *gateway) keepAlive(sess Session) (stop func()) {
	if g.p.Ping == nil {
		return func() {}
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		tick := time.NewTicker(g.p.KeepAlive)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
			}
			ctx, cancel := context.WithTimeout(context.Background(), g.p.KeepAlive)
			err := g.p.Ping(ctx)
			cancel()
			if err != nil {
				select {
				case <-done: // the relay ended first
				default:
					if ctx.Err() != nil {
						g.log.Info("rdp: the page does not answer pings", zap.Duration("keepalive", g.p.KeepAlive))
						sess.End(broker.ReasonClientError + "no answer to pings")
					}
				}
				return
			}
		}
	})
	return func() { close(done); wg.Wait() }
}

// send writes pdu to the page.
func (g *gateway) send(pdu *rdcleanpath.PDU) error {
	b, err := pdu.Marshal()
	if err != nil {
		return err
	}
	_, err = g.conn.Write(b)
	return err
}

// refuse answers the page with pdu and returns o.
func (g *gateway) refuse(pdu *rdcleanpath.PDU, o Outcome) Outcome {
	g.conn.SetDeadline(time.Now().Add(g.p.HandshakeTimeout))
	if err := g.send(pdu); err != nil {
		g.log.Debug("rdp: cannot send the refusal", zap.Error(err))
	}
	return o
}

// negotiationFailure is how a failed negotiation with the server of target
// is answered, shown and recorded. cc is the server's Confirm, if it came.
func (g *gateway) negotiationFailure(target string, cc []byte, err error) (*rdcleanpath.PDU, Outcome, string) {
	if g.p.HandshakeFailed != nil {
		g.p.HandshakeFailed()
	}
	var ce *hostkeys.CheckError
	switch {
	case errors.As(err, &ce):
		g.log.Warn("rdp certificate refused: session refused", zap.Error(err))
		o := Outcome{Class: ClassCertificate, Message: fmt.Sprintf(
			"The bastion has no pinned certificate for %s, so it cannot verify the machine's identity. "+
				"The session was refused; an administrator must approve the machine's certificate.", target)}
		reason := broker.ReasonHostKey + "not pinned: " + err.Error()
		if errors.Is(err, hostkeys.ErrMismatch) {
			o.Message = fmt.Sprintf("The identity of %s has changed: its certificate is not the one the bastion pinned. "+
				"Someone may be intercepting the connection, or the machine was reinstalled. "+
				"The session was refused; an administrator must check the machine and pin its new certificate.", target)
			reason = broker.ReasonHostKey + "mismatch: " + err.Error()
		}
		return rdcleanpath.TLSAlertError(alertBadCertificate), o, reason
	case errors.Is(err, rdcleanpath.ErrNegotiationFailed), errors.Is(err, rdcleanpath.ErrStandardSecurity):
		g.log.Info("rdp negotiation failed", zap.Error(err))
		o := Outcome{Class: ClassNegotiation, Message: fmt.Sprintf("%s refused the connection: %s.", target, detail(err))}
		if c, _ := rdcleanpath.ParseConnectionConfirm(cc); errors.Is(err, rdcleanpath.ErrStandardSecurity) ||
			c.Negotiation == rdcleanpath.RDPNegFailure && c.FailureCode == sslNotAllowedByServer {
			o.Message = fmt.Sprintf("%s allows only standard RDP security, which the bastion does not relay: "+
				"an administrator must enable TLS or NLA on it.", target)
		}
		return rdcleanpath.NegotiationFailure(cc), o, broker.ReasonNegotiation + detail(err)
	}
	if alert, ok := rdcleanpath.TLSAlert(err); ok {
		g.log.Info("rdp TLS handshake refused by the server", zap.Error(err))
		o := Outcome{Class: ClassNegotiation, Message: fmt.Sprintf("%s refused the TLS handshake with the bastion (%s).", target, detail(err))}
		return rdcleanpath.TLSAlertError(alert), o, broker.ReasonNegotiation + "TLS: " + detail(err)
	}
	g.log.Info("rdp negotiation failed", zap.Error(err))
	if code, ok := rdcleanpath.WSACode(err); ok {
		o := Outcome{Class: ClassUnreachable, Message: fmt.Sprintf("%s stopped answering during the connection (%s).", target, detail(err))}
		return rdcleanpath.WSAError(code), o, broker.ReasonTargetError + err.Error()
	}
	o := Outcome{Class: ClassError, Message: fmt.Sprintf("The connection to %s failed during the negotiation (%s).", target, detail(err))}
	return rdcleanpath.GeneralError(500), o, broker.ReasonTargetError + err.Error()
}

// sslNotAllowedByServer is the failure code of a server that allows only
// standard RDP security ([MS-RDPBCGR] 2.2.1.2.2).
const sslNotAllowedByServer = 2

// alertBadCertificate is the TLS alert the page is told of when the bastion
// refuses the server's certificate: what a client that checked it would
// have sent.
const alertBadCertificate = 42

// detail is err without the package prefixes that mean nothing to a user.
func detail(err error) string {
	s := err.Error()
	for _, p := range []string{"rdcleanpath: ", "tls: ", "remote error: "} {
		s = strings.ReplaceAll(s, p, "")
	}
	return s
}

// openRefusal is how a session the broker would not open is answered.
func openRefusal(err error) (*rdcleanpath.PDU, Outcome) {
	var be *broker.Error
	if !errors.As(err, &be) {
		return rdcleanpath.GeneralError(500), Outcome{Class: ClassError, Message: "The bastion could not open the session."}
	}
	switch be.Kind {
	case broker.KindCapacity:
		return rdcleanpath.GeneralError(503), Outcome{Class: ClassCapacity, Message: "The bastion is at capacity. Try again in a few minutes."}
	case broker.KindUserLimit:
		return rdcleanpath.GeneralError(429), Outcome{Class: ClassCapacity, Message: "You have as many sessions open as you may. Close one and try again."}
	case broker.KindClosed:
		return rdcleanpath.GeneralError(503), Outcome{Class: ClassCapacity, Message: "The bastion is restarting. Try again in a moment."}
	case broker.KindAuditUnavailable:
		return rdcleanpath.GeneralError(503), Outcome{Class: ClassError,
			Message: "The bastion cannot record new sessions at the moment, so it opens none. Try again later."}
	case broker.KindUnreachable:
		code, ok := rdcleanpath.WSACode(be.Err)
		if !ok {
			code = rdcleanpath.WSAETIMEDOUT
		}
		return rdcleanpath.WSAError(code), Outcome{Class: ClassUnreachable, Message: be.Sentence()}
	case broker.KindUnknownTarget, broker.KindRefused:
		return rdcleanpath.GeneralError(403), Outcome{Class: ClassDenied, Message: be.Sentence()}
	}
	return rdcleanpath.GeneralError(500), Outcome{Class: ClassError, Message: be.Sentence()}
}

// ended is the Outcome of a session the relay ended with reason.
func ended(reason, target string) Outcome {
	switch {
	case reason == broker.ReasonClientClosed:
		return Outcome{Class: ClassClientClosed, Message: "The session ended."}
	case reason == broker.ReasonTargetClosed:
		return Outcome{Class: ClassTargetClosed, Message: fmt.Sprintf("%s ended the session.", target)}
	case reason == broker.ReasonIdle:
		return Outcome{Class: ClassIdle, Message: "The session was ended after a period without activity."}
	case reason == broker.ReasonMaxDuration:
		return Outcome{Class: ClassMaxDuration, Message: "The session reached its maximum duration."}
	case reason == broker.ReasonAccessRevoked:
		return Outcome{Class: ClassDenied, Message: fmt.Sprintf("Your access to %s was withdrawn.", target)}
	case strings.HasPrefix(reason, broker.ReasonRecordingFailed):
		return Outcome{Class: ClassRecording, Message: "The session was ended because the bastion could not record it, " +
			"which your role requires (" + storageTrouble(reason) + ")."}
	case reason == broker.ReasonShutdown:
		return Outcome{Class: ClassError, Message: "The bastion is restarting. Reconnect in a moment."}
	case reason == broker.ReasonTargetUnreachable:
		return Outcome{Class: ClassUnreachable, Message: fmt.Sprintf("%s stopped answering.", target)}
	case strings.HasPrefix(reason, broker.ReasonKilled):
		return Outcome{Class: ClassKilled, Message: fmt.Sprintf("An administrator ended the session (%s).", strings.TrimPrefix(reason, broker.ReasonKilled))}
	case strings.HasPrefix(reason, broker.ReasonClientError):
		return Outcome{Class: ClassClientClosed, Message: "The connection from this page was lost."}
	}
	return Outcome{Class: ClassError, Message: "The session was ended."}
}

// storageTrouble says what went wrong with the recordings' storage, from
// an error's text, for a user: the error itself names paths on the bastion,
// which the record keeps.
func storageTrouble(err string) string {
	switch {
	case strings.Contains(err, "no space left"), strings.Contains(err, "quota exceeded"):
		return "its storage is full"
	case strings.Contains(err, "read-only file system"):
		return "its storage is read-only"
	}
	return "its storage failed"
}
