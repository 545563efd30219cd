package tunnel

import (
	"errors"
	"io"
	"net"
	"sync"
)

// Join copies between a and b both ways until both directions have ended:
// at one side's end of stream it half-closes the other (CloseWrite), and
// at an error it closes both. It returns the bytes copied each way and the
// first error.
func Join(a, b io.ReadWriteCloser) (aToB, bToA int64, err error) {
	var once sync.Once
	var first error
	fail := func(e error) {
		once.Do(func() {
			first = e
			a.Close()
			b.Close()
		})
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		aToB = pipe(b, a, fail)
	})
	bToA = pipe(a, b, fail)
	wg.Wait()
	return aToB, bToA, first
}

func pipe(dst, src io.ReadWriteCloser, fail func(error)) int64 {
	n, err := io.Copy(dst, src)
	if err != nil && !errors.Is(err, net.ErrClosed) {
		fail(err)
		return n
	}
	if cw, ok := dst.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	} else {
		dst.Close()
	}
	return n
}
