// Package gather has the TLS records of one write leave in one system call.
//
// crypto/tls writes each record of at most 16 KiB to its connection on its
// own, and a WebSocket library above it writes a frame's header and first
// bytes apart from the rest: relaying 32 KiB to a browser or a tunnel
// client took three write(2) calls, each a wake-up of the peer's receive
// path. A Conn under the TLS connection holds the records written between
// Hold and Flush and sends them in one call.
package gather

import (
	"context"
	"net"
	"sync"
)

// maxHeld bounds what a Conn holds before it writes: four full TLS records
// and their overhead.
const maxHeld = 4 * (16<<10 + 256)

var buffers = sync.Pool{New: func() any { b := make([]byte, 0, maxHeld); return &b }}

// Conn is a net.Conn whose writes between Hold and Flush are gathered. It
// holds no buffer outside that span: an idle connection costs a mutex and
// a flag.
type Conn struct {
	net.Conn

	// mu is held by every write to the connection under, so that what
	// Flush sends leaves before any later write.
	mu      sync.Mutex
	holding bool
	held    *[]byte // from buffers while holding and not empty
}

// NewConn wraps c.
func NewConn(c net.Conn) *Conn { return &Conn{Conn: c} }

// NetConn returns the connection under c.
func (c *Conn) NetConn() net.Conn { return c.Conn }

// Hold has the writes that follow gathered until Flush.
func (c *Conn) Hold() {
	c.mu.Lock()
	c.holding = true
	c.mu.Unlock()
}

// Flush sends what was gathered since Hold, in one write, and ends the
// gathering.
func (c *Conn) Flush() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.holding = false
	return c.sendLocked()
}

// Write sends p, or keeps it to send with the others after Hold. A write
// that would overflow what may be held sends what is held first.
func (c *Conn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.holding {
		return c.Conn.Write(p)
	}
	if c.held != nil && len(*c.held)+len(p) > maxHeld {
		if err := c.sendLocked(); err != nil {
			return 0, err
		}
	}
	if len(p) > maxHeld {
		return c.Conn.Write(p)
	}
	if c.held == nil {
		c.held = buffers.Get().(*[]byte)
	}
	*c.held = append(*c.held, p...)
	return len(p), nil
}

// sendLocked writes what is held and gives the buffer back; mu is held.
func (c *Conn) sendLocked() error {
	if c.held == nil {
		return nil
	}
	b := c.held
	c.held = nil
	_, err := c.Conn.Write(*b)
	*b = (*b)[:0]
	buffers.Put(b)
	return err
}

// Listener wraps the connections it accepts in a Conn.
type Listener struct{ net.Listener }

// Accept waits for the next connection and wraps it.
func (l Listener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return NewConn(c), nil
}

type contextKey struct{}

// NewContext returns ctx carrying c, for the handlers of the requests that
// arrive on c (an http.Server's ConnContext).
func NewContext(ctx context.Context, c *Conn) context.Context {
	return context.WithValue(ctx, contextKey{}, c)
}

// FromContext returns the Conn NewContext put in ctx, or nil.
func FromContext(ctx context.Context) *Conn {
	c, _ := ctx.Value(contextKey{}).(*Conn)
	return c
}

// Messages wraps w so that each of its Writes, one WebSocket message or
// more, leaves c in one write: c is the connection under the TLS
// connection that w writes to. With c nil it returns w.
func Messages(w net.Conn, c *Conn) net.Conn {
	if c == nil {
		return w
	}
	return &messageConn{Conn: w, under: c}
}

type messageConn struct {
	net.Conn
	under *Conn
}

func (m *messageConn) Write(p []byte) (int, error) {
	m.under.Hold()
	n, err := m.Conn.Write(p)
	if ferr := m.under.Flush(); err == nil {
		err = ferr
	}
	return n, err
}
