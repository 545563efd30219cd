package quicinitial

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Version1 is QUIC version 1 (RFC 9000).
const Version1 = 0x00000001

// ErrNotInitial is returned, wrapped, for a datagram that does not start
// with a long-header packet (a short-header packet belongs to a connection
// already set up). OpenInitial also wraps it for a QUIC v1 long-header
// packet of another type than Initial (0-RTT, Handshake or Retry).
var ErrNotInitial = errors.New("quicinitial: not an initial packet")

// typeInitial is the long packet type of an Initial packet in QUIC version 1
// (RFC 9000 section 17.2).
const typeInitial = 0

// maxCIDLen is the longest connection ID QUIC version 1 allows (RFC 9000
// section 17.2).
const maxCIDLen = 20

// Header is the part of a long-header packet read without decryption.
type Header struct {
	// Version is the QUIC version; 0 is a Version Negotiation packet.
	Version uint32
	// Type is the long packet type, bits 5 and 4 of the first byte: for
	// QUIC v1, 0 is Initial, 1 0-RTT, 2 Handshake and 3 Retry. Other
	// versions may use them differently.
	Type uint8
	// DCID and SCID are the Destination and Source Connection IDs. They are
	// sub-slices of the datagram: callers copy them if they keep them.
	DCID, SCID []byte
	// Token is the token of a QUIC v1 Initial packet (nil if empty or
	// another type or version), a sub-slice of the datagram too.
	Token []byte
}

// ParseLongHeader reads the long header of the first packet of a datagram
// (RFC 9000 section 17.2) without decrypting anything. It returns
// ErrNotInitial, wrapped, for a short-header packet. Connection IDs longer
// than 20 bytes are an error for QUIC v1; for other versions only the
// version-independent fields (RFC 8999) are read.
func ParseLongHeader(datagram []byte) (Header, error) {
	h, _, err := parseLongHeader(datagram)
	return h, err
}

// parseLongHeader is ParseLongHeader that also returns the offset of the
// field after the header fields it read: the Length of a v1 Initial,
// 0-RTT or Handshake packet.
func parseLongHeader(b []byte) (Header, int, error) {
	var h Header
	if len(b) == 0 {
		return h, 0, fmt.Errorf("%w: empty datagram", ErrNotInitial)
	}
	if b[0]&0x80 == 0 {
		return h, 0, fmt.Errorf("%w: short-header packet", ErrNotInitial)
	}
	if len(b) < 6 {
		return h, 0, errors.New("quicinitial: truncated long header")
	}
	h.Version = binary.BigEndian.Uint32(b[1:5])
	h.Type = b[0] >> 4 & 3
	off := 5
	var ok bool
	if h.DCID, off, ok = readCID(b, off); !ok {
		return Header{}, 0, errors.New("quicinitial: truncated destination connection ID")
	}
	if h.SCID, off, ok = readCID(b, off); !ok {
		return Header{}, 0, errors.New("quicinitial: truncated source connection ID")
	}
	if h.Version != Version1 {
		return h, off, nil
	}
	if len(h.DCID) > maxCIDLen || len(h.SCID) > maxCIDLen {
		return Header{}, 0, errors.New("quicinitial: connection ID over 20 bytes")
	}
	if h.Type != typeInitial {
		return h, off, nil
	}
	n, l, ok := readVarint(b[off:])
	if !ok || n > uint64(len(b)-off-l) {
		return Header{}, 0, errors.New("quicinitial: truncated token")
	}
	off += l
	if n > 0 {
		h.Token = b[off : off+int(n)]
		off += int(n)
	}
	return h, off, nil
}

// readCID reads a connection ID prefixed by its one-byte length at b[off:].
func readCID(b []byte, off int) ([]byte, int, bool) {
	if off >= len(b) {
		return nil, off, false
	}
	n := int(b[off])
	off++
	if n > len(b)-off {
		return nil, off, false
	}
	return b[off : off+n], off + n, true
}

// readVarint reads a variable-length integer (RFC 9000 section 16) from the
// start of b and returns it with its length in bytes.
func readVarint(b []byte) (v uint64, n int, ok bool) {
	if len(b) == 0 {
		return 0, 0, false
	}
	n = 1 << (b[0] >> 6)
	if len(b) < n {
		return 0, 0, false
	}
	v = uint64(b[0] & 0x3f)
	for _, c := range b[1:n] {
		v = v<<8 | uint64(c)
	}
	return v, n, true
}
