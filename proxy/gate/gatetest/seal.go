package gatetest

import (
	"crypto/aes"
	"crypto/cipher"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/bastiond/bastiond/proxy/gate/quicinitial"
)

// What a flood needs to forge QUIC first flights without a QUIC stack: the
// client Initial keys of any Destination Connection ID (RFC 9001 section
// 5.2) and the packet protection (sections 5.3 and 5.4), so that one
// ClientHello can be sent under as many connection IDs as wanted, at the
// cost of an HKDF and one AES-GCM seal a packet.

// InitialKeys protect a client's Initial packets to one DCID.
type InitialKeys struct {
	aead cipher.AEAD
	iv   [12]byte
	hp   cipher.Block
}

// ClientInitialKeys derives the client Initial keys of dcid (quicinitial's
// derivation, the one the gate opens with).
func ClientInitialKeys(dcid []byte) (*InitialKeys, error) {
	key, iv, hpKey, err := quicinitial.ClientKeys(dcid)
	if err != nil {
		return nil, err
	}
	k := &InitialKeys{iv: iv}
	block, err := aes.NewCipher(key[:])
	if err != nil {
		return nil, err
	}
	if k.aead, err = cipher.NewGCM(block); err != nil {
		return nil, err
	}
	if k.hp, err = aes.NewCipher(hpKey[:]); err != nil {
		return nil, err
	}
	return k, nil
}

// SealInitial appends to dst a client Initial packet to dcid from scid
// carrying token (nil before a Retry) and the plaintext frames, with the
// 4-byte packet number pn, padded with PADDING frames to padTo bytes.
func (k *InitialKeys) SealInitial(dst, dcid, scid, token []byte, pn uint32, frames []byte, padTo int) []byte {
	start := len(dst)
	b := append(dst, 0xc3, 0, 0, 0, 1, byte(len(dcid)))
	b = append(b, dcid...)
	b = append(b, byte(len(scid)))
	b = append(b, scid...)
	b = AppendVarint(b, uint64(len(token)))
	b = append(b, token...)
	payload := len(frames)
	if short := padTo - (len(b) - start + 2 + 4 + payload + 16); short > 0 {
		payload += short
	}
	payload = max(payload, 4) // header protection samples 16 bytes from 4 bytes after the packet number
	length := 4 + payload + 16
	b = binary.BigEndian.AppendUint16(b, 0x4000|uint16(length))
	pnOff := len(b)
	b = binary.BigEndian.AppendUint32(b, pn)
	hdrEnd := len(b)
	b = append(b, frames...)
	b = append(b, make([]byte, payload-len(frames))...)
	nonce := k.iv
	for i := range 4 {
		nonce[11-i] ^= byte(pn >> (8 * i))
	}
	b = k.aead.Seal(b[:hdrEnd], nonce[:], b[hdrEnd:], b[start:hdrEnd])
	var mask [16]byte
	k.hp.Encrypt(mask[:], b[pnOff+4:pnOff+20])
	b[start] ^= mask[0] & 0x0f
	for i := range 4 {
		b[pnOff+i] ^= mask[1+i]
	}
	return b
}

// CryptoFrame appends a CRYPTO frame of data at off to b.
func CryptoFrame(b []byte, off uint64, data []byte) []byte {
	b = append(b, 0x06)
	b = AppendVarint(b, off)
	b = AppendVarint(b, uint64(len(data)))
	return append(b, data...)
}

// AppendVarint appends v as a QUIC variable-length integer of minimal length.
func AppendVarint(b []byte, v uint64) []byte {
	switch {
	case v < 1<<6:
		return append(b, byte(v))
	case v < 1<<14:
		return binary.BigEndian.AppendUint16(b, 0x4000|uint16(v))
	case v < 1<<30:
		return binary.BigEndian.AppendUint32(b, 0x8000_0000|uint32(v))
	default:
		return binary.BigEndian.AppendUint64(b, 0xc000_0000_0000_0000|v)
	}
}

// Retry is what a client takes from a server's Retry packet: the
// connection ID to send its next Initials to, and the token to put in them.
type Retry struct {
	SCID, Token []byte
}

// ParseRetry reads a QUIC v1 Retry packet (RFC 9000 section 17.2.5). Its
// integrity tag is not checked: a flood has no reason to.
func ParseRetry(b []byte) (Retry, error) {
	if len(b) < 7 || b[0]&0xf0 != 0xf0 || binary.BigEndian.Uint32(b[1:5]) != 1 {
		return Retry{}, errors.New("gatetest: not a QUIC v1 Retry")
	}
	off := 6 + int(b[5]) // past the DCID
	if off >= len(b) {
		return Retry{}, errors.New("gatetest: Retry truncated in its DCID")
	}
	n := int(b[off])
	off++
	if off+n+16 > len(b) {
		return Retry{}, fmt.Errorf("gatetest: Retry of %d bytes truncated", len(b))
	}
	return Retry{SCID: b[off : off+n], Token: b[off+n : len(b)-16]}, nil
}
