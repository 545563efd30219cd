package tunnel

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"github.com/quic-go/quic-go"

	"github.com/bastiond/bastiond/api/tunnelwire"
	"github.com/bastiond/bastiond/internal/udpgro"
)

// ClientConfig configures a Client.
type ClientConfig struct {
	// Server is the bastion's name, host[:port] (port 443 when omitted):
	// the server name of the TLS and QUIC handshakes and the WebSocket's
	// Host. Required.
	Server string
	// Address, when set, is the host:port dialled (UDP for QUIC, TCP for
	// TLS) instead of resolving Server.
	Address string
	// TLS holds the roots to check the bastion's certificate with (or
	// InsecureSkipVerify). The client sets ServerName and NextProtos on
	// copies. Nil: the system roots.
	TLS *tls.Config
	// Token is the API token, with the tunnel scope. Required.
	Token string
	// Transport is "auto" (the default when empty: QUIC, or a WebSocket
	// over TLS on TCP when UDP is blocked), "quic" or "tcp" (the
	// WebSocket only).
	Transport string
	// FallbackDelay is, in auto mode, how long the QUIC handshake runs
	// alone before the TLS one starts too; the first to complete carries
	// the tunnel. A QUIC failure starts the TLS handshake at once.
	// Default 50ms.
	FallbackDelay time.Duration
	// QUICRetry is, in auto mode, how long Dials go straight to TLS after
	// a QUIC handshake failed (UDP is blocked) before they try QUIC again.
	// Default one minute.
	QUICRetry time.Duration
	// DialTimeout bounds one Dial: connecting and the bastion's answer,
	// which includes its connection to the target. Default 30s; the
	// context's deadline applies too.
	DialTimeout time.Duration
	// QUICBlocked says, in auto mode, that UDP to this bastion was found
	// blocked recently (bastionctl remembers it in a file): Dials go to
	// TLS at once, and try QUIC only when TLS fails.
	QUICBlocked bool
	// NoteQUIC, when set, is told in auto mode what the client learnt:
	// blocked true when a QUIC handshake failed or had no answer yet when
	// TLS had carried the tunnels (at Close), false when one completed.
	NoteQUIC func(blocked bool)
	// Logf, when set, is told which transport is used and why (for
	// bastionctl -v).
	Logf func(format string, args ...any)
}

const (
	defaultFallbackDelay = 50 * time.Millisecond
	defaultQUICRetry     = time.Minute
	defaultDialTimeout   = 30 * time.Second

	quicHandshakeIdle = 5 * time.Second
	quicKeepAlive     = 20 * time.Second
	quicMaxIdle       = 60 * time.Second
	// quicHandshakeLimit bounds a whole QUIC handshake, Retry included;
	// quic-go's own limit is twice quicHandshakeIdle.
	quicHandshakeLimit = 15 * time.Second
	// quicCloseGrace is the most Close waits for the last FINs to leave
	// before it closes the QUIC connection: QUIC has no graceful close that
	// flushes streams.
	quicCloseGrace = time.Second
	// wsCloseGrace is the most Close waits for the close frames of
	// WebSocket tunnels closed just before: the library then waits for the
	// bastion's answer, which a bastion that had read the tunnel's end of
	// stream does not send until it writes again.
	wsCloseGrace = 200 * time.Millisecond
)

// Client opens tunnels to one bastion. It keeps one QUIC connection for
// all of them (a stream per tunnel), redialled when it ends; a WebSocket
// tunnel has a TLS connection of its own. It is safe for concurrent use.
//
// Every socket is made in the goroutine that calls Dial or Connect (the
// QUIC handshake then runs in the background on that socket), so that a
// caller that switched its thread to another network namespace gets its
// sockets there.
type Client struct {
	cfg     ClientConfig
	host    string // the server name
	addr    string // host:port dialled
	wsURL   string
	quicTLS *tls.Config
	wsTLS   *tls.Config
	quicCfg *quic.Config

	// ctx ends with Close: it bounds background handshakes and the
	// WebSocket conns.
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup // background handshakes and QUIC connection watchers
	// wsClosing counts the WebSocket closes under way, which Close waits
	// for (at most wsCloseGrace) so that their close frames leave.
	wsClosing sync.WaitGroup

	startMu sync.Mutex // serializes starting QUIC handshakes

	mu         sync.Mutex // guards the fields below
	q          *quicAttempt
	quicFailed time.Time // when the last QUIC handshake failed
	last       string
	closed     bool
}

// quicAttempt is a QUIC connection, being made or made.
type quicAttempt struct {
	done    context.Context // done when conn or err is set
	fin     context.CancelFunc
	started time.Time
	conn    *quic.Conn // after done, on success
	err     error      // after done, on failure
	used    atomic.Bool
	dead    atomic.Bool // a stream saw the connection end
	moved   atomic.Bool // the server takes no new tunnels on it (tunnelwire.StatusMoved)
}

func (a *quicAttempt) finished() bool { return a.done.Err() != nil }

// alive says whether a finished attempt left a live connection.
func (a *quicAttempt) alive() bool {
	return a.err == nil && !a.dead.Load() && !a.moved.Load() && a.conn.Context().Err() == nil
}

// connectionEnded says whether err is the end of the whole QUIC
// connection (not of one stream).
func connectionEnded(err error) bool {
	var app *quic.ApplicationError
	var idle *quic.IdleTimeoutError
	var reset *quic.StatelessResetError
	var tr *quic.TransportError
	return errors.As(err, &app) || errors.As(err, &idle) || errors.As(err, &reset) || errors.As(err, &tr)
}

// NewClient checks cfg and returns a Client. Nothing is dialled yet.
func NewClient(cfg ClientConfig) (*Client, error) {
	if cfg.Server == "" {
		return nil, errors.New("tunnel: ClientConfig.Server is required")
	}
	if cfg.Token == "" {
		return nil, errors.New("tunnel: ClientConfig.Token is required")
	}
	if !tunnelwire.ValidToken(cfg.Token) {
		return nil, fmt.Errorf("tunnel: the token must be 1 to %d printable ASCII characters", tunnelwire.MaxToken)
	}
	switch cfg.Transport {
	case "":
		cfg.Transport = "auto"
	case "auto", "quic", "tcp":
	default:
		return nil, fmt.Errorf("tunnel: transport %q: use auto, quic or tcp", cfg.Transport)
	}
	if cfg.FallbackDelay <= 0 {
		cfg.FallbackDelay = defaultFallbackDelay
	}
	if cfg.QUICRetry <= 0 {
		cfg.QUICRetry = defaultQUICRetry
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = defaultDialTimeout
	}
	host, port, err := net.SplitHostPort(cfg.Server)
	if err != nil {
		host, port = cfg.Server, "443"
		if len(host) > 1 && host[0] == '[' && host[len(host)-1] == ']' {
			host = host[1 : len(host)-1]
		}
	}
	if host == "" {
		return nil, fmt.Errorf("tunnel: server %q has no host", cfg.Server)
	}
	c := &Client{cfg: cfg, host: host, addr: net.JoinHostPort(host, port)}
	if cfg.Address != "" {
		if _, _, err := net.SplitHostPort(cfg.Address); err != nil {
			return nil, fmt.Errorf("tunnel: address %q: %w", cfg.Address, err)
		}
		c.addr = cfg.Address
	}
	urlHost := net.JoinHostPort(host, port)
	if port == "443" {
		urlHost = host
		if strings.Contains(host, ":") {
			urlHost = "[" + host + "]"
		}
	}
	c.wsURL = "wss://" + urlHost + tunnelwire.WebSocketPath
	base := cfg.TLS
	if base == nil {
		base = &tls.Config{}
	}
	c.quicTLS = base.Clone()
	c.quicTLS.ServerName = host
	c.quicTLS.NextProtos = []string{tunnelwire.ALPN}
	c.quicTLS.MinVersion = tls.VersionTLS13
	c.wsTLS = base.Clone()
	c.wsTLS.ServerName = host
	c.wsTLS.NextProtos = []string{"http/1.1"}
	if c.wsTLS.MinVersion < tls.VersionTLS12 {
		c.wsTLS.MinVersion = tls.VersionTLS12
	}
	c.quicCfg = &quic.Config{
		Versions:             []quic.Version{quic.Version1},
		HandshakeIdleTimeout: quicHandshakeIdle,
		KeepAlivePeriod:      quicKeepAlive,
		MaxIdleTimeout:       quicMaxIdle,
		// The bastion never opens streams towards the client.
		MaxIncomingStreams:    -1,
		MaxIncomingUniStreams: -1,
	}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	return c, nil
}

// udpBlocked says whether a QUIC handshake's err means no answer came
// (a timeout, an ICMP error), not a server that answered and refused (a
// TLS alert, a certificate).
func udpBlocked(err error) bool {
	var idle *quic.IdleTimeoutError
	var hs *quic.HandshakeTimeoutError
	var sys *os.SyscallError
	return errors.As(err, &idle) || errors.As(err, &hs) || errors.Is(err, context.DeadlineExceeded) || errors.As(err, &sys)
}

// noteQUIC tells cfg.NoteQUIC, in auto mode.
func (c *Client) noteQUIC(blocked bool) {
	if c.cfg.NoteQUIC != nil && c.cfg.Transport == "auto" {
		c.cfg.NoteQUIC(blocked)
	}
}

func (c *Client) logf(format string, args ...any) {
	if c.cfg.Logf != nil {
		c.cfg.Logf(format, args...)
	}
}

// Transport is what the last successful Dial used: "quic" or
// "websocket"; "" before the first.
func (c *Client) Transport() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.last
}

// Conn is a tunnelled connection: what Dial returns.
type Conn struct {
	net.Conn // the QUIC stream or WebSocket, with CloseWrite
	id, via  string
}

// SessionID is the bastion's ID of the session, as its admins see it.
func (c *Conn) SessionID() string { return c.id }

// Transport is "quic" or "websocket".
func (c *Conn) Transport() string { return c.via }

// CloseWrite ends the direction towards the target: the target reads to
// the end of what was written.
func (c *Conn) CloseWrite() error { return c.Conn.(interface{ CloseWrite() error }).CloseWrite() }

// ReachError is a bastion that no transport reached: the errors of the
// QUIC and TLS attempts (nil for one that was not made).
type ReachError struct {
	Server    string
	QUIC, TLS error
}

func (e *ReachError) Error() string {
	switch {
	case e.TLS == nil:
		return fmt.Sprintf("cannot reach %s over QUIC: %s", e.Server, brief(e.QUIC))
	case e.QUIC == nil:
		return fmt.Sprintf("cannot reach %s over TLS: %s", e.Server, brief(e.TLS))
	}
	return fmt.Sprintf("cannot reach %s: QUIC: %s; TLS: %s", e.Server, brief(e.QUIC), brief(e.TLS))
}

func (e *ReachError) Unwrap() []error {
	var errs []error
	for _, err := range []error{e.QUIC, e.TLS} {
		if err != nil {
			errs = append(errs, err)
		}
	}
	return errs
}

// brief is err without what a person does not need: "dial tcp
// 192.0.2.1:443: connect: connection refused" is "connection refused".
func brief(err error) string {
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" && op.Err != nil {
		err = op.Err
	}
	var sys *os.SyscallError
	if errors.As(err, &sys) {
		err = sys.Err
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return "timeout"
	}
	return err.Error()
}

// errStale is a QUIC connection that ended before it could open a stream.
var errStale = errors.New("tunnel: the QUIC connection ended")

// Dial opens a tunnel to target's port and returns it once the bastion
// has connected to the target: a *Conn, with CloseWrite. A refusal is an
// *tunnelwire.Error, a bastion that no transport reached a *ReachError.
func (c *Client) Dial(ctx context.Context, target string, port uint16) (net.Conn, error) {
	req, err := tunnelwire.Request{Token: c.cfg.Token, Target: target, Port: port}.Marshal()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, c.cfg.DialTimeout)
	defer cancel()
	for try := 0; ; try++ {
		a, tc, err := c.connect(ctx)
		if err != nil {
			return nil, err
		}
		var conn net.Conn
		via := "quic"
		if a != nil {
			conn, err = c.openStream(ctx, a)
			if errors.Is(err, errStale) && try == 0 {
				continue // the connection ended since it was made: make another
			}
			if err != nil {
				return nil, fmt.Errorf("tunnel to %s:%d over QUIC: %w", target, port, err)
			}
		} else {
			via = "websocket"
			if conn, err = c.upgrade(ctx, tc); err != nil {
				return nil, err
			}
		}
		tun, err := c.request(ctx, conn, via, req, target, port)
		var moved *tunnelwire.Error
		if a != nil && errors.As(err, &moved) && moved.Status == tunnelwire.StatusMoved && try == 0 {
			// The process at the other end was replaced by an upgrade: the
			// next connection reaches the new one. This one stays open for
			// the tunnels it carries, and ends when they do.
			a.moved.Store(true)
			continue
		}
		if a != nil && connectionEnded(err) && ctx.Err() == nil {
			// The connection ended under the request, before any answer
			// (the bastion restarted, or the connection idled out just
			// now): a session it opened ended with it. Try once more, on a
			// new connection.
			a.dead.Store(true)
			if try == 0 {
				continue
			}
		}
		if err != nil {
			return nil, err
		}
		c.mu.Lock()
		c.last = via
		c.mu.Unlock()
		return tun, nil
	}
}

// Connect makes sure the bastion can be reached and says which transport
// Dial will use: it makes the QUIC connection Dial will use, or, when
// only TLS works, a TLS connection it closes again. It checks neither the
// token nor any target.
func (c *Client) Connect(ctx context.Context) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.DialTimeout)
	defer cancel()
	a, tc, err := c.connect(ctx)
	if err != nil {
		return "", err
	}
	if a != nil {
		return "quic", nil
	}
	tc.Close()
	return "websocket", nil
}

// request sends the request on conn and reads the answer.
func (c *Client) request(ctx context.Context, conn net.Conn, via string, req []byte, target string, port uint16) (*Conn, error) {
	// A deadline in the past unblocks the exchange when ctx ends.
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	_, err := conn.Write(req)
	var resp tunnelwire.Response
	if err == nil {
		resp, err = tunnelwire.ReadResponse(conn)
	}
	if !stop() {
		conn.Close()
		return nil, fmt.Errorf("tunnel to %s:%d over %s: no answer from %s: %w", target, port, via, c.host, context.Cause(ctx))
	}
	var se *quic.StreamError
	if errors.As(err, &se) && se.Remote && se.ErrorCode == ErrCodeBusy {
		conn.Close()
		return nil, &tunnelwire.Error{Status: tunnelwire.StatusCapacity, Message: "the bastion has too many tunnel requests waiting: try again in a moment", Target: target, Port: port, Version: tunnelwire.Version}
	}
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("tunnel to %s:%d over %s: %w", target, port, via, err)
	}
	if resp.Status != tunnelwire.StatusOK {
		conn.Close()
		return nil, &tunnelwire.Error{Status: resp.Status, Message: resp.Message, Target: target, Port: port, Version: resp.Version}
	}
	return &Conn{Conn: conn, id: resp.Message, via: via}, nil
}

// connect returns a live QUIC connection or a TLS connection, as the
// transport setting says.
func (c *Client) connect(ctx context.Context) (*quicAttempt, *tls.Conn, error) {
	c.mu.Lock()
	closed := c.closed
	c.mu.Unlock()
	if closed {
		return nil, nil, errors.New("tunnel: client closed")
	}
	switch c.cfg.Transport {
	case "quic":
		a, err := c.connectQUIC(ctx)
		if err != nil {
			return nil, nil, &ReachError{Server: c.host, QUIC: err}
		}
		return a, nil, nil
	case "tcp":
		tc, err := c.dialTLS(ctx)
		if err != nil {
			return nil, nil, &ReachError{Server: c.host, TLS: err}
		}
		return nil, tc, nil
	}
	return c.connectAuto(ctx)
}

// connectQUIC waits for a QUIC connection.
func (c *Client) connectQUIC(ctx context.Context) (*quicAttempt, error) {
	a, err := c.quicAttempt(ctx)
	if err != nil {
		return nil, err
	}
	select {
	case <-a.done.Done():
	case <-ctx.Done():
		return nil, context.Cause(ctx)
	}
	if a.err != nil {
		return nil, a.err
	}
	return a, nil
}

// connectAuto races QUIC and TLS (happy eyeballs): QUIC first, TLS after
// FallbackDelay or at once when QUIC fails; the first to connect wins.
// After a QUIC failure, for QUICRetry, TLS goes first and alone.
func (c *Client) connectAuto(ctx context.Context) (*quicAttempt, *tls.Conn, error) {
	c.mu.Lock()
	q := c.q
	live := q != nil && q.finished() && q.alive()
	skipQUIC := !live && (q == nil && c.cfg.QUICBlocked || !c.quicFailed.IsZero() && time.Since(c.quicFailed) < c.cfg.QUICRetry)
	c.mu.Unlock()
	if live {
		return q, nil, nil
	}
	if skipQUIC {
		tc, terr := c.dialTLS(ctx)
		if terr == nil {
			return nil, tc, nil
		}
		c.logf("TLS to %s failed (%v); trying QUIC again", c.addr, terr)
		a, qerr := c.connectQUIC(ctx)
		if qerr == nil {
			return a, nil, nil
		}
		return nil, nil, &ReachError{Server: c.host, QUIC: qerr, TLS: terr}
	}

	var qerr error
	a, err := c.quicAttempt(ctx)
	if err != nil {
		qerr = err
		a = nil
	}
	tlsCtx, cancelTLS := context.WithCancel(ctx)
	defer cancelTLS()
	if a != nil {
		// A handshake another Dial started counts from its start.
		timer := time.NewTimer(c.cfg.FallbackDelay - time.Since(a.started))
		select {
		case <-a.done.Done():
		case <-timer.C:
		case <-ctx.Done():
			timer.Stop()
			return nil, nil, context.Cause(ctx)
		}
		timer.Stop()
		if a.finished() {
			if a.err == nil {
				return a, nil, nil
			}
			qerr = a.err
		} else {
			// QUIC is slow: start TLS too, and stop it if QUIC wins.
			stop := context.AfterFunc(a.done, func() {
				if a.err == nil {
					cancelTLS()
				}
			})
			defer stop()
		}
	}
	if qerr != nil {
		c.logf("QUIC to %s failed (%v); using TLS on TCP", c.addr, qerr)
	} else {
		c.logf("no QUIC answer from %s after %v; trying TLS on TCP too", c.addr, c.cfg.FallbackDelay)
	}
	tc, terr := c.dialTLS(tlsCtx)
	if a != nil && a.finished() && a.err == nil {
		if tc != nil {
			tc.Close()
		}
		return a, nil, nil // QUIC won
	}
	if terr == nil {
		return nil, tc, nil
	}
	if ctx.Err() != nil {
		return nil, nil, context.Cause(ctx)
	}
	if qerr == nil && a != nil {
		// TLS failed first: QUIC is all that is left.
		select {
		case <-a.done.Done():
		case <-ctx.Done():
			return nil, nil, context.Cause(ctx)
		}
		if a.err == nil {
			return a, nil, nil
		}
		qerr = a.err
	}
	return nil, nil, &ReachError{Server: c.host, QUIC: qerr, TLS: terr}
}

// quicAttempt returns the live QUIC connection, the handshake under way,
// or a new handshake, started on a socket made here.
func (c *Client) quicAttempt(ctx context.Context) (*quicAttempt, error) {
	c.startMu.Lock()
	defer c.startMu.Unlock()
	c.mu.Lock()
	a := c.q
	c.mu.Unlock()
	if a != nil && (!a.finished() || a.alive()) {
		return a, nil
	}
	raddr, err := c.resolveUDP(ctx)
	if err != nil {
		return nil, err
	}
	network := "udp4"
	if raddr.IP.To4() == nil {
		network = "udp6"
	}
	udp, err := net.ListenUDP(network, nil)
	if err != nil {
		return nil, err
	}
	// Downloads arrive as the bastion's GSO trains: read them whole.
	tr := &quic.Transport{Conn: udpgro.NewConn(udp)}
	a = &quicAttempt{started: time.Now()}
	a.done, a.fin = context.WithCancel(context.Background())
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		udp.Close()
		return nil, errors.New("tunnel: client closed")
	}
	c.q = a
	c.wg.Add(1)
	c.mu.Unlock()
	go func() {
		defer c.wg.Done()
		hctx, cancel := context.WithTimeout(c.ctx, quicHandshakeLimit)
		conn, err := tr.Dial(hctx, raddr, c.quicTLS, c.quicCfg)
		cancel()
		if err != nil {
			tr.Close()
			udp.Close()
			c.mu.Lock()
			c.quicFailed = time.Now()
			c.mu.Unlock()
			if c.ctx.Err() == nil && udpBlocked(err) {
				c.noteQUIC(true)
			}
			a.err = err
			a.fin()
			return
		}
		a.conn = conn
		a.fin()
		c.noteQUIC(false)
		// The socket lives as long as the connection, which lives no
		// longer than the client.
		select {
		case <-conn.Context().Done():
		case <-c.ctx.Done():
			conn.CloseWithError(0, "")
		}
		tr.Close()
		udp.Close()
	}()
	return a, nil
}

// resolveUDP is the address QUIC dials.
func (c *Client) resolveUDP(ctx context.Context) (*net.UDPAddr, error) {
	host, port, err := net.SplitHostPort(c.addr)
	if err != nil {
		return nil, err
	}
	p, err := net.DefaultResolver.LookupPort(ctx, "udp", port)
	if err != nil {
		return nil, err
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		return net.UDPAddrFromAddrPort(netip.AddrPortFrom(ip.Unmap(), uint16(p))), nil
	}
	ips, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
	if err != nil {
		return nil, err
	}
	if len(ips) == 0 {
		return nil, fmt.Errorf("%s has no address", host)
	}
	return net.UDPAddrFromAddrPort(netip.AddrPortFrom(ips[0].Unmap(), uint16(p))), nil
}

// openStream opens a stream on a's connection; errStale when that
// connection has ended.
func (c *Client) openStream(ctx context.Context, a *quicAttempt) (net.Conn, error) {
	s, err := a.conn.OpenStreamSync(ctx)
	if err != nil {
		if ctx.Err() == nil && (a.conn.Context().Err() != nil || connectionEnded(err)) {
			a.dead.Store(true)
			return nil, fmt.Errorf("%w: %w", errStale, err)
		}
		return nil, err
	}
	a.used.Store(true)
	return NewStreamConn(a.conn, s), nil
}

// dialTLS makes a TLS connection to the bastion, HTTP/1.1 only.
func (c *Client) dialTLS(ctx context.Context) (*tls.Conn, error) {
	raw, err := (&net.Dialer{}).DialContext(ctx, "tcp", c.addr)
	if err != nil {
		return nil, err
	}
	tc := tls.Client(raw, c.wsTLS)
	if err := tc.HandshakeContext(ctx); err != nil {
		raw.Close()
		return nil, err
	}
	return tc, nil
}

// upgrade makes tc a WebSocket on tunnelwire.WebSocketPath.
func (c *Client) upgrade(ctx context.Context, tc *tls.Conn) (net.Conn, error) {
	var used atomic.Bool
	rc := newRecordConn(tc)
	var protos http.Protocols
	protos.SetHTTP1(true)
	tr := &http.Transport{
		DialTLSContext: func(context.Context, string, string) (net.Conn, error) {
			if used.Swap(true) {
				return nil, errors.New("tunnel: one connection per WebSocket")
			}
			return rc, nil
		},
		Protocols:              &protos,
		DisableCompression:     true,
		MaxResponseHeaderBytes: 64 << 10,
	}
	ws, resp, err := websocket.Dial(ctx, c.wsURL, &websocket.DialOptions{
		HTTPClient:      &http.Client{Transport: tr},
		Subprotocols:    []string{tunnelwire.Subprotocol},
		CompressionMode: websocket.CompressionDisabled,
	})
	tr.CloseIdleConnections()
	if err != nil {
		tc.Close()
		if resp != nil && resp.StatusCode != http.StatusSwitchingProtocols {
			err = fmt.Errorf("the bastion refused the WebSocket on %s: %s", tunnelwire.WebSocketPath, resp.Status)
		}
		return nil, &ReachError{Server: c.host, TLS: err}
	}
	if ws.Subprotocol() != tunnelwire.Subprotocol {
		ws.CloseNow()
		return nil, &ReachError{Server: c.host, TLS: fmt.Errorf("the bastion does not speak %s on %s", tunnelwire.Subprotocol, tunnelwire.WebSocketPath)}
	}
	conn := NewWSConn(c.ctx, ws, tc.LocalAddr(), tc.RemoteAddr()).(*wsConn)
	conn.flush = rc.Flush
	conn.closing = &c.wsClosing
	return conn, nil
}

// Close closes the QUIC connection, and with it every tunnel on it, and
// ends the WebSocket tunnels (a call blocked on one fails and closes it,
// and later calls fail). It first gives the FINs of tunnels closed just
// before a moment (three round trips, at most a second) to leave: QUIC
// has no close that waits for them.
func (c *Client) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	a := c.q
	// TLS carried the tunnels while QUIC, started first, still has no
	// connection: UDP does not get through.
	blocked := a != nil && !a.finished() && c.last == "websocket"
	c.mu.Unlock()
	if blocked {
		c.noteQUIC(true)
	}
	if a != nil && a.finished() && a.alive() {
		if a.used.Load() {
			grace := min(quicCloseGrace, 3*a.conn.ConnectionStats().SmoothedRTT+10*time.Millisecond)
			t := time.NewTimer(grace)
			select {
			case <-t.C:
			case <-a.conn.Context().Done():
			}
			t.Stop()
		}
		a.conn.CloseWithError(0, "")
	}
	closed := make(chan struct{})
	go func() {
		c.wsClosing.Wait()
		close(closed)
	}()
	t := time.NewTimer(wsCloseGrace)
	select {
	case <-closed:
	case <-t.C:
	}
	t.Stop()
	c.cancel()
	c.wg.Wait()
	return nil
}
