package tunnel

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/coder/websocket"
	"github.com/quic-go/quic-go"

	"github.com/bastiond/bastiond/api/tunnelwire"
)

// closeCode is the QUIC stream error code of a Close that had to abort a
// direction.
const closeCode quic.StreamErrorCode = 0

// ErrCodeBusy is the QUIC stream error code with which a server resets,
// in both directions and before reading it, a stream it has no room for:
// the connection or the bastion has as many tunnel requests waiting as it
// may. Nothing was read or opened; the client may try again.
const ErrCodeBusy quic.StreamErrorCode = 1

// ErrCodeBadTokens is the QUIC application error code with which a server
// closes a connection that sent too many requests with a bad token.
const ErrCodeBadTokens quic.ApplicationErrorCode = 1

// ErrCodeUnauthenticated is the QUIC application error code with which a
// server closes a connection that has not sent a valid token yet, to make
// room for new ones when it holds as many such connections as it may. A
// client connects again when it has a tunnel to open.
const ErrCodeUnauthenticated quic.ApplicationErrorCode = 2

// NewStreamConn is a QUIC stream as a net.Conn with CloseWrite (the
// stream's FIN). Its addresses are the QUIC connection's and its
// deadlines the stream's.
//
// Close sends the FIN after what was written and stops reading (the peer
// is told with STOP_SENDING). quic-go does not allow closing a stream
// while a Write is blocked on it; a Close that meets a blocked Write
// resets the send direction instead, which unblocks the Write.
func NewStreamConn(c *quic.Conn, s *quic.Stream) net.Conn {
	return &streamConn{conn: c, str: s}
}

type streamConn struct {
	conn *quic.Conn
	str  *quic.Stream

	wmu       sync.Mutex // held by Write and CloseWrite
	closed    atomic.Bool
	closeOnce sync.Once
	carried   bool // Read has returned bytes; only Read's goroutine uses it
}

var _ net.Conn = (*streamConn)(nil)

// Read maps the peer closing its whole connection without an error (code
// 0, as a client that exits does, its FINs possibly still in flight) to
// the end of a stream that has carried bytes. (Before any byte, the error
// stays: a client tells a connection that died from a refusal by it.)
func (c *streamConn) Read(p []byte) (int, error) {
	n, err := c.str.Read(p)
	if n > 0 {
		c.carried = true
	}
	var ae *quic.ApplicationError
	switch {
	case err == nil || err == io.EOF:
	case c.closed.Load():
		err = net.ErrClosed
	case c.carried && errors.As(err, &ae) && ae.Remote && ae.ErrorCode == 0:
		err = io.EOF
	}
	return n, err
}

func (c *streamConn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	n, err := c.str.Write(p)
	switch {
	case err == nil:
	case c.closed.Load():
		err = net.ErrClosed
	case peerClosedStream(err):
		err = &PeerClosedError{Err: err}
	}
	return n, err
}

// PeerClosedError is a Write that failed because the peer closed the
// connection (a QUIC stream stopped or a connection closed with code 0, a
// WebSocket the peer closed): the tunnel's counterpart of a TCP socket's
// broken pipe. It is syscall.EPIPE for errors.Is. Whether that is a normal
// end depends on what came before: a peer that had ended its own stream
// first finished, one that had not cut the stream.
type PeerClosedError struct{ Err error }

func (e *PeerClosedError) Error() string {
	return "tunnel: the peer closed the connection: " + e.Err.Error()
}
func (e *PeerClosedError) Unwrap() []error { return []error{e.Err, syscall.EPIPE} }

// peerClosedStream says whether err, from a stream's Write, is the peer
// closing: STOP_SENDING with closeCode (its Close), or its whole
// connection closed with code 0 (a client that exits).
func peerClosedStream(err error) bool {
	var se *quic.StreamError
	var ae *quic.ApplicationError
	return errors.As(err, &se) && se.Remote && se.ErrorCode == closeCode ||
		errors.As(err, &ae) && ae.Remote && ae.ErrorCode == 0
}

// CloseWrite sends the stream's FIN: the peer reads to the end of what
// was written, then io.EOF.
func (c *streamConn) CloseWrite() error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return c.str.Close()
}

func (c *streamConn) Close() error {
	c.closeOnce.Do(func() {
		c.closed.Store(true)
		c.str.CancelRead(closeCode)
		if c.wmu.TryLock() {
			c.str.Close()
			c.wmu.Unlock()
		} else {
			c.str.CancelWrite(closeCode)
		}
	})
	return nil
}

func (c *streamConn) LocalAddr() net.Addr                { return c.conn.LocalAddr() }
func (c *streamConn) RemoteAddr() net.Addr               { return c.conn.RemoteAddr() }
func (c *streamConn) SetDeadline(t time.Time) error      { return c.str.SetDeadline(t) }
func (c *streamConn) SetReadDeadline(t time.Time) error  { return c.str.SetReadDeadline(t) }
func (c *streamConn) SetWriteDeadline(t time.Time) error { return c.str.SetWriteDeadline(t) }

// AcceptOptions are the options a server passes to websocket.Accept for
// GET WebSocketPath: the tunnel's subprotocol, and no compression (the
// relayed bytes are mostly encrypted already, and a compressing conn would
// hold a flate dictionary and a compressor for its whole life).
//
// A client that did not offer tunnelwire.Subprotocol is still accepted by the
// library; the conn NewWSConn makes of it fails its first Read with a
// *tunnelwire.ProtocolError, which tunnelwire.ReadRequest passes on, so the server answers
// tunnelwire.StatusBadRequest.
func AcceptOptions() *websocket.AcceptOptions {
	return &websocket.AcceptOptions{
		Subprotocols:    []string{tunnelwire.Subprotocol},
		CompressionMode: websocket.CompressionDisabled,
	}
}

const (
	// MaxWSMessage is the largest WebSocket message either side may send;
	// a larger one ends the connection.
	MaxWSMessage = 1 << 20
	// wsWriteChunk is the largest message Write sends.
	wsWriteChunk = 256 << 10
)

// errWriteAfterCloseWrite is a Write after CloseWrite.
var errWriteAfterCloseWrite = errors.New("tunnel: write after CloseWrite")

// NewWSConn is a WebSocket as a net.Conn with CloseWrite. Binary messages
// carry the bytes (a Write is one message, or several of at most 256 KiB);
// an empty binary message ends a direction: CloseWrite sends it and Read
// returns io.EOF once it has read it. A Write of nothing sends nothing. A
// text message, or a message over MaxWSMessage, ends the connection.
//
// ctx is passed to every read and write of the WebSocket: once it is done
// they fail, and one that is blocked closes the connection. A server
// passes context.Background(), which costs nothing per call. local and
// remote are what LocalAddr and RemoteAddr return.
//
// Deadlines are those of net.Conn with one difference, which comes from
// the WebSocket library: a deadline that passes while a Read or Write is
// blocked closes the whole connection (the call returns
// os.ErrDeadlineExceeded). A deadline that passes while no call is
// blocked only makes the calls fail until it is moved.
//
// Close closes the WebSocket with StatusNormalClosure, in the background:
// the library waits up to five seconds for the peer's answer, and a Read
// blocked meanwhile returns when it comes. With a Write blocked (a peer
// that reads nothing), Close drops the connection at once instead. A peer
// that closes the WebSocket before its end-of-stream message makes Read
// fail with an error wrapping io.ErrUnexpectedEOF: the stream was cut.
//
// Idle, a conn costs the library's per-connection state (about 2 KiB) and
// the reader and writer buffers it was made with (on a server, net/http's
// 4 KiB each); this adapter adds a few hundred bytes and allocates nothing
// while a Read waits.
func NewWSConn(ctx context.Context, c *websocket.Conn, local, remote net.Addr) net.Conn {
	c.SetReadLimit(MaxWSMessage)
	w := &wsConn{ctx: ctx, ws: c, local: local, remote: remote, badProto: c.Subprotocol() != tunnelwire.Subprotocol}
	if w.local == nil {
		w.local = wsAddr{}
	}
	if w.remote == nil {
		w.remote = wsAddr{}
	}
	return w
}

// Gatherer is the connection under a server's TLS connection when it can
// send the records of one message in one write (gather.Conn).
type Gatherer interface {
	Hold()
	Flush() error
}

// GatherWrites has each Write of c, a conn of NewWSConn, send its messages'
// records through g in one write: g is the connection under the TLS
// connection that carries the WebSocket. It returns c.
func GatherWrites(c net.Conn, g Gatherer) net.Conn {
	if w, ok := c.(*wsConn); ok && g != nil {
		w.hold, w.flush = g.Hold, g.Flush
	}
	return c
}

type wsConn struct {
	ctx           context.Context
	ws            *websocket.Conn
	local, remote net.Addr
	badProto      bool // the peer did not agree on tunnelwire.Subprotocol

	// read.mu is held by Read and guards msg and eof.
	read wsDirection
	msg  io.Reader // the message being read; nil between messages
	eof  bool      // the peer's end-of-stream message was read

	// write.mu is held by Write and CloseWrite and guards wroteEOF.
	write    wsDirection
	wroteEOF bool

	closed    atomic.Bool
	closeOnce sync.Once

	// flush, when set, sends what the connection under the WebSocket
	// holds back (a client's recordConn, a server's gather.Conn); Write
	// and CloseWrite call it after their messages. hold, when set, is
	// called before Write's messages.
	flush func() error
	hold  func()
	// closing, when set, counts the closes under way (a client's, which
	// waits for them to be sent before it lets its process exit).
	closing *sync.WaitGroup
}

var _ net.Conn = (*wsConn)(nil)

// wsDirection is one direction's lock and deadline. The library cannot
// interrupt a blocked call without closing the connection, so a deadline
// that finds a call running (mu held) closes it; otherwise it marks the
// direction expired.
type wsDirection struct {
	mu sync.Mutex

	timerMu sync.Mutex // guards timer and gen
	timer   *time.Timer
	gen     uint64 // counts deadline changes: a timer that fires late sees it changed

	expired atomic.Bool // the deadline passed with no call running
	killed  atomic.Bool // the deadline passed during a call, which closed the connection
}

func (d *wsDirection) setDeadline(t time.Time, kill func()) {
	d.timerMu.Lock()
	defer d.timerMu.Unlock()
	d.stopLocked()
	d.expired.Store(false)
	if t.IsZero() {
		return
	}
	dur := time.Until(t)
	if dur <= 0 {
		d.passed(kill)
		return
	}
	gen := d.gen
	d.timer = time.AfterFunc(dur, func() {
		d.timerMu.Lock()
		defer d.timerMu.Unlock()
		if d.gen == gen {
			d.passed(kill)
		}
	})
}

// passed acts on a deadline that passed; timerMu is held.
func (d *wsDirection) passed(kill func()) {
	if d.mu.TryLock() {
		d.expired.Store(true)
		d.mu.Unlock()
		return
	}
	d.killed.Store(true)
	go kill()
}

func (d *wsDirection) stop() {
	d.timerMu.Lock()
	defer d.timerMu.Unlock()
	d.stopLocked()
}

// stopLocked disarms the deadline's timer; timerMu is held.
func (d *wsDirection) stopLocked() {
	d.gen++
	if d.timer != nil {
		d.timer.Stop()
		d.timer = nil
	}
}

// kill drops the connection, which ends blocked calls.
func (w *wsConn) kill() { w.ws.CloseNow() }

func (w *wsConn) Read(p []byte) (int, error) {
	w.read.mu.Lock()
	defer w.read.mu.Unlock()
	switch {
	case w.eof:
		return 0, io.EOF
	case w.read.expired.Load():
		return 0, os.ErrDeadlineExceeded
	case w.closed.Load():
		return 0, net.ErrClosed
	case w.badProto:
		return 0, &tunnelwire.ProtocolError{Status: tunnelwire.StatusBadRequest, Version: tunnelwire.Version,
			Msg: fmt.Sprintf("tunnel request: the WebSocket subprotocol must be %s", tunnelwire.Subprotocol)}
	case len(p) == 0:
		return 0, nil
	}
	for {
		if w.msg == nil {
			typ, r, err := w.ws.Reader(w.ctx)
			if err != nil {
				return 0, w.readErr(err)
			}
			if typ != websocket.MessageBinary {
				w.shutdown(websocket.StatusUnsupportedData, "binary messages only")
				return 0, errors.New("tunnel: a text message on the tunnel's WebSocket")
			}
			n, err := r.Read(p)
			if err == io.EOF {
				if n == 0 {
					w.eof = true // the empty message: the peer's end of stream
					return 0, io.EOF
				}
				return n, nil // the whole message at once
			}
			if err != nil {
				return n, w.readErr(err)
			}
			w.msg = r
			if n > 0 {
				return n, nil
			}
			continue
		}
		n, err := w.msg.Read(p)
		if err == io.EOF {
			w.msg = nil
			err = nil
		}
		if err != nil {
			return n, w.readErr(err)
		}
		if n > 0 {
			return n, nil
		}
	}
}

func (w *wsConn) readErr(err error) error {
	switch {
	case w.read.killed.Load():
		return os.ErrDeadlineExceeded
	case w.closed.Load():
		return net.ErrClosed
	case websocket.CloseStatus(err) != -1:
		return fmt.Errorf("tunnel: the peer closed the WebSocket (%v) before the end of its stream: %w",
			websocket.CloseStatus(err), io.ErrUnexpectedEOF)
	}
	return fmt.Errorf("tunnel: %w", err)
}

func (w *wsConn) Write(p []byte) (int, error) {
	w.write.mu.Lock()
	defer w.write.mu.Unlock()
	if err := w.writable(); err != nil {
		return 0, err
	}
	if w.hold != nil {
		w.hold()
	}
	n := 0
	for len(p) > 0 {
		chunk := p[:min(len(p), wsWriteChunk)]
		if err := w.ws.Write(w.ctx, websocket.MessageBinary, chunk); err != nil {
			w.flushed() // what was written of the message leaves: the error is err's
			return n, w.writeErr(err)
		}
		n += len(chunk)
		p = p[len(chunk):]
	}
	return n, w.flushed()
}

// flushed sends what the connection under the WebSocket holds back.
func (w *wsConn) flushed() error {
	if w.flush == nil {
		return nil
	}
	if err := w.flush(); err != nil {
		return w.writeErr(err)
	}
	return nil
}

// CloseWrite sends the empty message that ends this direction.
func (w *wsConn) CloseWrite() error {
	w.write.mu.Lock()
	defer w.write.mu.Unlock()
	if w.wroteEOF {
		return nil
	}
	if err := w.writable(); err != nil {
		return err
	}
	if err := w.ws.Write(w.ctx, websocket.MessageBinary, nil); err != nil {
		return w.writeErr(err)
	}
	w.wroteEOF = true
	return w.flushed()
}

// writable says why a write cannot start; write.mu is held.
func (w *wsConn) writable() error {
	switch {
	case w.write.expired.Load():
		return os.ErrDeadlineExceeded
	case w.closed.Load():
		return net.ErrClosed
	case w.wroteEOF:
		return errWriteAfterCloseWrite
	}
	return nil
}

func (w *wsConn) writeErr(err error) error {
	switch {
	case w.write.killed.Load():
		return os.ErrDeadlineExceeded
	case w.closed.Load():
		return net.ErrClosed
	case errors.Is(err, net.ErrClosed):
		// Not closed by us: the library closed it when the peer's close
		// frame, or the end of the connection under it, arrived.
		return &PeerClosedError{Err: err}
	}
	return fmt.Errorf("tunnel: %w", err)
}

// Close closes the WebSocket: see NewWSConn.
func (w *wsConn) Close() error {
	w.closed.Store(true)
	w.shutdown(websocket.StatusNormalClosure, "")
	return nil
}

// shutdown closes the WebSocket with code, once, in the background.
func (w *wsConn) shutdown(code websocket.StatusCode, reason string) {
	w.closeOnce.Do(func() {
		w.read.stop()
		w.write.stop()
		if !w.write.mu.TryLock() {
			// A Write is blocked: the close frame would wait behind it.
			go w.ws.CloseNow()
			return
		}
		w.write.mu.Unlock()
		if w.closing == nil {
			go w.ws.Close(code, reason)
			return
		}
		w.closing.Go(func() { w.ws.Close(code, reason) })
	})
}

func (w *wsConn) LocalAddr() net.Addr  { return w.local }
func (w *wsConn) RemoteAddr() net.Addr { return w.remote }

func (w *wsConn) SetDeadline(t time.Time) error {
	w.read.setDeadline(t, w.kill)
	w.write.setDeadline(t, w.kill)
	return nil
}

func (w *wsConn) SetReadDeadline(t time.Time) error {
	w.read.setDeadline(t, w.kill)
	return nil
}

func (w *wsConn) SetWriteDeadline(t time.Time) error {
	w.write.setDeadline(t, w.kill)
	return nil
}

// wsAddr stands for an address NewWSConn was not given.
type wsAddr struct{}

func (wsAddr) Network() string { return "websocket" }
func (wsAddr) String() string  { return "websocket/unknown-addr" }
