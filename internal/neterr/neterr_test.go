package neterr

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"
	"testing"
)

func TestClasses(t *testing.T) {
	wrap := func(errno syscall.Errno) error {
		return &net.OpError{Op: "read", Net: "tcp", Err: os.NewSyscallError("read", errno)}
	}
	for _, c := range []struct {
		name                    string
		err                     error
		unreachable, peerClosed bool
	}{
		{"timed out", wrap(syscall.ETIMEDOUT), true, false},
		{"host unreachable", wrap(syscall.EHOSTUNREACH), true, false},
		{"network unreachable", wrap(syscall.ENETUNREACH), true, false},
		{"host down", fmt.Errorf("dial: %w", syscall.EHOSTDOWN), true, false},
		{"broken pipe", wrap(syscall.EPIPE), false, true},
		{"reset", wrap(syscall.ECONNRESET), false, true},
		{"half-close after a reset", &net.OpError{Op: "shutdown", Net: "tcp", Err: os.NewSyscallError("shutdown", syscall.ENOTCONN)}, false, true},
		{"refused", wrap(syscall.ECONNREFUSED), false, false},
		{"EOF", io.EOF, false, false},
		{"closed", net.ErrClosed, false, false},
		{"deadline", os.ErrDeadlineExceeded, false, false},
		{"other", errors.New("ETIMEDOUT"), false, false},
		{"nil", nil, false, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := Unreachable(c.err); got != c.unreachable {
				t.Errorf("Unreachable(%v) = %v, want %v", c.err, got, c.unreachable)
			}
			if got := PeerClosed(c.err); got != c.peerClosed {
				t.Errorf("PeerClosed(%v) = %v, want %v", c.err, got, c.peerClosed)
			}
		})
	}
}
