// Package neterr says what a network error tells about the peer: that the
// machine went away, or that it closed its end. The relays of the session
// broker, the native tunnel and the browser SSH client all class errors
// this way, so that a session ends with the same reason whichever carried
// it.
package neterr

import (
	"errors"
	"syscall"
)

// Unreachable reports whether err says the machine is gone: no answer to
// data or keepalives (ETIMEDOUT, also what TCP_USER_TIMEOUT gives), or no
// route to it any more (EHOSTUNREACH, ENETUNREACH, EHOSTDOWN).
func Unreachable(err error) bool {
	return errors.Is(err, syscall.ETIMEDOUT) || errors.Is(err, syscall.EHOSTUNREACH) ||
		errors.Is(err, syscall.ENETUNREACH) || errors.Is(err, syscall.EHOSTDOWN)
}

// PeerClosed reports whether err is what writing to a peer that closed
// gets: a broken pipe (EPIPE), a reset (ECONNRESET), or, from the
// half-close (shutdown(2)) of a socket the peer has reset already, "not
// connected" (ENOTCONN). A tunnel conn reports its peer's close as a
// broken pipe too.
func PeerClosed(err error) bool {
	return errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.ENOTCONN)
}
