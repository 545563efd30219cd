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
// holds a buffer only while it gathers or queues: an idle connection costs
// a mutex and a few flags.
//
// One goroutine at a time writes to the connection under (the sender), and
// the bytes leave in the order of the writes that gave them. A write that
// comes while another goroutine sends is queued behind it and returns at
// once: the TLS connection's close_notify, written while a Flush is blocked
// on a peer that reads nothing, must not wait for it, so that the TLS
// connection's Close reaches the socket at once and ends the Flush, as it
// ends a blocked Write of the TLS connection.
type Conn struct {
	net.Conn

	mu      sync.Mutex
	holding bool    // between Hold and Flush
	sending bool    // a goroutine writes to the connection under, mu released
	held    *[]byte // written, not sent yet (from buffers); nil when empty
	err     error   // the first failed send: every later write fails with it
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

// Flush ends the gathering and sends what was gathered, in one write, or
// leaves it to the goroutine that is sending, behind which it is queued.
func (c *Conn) Flush() error {
	c.mu.Lock()
	c.holding = false
	if c.sending || c.held == nil {
		err := c.err
		c.mu.Unlock()
		return err
	}
	c.sending = true
	return c.sendLocked(nil)
}

// Write sends p, or keeps it to send with the others after Hold, or queues
// it behind the goroutine that is sending. A write that would overflow what
// may be held sends what is held first.
func (c *Conn) Write(p []byte) (int, error) {
	c.mu.Lock()
	if c.err != nil {
		err := c.err
		c.mu.Unlock()
		return 0, err
	}
	if !c.holding && !c.sending && c.held == nil {
		c.sending = true
		c.mu.Unlock()
		n, err := c.Conn.Write(p)
		c.mu.Lock()
		if serr := c.sendLocked(err); err == nil {
			err = serr
		}
		return n, err
	}
	if !c.sending && c.held != nil && len(*c.held)+len(p) > maxHeld {
		c.sending = true
		if err := c.sendLocked(nil); err != nil {
			return 0, err
		}
		c.mu.Lock()
	}
	if c.held == nil {
		c.held = buffers.Get().(*[]byte)
	}
	*c.held = append(*c.held, p...)
	c.mu.Unlock()
	return len(p), nil
}

// sendLocked is the sender's loop: mu is held and sending set by the
// caller, err is what the caller's own write returned. It sends what is
// held until nothing is, then ends sending, releases mu and returns the
// first error.
func (c *Conn) sendLocked(err error) error {
	for err == nil && c.held != nil {
		b := c.held
		c.held = nil
		c.mu.Unlock()
		_, err = c.Conn.Write(*b)
		*b = (*b)[:0]
		buffers.Put(b)
		c.mu.Lock()
	}
	if err != nil && c.err == nil {
		c.err = err
	}
	if c.err != nil && c.held != nil {
		*c.held = (*c.held)[:0] // queued behind a failed send: it cannot leave
		buffers.Put(c.held)
		c.held = nil
	}
	c.sending = false
	err = c.err
	c.mu.Unlock()
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
