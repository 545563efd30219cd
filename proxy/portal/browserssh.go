package portal

import (
	"context"
	"errors"
	"net/http"
	"net/netip"
	"time"

	"github.com/coder/websocket"
	"golang.org/x/crypto/ssh"

	"github.com/bastiond/bastiond/internal/addrport"
	"github.com/bastiond/bastiond/internal/audit"
	"github.com/bastiond/bastiond/proxy/access"
	"github.com/bastiond/bastiond/proxy/authz"
	"github.com/bastiond/bastiond/proxy/broker"
	"github.com/bastiond/bastiond/proxy/ticket"
	"github.com/bastiond/bastiond/proxy/webssh"
)

// maxTerminalMessage bounds one WebSocket message from the page: the
// protocol's own limit (a pasted private key fits).
const maxTerminalMessage = 64 << 10

// serveSSH carries the browser SSH terminal of ticket t, redeemed by c.
// The ticket's rights were checked at redeem time; the login name, which
// roles may restrict, is checked when the page sends it.
func (s *Portal) serveSSH(w http.ResponseWriter, r *http.Request, c caller, t ticket.Ticket) {
	cfg := s.cfg.Load()
	if cfg.Broker == nil || cfg.SSH.HostKeys == nil {
		http.Error(w, "the terminal in the browser is not available on this bastion", http.StatusServiceUnavailable)
		return
	}
	target, _ := s.policy().Target(t.Target)
	if target.SSHCertificates && cfg.SSH.Sign == nil {
		http.Error(w, "this machine expects a certificate from the bastion, which has no SSH CA", http.StatusServiceUnavailable)
		return
	}
	client := addrport.Parse(r.RemoteAddr)
	who := c.who(client.Addr(), "browser")
	who.Client = client
	d := s.authz().Decide(who, authz.What{Target: t.Target, Protocol: access.SSH})
	logins := s.reachableLogins(c, t.Target)
	ws, err := websocket.Accept(w, r, &websocket.AcceptOptions{Subprotocols: []string{webssh.Subprotocol}})
	if err != nil {
		return // Accept has answered
	}
	if ws.Subprotocol() != webssh.Subprotocol {
		ws.Close(websocket.StatusPolicyViolation, "unsupported page: reload it")
		return
	}
	ws.SetReadLimit(maxTerminalMessage)
	b := cfg.Broker
	// refused writes the connect_refused event of a login; session is the
	// broker session the refusal ended, if one was open.
	refused := func(login, reason, detail, session string) {
		s.authz().Refuse(who, authz.What{Target: t.Target, Protocol: access.SSH, Login: login},
			authz.Refusal{Reason: reason, Detail: detail, Session: session})
	}
	p := webssh.Params{
		Target:           t.Target,
		User:             c.user.Name,
		Client:           client,
		Logins:           logins,
		Certificate:      target.SSHCertificates,
		Clipboard:        !d.DisableClipboard,
		FileTransfer:     !d.DisableFileTransfer,
		Record:           d.Record,
		RecordDir:        cfg.SSH.RecordDir,
		HandshakeTimeout: cfg.HandshakeTimeout,
		Logger:           s.log.Named("webssh"),
		HostKeys:         cfg.SSH.HostKeys,
		Sign:             cfg.SSH.Sign,
		IdleTimeout:      func() time.Duration { return b.Timeouts(broker.SSH).Idle },
		Authorize: func(login string) ([]string, error) {
			// The policy in force now, not the one the ticket was issued under.
			d := s.authz().Check(who, authz.What{Target: t.Target, Protocol: access.SSH, Login: login})
			if !d.Allowed {
				return nil, errors.New("no role of yours allows the login " + login + " on " + t.Target)
			}
			return d.Roles, nil
		},
		Open: func(ctx context.Context, login string, roles []string) (webssh.Session, error) {
			sess, err := b.Open(ctx, broker.Request{User: c.user.Name, Client: client, Target: t.Target, Protocol: broker.SSH,
				Login: login, Via: c.relayVia(), Roles: roles})
			if err != nil {
				refused(login, authz.BrokerRefusal(err), err.Error(), "")
				return nil, err // not a nil *broker.Session in a non-nil interface
			}
			return sess, nil
		},
		HostKeyRefused: func(sess webssh.Session, login string, mismatch bool, err error) {
			reason := authz.HostKeyNew
			if mismatch {
				reason = authz.HostKey
			}
			refused(login, reason, err.Error(), sess.ID())
		},
		CertSigned: func(sess webssh.Session, login string, cert *ssh.Certificate) {
			s.audit().Audit(certSigned(c.user.Name, client, t.Target, sess.ID(), cert))
		},
		SetRecording: func(sess webssh.Session, path string) {
			bs := sess.(*broker.Session)
			bs.SetRecording(path)
			if cfg.SSH.RecordingStarted != nil {
				cfg.SSH.RecordingStarted(bs.Info())
			}
		},
		RecordingClosed: func(sess webssh.Session, sum string, size int64) {
			bs := sess.(*broker.Session)
			bs.SetRecordingSHA256(sum)
			if cfg.SSH.RecordingClosed != nil {
				cfg.SSH.RecordingClosed(bs.Info(), size)
			}
			if cfg.SSH.RecordingWritten != nil {
				cfg.SSH.RecordingWritten()
			}
		},
		Audit:           cfg.Audit,
		HandshakeFailed: func() { b.HandshakeFailed("ssh") },
		Watch:           s.watch,
		Watched:         func(sess webssh.Session, names []string) { sess.(*broker.Session).AddWatchers(names) },
	}
	if c.link != "" {
		s.linkSSH(&p, c, t)
	}
	if c.session.ID != "" { // the file panel's requests come from this web session only
		p.Files, p.Owner = s.files, c.session.ID
	}
	// The terminal outlives the request's context only through the
	// hijacked connection; the broker ends it on kill, timeout or drain.
	webssh.Serve(context.WithoutCancel(r.Context()), ws, p)
}

// reachableLogins are the login names c's roles allow on target, nil for any.
func (s *Portal) reachableLogins(c caller, target string) []string {
	for _, rt := range s.policy().Reachable(c.principal()) {
		if rt.Name == target {
			return rt.Logins
		}
	}
	return nil
}

// certSigned is the ca_cert_signed event of cert, which the bastion's CA
// signed for user's session on target from client: the certificate's
// serial, principal, key fingerprint and end of validity.
func certSigned(user string, client netip.AddrPort, target, session string, cert *ssh.Certificate) audit.Event {
	e := audit.Event{Event: audit.CertSigned, Actor: user, Source: authz.AddrString(client.Addr()), User: user, Client: client.String(),
		Session: session, Target: target, Protocol: access.SSH, Serial: cert.Serial,
		Fingerprint: ssh.FingerprintSHA256(cert.Key), Detail: "key ID " + cert.KeyId,
		Until: new(time.Unix(int64(cert.ValidBefore), 0).UTC())}
	if len(cert.ValidPrincipals) > 0 {
		e.Principal, e.Login = cert.ValidPrincipals[0], cert.ValidPrincipals[0]
	}
	return e
}
