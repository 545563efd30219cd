package broker

import (
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/bastiond/bastiond/internal/neterr"
	"github.com/bastiond/bastiond/proxy/internal/relaybuf"
)

// Relay carries bytes between client and the target both ways until both
// directions end or one fails, then ends the session with the reason and
// returns once the end record is on disk or queued (see End). Each
// direction half-closes its destination at its source's end of stream (a
// destination without CloseWrite is closed). End, from anywhere, closes both connections and
// its reason wins. Relay takes client over, closes it, and is called at
// most once (Relay or RelayOver).
func (s *Session) Relay(client net.Conn) { s.RelayOver(client, s.target) }

// RelayOver is Relay to target, a connection layered over Target() (TLS
// to an RDP server), which carries the bytes counted. End still closes
// Target() beneath it.
func (s *Session) RelayOver(client, target net.Conn) {
	s.mu.Lock()
	if s.closing || s.client != nil {
		s.mu.Unlock()
		client.Close()
		<-s.done
		return
	}
	s.client = client
	s.copying.Add(2)
	s.mu.Unlock()

	r := relayOutcome{s: s, client: client}
	go func() {
		defer s.copying.Done()
		r.report(true, s.pipe(target, client, &s.up, func(shut bool) { r.ended(true, shut) }))
	}()
	// The caller's goroutine carries the other direction: one goroutine
	// (and its stack) less per session.
	func() {
		defer s.copying.Done()
		r.report(false, s.pipe(client, target, &s.down, func(shut bool) { r.ended(false, shut) }))
	}()
	s.copying.Wait()
	s.End(r.reason())
}

// pipeErr is how one direction ended: err nil at the source's end of stream.
type pipeErr struct {
	err      error
	readSide bool // the source failed, not the destination
}

// relayOutcome decides the end reason from how the directions ended: the
// first failure, or else whichever side ended its stream first.
type relayOutcome struct {
	s      *Session
	client net.Conn

	mu      sync.Mutex // guards the fields below
	first   *pipeErr
	firstUp bool // the first failure was on the upward direction
	gone    bool // a target-side error said the machine went away
	shut    bool // a destination was closed whole at an end of stream
	// firstEnd is the side whose end of stream was read first: 1 the
	// client's, 2 the target's, 0 none yet.
	firstEnd int
	// clientEnded and targetEnded: that side's end of stream was read.
	clientEnded, targetEnded bool
}

// ended notes that a direction's source ended its stream. It is called
// before the end is passed on (the half-close), so that a side reacting to
// it cannot be noted first. Which side closed first is the order in which
// the relay reads the two ends: when both close at nearly the same time
// (one side reacting to the other's last data before the relay has read
// the end behind that data), either may be recorded. shut says that the
// destination has no half-close and is about to be closed whole: the other
// direction will then fail on a closed conn, and that is the end of
// stream, not an error.
func (r *relayOutcome) ended(up, shut bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.shut = r.shut || shut
	if up {
		r.clientEnded = true
	} else {
		r.targetEnded = true
	}
	if r.firstEnd == 0 {
		r.firstEnd = 2
		if up {
			r.firstEnd = 1
		}
	}
}

// report records one direction's end. up is the direction from the client
// (reading the client, writing the target).
func (r *relayOutcome) report(up bool, e pipeErr) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if e.err == nil {
		return
	}
	if r.shut && r.first == nil {
		return
	}
	if !e.readSide && neterr.PeerClosed(e.err) && (up && r.targetEnded || !up && r.clientEnded) {
		// Writing to a side that had ended its stream and then closed
		// (a reset for the bytes it left unread, a broken pipe, a QUIC
		// stream it stopped): it finished, and the relay is done with it.
		return
	}
	targetSide := up != e.readSide
	// A reset counts too: the machine rebooted, or its stack dropped the
	// connection.
	if targetSide && (neterr.Unreachable(e.err) || errors.Is(e.err, syscall.ECONNRESET)) {
		r.gone = true
	}
	if r.first == nil {
		r.first, r.firstUp = &e, up
		// One failed direction ends both at once.
		r.s.target.Close()
		r.client.Close()
	}
}

func (r *relayOutcome) reason() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	// When a machine goes away, the direction that notices first may see
	// only a broken pipe; the other sees the reset or timeout that says why.
	if r.gone {
		return ReasonTargetUnreachable
	}
	if r.first == nil {
		if r.firstEnd == 1 {
			return ReasonClientClosed
		}
		return ReasonTargetClosed
	}
	// Up reads the client and writes the target; down the reverse.
	if r.firstUp != r.first.readSide {
		return ReasonTargetError + r.first.err.Error()
	}
	return ReasonClientError + r.first.err.Error()
}

type closeWriter interface{ CloseWrite() error }

// Buffers: an idle direction must not pin a large buffer (10,000 idle
// relayed sessions must fit in 64 KiB each, everything included), so a
// direction waits for data either without a buffer (a socket: readiness,
// then read) or on a small one, and takes a large pooled buffer only while
// data flows (relaybuf).
const smallBuf = 2 << 10

// pipe copies src to dst until src's end of stream (then half-closes dst)
// or an error, adding what dst accepted to count. At the end of stream it
// calls ended before dst is half-closed (or closed whole, shut true, when
// it has no CloseWrite).
func (s *Session) pipe(dst, src net.Conn, count *atomic.Int64, ended func(shut bool)) pipeErr {
	var e pipeErr
	d, dstTCP := dst.(*net.TCPConn)
	switch sc := src.(type) {
	case *net.TCPConn:
		if dstTCP {
			return s.splice(d, sc, count, ended)
		}
		e = s.copyWhenReadable(dst, src, sc, count)
	case *net.UnixConn:
		e = s.copyWhenReadable(dst, src, sc, count)
	default:
		// Not a socket we can poll for readiness: a QUIC stream, a
		// WebSocket, a TLS conn. A type that embeds a socket but reads
		// through a buffer of its own (a sniffed prefix) would look
		// readable only when new data arrives, so only the socket types
		// themselves take the path above.
		e = s.copyAdaptive(dst, src, count)
	}
	if e.err == nil {
		// A failed half-close (the peer reset meanwhile) is not this
		// direction's outcome: the other direction sees the reset.
		if cw, ok := dst.(closeWriter); ok {
			ended(false)
			cw.CloseWrite()
		} else {
			ended(true)
			dst.Close()
		}
	}
	return e
}

// waitReadable waits in the runtime poller, holding no buffer, until rc has
// data, an end of stream or an error; it peeks one byte without taking it.
// A pending socket error (a reset, a timeout to a machine gone away) is
// collected by the peek: it is returned, since a later read would not see
// it. avail is how much the socket holds when asked for (SIOCINQ).
func waitReadable(rc syscall.RawConn, wantAvail bool) (avail int, eof bool, err error) {
	var one [1]byte
	var perr error
	err = rc.Read(func(fd uintptr) bool {
		n, _, err := unix.Recvfrom(int(fd), one[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
		switch {
		case err == unix.EAGAIN || err == unix.EINTR:
			return false // not yet: park in the poller
		case err != nil:
			perr = os.NewSyscallError("recvfrom", err)
		case n == 0:
			eof = true
		case wantAvail:
			avail, _ = unix.IoctlGetInt(int(fd), unix.SIOCINQ)
		}
		return true
	})
	if err == nil {
		err = perr
	}
	return max(avail, 1), eof, err
}

// splice copies between two TCP sockets with splice(2), through the kernel:
// TCPConn.ReadFrom splices from an io.LimitedReader around a TCPConn. It
// waits for the source to be readable, asks how much it holds and splices
// exactly that, so that ReadFrom returns at once and every arrival updates
// the live counters and the idle clock (a plain ReadFrom would block until
// its limit or the end of stream, and an interactive session would look
// idle).
func (s *Session) splice(dst, src *net.TCPConn, count *atomic.Int64, ended func(shut bool)) pipeErr {
	rc, err := src.SyscallConn()
	if err != nil {
		return pipeErr{err: err, readSide: true}
	}
	lr := &io.LimitedReader{R: src} // one per direction: no allocation per chunk
	for {
		avail, eof, err := waitReadable(rc, true)
		if err != nil {
			return pipeErr{err: err, readSide: true}
		}
		if eof {
			ended(false)
			dst.CloseWrite() // as in pipe: a failure shows on the other direction
			return pipeErr{}
		}
		lr.N = int64(min(avail, 1<<20))
		n, err := dst.ReadFrom(lr)
		if n > 0 {
			count.Add(n)
			s.touch()
		}
		if err != nil {
			return pipeErr{err: err, readSide: spliceReadSide(dst, src, err)}
		}
	}
}

// spliceReadSide tells which socket a splice error came from: one call
// moves bytes between both. A broken pipe is the destination's. Otherwise
// the socket the kernel has closed (a reset or a timeout moves it to
// TCP_CLOSE) is the culprit; when that does not tell, the source.
func spliceReadSide(dst, src *net.TCPConn, err error) bool {
	if errors.Is(err, syscall.EPIPE) {
		return false
	}
	srcClosed, dstClosed := tcpClosed(src), tcpClosed(dst)
	return !(dstClosed && !srcClosed)
}

// tcpClose is TCP_CLOSE (include/net/tcp_states.h).
const tcpClose = 7

// tcpState is c's socket's TCP state, or 0 when it cannot be read.
func tcpState(c *net.TCPConn) uint8 {
	rc, err := c.SyscallConn()
	if err != nil {
		return 0
	}
	var state uint8
	rc.Control(func(fd uintptr) {
		if ti, err := unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO); err == nil {
			state = ti.State
		}
	})
	return state
}

func tcpClosed(c *net.TCPConn) bool { return tcpState(c) == tcpClose }

// copyWhenReadable waits for src's socket to be readable without holding
// a buffer, then reads into a pooled buffer until the socket is drained,
// and gives the buffer back.
func (s *Session) copyWhenReadable(dst, src net.Conn, sc syscall.Conn, count *atomic.Int64) pipeErr {
	rc, err := sc.SyscallConn()
	if err != nil {
		return pipeErr{err: err, readSide: true}
	}
	for {
		if _, _, err := waitReadable(rc, false); err != nil {
			return pipeErr{err: err, readSide: true}
		}
		// The peek saw data or the end of stream: the read does not block.
		bp := relaybuf.Get()
		e, drained := s.copyChunks(dst, src, *bp, count)
		relaybuf.Put(bp)
		if !drained {
			return e
		}
	}
}

// copyChunks reads src into buf and writes to dst until a read comes back
// short (the socket is drained for now: drained is true) or the stream
// ends or fails (e says how).
func (s *Session) copyChunks(dst, src net.Conn, buf []byte, count *atomic.Int64) (e pipeErr, drained bool) {
	for {
		n, rerr := src.Read(buf)
		if n > 0 {
			if werr := s.write(dst, buf[:n], count); werr != nil {
				return pipeErr{err: werr}, false
			}
		}
		switch {
		case rerr == io.EOF:
			return pipeErr{}, false
		case rerr != nil:
			return pipeErr{err: rerr, readSide: true}, false
		case n < len(buf):
			return pipeErr{}, true
		}
	}
}

// write writes p to dst, counting what dst accepted.
func (s *Session) write(dst net.Conn, p []byte, count *atomic.Int64) error {
	w, err := dst.Write(p)
	if w > 0 {
		count.Add(int64(w))
		s.touch()
	}
	if err == nil && w < len(p) {
		err = io.ErrShortWrite
	}
	return err
}

// copyAdaptive reads src on a small buffer of its own while it is quiet
// (a blocked Read must hold a buffer) and on a pooled large one while data
// flows.
func (s *Session) copyAdaptive(dst, src net.Conn, count *atomic.Int64) pipeErr {
	r := relaybuf.NewReader(src, smallBuf)
	defer r.Close()
	for {
		p, rerr := r.Read()
		if len(p) > 0 {
			if werr := s.write(dst, p, count); werr != nil {
				return pipeErr{err: werr}
			}
		}
		if rerr == io.EOF {
			return pipeErr{}
		}
		if rerr != nil {
			return pipeErr{err: rerr, readSide: true}
		}
	}
}
