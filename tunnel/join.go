package tunnel

import (
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/bastiond/bastiond/internal/neterr"
)

// closeWriter is a connection that can end its sending direction alone:
// *net.TCPConn, *net.UnixConn and the conns of this package.
type closeWriter interface{ CloseWrite() error }

// Join copies between a and b both ways until both have ended their
// streams, one goroutine per direction. When one side's stream ends it
// half-closes the other (CloseWrite, if that side has it; otherwise it
// closes it, which also ends the other direction without an error), so
// that a peer that reads to the end and then answers still
// gets its answer through. At the first error it closes both, which ends
// the other direction too. When both directions are done it closes both.
//
// A side that ended its stream and then closed without reading what was
// still coming (xfreerdp +auth-only, a client at exit) finished: the
// broken pipe or reset of a write to it is its end, not an error. A reset
// from a side that had not ended its stream is an error.
//
// It returns the bytes copied each way, taken from io.Copy (which keeps
// splice(2) between two *net.TCPConn), and the first error; the end of a
// stream is not an error.
func Join(a, b io.ReadWriteCloser) (aToB, bToA int64, err error) {
	var once sync.Once
	var shut atomic.Bool // a side without CloseWrite was closed at its end of stream
	fail := func(e error) {
		if shut.Load() {
			return // the other direction, cut by that close: not a failure
		}
		once.Do(func() {
			err = e
			a.Close()
			b.Close()
		})
	}
	var aEnded, bEnded atomic.Bool
	var wg sync.WaitGroup
	wg.Go(func() { aToB = pipe(b, a, &aEnded, &bEnded, &shut, fail) })
	bToA = pipe(a, b, &bEnded, &aEnded, &shut, fail)
	wg.Wait()
	a.Close()
	b.Close()
	return aToB, bToA, err
}

// pipe copies src to dst, then half-closes dst. srcEnded is set at src's
// end of stream; dstEnded says whether dst's was read.
func pipe(dst, src io.ReadWriteCloser, srcEnded, dstEnded, shut *atomic.Bool, fail func(error)) int64 {
	n, written, err := copyFrom(dst, src)
	if err == nil {
		srcEnded.Store(true)
		if cw, ok := dst.(closeWriter); ok {
			err = cw.CloseWrite()
			written = true
		} else {
			// No half-close: ending the whole conn is the only way to
			// tell the peer, and it ends the other direction too.
			shut.Store(true)
			dst.Close()
		}
	}
	if err != nil && written && dstEnded.Load() && neterr.PeerClosed(err) {
		err = nil // dst ended its stream, then closed: it finished
	}
	if err != nil {
		fail(err)
	}
	return n
}

// copyFrom is io.Copy(dst, src), and whether its error came from writing
// dst. Between two *net.TCPConn (splice(2): one call both reads and
// writes) only a broken pipe is known to be the writer's.
func copyFrom(dst io.Writer, src io.Reader) (n int64, written bool, err error) {
	_, dstTCP := dst.(*net.TCPConn)
	_, srcTCP := src.(*net.TCPConn)
	if dstTCP && srcTCP {
		n, err = io.Copy(dst, src)
		return n, errors.Is(err, syscall.EPIPE), err
	}
	r := &ReadErr{R: src}
	n, err = io.Copy(dst, r)
	return n, err != nil && r.Err == nil, err
}

// ReadErr is a reader that keeps its last error other than io.EOF in Err:
// what tells, after an io.Copy failed, a failed read of its source from a
// failed write of its destination.
type ReadErr struct {
	R   io.Reader
	Err error
}

func (r *ReadErr) Read(p []byte) (int, error) {
	n, err := r.R.Read(p)
	if err != nil && err != io.EOF {
		r.Err = err
	}
	return n, err
}
