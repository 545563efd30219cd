package webssh

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"go.uber.org/zap"
	"golang.org/x/crypto/ssh"

	"github.com/bastiond/bastiond/internal/audit"
	"github.com/bastiond/bastiond/proxy/broker"
	"github.com/bastiond/bastiond/proxy/recording"
	"github.com/bastiond/bastiond/proxy/watch"
)

// Session is a broker session as the terminal uses it.
type Session interface {
	ID() string
	// Target is the connection to the machine.
	Target() net.Conn
	// Context is done once the session is being ended, by anyone.
	Context() context.Context
	// AddUp and AddDown count the terminal's bytes: typed and pasted, shown.
	AddUp(n int64)
	AddDown(n int64)
	// End ends the session with reason (the first reason wins) and returns
	// once its record is written.
	End(reason string)
	// EndReason is why the session ended, or "" while it is live.
	EndReason() string
}

var _ Session = (*broker.Session)(nil)

// Params are one terminal session's settings, from the connect ticket and
// the configuration.
type Params struct {
	// Target is the machine's inventory name: shown to the user, given to
	// HostKeys, and in the recording's title. Required.
	Target string
	// User is the bastion user, for the logs and the recording's title.
	// Required.
	User string
	// Client is the user's address, for the logs.
	Client netip.AddrPort
	// Logins are the accounts the user's roles allow on the target, which
	// the page offers; nil: any. Authorize decides.
	Logins []string
	// Certificate has the bastion log in with a certificate from Sign: the
	// page asks only for the login name.
	Certificate bool
	// Clipboard allows pasting. Without it, pastes are dropped and logged.
	Clipboard bool
	// FileTransfer offers the file panel: SFTP on the terminal's SSH
	// connection, through Files. Without it the page shows no panel, and
	// Files refuses the session's file requests with a
	// file_transfer_refused event.
	FileTransfer bool
	// Files is the registry the portal's file routes look the session up
	// in; nil: no file panel at all.
	Files *Files
	// Owner is the web session the terminal belongs to: Files answers only
	// its requests. Required with Files.
	Owner string
	// Record records the terminal's output in RecordDir (then required) as
	// SESSIONID.cast.gz. A recording that cannot be started refuses the
	// session before the shell opens, and one that fails later ends it
	// (end reason "recording failed: CAUSE"); either is a recording_failed
	// event on Audit.
	Record    bool
	RecordDir string
	// CredentialTimeout bounds each wait for the user: for the credentials
	// and for answers to the machine's prompts. Default 2 minutes.
	CredentialTimeout time.Duration
	// HandshakeTimeout bounds the SSH handshake with the machine, and then
	// the opening of the shell; waits for the user do not count. Default
	// 30 seconds.
	HandshakeTimeout time.Duration
	// KeepAlive is the period of keepalive@openssh.com requests to the
	// machine and of WebSocket pings to the browser. Three keepalives in a
	// row without an answer, or a ping without a pong within the period,
	// end the session. Default 15 seconds.
	KeepAlive time.Duration
	// Logger is required. Nothing the user types is ever logged.
	Logger *zap.Logger

	// Authorize checks login against the access policy and returns the
	// roles that allow it; an error refuses the login ("denied"). It is
	// called for every attempt, before Open. Required.
	Authorize func(login string) (roles []string, err error)
	// Open admits the session and dials the target through the broker; its
	// refusals are *broker.Error. Every attempt to log in opens a session
	// of its own: a failed attempt's session ends with reason "auth
	// failed". Required.
	Open func(ctx context.Context, login string, roles []string) (Session, error)
	// HostKeys returns the check of target's pinned host keys, whose
	// errors wrap hostkeys.ErrMismatch or hostkeys.ErrNotPinned (any
	// other error refuses the session as not pinned), and the algorithms
	// of the pinned keys for the handshake (nil: any). Required.
	HostKeys func(target string) (ssh.HostKeyCallback, []string)
	// Sign returns a signer whose public key is a certificate for login,
	// with keyID as its key ID. Required when Certificate is set.
	Sign func(login, keyID string) (ssh.Signer, error)
	// IdleTimeout returns the current idle timeout of SSH sessions (it may
	// change on reload); 0: none. The broker ends idle sessions; the
	// terminal warns the user before. Nil: none.
	IdleTimeout func() time.Duration
	// SetRecording gives the recording's path to the session's accounting
	// record. Optional.
	SetRecording func(s Session, path string)
	// HostKeyRefused is told of a session refused because the machine's
	// host key is not the pinned one (mismatch) or none is pinned, with the
	// check's error: for the audit trail. Optional.
	HostKeyRefused func(s Session, login string, mismatch bool, err error)
	// CertSigned is told of each certificate Sign made, for the session s
	// it logs in: for the audit trail. Optional.
	CertSigned func(s Session, login string, cert *ssh.Certificate)
	// RecordingClosed is told of the recording once it is closed, complete,
	// before the session's end record is written: its file's SHA-256 and
	// size. Optional.
	RecordingClosed func(s Session, sha256 string, size int64)
	// Audit receives recording_failed events. Default audit.Discard.
	Audit audit.Sink
	// Watch, when set, lets auditors watch the terminal: once the shell is
	// open, its output and sizes are published on a stream of the hub (with
	// the session's ID), closed when the session ends. The page is told
	// who watches ("watchers" messages). Optional.
	Watch *watch.Hub
	// Watched is told of the watchers each time one joins or leaves, for
	// the session's end record. It must not block. Optional.
	Watched func(s Session, watchers []string)
	// HandshakeFailed counts an SSH handshake with the machine that failed
	// for another reason than the credentials or its host key (the
	// bastiond_handshake_failures_total{layer="ssh"} metric). Optional.
	HandshakeFailed func()
}

func (p *Params) setDefaults() error {
	var missing []string
	for _, f := range []struct {
		name string
		ok   bool
	}{
		{"Target", p.Target != ""}, {"User", p.User != ""}, {"Logger", p.Logger != nil},
		{"Authorize", p.Authorize != nil}, {"Open", p.Open != nil}, {"HostKeys", p.HostKeys != nil},
		{"Sign (with Certificate)", !p.Certificate || p.Sign != nil},
		{"RecordDir (with Record)", !p.Record || p.RecordDir != ""},
		{"Owner (with Files)", p.Files == nil || p.Owner != ""},
	} {
		if !f.ok {
			missing = append(missing, f.name)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("webssh: missing %s", strings.Join(missing, ", "))
	}
	if p.CredentialTimeout == 0 {
		p.CredentialTimeout = 2 * time.Minute
	}
	if p.HandshakeTimeout == 0 {
		p.HandshakeTimeout = 30 * time.Second
	}
	if p.KeepAlive == 0 {
		p.KeepAlive = 15 * time.Second
	}
	if p.IdleTimeout == nil {
		p.IdleTimeout = func() time.Duration { return 0 }
	}
	if p.Audit == nil {
		p.Audit = audit.Discard
	}
	return nil
}

// maxAttempts is how many times the user may enter credentials.
const maxAttempts = 3

// sendTimeout bounds writing one control message to the browser.
const sendTimeout = 10 * time.Second

// Serve carries one browser terminal on ws: it says hello, takes the
// credentials, logs in to the target through a broker session, and
// relays the terminal until the session ends; then it tells the page why,
// closes ws and returns. Cancelling ctx ends the session with reason
// "shutdown". Outcomes go to the page and to the session's record; the
// error is only for invalid Params (then ws is closed at once).
func Serve(ctx context.Context, ws *websocket.Conn, p Params) error {
	if err := p.setDefaults(); err != nil {
		ws.Close(websocket.StatusInternalError, "bastion misconfigured")
		return err
	}
	c := &conn{p: p, ws: ws, log: p.Logger.With(zap.String("user", p.User), zap.String("target", p.Target),
		zap.Stringer("client", p.Client))}
	c.finish(c.run(ctx))
	return nil
}

// conn is one terminal session.
type conn struct {
	p   Params
	ws  *websocket.Conn
	log *zap.Logger

	// Set once the login succeeded.
	login  string
	sess   Session
	target *targetConn
	client *machineConn
	banner string // the machine's pre-login banner, shown when the shell opens

	// Set once the shell is open.
	ch   ssh.Channel
	reqs <-chan *ssh.Request
	rec  *recording.Recorder

	panel    *panel                   // the file panel, once the shell is open (with Params.Files)
	stream   *watch.Stream            // set when the session may be watched
	watchers atomic.Pointer[[]string] // the latest watchers, for the relay to tell the page
	watchedC chan struct{}            // has a token when watchers changed

	in []byte // the buffer of text messages from the browser

	last       atomic.Int64   // unix nanoseconds of the last terminal byte either way
	warned     atomic.Bool    // an idle warning is showing
	probing    atomic.Bool    // a keepalive awaits the machine's answer
	pinging    atomic.Bool    // a ping awaits the page's pong
	failed     chan *ending   // the first failure a relay goroutine saw
	outputDone chan struct{}  // closed when the machine's output ended
	outputs    sync.WaitGroup // the goroutines copying output and error output to the page
	wg         sync.WaitGroup // the relay's goroutines

	imu         sync.Mutex // guards interrupted
	interrupted *ending    // why a wait for the user was cut short

	sendMu    sync.Mutex  // orders control messages before the end
	ended     atomic.Bool // the end message is sent or being sent: nothing more goes to the page
	closeOnce sync.Once
}

// ending is how a session ends: the broker's end reason (for the
// record), and what the page is told (nil: the page is gone).
type ending struct {
	reason string
	msg    *endMsg
}

func (c *conn) run(ctx context.Context) *ending {
	c.ws.SetReadLimit(maxMessage)
	hello := helloMsg{Type: typeHello, Target: c.p.Target, Logins: c.p.Logins, Certificate: c.p.Certificate,
		Clipboard: c.p.Clipboard, Files: c.p.FileTransfer && c.p.Files != nil, Recorded: c.p.Record, IdleTimeout: int64(c.p.IdleTimeout() / time.Second)}
	if err := c.send(hello); err != nil {
		return &ending{reason: broker.ReasonClientClosed}
	}
	cols, rows, e := c.authenticate(ctx)
	if e != nil {
		return e
	}
	if e := c.openShell(cols, rows); e != nil {
		return e
	}
	return c.relay(ctx, cols, rows)
}

// finish ends the session with e. The relay stops first (closing the SSH
// client closes the target connection; closing the WebSocket stops the
// input), then the recording is closed, complete, and only then does the
// broker write the end record that names it. (When the broker itself
// ended the session, for a kill or a timeout, its record is already
// written and the recording is completed a moment later.)
func (c *conn) finish(e *ending) {
	if c.panel != nil {
		c.p.Files.remove(c.sess.ID())
		c.panel.close()
	}
	if c.client != nil {
		c.client.Close()
	}
	c.waitOutput()
	c.closeWS(e.msg)
	c.wg.Wait()
	if c.stream != nil {
		c.stream.Close()
	}
	if c.rec != nil {
		if err := c.rec.Close(); err != nil {
			c.log.Error("recording incomplete", zap.Error(err))
			c.recordingFailed("write_failed", err)
			if e.reason != "" && !strings.HasPrefix(e.reason, broker.ReasonRecordingFailed) {
				// The session ended for another reason; its record says
				// the recording is incomplete too.
				e.reason += "; " + broker.ReasonRecordingFailed + ": " + recording.Cause(err)
			}
		} else {
			if c.p.RecordingClosed != nil {
				c.p.RecordingClosed(c.sess, c.rec.SHA256(), c.rec.Size())
			}
			if c.sess != nil && c.sess.EndReason() != "" {
				// The broker ended the session (kill, timeout) and wrote
				// its end record before the recording was complete: the
				// hash goes in an event of its own.
				c.recordingClosed()
			}
		}
	}
	if c.sess != nil {
		c.sess.End(e.reason)
	}
	if e.msg != nil {
		c.log.Debug("ssh terminal ended", zap.String("reason", e.msg.Reason), zap.String("message", e.msg.Message))
	}
}

// waitOutput lets the machine's last output (what its connection held
// when it was closed) reach the page before the end message, for at most
// drainTimeout: a page that takes nothing is not waited for.
func (c *conn) waitOutput() {
	if c.outputDone == nil {
		return // the shell never opened
	}
	done := make(chan struct{})
	go func() {
		c.outputs.Wait()
		close(done)
	}()
	t := time.NewTimer(drainTimeout)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
		c.log.Debug("the page took no output for " + drainTimeout.String() + ": ending without it")
	}
}

// closeWS tells the page msg, if any, and closes the WebSocket; only the
// first call does anything. The end message is the page's last: control
// messages wait for it to be sent and are dropped after, output is
// dropped.
func (c *conn) closeWS(msg *endMsg) {
	c.closeOnce.Do(func() {
		c.sendMu.Lock()
		c.ended.Store(true)
		c.sendMu.Unlock()
		if msg == nil {
			c.ws.CloseNow()
			return
		}
		if b, err := json.Marshal(msg); err == nil {
			c.write(b)
		}
		c.ws.Close(websocket.StatusNormalClosure, "")
	})
}

// send writes one control message to the page.
func (c *conn) send(v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return c.sendRaw(b)
}

// errEnded is what sending after the end message returns.
var errEnded = errors.New("webssh: the session ended")

func (c *conn) sendRaw(b []byte) error {
	c.sendMu.Lock()
	defer c.sendMu.Unlock()
	if c.ended.Load() {
		return errEnded
	}
	return c.write(b)
}

// write writes one text message to the page, within sendTimeout.
func (c *conn) write(b []byte) error {
	ctx, cancel := context.WithTimeout(context.Background(), sendTimeout)
	defer cancel()
	return c.ws.Write(ctx, websocket.MessageText, b)
}

// awaitUser bounds a wait for the user: when CredentialTimeout passes or
// ctx ends first, the page is told and the WebSocket closed, which ends
// the wait. The function it returns stops the clock and returns the
// ending it caused, if any.
func (c *conn) awaitUser(ctx context.Context) func() *ending {
	timedOut, stopped := make(chan struct{}), make(chan struct{})
	t := time.AfterFunc(c.p.CredentialTimeout, func() {
		defer close(timedOut)
		c.interrupt(&ending{reason: broker.ReasonClientError + "no answer within " + c.p.CredentialTimeout.String(),
			msg: end(endError, fmt.Sprintf("Nothing was entered within %s: the connection was closed.", friendly(c.p.CredentialTimeout)))})
	})
	stop := context.AfterFunc(ctx, func() {
		defer close(stopped)
		c.interrupt(shutdownEnding())
	})
	return func() *ending {
		if !t.Stop() {
			<-timedOut
		}
		if !stop() {
			<-stopped
		}
		c.imu.Lock()
		defer c.imu.Unlock()
		return c.interrupted
	}
}

func (c *conn) interrupt(e *ending) {
	c.imu.Lock()
	defer c.imu.Unlock()
	if c.interrupted == nil {
		c.interrupted = e
		c.closeWS(e.msg)
	}
}

// await reads the page's next message, which must be of type want,
// within CredentialTimeout. The caller wipes it.
func (c *conn) await(ctx context.Context, want string) (*inMsg, *ending) {
	done := c.awaitUser(ctx)
	var m inMsg
	typ, r, err := c.ws.Reader(context.Background())
	if err == nil {
		err = c.decode(typ, r, &m)
	}
	if e := done(); e != nil {
		m.wipe()
		return nil, e
	}
	switch {
	case err == errUnreadable || err == nil && m.Type != want:
		m.wipe()
		c.log.Info("unexpected message from the page", zap.String("want", want), zap.String("type", m.Type))
		return nil, protocolEnding("expected a " + want + " message")
	case err != nil:
		return nil, &ending{reason: broker.ReasonClientClosed}
	}
	return &m, nil
}

// errUnreadable is a message that is not a JSON object in a text frame.
var errUnreadable = errors.New("webssh: unreadable message")

// decode reads a text message into m; the bytes it came in are cleared.
func (c *conn) decode(typ websocket.MessageType, r io.Reader, m *inMsg) error {
	if typ != websocket.MessageText {
		return errUnreadable
	}
	b, err := c.readText(r)
	if err != nil {
		return err
	}
	defer clear(b)
	if json.Unmarshal(b, m) != nil {
		return errUnreadable
	}
	return nil
}

// readText reads a whole text message into c.in, clearing any buffer it
// outgrows: it may hold credentials.
func (c *conn) readText(r io.Reader) ([]byte, error) {
	b := c.in[:0]
	for {
		if len(b) == cap(b) {
			nb := make([]byte, len(b), max(2*cap(b), 512))
			copy(nb, b)
			clear(b)
			b = nb
		}
		n, err := r.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		c.in = b
		if err == io.EOF {
			return b, nil
		}
		if err != nil {
			clear(b)
			return nil, err
		}
	}
}

func protocolEnding(what string) *ending {
	return &ending{reason: broker.ReasonClientError + "protocol: " + what,
		msg: end(endError, "The page sent something unexpected. Reload it to connect again.")}
}

func shutdownEnding() *ending {
	m := end(endShutdown, "The bastion is shutting down.")
	m.Reconnect = true
	return &ending{reason: broker.ReasonShutdown, msg: m}
}

// friendly is d as a person says it: "2 minutes", "90 seconds".
func friendly(d time.Duration) string {
	switch {
	case d%time.Minute == 0 && d >= 2*time.Minute:
		return fmt.Sprintf("%d minutes", d/time.Minute)
	case d == time.Minute:
		return "a minute"
	case d <= time.Second:
		return "a second"
	}
	return fmt.Sprintf("%d seconds", (d+time.Second-1)/time.Second)
}

// targetConn is the connection to the machine; it keeps the first read
// error, which says why the machine's side ended.
type targetConn struct {
	net.Conn
	err atomic.Pointer[error]
}

func (t *targetConn) Read(p []byte) (int, error) {
	n, err := t.Conn.Read(p)
	if err != nil {
		t.keep(err)
	}
	return n, err
}

// keep is apart from Read so that only a failed read allocates.
func (t *targetConn) keep(err error) {
	t.err.CompareAndSwap(nil, &err)
}

func (t *targetConn) readErr() error {
	if p := t.err.Load(); p != nil {
		return *p
	}
	return nil
}
