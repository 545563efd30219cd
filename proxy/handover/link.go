package handover

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"syscall"
	"time"

	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"
)

// LinkPair returns the two ends of a link (an AF_UNIX SOCK_SEQPACKET
// socketpair, close-on-exec) that carries QUIC datagrams from a successor
// process to its predecessor, one datagram per message. The daemon passes
// one end to the other process as an *os.File (via File) and rebuilds it
// there with net.FileConn.
func LinkPair() (a, b *net.UnixConn, err error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("handover: quic link: %w", os.NewSyscallError("socketpair", err))
	}
	for _, fd := range fds {
		// What a sender may have in flight on a Unix socket is its send
		// buffer: the default (about 200 KiB) would drop a burst of a busy
		// QUIC connection. Past net.core.wmem_max needs CAP_NET_ADMIN,
		// which the daemon has; without it the kernel's maximum is taken.
		if unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, linkBuffer) != nil {
			unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, linkBuffer)
		}
	}
	a, err = linkEnd(fds[0])
	if err != nil {
		unix.Close(fds[1])
		return nil, nil, err
	}
	if b, err = linkEnd(fds[1]); err != nil {
		a.Close()
		return nil, nil, err
	}
	return a, b, nil
}

// linkBuffer is the send buffer of a QUIC link's ends: 4 MiB, some 3,000
// full-size datagrams.
const linkBuffer = 4 << 20

// linkEnd makes a *net.UnixConn of fd, which it closes.
func linkEnd(fd int) (*net.UnixConn, error) {
	f := os.NewFile(uintptr(fd), "quic-link")
	defer f.Close()
	c, err := net.FileConn(f) // a close-on-exec duplicate
	if err != nil {
		return nil, fmt.Errorf("handover: quic link: %w", err)
	}
	uc, ok := c.(*net.UnixConn)
	if !ok {
		c.Close()
		return nil, fmt.Errorf("handover: quic link: a %T, not a Unix socket", c)
	}
	return uc, nil
}

// Link is a gate's end of a link: the successor sends on it, the
// predecessor reads it.
type Link struct {
	conn *net.UnixConn
	raw  syscall.RawConn
}

// NewLink wraps c, an end of LinkPair.
func NewLink(c *net.UnixConn) (*Link, error) {
	if c == nil {
		return nil, errors.New("handover: quic link: nil")
	}
	raw, err := c.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("handover: quic link: %w", err)
	}
	return &Link{conn: c, raw: raw}, nil
}

// Send writes one message without waiting: a full link drops it, as a
// full socket buffer drops a datagram.
func (l *Link) Send(msg []byte) error {
	var err error
	if werr := l.raw.Write(func(fd uintptr) bool {
		err = unix.Send(int(fd), msg, unix.MSG_DONTWAIT|unix.MSG_NOSIGNAL)
		return true
	}); werr != nil {
		return werr
	}
	return err
}

// ReadBatch fills ms with the datagrams waiting on the link, waiting for
// one if there are none, and returns how many it read. buf holds one
// message (MaxMessage bytes). A message that does not decode is dropped,
// and told to drop, which may be nil. A link the successor closed reads
// io.EOF.
func (l *Link) ReadBatch(buf []byte, ms []ipv4.Message, drop func(error)) (int, error) {
	if drop == nil {
		drop = func(error) {}
	}
	n := 0
	var rerr error
	err := l.raw.Read(func(fd uintptr) bool {
		for range len(ms) {
			k, _, flags, _, err := unix.Recvmsg(int(fd), buf, nil, unix.MSG_DONTWAIT)
			switch {
			case err == unix.EAGAIN:
				return n > 0 // wait, if nothing came
			case err == unix.EINTR: // try again
			case err != nil:
				rerr = os.NewSyscallError("recvmsg", err)
				return true
			case k == 0:
				// A link message is never empty: the successor closed its end.
				rerr = io.EOF
				return true
			case flags&unix.MSG_TRUNC != 0:
				drop(errors.New("too long"))
			default:
				if err := DecodeDatagram(buf[:k], &ms[n]); err != nil {
					drop(err)
				} else {
					n++
				}
			}
		}
		return true
	})
	switch {
	case err != nil:
		return 0, err
	case n == 0 && rerr != nil:
		return 0, fmt.Errorf("handover: quic link: %w", rerr)
	}
	return n, nil
}

// A link message is one datagram the successor read:
//
//	version                 1 byte, 1
//	address length          1 byte
//	address                 the client's netip.AddrPort in binary form
//	control messages length 2 bytes, big-endian
//	control messages        as the socket gave them (ECN, packet info)
//	datagram                to the end of the message
//
// The address and control messages are the socket's own, so that quic-go
// sees the datagram as if it had read it, and replies from the address the
// client sent to.
const (
	linkVersion = 1
	// MaxMessage bounds a link message: quic-go reads datagrams of at
	// most 1452 bytes with 128 bytes of control messages; this leaves room.
	MaxMessage = 1 << 16
)

var errLinkMessage = errors.New("malformed link message, or too large for quic-go's buffers")

// AppendDatagram appends to b the link message of the datagram data from
// addr, with the control messages oob.
func AppendDatagram(b []byte, addr netip.AddrPort, oob, data []byte) ([]byte, error) {
	if !addr.Addr().IsValid() || len(oob) > 0xffff {
		return b, errLinkMessage
	}
	b = append(b, linkVersion, 0)
	at := len(b)
	b, _ = addr.AppendBinary(b) // never fails
	if len(b)-at > 0xff {       // a long zone
		return b[:at-2], errLinkMessage
	}
	b[at-1] = byte(len(b) - at)
	b = binary.BigEndian.AppendUint16(b, uint16(len(oob)))
	b = append(b, oob...)
	return append(b, data...), nil
}

// DecodeDatagram fills m, which must have a single buffer, with the
// datagram of the link message p, as a read of the socket would have.
func DecodeDatagram(p []byte, m *ipv4.Message) error {
	if len(p) < 2 || p[0] != linkVersion || len(p) < 2+int(p[1])+2 {
		return errLinkMessage
	}
	var addr netip.AddrPort
	alen := int(p[1])
	if err := addr.UnmarshalBinary(p[2 : 2+alen]); err != nil || !addr.Addr().IsValid() {
		return errLinkMessage
	}
	olen, p := int(binary.BigEndian.Uint16(p[2+alen:])), p[2+alen+2:]
	if olen > len(p) {
		return errLinkMessage
	}
	oob, data := p[:olen], p[olen:]
	if len(data) == 0 || len(data) > len(m.Buffers[0]) || len(oob) > len(m.OOB) {
		return errLinkMessage
	}
	m.N = copy(m.Buffers[0], data)
	m.NN = copy(m.OOB, oob)
	m.Flags, m.Addr = 0, net.UDPAddrFromAddrPort(addr)
	return nil
}

// SetReadDeadline sets the deadline of ReadBatch.
func (l *Link) SetReadDeadline(t time.Time) error { return l.conn.SetReadDeadline(t) }
