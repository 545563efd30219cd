package quicinitial

import (
	"crypto/aes"
	"crypto/cipher"
	"encoding/binary"
)

// sealInitial builds a protected client Initial packet with a 4-byte packet
// number, the inverse of OpenInitial. frames is the plaintext payload; it is
// padded with PADDING frames so that the packet is padTo bytes long, if it
// is shorter, and at least as long as header protection needs.
func sealInitial(dcid, scid, token []byte, pn uint32, frames []byte, padTo int) []byte {
	return sealInitialPN(dcid, scid, token, pn, 4, frames, padTo)
}

// sealInitialPN is sealInitial with a packet number of pnLen bytes.
func sealInitialPN(dcid, scid, token []byte, pn uint32, pnLen int, frames []byte, padTo int) []byte {
	return sealPacket(0xc0, dcid, scid, token, pn, pnLen, frames, padTo)
}

// sealPacket is sealInitialPN with the bits of the first byte other than
// the packet number length given by first.
func sealPacket(first byte, dcid, scid, token []byte, pn uint32, pnLen int, frames []byte, padTo int) []byte {
	keys, err := clientInitialKeys(dcid)
	if err != nil {
		panic(err)
	}
	hdr := []byte{first | byte(pnLen-1), 0, 0, 0, 1}
	hdr = append(hdr, byte(len(dcid)))
	hdr = append(hdr, dcid...)
	hdr = append(hdr, byte(len(scid)))
	hdr = append(hdr, scid...)
	hdr = appendVarint(hdr, uint64(len(token)))
	hdr = append(hdr, token...)
	lenOff := len(hdr)
	hdr = append(hdr, 0x40, 0) // Length, 2-byte varint, set below
	pnOff := len(hdr)
	for i := pnLen - 1; i >= 0; i-- {
		hdr = append(hdr, byte(pn>>(8*i)))
	}

	payload := append([]byte(nil), frames...)
	if short := padTo - (len(hdr) + len(payload) + tagLen); short > 0 {
		payload = append(payload, make([]byte, short)...)
	}
	if short := maxPNLen + sampleLen - (pnLen + len(payload) + tagLen); short > 0 {
		payload = append(payload, make([]byte, short)...)
	}
	length := pnLen + len(payload) + tagLen
	if length >= 1<<14 {
		panic("sealInitial: packet too long")
	}
	binary.BigEndian.PutUint16(hdr[lenOff:], 0x4000|uint16(length))

	block, _ := aes.NewCipher(keys.key[:])
	aead, _ := cipher.NewGCM(block)
	nonce := keys.iv
	for i := range 8 {
		nonce[ivLen-1-i] ^= byte(uint64(pn) >> (8 * i))
	}
	pkt := aead.Seal(hdr, nonce[:], payload, hdr)

	hp, _ := aes.NewCipher(keys.hp[:])
	var mask [sampleLen]byte
	hp.Encrypt(mask[:], pkt[pnOff+maxPNLen:pnOff+maxPNLen+sampleLen])
	pkt[0] ^= mask[0] & 0x0f
	for i := range pnLen {
		pkt[pnOff+i] ^= mask[1+i]
	}
	return pkt
}

// appendVarint appends v as a variable-length integer of minimal length.
func appendVarint(b []byte, v uint64) []byte {
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

// cryptoFrame encodes a CRYPTO frame.
func cryptoFrame(off uint64, data []byte) []byte {
	b := appendVarint([]byte{frameCrypto}, off)
	b = appendVarint(b, uint64(len(data)))
	return append(b, data...)
}
