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
)

// Relay carries bytes between client and the target both ways until both
// directions end or one fails, then ends the session with the reason and
// returns once the end record is on disk. Each direction half-closes its
// destination at its source's end of stream.
func (s *Session) Relay(client net.Conn) {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		client.Close()
		<-s.done
		return
	}
	s.client = client
	s.copying.Add(2)
	s.mu.Unlock()

	var r relayOutcome
	go func() {
		defer s.copying.Done()
		r.report(true, s.pipe(s.target, client, &s.up), s)
	}()
	// The caller's goroutine carries the other direction: one goroutine
	// less per session.
	func() {
		defer s.copying.Done()
		r.report(false, s.pipe(client, s.target, &s.down), s)
	}()
	s.copying.Wait()
	s.End(r.reason())
}

// pipeErr is how one direction ended: nil at the source's end of stream.
type pipeErr struct {
	err      error
	readSide bool // the source failed, not the destination
}

// relayOutcome decides the end reason from how the directions ended: the
// first failure, or else whichever side ended its stream first.
type relayOutcome struct {
	mu        sync.Mutex
	first     *pipeErr
	firstUp   bool // the first event was on the upward direction
	gone      bool // some target-side error said the machine is unreachable
	eofClient bool // the client's end of stream came before the target's
	events    int
}

func (r *relayOutcome) report(up bool, e pipeErr, s *Session) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events++
	if e.err != nil && up != e.readSide && unreachable(e.err) {
		r.gone = true
	}
	if e.err != nil {
		if r.first == nil {
			r.first, r.firstUp = &e, up
			// One failed direction ends both.
			s.target.Close()
			if c := s.clientConn(); c != nil {
				c.Close()
			}
		}
		return
	}
	if r.events == 1 && r.first == nil {
		r.eofClient = up
	}
}

func (r *relayOutcome) reason() string {
	// When a machine goes away, the direction that notices first may see
	// only a broken pipe; the other sees the timeout that says why.
	if r.gone {
		return ReasonTargetUnreachable
	}
	if r.first == nil {
		if r.eofClient {
			return ReasonClientClosed
		}
		return ReasonTargetClosed
	}
	// Up reads the client and writes the target; down the reverse.
	targetSide := r.firstUp != r.first.readSide
	if targetSide {
		if unreachable(r.first.err) {
			return ReasonTargetUnreachable
		}
		return ReasonTargetError + r.first.err.Error()
	}
	return ReasonClientError + r.first.err.Error()
}

func (s *Session) clientConn() net.Conn {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.client
}

type closeWriter interface{ CloseWrite() error }

// Buffers: an idle direction must not pin a large buffer (10,000 idle
// sessions are a benchmark target), so a direction waits for data either
// without a buffer (a socket: readiness, then read) or on a small one, and
// takes a large pooled buffer only while data flows.
const (
	bigBuf   = 32 << 10
	smallBuf = 2 << 10
	hotRead  = 1 << 10 // a read at least this big keeps the big buffer
)

var bufPool = sync.Pool{New: func() any { b := make([]byte, bigBuf); return &b }}

// pipe copies src to dst until src's end of stream (then half-closes dst)
// or an error, adding what dst accepted to count.
func (s *Session) pipe(dst, src net.Conn, count *atomic.Int64) pipeErr {
	if d, ok := dst.(*net.TCPConn); ok {
		if sc, ok := src.(*net.TCPConn); ok {
			return s.splice(d, sc, count)
		}
	}
	var e pipeErr
	if sc, ok := src.(syscall.Conn); ok {
		if rc, err := sc.SyscallConn(); err == nil {
			e = s.copyWhenReadable(dst, src, rc, count)
			goto done
		}
	}
	e = s.copyAdaptive(dst, src, count)
done:
	if e.err == nil {
		if cw, ok := dst.(closeWriter); ok {
			cw.CloseWrite()
		}
	}
	return e
}

// splice copies between two TCP sockets with splice(2), through the
// kernel. It waits for the source to be readable, asks how much it holds
// (SIOCINQ) and splices exactly that (TCPConn.ReadFrom splices from a
// LimitedReader around a TCPConn), so that every arrival updates the live
// counters and the idle clock, as the buffered paths do.
func (s *Session) splice(dst, src *net.TCPConn, count *atomic.Int64) pipeErr {
	rc, err := src.SyscallConn()
	if err != nil {
		return pipeErr{err: err, readSide: true}
	}
	var one [1]byte
	for {
		var avail int
		var eof bool
		var perr error
		err := rc.Read(func(fd uintptr) bool {
			n, _, err := unix.Recvfrom(int(fd), one[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
			switch {
			case err == unix.EAGAIN:
				return false
			case err != nil:
				perr = os.NewSyscallError("recvfrom", err)
			case n == 0:
				eof = true
			default:
				avail, _ = unix.IoctlGetInt(int(fd), unix.SIOCINQ)
			}
			return true
		})
		if err == nil {
			err = perr
		}
		if err != nil {
			return pipeErr{err: err, readSide: true}
		}
		if eof {
			dst.CloseWrite()
			return pipeErr{}
		}
		n, err := dst.ReadFrom(&io.LimitedReader{R: src, N: int64(max(avail, 1))})
		if n > 0 {
			count.Add(n)
			s.touch()
		}
		if err != nil {
			return pipeErr{err: err, readSide: isReadErr(err)}
		}
	}
}

// isReadErr guesses the side of a splice error, which one syscall moves
// between both sockets: a broken pipe is the destination's; anything else
// (a reset, a timeout) is taken to be the source's. Only sessions whose
// both ends are plain TCP take this path.
func isReadErr(err error) bool {
	return !errors.Is(err, syscall.EPIPE)
}

// copyWhenReadable waits for src's socket to be readable without holding
// a buffer (MSG_PEEK of one byte, non-blocking, in the runtime poller),
// then reads into a pooled buffer and gives it back.
func (s *Session) copyWhenReadable(dst, src net.Conn, rc syscall.RawConn, count *atomic.Int64) pipeErr {
	var one [1]byte
	for {
		// The peek may be what collects a pending socket error (a timeout
		// to a machine gone away): keep it, a later read would see none.
		var perr error
		err := rc.Read(func(fd uintptr) bool {
			_, _, err := unix.Recvfrom(int(fd), one[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
			if err == unix.EAGAIN {
				return false
			}
			if err != nil {
				perr = os.NewSyscallError("recvfrom", err)
			}
			return true
		})
		if err == nil {
			err = perr
		}
		if err != nil {
			return pipeErr{err: err, readSide: true}
		}
		bp := bufPool.Get().(*[]byte)
		for {
			n, rerr := src.Read(*bp)
			if n > 0 {
				w, werr := dst.Write((*bp)[:n])
				count.Add(int64(w))
				s.touch()
				if werr != nil {
					bufPool.Put(bp)
					return pipeErr{err: werr}
				}
			}
			if rerr == io.EOF {
				bufPool.Put(bp)
				return pipeErr{}
			}
			if rerr != nil {
				bufPool.Put(bp)
				return pipeErr{err: rerr, readSide: true}
			}
			if n < len(*bp) {
				break // drained for now: wait again without the buffer
			}
		}
		bufPool.Put(bp)
	}
}

// copyAdaptive reads src on a small buffer while it is quiet and on a
// pooled large one while data flows.
func (s *Session) copyAdaptive(dst, src net.Conn, count *atomic.Int64) pipeErr {
	small := make([]byte, smallBuf)
	var big *[]byte
	defer func() {
		if big != nil {
			bufPool.Put(big)
		}
	}()
	for {
		buf := small
		if big != nil {
			buf = *big
		}
		n, rerr := src.Read(buf)
		if n > 0 {
			w, werr := dst.Write(buf[:n])
			count.Add(int64(w))
			s.touch()
			if werr != nil {
				return pipeErr{err: werr}
			}
		}
		if rerr == io.EOF {
			return pipeErr{}
		}
		if rerr != nil {
			return pipeErr{err: rerr, readSide: true}
		}
		switch {
		case big == nil && n >= hotRead:
			big = bufPool.Get().(*[]byte)
		case big != nil && n < hotRead:
			bufPool.Put(big)
			big = nil
		}
	}
}
