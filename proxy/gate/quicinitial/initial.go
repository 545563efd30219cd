package quicinitial

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
)

// initialSalt is the salt of the QUIC v1 Initial secret (RFC 9001 section
// 5.2).
var initialSalt = []byte{
	0x38, 0x76, 0x2c, 0xf7, 0xf5, 0x59, 0x34, 0xb3, 0x4d, 0x17,
	0x9a, 0xe6, 0xa4, 0xc8, 0x0c, 0xad, 0xcc, 0xbb, 0x7f, 0x0a,
}

// Sizes of the AEAD_AES_128_GCM keys and of header protection (RFC 9001
// section 5).
const (
	keyLen    = 16
	ivLen     = 12
	tagLen    = 16
	sampleLen = 16
	maxPNLen  = 4
)

// Frame types a client may send in an Initial packet (RFC 9000 section 12.4,
// table 3).
const (
	framePadding   = 0x00
	framePing      = 0x01
	frameAck       = 0x02
	frameAckECN    = 0x03
	frameCrypto    = 0x06
	frameConnClose = 0x1c
)

// maxStreamOffset bounds the end of the data of a CRYPTO frame (RFC 9000
// section 19.6).
const maxStreamOffset = 1<<62 - 1

// CryptoFrame is one CRYPTO frame's data at its offset in the Initial crypto
// stream.
type CryptoFrame struct {
	Offset uint64
	Data   []byte
}

// initialKeys are the packet protection keys of one direction.
type initialKeys struct {
	key [keyLen]byte
	iv  [ivLen]byte
	hp  [keyLen]byte
}

// clientInitialKeys derives the client Initial keys from the Destination
// Connection ID of the client's first Initial packet (RFC 9001 section 5.2)
// with crypto/hkdf. It fails only where crypto/hkdf refuses, in FIPS
// 140-only mode (GODEBUG=fips140=only), which rejects Connection IDs
// shorter than 112 bits as HKDF secrets.
func clientInitialKeys(dcid []byte) (initialKeys, error) {
	var k initialKeys
	initial, err := hkdf.Extract(sha256.New, dcid, initialSalt)
	if err != nil {
		return k, fmt.Errorf("quicinitial: deriving Initial keys: %w", err)
	}
	client, err := expandLabel(initial, "client in", sha256.Size)
	if err != nil {
		return k, err
	}
	for _, o := range []struct {
		label string
		dst   []byte
	}{{"quic key", k.key[:]}, {"quic iv", k.iv[:]}, {"quic hp", k.hp[:]}} {
		b, err := expandLabel(client, o.label, len(o.dst))
		if err != nil {
			return k, err
		}
		copy(o.dst, b)
	}
	return k, nil
}

// ClientKeys are the client Initial keys of dcid (clientInitialKeys): the
// AEAD key, the IV and the header protection key. A test that forges
// Initials seals with them what OpenInitial opens.
func ClientKeys(dcid []byte) (key [keyLen]byte, iv [ivLen]byte, hp [keyLen]byte, err error) {
	k, err := clientInitialKeys(dcid)
	return k.key, k.iv, k.hp, err
}

// expandLabel is HKDF-Expand-Label (RFC 8446 section 7.1) with SHA-256 and
// an empty context, for an output of length bytes.
func expandLabel(secret []byte, label string, length int) ([]byte, error) {
	const prefix = "tls13 "
	info := make([]byte, 0, 2+1+len(prefix)+len(label)+1)
	info = binary.BigEndian.AppendUint16(info, uint16(length))
	info = append(info, byte(len(prefix)+len(label)))
	info = append(info, prefix...)
	info = append(info, label...)
	info = append(info, 0) // empty context
	b, err := hkdf.Expand(sha256.New, secret, string(info), length)
	if err != nil {
		return nil, fmt.Errorf("quicinitial: deriving Initial keys: %w", err)
	}
	return b, nil
}

// OpenInitial decrypts the first packet of a datagram, which must be a QUIC
// v1 Initial packet from a client, and returns its header and its CRYPTO
// frames in packet order. Packets coalesced behind it in the datagram are
// ignored. It returns ErrNotInitial, wrapped, for a short-header packet or a
// v1 long-header packet of another type, and an error for anything a client
// may not send in an Initial packet: another version, a packet that fails
// to decrypt with the keys derived from its own Destination Connection ID
// (RFC 9001 section 5.2), the fixed bit or a reserved bit wrong, or a frame
// other than PADDING, PING, ACK, CRYPTO or CONNECTION_CLOSE. The packet number is taken as is, as for a client's
// first packets (RFC 9000 section 17.1).
//
// OpenInitial neither modifies datagram nor keeps it. The Header's slices
// are sub-slices of datagram, but the frames' Data share one buffer of
// their own, which never aliases datagram.
func OpenInitial(datagram []byte) (Header, []CryptoFrame, error) {
	h, off, err := parseLongHeader(datagram)
	if err != nil {
		return Header{}, nil, err
	}
	if h.Version != Version1 {
		return Header{}, nil, fmt.Errorf("quicinitial: version 0x%08x is not QUIC v1", h.Version)
	}
	if h.Type != typeInitial {
		return Header{}, nil, fmt.Errorf("%w: long packet type %d", ErrNotInitial, h.Type)
	}
	if datagram[0]&0x40 == 0 {
		// RFC 9000 section 17.2; a server that does not advertise
		// grease_quic_bit (RFC 9287) gets no packets without it.
		return Header{}, nil, errors.New("quicinitial: fixed bit clear")
	}
	length, n, ok := readVarint(datagram[off:])
	if !ok {
		return Header{}, nil, errors.New("quicinitial: truncated length")
	}
	pnOff := off + n
	if length > uint64(len(datagram)-pnOff) {
		return Header{}, nil, errors.New("quicinitial: length beyond the datagram")
	}
	if length < maxPNLen+sampleLen {
		return Header{}, nil, errors.New("quicinitial: packet too short for a header protection sample")
	}
	keys, err := clientInitialKeys(h.DCID)
	if err != nil {
		return Header{}, nil, err
	}

	// One allocation holds a copy of the packet, which is decrypted in
	// place, and the header protection mask and the nonce, which would
	// escape to the heap anyway through the cipher interfaces.
	end := pnOff + int(length)
	buf := make([]byte, end+sampleLen+ivLen)
	pkt, mask, nonce := buf[:end:end], buf[end:end+sampleLen], buf[end+sampleLen:]
	copy(pkt, datagram)

	// Remove header protection (RFC 9001 section 5.4).
	hp, err := aes.NewCipher(keys.hp[:])
	if err != nil {
		return Header{}, nil, err
	}
	hp.Encrypt(mask, pkt[pnOff+maxPNLen:pnOff+maxPNLen+sampleLen])
	pkt[0] ^= mask[0] & 0x0f
	pnLen := int(pkt[0]&0x03) + 1
	var pn uint64
	for i := range pnLen {
		pkt[pnOff+i] ^= mask[1+i]
		pn = pn<<8 | uint64(pkt[pnOff+i])
	}

	// Decrypt the payload in place (RFC 9001 section 5.3).
	block, err := aes.NewCipher(keys.key[:])
	if err != nil {
		return Header{}, nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return Header{}, nil, err
	}
	copy(nonce, keys.iv[:])
	for i := range 8 {
		nonce[ivLen-1-i] ^= byte(pn >> (8 * i))
	}
	hdrEnd := pnOff + pnLen
	payload, err := aead.Open(pkt[hdrEnd:hdrEnd], nonce, pkt[hdrEnd:], pkt[:hdrEnd])
	if err != nil {
		return Header{}, nil, fmt.Errorf("quicinitial: decrypting packet: %w", err)
	}
	if pkt[0]&0x0c != 0 {
		return Header{}, nil, errors.New("quicinitial: reserved header bits set")
	}
	frames, err := parseFrames(payload)
	if err != nil {
		return Header{}, nil, err
	}
	return h, frames, nil
}

// parseFrames reads the frames of a decrypted Initial packet and returns
// its CRYPTO frames, whose Data are sub-slices of p.
func parseFrames(p []byte) ([]CryptoFrame, error) {
	if len(p) == 0 {
		return nil, errors.New("quicinitial: packet with no frames") // RFC 9000 section 12.4
	}
	var frames []CryptoFrame
	for len(p) > 0 {
		typ := p[0]
		p = p[1:]
		var ok bool
		switch typ {
		case framePadding, framePing:
			ok = true
		case frameAck, frameAckECN: // RFC 9000 section 19.3
			var count uint64
			p, ok = skipVarints(p, 2) // Largest Acknowledged, ACK Delay
			if ok {
				count, p, ok = varint(p)
			}
			if ok {
				p, ok = skipVarints(p, 1) // First ACK Range
			}
			// Every range takes two bytes at least, so this loop ends.
			for ; ok && count > 0; count-- {
				p, ok = skipVarints(p, 2) // Gap, ACK Range Length
			}
			if ok && typ == frameAckECN {
				p, ok = skipVarints(p, 3) // ECT0, ECT1, ECN-CE counts
			}
		case frameCrypto: // RFC 9000 section 19.6
			var f CryptoFrame
			var n uint64
			f.Offset, p, ok = varint(p)
			if ok {
				n, p, ok = varint(p)
			}
			if ok && n > uint64(len(p)) {
				ok = false
			}
			if !ok {
				break
			}
			if f.Offset+n > maxStreamOffset {
				return nil, errors.New("quicinitial: CRYPTO frame beyond the largest stream offset")
			}
			f.Data, p = p[:n:n], p[n:]
			frames = append(frames, f)
		case frameConnClose: // RFC 9000 section 19.19
			var n uint64
			p, ok = skipVarints(p, 2) // Error Code, Frame Type
			if ok {
				n, p, ok = varint(p)
			}
			if ok && n <= uint64(len(p)) {
				p = p[n:]
			} else {
				ok = false
			}
		default:
			return nil, fmt.Errorf("quicinitial: frame type %#x not allowed in an Initial packet", typ)
		}
		if !ok {
			return nil, fmt.Errorf("quicinitial: truncated frame of type %#x", typ)
		}
	}
	return frames, nil
}

// varint reads a variable-length integer from the start of p and returns
// it with the rest of p.
func varint(p []byte) (uint64, []byte, bool) {
	v, n, ok := readVarint(p)
	if !ok {
		return 0, p, false
	}
	return v, p[n:], true
}

// skipVarints skips n variable-length integers at the start of p.
func skipVarints(p []byte, n int) ([]byte, bool) {
	for range n {
		_, l, ok := readVarint(p)
		if !ok {
			return p, false
		}
		p = p[l:]
	}
	return p, true
}
