//go:build !linux

package udpgro

import (
	"errors"
	"net"

	"golang.org/x/net/ipv4"
)

// Reader does nothing where the system has no UDP_GRO: New returns none.
type Reader struct{}

// New returns nil: UDP_GRO is Linux's.
func New(*net.UDPConn) *Reader { return nil }

// Read never reads: no Reader exists here.
func (r *Reader) Read([]ipv4.Message) (int, error) {
	return 0, errors.New("udpgro: UDP_GRO is not supported on this system")
}

// Holds is false: nothing was read.
func (r *Reader) Holds() bool { return false }

// Trains is zero: nothing was read.
func (r *Reader) Trains() int64 { return 0 }

// NewConn returns c itself: quic-go reads it as it would without this package.
func NewConn(c *net.UDPConn) net.PacketConn { return c }
