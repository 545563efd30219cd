package webssh

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strings"
	"syscall"
	"time"
	"unicode"
	"unicode/utf8"

	"go.uber.org/zap"
	"golang.org/x/crypto/ssh"

	"github.com/bastiond/bastiond/internal/neterr"
	"github.com/bastiond/bastiond/proxy/broker"
	"github.com/bastiond/bastiond/proxy/hostkeys"
)

// clientVersion is the bastion's SSH identification, as the machine logs it.
const clientVersion = "SSH-2.0-bastiond"

// authenticate takes credentials from the page and logs in, up to maxAttempts
// times. On success c.sess, c.target and c.client are set, and it returns
// the terminal size the page asked for.
func (c *conn) authenticate(ctx context.Context) (cols, rows int, e *ending) {
	for attempt := 1; ; attempt++ {
		m, e := c.await(ctx, typeAuth)
		if e != nil {
			return 0, 0, e
		}
		if !validSize(m.Cols, m.Rows) {
			m.wipe()
			return 0, 0, protocolEnding(fmt.Sprintf("terminal size %dx%d", m.Cols, m.Rows))
		}
		refused, e := c.attempt(ctx, m)
		m.wipe()
		switch {
		case e != nil:
			return 0, 0, e
		case refused == "":
			return m.Cols, m.Rows, nil
		}
		retry := attempt < maxAttempts
		if err := c.send(authFailedMsg{Type: typeAuthFailed, Message: refused, Retry: retry}); err != nil {
			return 0, 0, &ending{reason: broker.ReasonClientClosed}
		}
		if !retry {
			return 0, 0, &ending{msg: end(endAuthFailed, fmt.Sprintf("Authentication failed %d times.", maxAttempts))}
		}
	}
}

// attempt is one login with the credentials in m. It returns "" once the
// SSH connection is up, or a sentence for the user when the credentials
// were refused, or how the session ends.
func (c *conn) attempt(ctx context.Context, m *inMsg) (refused string, e *ending) {
	login := m.Login
	if msg := loginProblem(login); msg != "" {
		return msg, nil
	}
	log := c.log.With(zap.String("login", login))
	roles, err := c.p.Authorize(login)
	if err != nil {
		log.Info("ssh login refused by the access policy", zap.Error(err))
		return "", &ending{msg: end(endDenied, fmt.Sprintf("You may not log in to %s as %s.", c.p.Target, login))}
	}

	a := &authState{c: c, ctx: ctx, password: m.Password}
	switch {
	case c.p.Certificate:
		a.kind = credCertificate // signed once the session has its ID
	case len(m.PrivateKey) > 0:
		signer, msg := parseKey(m.PrivateKey, m.Passphrase)
		if msg != "" {
			return msg, nil
		}
		a.kind, a.signer = credKey, signer
	case len(m.Password) > 0:
		a.kind = credPassword
	default:
		a.kind = credPrompts
	}

	sess, err := c.p.Open(ctx, login, roles)
	if err != nil {
		log.Info("ssh session refused", zap.Error(err))
		return "", openEnding(err)
	}
	log = log.With(zap.String("session", sess.ID()))
	if a.kind == credCertificate {
		signer, err := c.p.Sign(login, fmt.Sprintf("%s (bastiond session %s)", c.p.User, sess.ID()))
		if err != nil {
			log.Error("cannot sign a certificate", zap.Error(err))
			sess.End("certificate: " + err.Error())
			return "", &ending{msg: end(endError, fmt.Sprintf("The bastion could not issue a certificate for %s.", login))}
		}
		a.signer = signer
		if cert, ok := signer.PublicKey().(*ssh.Certificate); ok && c.p.CertSigned != nil {
			c.p.CertSigned(sess, login, cert)
		}
	}

	tc := &targetConn{Conn: sess.Target()}
	client, refusedCred, e := c.handshake(ctx, log, sess, tc, login, a)
	switch {
	case refusedCred:
		log.Info("ssh authentication failed", zap.String("method", a.kind.method()))
		sess.End(broker.ReasonAuthFailed)
		if a.kind == credPrompts && !a.prompted {
			return "Enter a password or a private key.", nil
		}
		return a.kind.refused(login), nil
	case e != nil:
		sess.End(e.reason)
		return "", e
	}
	log.Info("ssh login", zap.String("method", a.kind.method()))
	c.login, c.sess, c.target, c.client, c.log, c.banner = login, sess, tc, client, log, a.banner
	return "", nil
}

// handshake does the SSH handshake with the machine over tc. It fails
// with refused when the machine refused the credentials, else with how
// the session ends.
func (c *conn) handshake(ctx context.Context, log *zap.Logger, sess Session, tc *targetConn, login string, a *authState) (_ *machineConn, refused bool, _ *ending) {
	check, algos := c.p.HostKeys(c.p.Target)
	if check == nil {
		check = func(string, net.Addr, ssh.PublicKey) error {
			return fmt.Errorf("%w: no host key check for %s", hostkeys.ErrNotPinned, c.p.Target)
		}
	}
	cfg := &ssh.ClientConfig{
		User: login,
		HostKeyCallback: func(host string, remote net.Addr, key ssh.PublicKey) error {
			if err := check(host, remote, key); err != nil {
				a.hostKeyErr = err
				return err
			}
			a.hostKeyOK = true
			return nil
		},
		HostKeyAlgorithms: algos,
		ClientVersion:     clientVersion,
		Auth:              a.methods(),
		AuthCallback:      a.next,
		BannerCallback: func(msg string) error {
			a.banner += msg
			return nil
		},
	}
	a.tc = tc
	// Shutdown ends the session, which closes tc and so the handshake.
	stop := context.AfterFunc(ctx, func() { sess.End(broker.ReasonShutdown) })
	defer stop()
	tc.SetDeadline(time.Now().Add(c.p.HandshakeTimeout))
	sc, chans, reqs, err := ssh.NewClientConn(tc, c.p.Target, cfg)
	if err == nil {
		return &machineConn{Conn: sc, chans: chans, reqs: reqs}, false, nil
	}
	switch {
	case a.userEnd != nil:
		return nil, false, a.userEnd
	case a.hostKeyErr != nil:
		if c.p.HostKeyRefused != nil {
			c.p.HostKeyRefused(sess, login, errors.Is(a.hostKeyErr, hostkeys.ErrMismatch), a.hostKeyErr)
		}
		return nil, false, c.hostKeyEnding(a.hostKeyErr)
	case sess.Context().Err() != nil:
		return nil, false, c.brokerEnding(sess.EndReason())
	case a.hostKeyOK && soundAfterAuth(tc.readErr()):
		return nil, true, nil
	}
	log.Info("ssh handshake failed", zap.Error(err))
	if c.p.HandshakeFailed != nil {
		c.p.HandshakeFailed()
	}
	return nil, false, c.targetEnding("SSH handshake", tc, err)
}

// soundAfterAuth reports whether the target connection's read error,
// once authentication failed, says the machine refused the credentials:
// none, or the machine disconnecting (after too many tries), or the close
// by x/crypto/ssh when the handshake failed.
func soundAfterAuth(err error) bool {
	return err == nil || err == io.EOF || errors.Is(err, net.ErrClosed)
}

// targetEnding is how a session ends when its connection to the machine
// fails: err is what the SSH layer saw, tc's read error the cause.
func (c *conn) targetEnding(what string, tc *targetConn, err error) *ending {
	cause := tc.readErr()
	if cause == nil {
		cause = err
	}
	switch {
	case errors.Is(cause, os.ErrDeadlineExceeded):
		m := end(endNetwork, fmt.Sprintf("%s did not answer in time.", c.p.Target))
		m.Reconnect = true
		return &ending{reason: broker.ReasonTargetUnreachable, msg: m}
	case neterr.Unreachable(cause):
		m := end(endNetwork, fmt.Sprintf("%s stopped answering.", c.p.Target))
		m.Reconnect = true
		return &ending{reason: broker.ReasonTargetUnreachable, msg: m}
	case cause == io.EOF || errors.Is(cause, syscall.ECONNRESET):
		return &ending{reason: broker.ReasonTargetClosed, msg: end(endError, fmt.Sprintf("%s closed the connection during the %s.", c.p.Target, what))}
	}
	return &ending{reason: broker.ReasonTargetError + what + ": " + err.Error(),
		msg: end(endError, fmt.Sprintf("The %s with %s failed.", what, c.p.Target))}
}

func (c *conn) hostKeyEnding(err error) *ending {
	if errors.Is(err, hostkeys.ErrMismatch) {
		c.log.Warn("ssh host key mismatch: session refused", zap.Error(err))
		return &ending{reason: broker.ReasonHostKey + "mismatch: " + err.Error(), msg: end(endHostKeyChanged, fmt.Sprintf(
			"The identity of %s has changed: its SSH host key is not the one the bastion pinned. "+
				"Someone may be intercepting the connection, or the machine was reinstalled. "+
				"The session was refused; an administrator must check the machine and pin its new host key.", c.p.Target))}
	}
	c.log.Warn("ssh host key not pinned: session refused", zap.Error(err))
	return &ending{reason: broker.ReasonHostKey + "not pinned: " + err.Error(), msg: end(endHostKeyUnknown, fmt.Sprintf(
		"The bastion has no pinned host key for %s, so it cannot verify the machine's identity. "+
			"The session was refused; an administrator must approve the machine's host key.", c.p.Target))}
}

// brokerEnding is how a session the broker ended with reason ends.
func (c *conn) brokerEnding(reason string) *ending {
	var m *endMsg
	switch {
	case reason == broker.ReasonIdle:
		m = end(endIdle, "The session was ended after a period without activity.")
	case reason == broker.ReasonMaxDuration:
		m = end(endMaxDuration, "The session reached its maximum duration.")
	case reason == broker.ReasonAccessRevoked:
		m = end(endAccessRevoked, fmt.Sprintf("Your access to %s was withdrawn.", c.p.Target))
	case reason == broker.ReasonShutdown:
		return shutdownEnding()
	case reason == broker.ReasonTargetUnreachable:
		m = end(endNetwork, fmt.Sprintf("%s stopped answering.", c.p.Target))
		m.Reconnect = true
	case strings.HasPrefix(reason, broker.ReasonKilled):
		m = end(endKilled, fmt.Sprintf("An administrator ended the session (%s).", strings.TrimPrefix(reason, broker.ReasonKilled)))
	default:
		m = end(endError, "The session was ended.")
	}
	return &ending{reason: reason, msg: m}
}

// openEnding is how a session the broker would not open ends.
func openEnding(err error) *ending {
	var be *broker.Error
	if !errors.As(err, &be) {
		return &ending{msg: end(endError, "The bastion could not open the session.")}
	}
	var m *endMsg
	switch be.Kind {
	case broker.KindCapacity:
		m = end(endCapacity, "The bastion is at capacity. Try again in a few minutes.")
	case broker.KindUserLimit:
		m = end(endUserLimit, "You have as many sessions open as you may. Close one and try again.")
	case broker.KindUnreachable:
		m = end(endUnreachable, be.Sentence())
	case broker.KindClosed:
		return shutdownEnding()
	case broker.KindAuditUnavailable:
		m = end(endError, "The bastion cannot record new sessions at the moment, so it opens none. Try again later.")
	default:
		return &ending{msg: end(endError, be.Sentence())}
	}
	m.Reconnect = true
	return &ending{msg: m}
}

// loginProblem says what is wrong with a login name, or "".
func loginProblem(login string) string {
	switch {
	case login == "":
		return "Enter the login name."
	case len(login) > 256 || !utf8.ValidString(login) ||
		strings.ContainsFunc(login, func(r rune) bool { return unicode.IsControl(r) || unicode.IsSpace(r) }):
		return "That is not a login name."
	}
	return ""
}

// parseKey reads a private key the user pasted, with its passphrase if
// any; the message says what is wrong with it.
func parseKey(pemBytes, passphrase secret) (ssh.Signer, string) {
	var s ssh.Signer
	var err error
	if len(passphrase) > 0 {
		s, err = ssh.ParsePrivateKeyWithPassphrase(pemBytes, passphrase)
		if err != nil && !errors.Is(err, x509.IncorrectPasswordError) {
			// A passphrase given for a key that has none.
			if s2, err2 := ssh.ParsePrivateKey(pemBytes); err2 == nil {
				s, err = s2, nil
			}
		}
	} else {
		s, err = ssh.ParsePrivateKey(pemBytes)
	}
	var missing *ssh.PassphraseMissingError
	switch {
	case err == nil:
		return s, ""
	case errors.As(err, &missing):
		return nil, "This private key is encrypted: enter its passphrase."
	case errors.Is(err, x509.IncorrectPasswordError):
		return nil, "Wrong passphrase for this private key."
	}
	return nil, "This is not a private key the bastion can read (OpenSSH or PEM format)."
}

// credential is what the user gave to log in.
type credential int

const (
	credPrompts     credential = iota // nothing: the machine's prompts are relayed
	credPassword                      // a password
	credKey                           // a private key
	credCertificate                   // the bastion's certificate
)

// method is the SSH authentication method the credential is for.
func (k credential) method() string {
	switch k {
	case credPassword:
		return "password"
	case credKey, credCertificate:
		return "publickey"
	}
	return "keyboard-interactive"
}

// refused is the sentence for the user when the machine refused the
// credential.
func (k credential) refused(login string) string {
	switch k {
	case credPassword:
		return "Wrong login name or password."
	case credKey:
		return fmt.Sprintf("The machine did not accept this key for %s.", login)
	case credCertificate:
		return fmt.Sprintf("The machine did not accept the bastion's certificate for %s.", login)
	}
	return "Wrong login name or answers."
}

// authState is one handshake's authentication. x/crypto/ssh calls its
// callbacks in the goroutine of NewClientConn, and the host key check
// before them.
type authState struct {
	c        *conn
	ctx      context.Context
	tc       *targetConn
	kind     credential
	password secret     // also answers a lone hidden keyboard-interactive prompt
	signer   ssh.Signer // for credKey and credCertificate

	passwordSent bool
	prompted     bool // the user was asked the machine's questions
	hostKeyOK    bool
	hostKeyErr   error
	userEnd      *ending // the page went away, or the user did not answer
	banner       string
}

func (a *authState) methods() []ssh.AuthMethod {
	ki := ssh.KeyboardInteractive(a.challenge)
	switch a.kind {
	case credPassword:
		return []ssh.AuthMethod{ssh.PasswordCallback(func() (string, error) {
			a.passwordSent = true
			return string(a.password), nil
		}), ki}
	case credKey, credCertificate:
		return []ssh.AuthMethod{ssh.PublicKeys(a.signer), ki}
	}
	return []ssh.AuthMethod{ki}
}

// next stops the handshake once the machine refused the credential the
// user gave: asking for more through keyboard-interactive would look to
// the user like the machine asking again, not like a refusal. Prompts
// after the credential's partial success (a second factor) are relayed.
func (a *authState) next(ctx *ssh.ClientAuthContext) (ssh.AuthMethod, error) {
	if a.kind != credPrompts && slices.Contains(ctx.TriedMethods, a.kind.method()) {
		return nil, errors.New("ssh: credentials refused")
	}
	return nil, nil
}

// challenge answers a keyboard-interactive round: a lone hidden prompt
// with the password, if there is one and it was not sent yet (a machine
// that takes passwords only this way, as with PAM), anything else by
// asking the user.
func (a *authState) challenge(name, instruction string, questions []string, echos []bool) ([]string, error) {
	switch {
	case len(questions) == 0:
		return nil, nil
	case a.kind == credPassword && !a.passwordSent && len(questions) == 1 && !echos[0]:
		a.passwordSent = true
		return []string{string(a.password)}, nil
	}
	p := promptMsg{Type: typePrompt, Name: name, Instruction: instruction, Prompts: make([]prompt, len(questions))}
	for i, q := range questions {
		p.Prompts[i] = prompt{Text: q, Echo: echos[i]}
	}
	a.prompted = true
	// The machine's clock stops while the user reads and types.
	a.tc.SetDeadline(time.Time{})
	defer a.tc.SetDeadline(time.Now().Add(a.c.p.HandshakeTimeout))
	if err := a.c.send(p); err != nil {
		a.userEnd = &ending{reason: broker.ReasonClientClosed}
		return nil, err
	}
	m, e := a.c.await(a.ctx, typeAnswers)
	if e != nil {
		a.userEnd = e
		return nil, errors.New("ssh: no answers")
	}
	defer m.wipe()
	if len(m.Answers) != len(questions) {
		a.userEnd = protocolEnding(fmt.Sprintf("%d answers to %d prompts", len(m.Answers), len(questions)))
		return nil, errors.New("ssh: wrong number of answers")
	}
	answers := make([]string, len(m.Answers))
	for i, s := range m.Answers {
		answers[i] = string(s)
	}
	return answers, nil
}
