package udpgro

import (
	"net"
	"syscall"
	"time"

	"golang.org/x/net/ipv4"
)

// Conn is a UDP socket for a quic-go Transport that reads through a
// Reader: a quic.OOBCapablePacketConn with ReadBatch, so that quic-go keeps
// its batched reads, ECN, packet info and GSO (it finds the socket through
// SyscallConn), and gets single datagrams. Every read goes through the
// Reader: with UDP_GRO on, a read of the socket itself could return a
// whole train.
type Conn struct {
	udp *net.UDPConn
	r   *Reader
}

// NewConn returns c reading through a Reader, or c itself when UDP_GRO is
// off (see New).
func NewConn(c *net.UDPConn) net.PacketConn {
	r := New(c)
	if r == nil {
		return c
	}
	return &Conn{udp: c, r: r}
}

// Reader is the Reader that c reads through.
func (c *Conn) Reader() *Reader { return c.r }

// ReadBatch reads datagrams into ms; flags are ignored.
func (c *Conn) ReadBatch(ms []ipv4.Message, _ int) (int, error) { return c.r.Read(ms) }

// ReadMsgUDP reads the next datagram.
func (c *Conn) ReadMsgUDP(b, oob []byte) (n, oobn, flags int, addr *net.UDPAddr, err error) {
	ms := []ipv4.Message{{Buffers: [][]byte{b}, OOB: oob}}
	if _, err := c.r.Read(ms); err != nil {
		return 0, 0, 0, nil, err
	}
	addr, _ = ms[0].Addr.(*net.UDPAddr)
	return ms[0].N, ms[0].NN, ms[0].Flags, addr, nil
}

// ReadFrom reads the next datagram.
func (c *Conn) ReadFrom(p []byte) (int, net.Addr, error) {
	ms := []ipv4.Message{{Buffers: [][]byte{p}}}
	if _, err := c.r.Read(ms); err != nil {
		return 0, nil, err
	}
	return ms[0].N, ms[0].Addr, nil
}

func (c *Conn) WriteMsgUDP(b, oob []byte, addr *net.UDPAddr) (int, int, error) {
	return c.udp.WriteMsgUDP(b, oob, addr)
}
func (c *Conn) WriteTo(p []byte, addr net.Addr) (int, error) { return c.udp.WriteTo(p, addr) }
func (c *Conn) Close() error                                 { return c.udp.Close() }
func (c *Conn) LocalAddr() net.Addr                          { return c.udp.LocalAddr() }
func (c *Conn) SetDeadline(t time.Time) error                { return c.udp.SetDeadline(t) }
func (c *Conn) SetReadDeadline(t time.Time) error            { return c.udp.SetReadDeadline(t) }
func (c *Conn) SetWriteDeadline(t time.Time) error           { return c.udp.SetWriteDeadline(t) }
func (c *Conn) SyscallConn() (syscall.RawConn, error)        { return c.udp.SyscallConn() }
func (c *Conn) SetReadBuffer(n int) error                    { return c.udp.SetReadBuffer(n) }
func (c *Conn) SetWriteBuffer(n int) error                   { return c.udp.SetWriteBuffer(n) }

var _ interface {
	net.PacketConn
	SyscallConn() (syscall.RawConn, error)
	SetReadBuffer(int) error
	ReadMsgUDP(b, oob []byte) (n, oobn, flags int, addr *net.UDPAddr, err error)
	WriteMsgUDP(b, oob []byte, addr *net.UDPAddr) (n, oobn int, err error)
	ReadBatch(ms []ipv4.Message, flags int) (int, error)
} = (*Conn)(nil)
