package proxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/coder/websocket"
	"github.com/quic-go/quic-go"
	"go.uber.org/zap"

	"github.com/bastiond/bastiond/api/tunnelwire"
	"github.com/bastiond/bastiond/internal/addrport"
	"github.com/bastiond/bastiond/internal/audit"
	"github.com/bastiond/bastiond/internal/gather"
	"github.com/bastiond/bastiond/internal/statedb"
	"github.com/bastiond/bastiond/proxy/access"
	"github.com/bastiond/bastiond/proxy/auth"
	"github.com/bastiond/bastiond/proxy/authz"
	"github.com/bastiond/bastiond/proxy/broker"
	"github.com/bastiond/bastiond/proxy/gate"
	"github.com/bastiond/bastiond/tunnel"
)

// serveQUIC accepts tunnel streams on one QUIC connection until it closes.
// A stream over its connection's or its source's cap of pending requests
// is reset at once: no goroutine waits on it.
func (s *Server) serveQUIC(conn *quic.Conn) {
	client := addrPortOf(conn.RemoteAddr())
	cs := s.door.Accepted(conn)
	defer s.door.Gone(cs)
	for {
		str, err := conn.AcceptStream(context.Background())
		if err != nil {
			return // the connection is gone; its streams end with it
		}
		ps := s.door.AdmitStream(cs, str)
		if ps == nil {
			continue // reset, counted and logged
		}
		go s.serveTunnel(tunnel.NewStreamConn(conn, str), "quic", client, ps)
	}
}

// tunnelWebSocket is GET /tunnel: the native tunnel's fallback when UDP is
// blocked, one WebSocket per tunnelled connection. Browsers always send
// Origin; the native client never does, and no page may open a tunnel.
func (s *Server) tunnelWebSocket(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Origin") != "" {
		http.Error(w, "forbidden", http.StatusForbidden)
		return
	}
	ws, err := websocket.Accept(w, r, tunnel.AcceptOptions())
	if err != nil {
		return // Accept has answered
	}
	client := addrport.Parse(r.RemoteAddr)
	local, _ := r.Context().Value(http.LocalAddrContextKey).(net.Addr)
	// The tunnel lives on in the broker, in a goroutine of its own with a
	// context of its own: the handler's goroutine returns, and with it the
	// stack the TLS handshake grew and the request's buffers (about 12 KiB
	// per idle tunnel).
	c := tunnel.NewWSConn(context.Background(), ws, local, stringAddr(r.RemoteAddr))
	if g := gather.FromContext(r.Context()); g != nil {
		// A message relayed to the client leaves in one write, not one
		// per TLS record and one more for the frame's header.
		tunnel.GatherWrites(c, g)
	}
	go s.serveTunnel(c, "websocket", client, nil)
}

// serveTunnel reads a tunnel request from c, authorizes it, has the broker
// open the session and relays it. Every refusal is answered with a status
// the client turns into a clear sentence, then c is closed. ps is the
// pending place of a QUIC stream, given back once its request is read;
// nil for a WebSocket.
func (s *Server) serveTunnel(c net.Conn, via string, client netip.AddrPort, ps *gate.Pending) {
	cfg := s.cfg.Load()
	c.SetReadDeadline(time.Now().Add(cfg.HandshakeTimeout))
	req, err := tunnelwire.ReadRequest(c)
	if ps != nil {
		s.door.RequestRead(ps)
	}
	if err != nil {
		s.handshakeFailed("tunnel")
		var pe *tunnelwire.ProtocolError
		if errors.As(err, &pe) {
			s.refuseTunnel(c, pe.Status, pe.Error())
		} else {
			c.Close()
		}
		s.log.Debug("tunnel request unreadable", zap.String("via", via), zap.Stringer("client", client), zap.Error(err))
		return
	}
	c.SetReadDeadline(time.Time{})
	log := s.log.With(zap.String("via", via), zap.Stringer("client", client), zap.String("target", req.Target), zap.Uint16("port", req.Port))
	if s.handingOver() {
		// A new tunnel on a QUIC connection this process holds, during or
		// after an upgrade: the new process takes it.
		log.Info("tunnel refused: this process is handing over to a new one")
		s.movedTunnels.Add(1)
		s.refuseTunnel(c, tunnelwire.StatusMoved, "this bastion process was replaced by an upgrade: connect again")
		return
	}

	tok, user, err := s.auth.Store().CheckToken(req.Token)
	switch {
	case errors.Is(err, statedb.ErrReleased):
		log.Info("tunnel refused: the state store was handed over to a new process")
		s.refuseTunnel(c, tunnelwire.StatusMoved, "this bastion process was replaced by an upgrade: connect again")
		return
	case errors.Is(err, auth.ErrUnavailable):
		// A cluster's database is down: no bad token, no guesser.
		log.Warn("tunnel refused: the token cannot be checked, the state store is unavailable", zap.Error(err))
		s.authz.TokenRefused(client.Addr(), via, err)
		s.refuseTunnel(c, tunnelwire.StatusUnavailable, "the bastion cannot reach its database just now: try again in a moment")
		return
	case err != nil:
		s.handshakeFailed("tunnel")
		log.Info("tunnel refused: bad token")
		s.authz.TokenRefused(client.Addr(), via, err)
		s.refuseTunnel(c, tunnelwire.StatusUnauthorized, auth.ErrBadToken.Error())
		if ps != nil && s.door.BadToken(ps.Conn()) {
			// A guesser, not a client with a stale token: its connection
			// ended, which a new one (a new handshake) must replace.
			log.Info("quic connection closed: too many bad tokens")
		}
		return
	case !tok.HasScope(auth.ScopeTunnel):
		log.Info("tunnel refused: token without the tunnel scope", zap.String("user", user.Name), zap.String("token", tok.ID))
		s.authz.ScopeRefused(client.Addr(), via, tok, auth.ScopeTunnel)
		s.refuseTunnel(c, tunnelwire.StatusUnauthorized, "this token may not open tunnels (it lacks the tunnel scope): run bastionctl login")
		return
	}
	if ps != nil {
		s.door.Authenticated(ps.Conn())
	}
	log = log.With(zap.String("user", user.Name))
	// Authorization before lookup: whoever the roles do not cover gets one
	// answer, whether the machine exists, offers the port, or neither, so
	// that a user without a role learns nothing of the inventory. Only a
	// user whose roles cover the target and port is told which of them is
	// missing. The log keeps the reason.
	who := authz.Who{User: user.Name, Granted: user.Roles, Groups: user.Subjects(), Source: client.Addr(), Client: client, Via: via, Token: tok.ID}
	if t, ok := s.authz.Policy().Target(req.Target); ok {
		// An address as the policy writes it (the wire takes only that
		// form already; this keeps the two in step).
		req.Target = t.Name
	}
	what := authz.What{Target: req.Target, Protocol: access.Tunnel, Port: req.Port}
	d := s.authz.Check(who, what)
	refused := func(reason, detail string) {
		s.authz.Refuse(who, what, authz.Refusal{Reason: reason, Detail: detail, Roles: d.Roles})
	}
	if !d.Allowed {
		policy := s.authz.Policy()
		ar := access.Request{User: user.Name, Granted: user.Roles, Groups: user.Subjects(), Target: req.Target, Protocol: access.Tunnel, Port: req.Port}
		st, msg := tunnelwire.StatusDenied, fmt.Sprintf("%s may not open tunnels to %s port %d", user.Name, req.Target, req.Port)
		if policy.Covers(ar) {
			if t, ok := policy.Target(req.Target); !ok {
				st, msg = tunnelwire.StatusUnknownTarget, fmt.Sprintf("there is no machine called %q on this bastion", req.Target)
			} else if !slices.Contains([]uint16{t.SSH, t.RDP}, req.Port) && !slices.Contains(t.Tunnel, req.Port) {
				st, msg = tunnelwire.StatusUnknownTarget, fmt.Sprintf("%s does not offer port %d through the bastion", req.Target, req.Port)
			}
		}
		s.refuseTunnel(c, st, msg)
		return
	}
	if d.Record {
		// Invariant 11: recorded or refused. A tunnel carries SSH, RDP or
		// anything else end to end encrypted: the bastion cannot record it.
		// The configuration refuses record with tunnel rights in one role,
		// but a tunnel role can reach the SSH or RDP port of a machine on
		// which another role of the user records that protocol
		// (access.Decision.Record).
		log.Warn("tunnel refused: a role of the user requires recording", zap.Strings("roles", d.RecordedBy))
		s.refuseTunnelUnrecorded(c, user.Name, client, req, d)
		return
	}
	if d.DisableFileTransfer {
		// Invariant 18: a role that keeps files out of this machine's
		// browser sessions of SSH or RDP keeps them out of a tunnel to the
		// same port, which would carry scp, sftp or a desktop's drives end
		// to end, where the bastion cannot see a file to stop it.
		log.Warn("tunnel refused: a role of the user disables file transfer", zap.Strings("roles", d.FilesDisabledBy))
		msg := fmt.Sprintf("a role of %s keeps files out of %s (role %s says disable_file_transfer: true), and a native tunnel to port %d "+
			"would carry them end to end, where the bastion cannot stop them; use the browser session in the portal",
			user.Name, req.Target, strings.Join(d.FilesDisabledBy, ", "), req.Port)
		refused(authz.FilesDisabled, "native tunnels carry files end to end, and role "+strings.Join(d.FilesDisabledBy, ", ")+" disables file transfer")
		s.refuseTunnel(c, tunnelwire.StatusDenied, msg)
		return
	}
	if cfg.Broker == nil {
		refused(authz.Unavailable, "this bastion carries no sessions")
		s.refuseTunnel(c, tunnelwire.StatusUnavailable, "this bastion carries no sessions")
		return
	}
	// The broker bounds the dial with its own timeout.
	sess, err := cfg.Broker.Open(context.Background(), broker.Request{User: user.Name, Client: client, Target: req.Target, Protocol: broker.Tunnel,
		Port: req.Port, Via: via, Token: tok.ID, Roles: d.Roles})
	if err != nil {
		log.Info("tunnel refused", zap.Error(err))
		refused(authz.BrokerRefusal(err), err.Error())
		msg := err.Error()
		if errors.Is(err, broker.ErrAuditUnavailable) {
			msg = "the bastion cannot record new sessions at the moment, so it opens none: try again later" // the file's path is the admins'
		}
		s.refuseTunnel(c, tunnelStatus(err), msg)
		return
	}
	if err := tunnelwire.WriteResponse(c, tunnelwire.Response{Status: tunnelwire.StatusOK, Message: sess.ID()}); err != nil {
		sess.End("client error: " + err.Error())
		c.Close()
		return
	}
	sess.Relay(c)
}

// refuseTunnelUnrecorded refuses a tunnel whose rights require recording,
// with a connect_refused event (reason recording_unavailable).
func (s *Server) refuseTunnelUnrecorded(c net.Conn, user string, client netip.AddrPort, req tunnelwire.Request, d access.Decision) {
	msg := fmt.Sprintf("sessions of %s to %s port %d must be recorded (role %s says record: true), and a native tunnel cannot be: "+
		"it carries an end-to-end encrypted protocol the bastion cannot see into; use the browser session in the portal",
		user, req.Target, req.Port, strings.Join(d.RecordedBy, ", "))
	e := audit.Event{Event: audit.ConnectRefused, Actor: user, Source: audit.ActorAnonymous, User: user, Target: req.Target,
		Protocol: "tunnel", Port: req.Port, Roles: d.Roles, Reason: "recording_unavailable",
		Detail: "native tunnels cannot be recorded, and role " + strings.Join(d.RecordedBy, ", ") + " requires recording"}
	if client.IsValid() {
		e.Source, e.Client = client.Addr().String(), client.String()
	}
	s.cfg.Load().Audit.Audit(e)
	s.refuseTunnel(c, tunnelwire.StatusDenied, msg)
}

func (s *Server) refuseTunnel(c net.Conn, st tunnelwire.Status, msg string) {
	c.SetWriteDeadline(time.Now().Add(5 * time.Second))
	tunnelwire.WriteResponse(c, tunnelwire.Response{Status: st, Message: msg})
	// Half-close first so that the answer is delivered before the end.
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	}
	c.Close()
}

// tunnelStatus maps a broker refusal to the tunnel's status.
func tunnelStatus(err error) tunnelwire.Status {
	var be *broker.Error
	if !errors.As(err, &be) {
		return tunnelwire.StatusUnavailable
	}
	switch be.Kind {
	case broker.KindUnknownTarget:
		return tunnelwire.StatusUnknownTarget
	case broker.KindUserLimit:
		return tunnelwire.StatusUserLimit
	case broker.KindCapacity:
		return tunnelwire.StatusCapacity
	case broker.KindUnreachable, broker.KindRefused:
		return tunnelwire.StatusUnreachable
	}
	return tunnelwire.StatusUnavailable
}

func (s *Server) handshakeFailed(layer string) {
	if b := s.cfg.Load().Broker; b != nil {
		b.HandshakeFailed(layer)
	}
}

type stringAddr string

func (a stringAddr) Network() string { return "tcp" }
func (a stringAddr) String() string  { return string(a) }

func addrPortOf(a net.Addr) netip.AddrPort { return addrport.Parse(a.String()) }
