// Package proxyproto reads the header of version 2 of the PROXY protocol
// (haproxy's proxy-protocol.txt, section 2.2): the binary block a TCP load
// balancer sends first on each connection it opens to a server, naming the
// client it carries the connection for. It reads exactly the header's
// bytes and nothing after them, so that what follows (a TLS ClientHello)
// is read by whoever reads next. Version 1, the text form, is refused:
// a balancer that can send version 2 should.
//
// The package has no dependencies: it is a parser, fuzzed (FuzzRead), and
// Append writes headers for the tests and the fuzzer's round trip.
package proxyproto

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/netip"
)

// Signature starts every version 2 header.
var Signature = [12]byte{0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A}

// v1Prefix starts a version 1 header ("PROXY TCP4 ...\r\n").
var v1Prefix = []byte("PROXY ")

// MaxLen bounds the part of a header after its first 16 bytes: the
// addresses and the TLVs. The largest address block (AF_UNIX) is 216 bytes;
// the TLVs balancers add (ALPN, authority, a cloud's endpoint ID, a CRC)
// are tens of bytes each. A header longer than this is refused rather
// than read.
const MaxLen = 2048

// Command is what a header says about its connection.
type Command uint8

const (
	// Local: the balancer opened the connection for itself (a health
	// check); the connection's own endpoints are the real ones.
	Local Command = 0x0
	// Proxy: the balancer carries the connection for the client named
	// by Header.Source.
	Proxy Command = 0x1
)

func (c Command) String() string {
	switch c {
	case Local:
		return "LOCAL"
	case Proxy:
		return "PROXY"
	}
	return fmt.Sprintf("Command(%d)", uint8(c))
}

// Header is what a version 2 header says.
type Header struct {
	Command Command
	// Source and Destination are the client's address and the address it
	// connected to on the balancer, for Proxy over TCP on IPv4 or IPv6.
	// Both are zero for Local.
	Source, Destination netip.AddrPort
}

// ErrNotProxy: the bytes do not start with a PROXY protocol signature of
// either version.
var ErrNotProxy = errors.New("proxyproto: no PROXY protocol header")

// ErrVersion1: the bytes start with a version 1 (text) header, which is
// not accepted.
var ErrVersion1 = errors.New("proxyproto: a version 1 (text) header; only version 2 is accepted")

// Error is a header with the signature that breaks the format, or that
// names something a bastion cannot use (not TCP, no address).
type Error struct{ Msg string }

func (e *Error) Error() string { return "proxyproto: " + e.Msg }

func malformed(format string, a ...any) error { return &Error{Msg: fmt.Sprintf(format, a...)} }

// Address families and transports (the 14th byte).
const (
	famUnspec = 0x0
	famInet   = 0x1
	famInet6  = 0x2
	famUnix   = 0x3

	protoUnspec = 0x0
	protoStream = 0x1
	protoDgram  = 0x2

	inetLen  = 4 + 4 + 2 + 2
	inet6Len = 16 + 16 + 2 + 2
)

// Read reads one version 2 header from r, and no byte more. Its errors:
// ErrNotProxy when the first bytes are not a signature (of either
// version), ErrVersion1 for a text header, an *Error for a header that
// breaks the format or does not name a TCP client over IPv4 or IPv6 (for
// Proxy), and r's own errors (io.ErrUnexpectedEOF for a header cut
// short). TLVs are checked for their framing and skipped.
func Read(r io.Reader) (Header, error) {
	var fixed [16]byte
	// The first 6 bytes tell a version 2 signature, a version 1 one and
	// anything else apart, before more is read: a TLS ClientHello from
	// a misconfigured balancer is refused without waiting for 16 bytes.
	if _, err := io.ReadFull(r, fixed[:6]); err != nil {
		return Header{}, err
	}
	switch {
	case bytes.Equal(fixed[:6], v1Prefix):
		return Header{}, ErrVersion1
	case !bytes.Equal(fixed[:6], Signature[:6]):
		return Header{}, ErrNotProxy
	}
	if _, err := io.ReadFull(r, fixed[6:]); err != nil {
		return Header{}, unexpected(err)
	}
	if !bytes.Equal(fixed[:12], Signature[:]) {
		return Header{}, ErrNotProxy
	}
	n := int(binary.BigEndian.Uint16(fixed[14:]))
	if n > MaxLen {
		return Header{}, malformed("header of %d bytes, over %d", n, MaxLen)
	}
	rest := make([]byte, n)
	if _, err := io.ReadFull(r, rest); err != nil {
		return Header{}, unexpected(err)
	}
	return parse(fixed[12], fixed[13], rest)
}

func unexpected(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// parse reads the version and command byte vc, the family and transport
// byte ft, and the block b that follows the length.
func parse(vc, ft byte, b []byte) (Header, error) {
	if v := vc >> 4; v != 2 {
		return Header{}, malformed("version %d, not 2", v)
	}
	cmd := Command(vc & 0xF)
	if cmd != Local && cmd != Proxy {
		return Header{}, malformed("unknown command %d", uint8(cmd))
	}
	fam, proto := ft>>4, ft&0xF
	if fam > famUnix || proto > protoDgram {
		return Header{}, malformed("unknown address family %d or transport %d", fam, proto)
	}
	var h Header
	h.Command = cmd
	var addrLen int
	switch fam {
	case famInet:
		addrLen = inetLen
	case famInet6:
		addrLen = inet6Len
	case famUnix:
		addrLen = 216
	}
	if len(b) < addrLen {
		return Header{}, malformed("%d bytes of addresses for family %d, which needs %d", len(b), fam, addrLen)
	}
	if err := checkTLVs(b[addrLen:]); err != nil {
		return Header{}, err
	}
	if cmd == Local {
		// The receiver must ignore the addresses of a LOCAL header
		// (section 2.2): the connection is the balancer's own.
		return h, nil
	}
	if fam != famInet && fam != famInet6 || proto != protoStream {
		return Header{}, malformed("a PROXY header for family %d transport %d: only TCP over IPv4 or IPv6 is carried here", fam, proto)
	}
	if fam == famInet {
		src, dst := netip.AddrFrom4([4]byte(b[0:4])), netip.AddrFrom4([4]byte(b[4:8]))
		h.Source = netip.AddrPortFrom(src, binary.BigEndian.Uint16(b[8:]))
		h.Destination = netip.AddrPortFrom(dst, binary.BigEndian.Uint16(b[10:]))
	} else {
		// An IPv4 client given as IPv4-mapped is the IPv4 address.
		src, dst := netip.AddrFrom16([16]byte(b[0:16])).Unmap(), netip.AddrFrom16([16]byte(b[16:32])).Unmap()
		h.Source = netip.AddrPortFrom(src, binary.BigEndian.Uint16(b[32:]))
		h.Destination = netip.AddrPortFrom(dst, binary.BigEndian.Uint16(b[34:]))
	}
	if err := checkSource(h.Source.Addr()); err != nil {
		return Header{}, err
	}
	return h, nil
}

// checkSource refuses a client address no client can have: the throttles
// and records would key on it.
func checkSource(a netip.Addr) error {
	if a.IsUnspecified() || a.IsMulticast() || a.Is4() && a == netip.AddrFrom4([4]byte{255, 255, 255, 255}) {
		return malformed("client address %s is not a host's", a)
	}
	return nil
}

// checkTLVs checks that b is a sequence of whole type-length-value
// vectors (section 2.2.7) without reading their values.
func checkTLVs(b []byte) error {
	for len(b) > 0 {
		if len(b) < 3 {
			return malformed("%d stray bytes after the TLVs", len(b))
		}
		n := int(binary.BigEndian.Uint16(b[1:3]))
		if len(b)-3 < n {
			return malformed("TLV of type %#x with %d bytes, %d left", b[0], n, len(b)-3)
		}
		b = b[3+n:]
	}
	return nil
}

// TLV is one type-length-value vector, for Append.
type TLV struct {
	Type  byte
	Value []byte
}

// Append appends the version 2 header of h to b, with the TLVs given: a
// Local header has the family UNSPEC; a Proxy header the family of
// its addresses over TCP: IPv4 when both are IPv4 (or IPv4-mapped), IPv6
// otherwise.
func Append(b []byte, h Header, tlvs ...TLV) []byte {
	b = append(b, Signature[:]...)
	b = append(b, 0x20|byte(h.Command))
	var addrs []byte
	switch {
	case h.Command != Proxy:
		b = append(b, famUnspec<<4|protoUnspec)
	case h.Source.Addr().Unmap().Is4() && h.Destination.Addr().Unmap().Is4():
		b = append(b, famInet<<4|protoStream)
		s, d := h.Source.Addr().Unmap().As4(), h.Destination.Addr().Unmap().As4()
		addrs = append(append(addrs, s[:]...), d[:]...)
		addrs = binary.BigEndian.AppendUint16(addrs, h.Source.Port())
		addrs = binary.BigEndian.AppendUint16(addrs, h.Destination.Port())
	default:
		b = append(b, famInet6<<4|protoStream)
		s, d := h.Source.Addr().As16(), h.Destination.Addr().As16()
		addrs = append(append(addrs, s[:]...), d[:]...)
		addrs = binary.BigEndian.AppendUint16(addrs, h.Source.Port())
		addrs = binary.BigEndian.AppendUint16(addrs, h.Destination.Port())
	}
	for _, t := range tlvs {
		addrs = append(addrs, t.Type)
		addrs = binary.BigEndian.AppendUint16(addrs, uint16(len(t.Value)))
		addrs = append(addrs, t.Value...)
	}
	b = binary.BigEndian.AppendUint16(b, uint16(len(addrs)))
	return append(b, addrs...)
}

// HasSignature reports whether b starts with what a PROXY protocol header
// of either version starts with, as far as b goes: 5 bytes are enough to
// tell, fewer never match.
func HasSignature(b []byte) bool {
	if len(b) < 5 {
		return false
	}
	return bytes.HasPrefix(b, v1Prefix[:min(len(b), len(v1Prefix))]) || bytes.HasPrefix(b, Signature[:min(len(b), len(Signature))])
}
