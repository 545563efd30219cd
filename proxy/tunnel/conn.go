package tunnel

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"time"

	"github.com/coder/websocket"
	"github.com/quic-go/quic-go"
)

// NewStreamConn is a QUIC stream as a net.Conn with CloseWrite.
func NewStreamConn(c *quic.Conn, s *quic.Stream) net.Conn { return &streamConn{c: c, s: s} }

type streamConn struct {
	c *quic.Conn
	s *quic.Stream
}

func (c *streamConn) Read(p []byte) (int, error)  { return c.s.Read(p) }
func (c *streamConn) Write(p []byte) (int, error) { return c.s.Write(p) }

// CloseWrite sends the stream's FIN: the peer reads to its end.
func (c *streamConn) CloseWrite() error { return c.s.Close() }

// Close ends both directions: a FIN after what was written (never a reset,
// which could drop data still in flight) and no more reading.
func (c *streamConn) Close() error {
	err := c.s.Close()
	c.s.CancelRead(0)
	return err
}

func (c *streamConn) LocalAddr() net.Addr                { return c.c.LocalAddr() }
func (c *streamConn) RemoteAddr() net.Addr               { return c.c.RemoteAddr() }
func (c *streamConn) SetDeadline(t time.Time) error      { return c.s.SetDeadline(t) }
func (c *streamConn) SetReadDeadline(t time.Time) error  { return c.s.SetReadDeadline(t) }
func (c *streamConn) SetWriteDeadline(t time.Time) error { return c.s.SetWriteDeadline(t) }

// AcceptOptions are the server's WebSocket options for tunnels.
func AcceptOptions() *websocket.AcceptOptions {
	return &websocket.AcceptOptions{Subprotocols: []string{Subprotocol}, CompressionMode: websocket.CompressionDisabled}
}

// maxWSMessage bounds one message each way.
const maxWSMessage = 256 << 10

// NewWSConn is a WebSocket as a net.Conn with CloseWrite: binary messages
// carry the bytes and an empty one ends a direction. Deadlines are fatal,
// as the WebSocket library closes the connection when a read or write is
// cancelled.
func NewWSConn(ctx context.Context, c *websocket.Conn, local, remote net.Addr) net.Conn {
	c.SetReadLimit(maxWSMessage + 1024)
	return &wsConn{ctx: ctx, c: c, local: local, remote: remote}
}

type wsConn struct {
	ctx           context.Context
	c             *websocket.Conn
	local, remote net.Addr

	rmu     sync.Mutex // serializes reads and guards the reading state
	r       io.Reader  // the message being read
	rcancel context.CancelFunc
	fresh   bool // nothing read yet from r
	eof     bool

	wmu sync.Mutex // serializes writes

	deadlineMu     sync.Mutex // guards the deadlines
	rdline, wdline time.Time

	closeOnce sync.Once
}

type timeoutError struct{}

func (timeoutError) Error() string   { return "i/o timeout" }
func (timeoutError) Timeout() bool   { return true }
func (timeoutError) Temporary() bool { return true }

func (w *wsConn) opCtx(deadline time.Time) (context.Context, context.CancelFunc) {
	if deadline.IsZero() {
		return w.ctx, func() {}
	}
	return context.WithDeadline(w.ctx, deadline)
}

func (w *wsConn) Read(p []byte) (int, error) {
	w.rmu.Lock()
	defer w.rmu.Unlock()
	if w.eof {
		return 0, io.EOF
	}
	for {
		if w.r == nil {
			w.deadlineMu.Lock()
			dl := w.rdline
			w.deadlineMu.Unlock()
			// The library reads the whole message under this context, so
			// it lives until the message ends.
			ctx, cancel := w.opCtx(dl)
			typ, r, err := w.c.Reader(ctx)
			if err != nil {
				cancel()
				if ctx.Err() == context.DeadlineExceeded {
					return 0, timeoutError{}
				}
				return 0, err
			}
			if typ != websocket.MessageBinary {
				cancel()
				w.c.Close(websocket.StatusUnsupportedData, "binary messages only")
				return 0, errors.New("tunnel: a text message on the tunnel")
			}
			w.r, w.rcancel, w.fresh = r, cancel, true
		}
		n, err := w.r.Read(p)
		fresh := w.fresh
		w.fresh = false
		if err == io.EOF {
			w.r = nil
			w.rcancel()
			if n == 0 && fresh {
				w.eof = true // the empty message: the peer's end of stream
				return 0, io.EOF
			}
			if n == 0 {
				continue
			}
			err = nil
		}
		if err != nil {
			w.rcancel()
		}
		return n, err
	}
}

func (w *wsConn) Write(p []byte) (int, error) {
	w.wmu.Lock()
	defer w.wmu.Unlock()
	written := 0
	for len(p) > 0 {
		chunk := p[:min(len(p), maxWSMessage)]
		if err := w.write(chunk); err != nil {
			return written, err
		}
		written += len(chunk)
		p = p[len(chunk):]
	}
	return written, nil
}

func (w *wsConn) write(msg []byte) error {
	w.deadlineMu.Lock()
	dl := w.wdline
	w.deadlineMu.Unlock()
	ctx, cancel := w.opCtx(dl)
	defer cancel()
	err := w.c.Write(ctx, websocket.MessageBinary, msg)
	if err != nil && ctx.Err() == context.DeadlineExceeded {
		return timeoutError{}
	}
	return err
}

// CloseWrite sends the empty message that ends this direction.
func (w *wsConn) CloseWrite() error {
	w.wmu.Lock()
	defer w.wmu.Unlock()
	return w.write(nil)
}

// Close closes the WebSocket. The closing handshake runs in the background
// for up to a second, so that Close never stalls the caller.
func (w *wsConn) Close() error {
	w.closeOnce.Do(func() {
		go func() {
			t := time.AfterFunc(time.Second, func() { w.c.CloseNow() })
			w.c.Close(websocket.StatusNormalClosure, "")
			t.Stop()
		}()
	})
	return nil
}

func (w *wsConn) LocalAddr() net.Addr  { return w.local }
func (w *wsConn) RemoteAddr() net.Addr { return w.remote }

func (w *wsConn) SetDeadline(t time.Time) error {
	w.SetReadDeadline(t)
	return w.SetWriteDeadline(t)
}

// SetReadDeadline applies to the next Read; a Read already blocked keeps
// the deadline it started with.
func (w *wsConn) SetReadDeadline(t time.Time) error {
	// Not under rmu: a Read may hold it while blocked.
	w.deadlineMu.Lock()
	w.rdline = t
	w.deadlineMu.Unlock()
	return nil
}

func (w *wsConn) SetWriteDeadline(t time.Time) error {
	w.deadlineMu.Lock()
	w.wdline = t
	w.deadlineMu.Unlock()
	return nil
}
