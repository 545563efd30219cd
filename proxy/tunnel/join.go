package tunnel

import (
	"io"
	"sync"
	"sync/atomic"
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
// It returns the bytes copied each way, taken from io.Copy (which keeps
// splice(2) between two *net.TCPConn), and the first error; the end of a
// stream is not an error.
func Join(a, b io.ReadWriteCloser) (aToB, bToA int64, err error) {
	var once sync.Once
	var ended atomic.Bool // a side without CloseWrite was closed at its end of stream
	fail := func(e error) {
		if ended.Load() {
			return // the other direction, cut by that close: not a failure
		}
		once.Do(func() {
			err = e
			a.Close()
			b.Close()
		})
	}
	var wg sync.WaitGroup
	wg.Go(func() { aToB = pipe(b, a, &ended, fail) })
	bToA = pipe(a, b, &ended, fail)
	wg.Wait()
	a.Close()
	b.Close()
	return aToB, bToA, err
}

// pipe copies src to dst, then half-closes dst.
func pipe(dst, src io.ReadWriteCloser, ended *atomic.Bool, fail func(error)) int64 {
	n, err := io.Copy(dst, src)
	if err == nil {
		if cw, ok := dst.(closeWriter); ok {
			err = cw.CloseWrite()
		} else {
			// No half-close: ending the whole conn is the only way to
			// tell the peer, and it ends the other direction too.
			ended.Store(true)
			dst.Close()
		}
	}
	if err != nil {
		fail(err)
	}
	return n
}
