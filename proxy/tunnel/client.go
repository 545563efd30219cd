package tunnel

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/coder/websocket"
	"github.com/quic-go/quic-go"
)

// ClientConfig configures a Client.
type ClientConfig struct {
	// Server is host[:port] (port 443 by default): the name in TLS and
	// QUIC handshakes and in the Host header. Required.
	Server string
	// Address, when set, is dialled instead of resolving Server.
	Address string
	// TLS holds the roots (or InsecureSkipVerify); the client sets the
	// server name and protocols on a copy. Nil: the system roots.
	TLS *tls.Config
	// Token is the API token (scope tunnel). Required.
	Token string
	// Transport is "auto" (default: QUIC, falling back to TLS when UDP is
	// blocked), "quic" or "tcp".
	Transport string
	// FallbackDelay is how long auto waits for a QUIC handshake before it
	// takes the TLS fallback. Default 1s.
	FallbackDelay time.Duration
	// Logf, when set, is told which transport is used and why.
	Logf func(format string, args ...any)
}

// Client opens tunnels. It keeps one QUIC connection for all of them and
// is safe for concurrent use.
type Client struct {
	cfg  ClientConfig
	host string
	addr string // host:port dialled

	mu         sync.Mutex // guards the fields below
	qconn      *quic.Conn
	qtr        *quic.Transport
	qudp       *net.UDPConn
	quicFailed time.Time // when QUIC last failed in auto mode
	last       string
	closed     bool
}

// NewClient checks cfg and returns a Client; nothing is dialled yet.
func NewClient(cfg ClientConfig) (*Client, error) {
	if cfg.Server == "" || cfg.Token == "" {
		return nil, errors.New("tunnel: Server and Token are required")
	}
	switch cfg.Transport {
	case "":
		cfg.Transport = "auto"
	case "auto", "quic", "tcp":
	default:
		return nil, fmt.Errorf("tunnel: transport %q: use auto, quic or tcp", cfg.Transport)
	}
	if cfg.FallbackDelay == 0 {
		cfg.FallbackDelay = time.Second
	}
	if cfg.TLS == nil {
		cfg.TLS = &tls.Config{}
	}
	host, port, err := net.SplitHostPort(cfg.Server)
	if err != nil {
		host, port = cfg.Server, "443"
	}
	c := &Client{cfg: cfg, host: host, addr: net.JoinHostPort(host, port)}
	if cfg.Address != "" {
		c.addr = cfg.Address
	}
	return c, nil
}

func (c *Client) logf(format string, args ...any) {
	if c.cfg.Logf != nil {
		c.cfg.Logf(format, args...)
	}
}

// Transport is what the last successful Dial used: "quic" or "websocket".
func (c *Client) Transport() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.last
}

// Conn is a tunnelled connection.
type Conn struct {
	net.Conn
	id string
}

// SessionID is the bastion's ID for the session, as its admins see it.
func (c *Conn) SessionID() string { return c.id }

// CloseWrite ends the direction towards the target.
func (c *Conn) CloseWrite() error { return c.Conn.(interface{ CloseWrite() error }).CloseWrite() }

// Dial opens a tunnel to target's port. A refusal is *Error. Every socket
// is made in the calling goroutine.
func (c *Client) Dial(ctx context.Context, target string, port uint16) (*Conn, error) {
	req, err := Request{Token: c.cfg.Token, Target: target, Port: port}.Marshal()
	if err != nil {
		return nil, err
	}
	conn, via, err := c.connect(ctx)
	if err != nil {
		return nil, err
	}
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	resp, err := func() (Response, error) {
		if _, err := conn.Write(req); err != nil {
			return Response{}, err
		}
		return ReadResponse(conn)
	}()
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("tunnel to %s:%d over %s: %w", target, port, via, err)
	}
	if resp.Status != StatusOK {
		conn.Close()
		return nil, &Error{Status: resp.Status, Message: resp.Message, Target: target, Port: port}
	}
	conn.SetDeadline(time.Time{})
	c.mu.Lock()
	c.last = via
	c.mu.Unlock()
	return &Conn{Conn: conn, id: resp.Message}, nil
}

// connect returns a fresh transport conn (a QUIC stream or a WebSocket).
func (c *Client) connect(ctx context.Context) (net.Conn, string, error) {
	switch c.cfg.Transport {
	case "quic":
		conn, err := c.stream(ctx)
		if err != nil {
			return nil, "", fmt.Errorf("cannot reach %s over QUIC: %w", c.host, err)
		}
		return conn, "quic", nil
	case "tcp":
		conn, err := c.webSocket(ctx)
		if err != nil {
			return nil, "", fmt.Errorf("cannot reach %s over TLS: %w", c.host, err)
		}
		return conn, "websocket", nil
	}
	c.mu.Lock()
	tryQUIC := c.quicFailed.IsZero() || time.Since(c.quicFailed) > time.Minute || c.qconn != nil
	c.mu.Unlock()
	var qerr error
	if tryQUIC {
		qctx, cancel := context.WithTimeout(ctx, c.cfg.FallbackDelay)
		conn, err := c.stream(qctx)
		cancel()
		if err == nil {
			return conn, "quic", nil
		}
		qerr = err
		c.mu.Lock()
		c.quicFailed = time.Now()
		c.mu.Unlock()
		c.logf("QUIC to %s failed (%v); using TLS on TCP", c.addr, err)
	}
	conn, err := c.webSocket(ctx)
	if err != nil {
		if qerr != nil {
			return nil, "", fmt.Errorf("cannot reach %s: QUIC: %v; TLS: %w", c.host, qerr, err)
		}
		return nil, "", fmt.Errorf("cannot reach %s over TLS: %w", c.host, err)
	}
	return conn, "websocket", nil
}

func (c *Client) tlsConfig(protos ...string) *tls.Config {
	t := c.cfg.TLS.Clone()
	t.ServerName = c.host
	t.NextProtos = protos
	if t.MinVersion == 0 {
		t.MinVersion = tls.VersionTLS12
	}
	return t
}

// stream opens a stream on the QUIC connection, dialling it first when
// there is none. Concurrent callers share one handshake.
func (c *Client) stream(ctx context.Context) (net.Conn, error) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil, errors.New("tunnel: client closed")
	}
	qc := c.qconn
	if qc == nil || qc.Context().Err() != nil {
		var err error
		qc, err = c.dialQUIC(ctx)
		if err != nil {
			c.mu.Unlock()
			return nil, err
		}
	}
	c.mu.Unlock()
	s, err := qc.OpenStreamSync(ctx)
	if err != nil {
		return nil, err
	}
	return NewStreamConn(qc, s), nil
}

// dialQUIC makes the QUIC connection; c.mu is held.
func (c *Client) dialQUIC(ctx context.Context) (*quic.Conn, error) {
	c.closeQUIC()
	raddr, err := net.ResolveUDPAddr("udp", c.addr)
	if err != nil {
		return nil, err
	}
	udp, err := net.ListenUDP("udp", nil)
	if err != nil {
		return nil, err
	}
	tr := &quic.Transport{Conn: udp}
	qc, err := tr.Dial(ctx, raddr, c.tlsConfig(ALPN), &quic.Config{
		Versions:             []quic.Version{quic.Version1},
		HandshakeIdleTimeout: 5 * time.Second,
		MaxIdleTimeout:       time.Minute,
		KeepAlivePeriod:      20 * time.Second,
	})
	if err != nil {
		tr.Close()
		udp.Close()
		return nil, err
	}
	c.qtr, c.qconn, c.qudp = tr, qc, udp
	return qc, nil
}

// webSocket opens a WebSocket to the bastion's /tunnel over TLS on TCP,
// HTTP/1.1 only.
func (c *Client) webSocket(ctx context.Context) (net.Conn, error) {
	// The TCP connection is made here, in the caller's goroutine, and
	// handed to the HTTP client.
	raw, err := (&net.Dialer{}).DialContext(ctx, "tcp", c.addr)
	if err != nil {
		return nil, err
	}
	used := false
	tr := &http.Transport{
		TLSClientConfig:   c.tlsConfig("http/1.1"),
		ForceAttemptHTTP2: false,
		DialContext: func(context.Context, string, string) (net.Conn, error) {
			if used {
				return nil, errors.New("tunnel: one connection per WebSocket")
			}
			used = true
			return raw, nil
		},
	}
	u := url.URL{Scheme: "https", Host: c.cfg.Server, Path: WebSocketPath}
	ws, resp, err := websocket.Dial(ctx, u.String(), &websocket.DialOptions{
		HTTPClient:      &http.Client{Transport: tr},
		Subprotocols:    []string{Subprotocol},
		CompressionMode: websocket.CompressionDisabled,
	})
	if err != nil {
		raw.Close()
		if resp != nil {
			return nil, fmt.Errorf("the bastion answered %s", resp.Status)
		}
		return nil, err
	}
	return NewWSConn(context.Background(), ws, raw.LocalAddr(), raw.RemoteAddr()), nil
}

// Close ends the QUIC connection and every tunnel on it.
func (c *Client) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	c.closeQUIC()
	return nil
}

// closeQUIC ends the QUIC connection and its socket; c.mu is held.
func (c *Client) closeQUIC() {
	if c.qconn != nil {
		c.qconn.CloseWithError(0, "")
	}
	if c.qtr != nil {
		c.qtr.Close()
	}
	if c.qudp != nil {
		c.qudp.Close()
	}
	c.qconn, c.qtr, c.qudp = nil, nil, nil
}
