package rdcleanpath

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"os"
	"reflect"
	"syscall"
)

// Windows socket error codes (WSAGetLastError) an error PDU can carry: the
// client shows them as Windows would.
const (
	WSAECONNABORTED = 10053
	WSAECONNRESET   = 10054
	WSAETIMEDOUT    = 10060
	WSAECONNREFUSED = 10061
	WSAENETUNREACH  = 10051
	WSAEHOSTUNREACH = 10065
)

// wsaText describes the codes above for Error.Error.
var wsaText = map[int64]string{
	WSAECONNABORTED: "connection aborted",
	WSAECONNRESET:   "connection reset by peer",
	WSAETIMEDOUT:    "connection timed out",
	WSAECONNREFUSED: "connection refused",
	WSAENETUNREACH:  "network is unreachable",
	WSAEHOSTUNREACH: "no route to host",
}

// WSACode returns the Windows socket error code that says what err, from
// dialing the server or reading from it, says: refused, timed out, reset,
// aborted (a broken pipe too), network or host unreachable. It is false
// for any other error.
func WSACode(err error) (int, bool) {
	if err == nil {
		return 0, false
	}
	for _, m := range []struct {
		errno syscall.Errno
		code  int
	}{
		{syscall.ECONNREFUSED, WSAECONNREFUSED},
		{syscall.ETIMEDOUT, WSAETIMEDOUT},
		{syscall.ECONNRESET, WSAECONNRESET},
		{syscall.ECONNABORTED, WSAECONNABORTED},
		{syscall.EPIPE, WSAECONNABORTED},
		{syscall.ENETUNREACH, WSAENETUNREACH},
		{syscall.EHOSTUNREACH, WSAEHOSTUNREACH},
	} {
		if errors.Is(err, m.errno) {
			return m.code, true
		}
	}
	if errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, context.DeadlineExceeded) {
		return WSAETIMEDOUT, true
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return WSAETIMEDOUT, true
	}
	return 0, false
}

// TLSAlert returns the TLS alert the server sent to end the handshake,
// from an error of crypto/tls: a tls.AlertError, or the *net.OpError
// "remote error" crypto/tls returns on a TCP connection, whose alert type
// is not exported. It is false for any other error, alerts the bastion sent
// included.
func TLSAlert(err error) (uint8, bool) {
	if a, ok := errors.AsType[tls.AlertError](err); ok {
		return uint8(a), true
	}
	var op *net.OpError
	if !errors.As(err, &op) || op.Op != "remote error" || op.Err == nil {
		return 0, false
	}
	v := reflect.ValueOf(op.Err)
	if v.Kind() != reflect.Uint8 || v.Type().PkgPath() != "crypto/tls" {
		return 0, false
	}
	return uint8(v.Uint()), true
}
