package quicinitial

import (
	"bytes"
	"fmt"
)

// MaxHello bounds the start of the Initial crypto stream an Assembler
// buffers, and so the ClientHello it can return. Real ones are a few hundred
// bytes, about 1.8 KiB with a post-quantum key share.
const MaxHello = 16 << 10

// handshakeClientHello is the HandshakeType of a ClientHello (RFC 8446
// section 4).
const handshakeClientHello = 1

// Assembler rebuilds the start of the Initial crypto stream, the TLS
// ClientHello handshake message, from CRYPTO frames that may arrive out of
// order, overlapping, duplicated and spread over several packets. Its zero
// value is ready to use. It buffers at most MaxHello bytes, and data sent
// twice at the same offset must be the same: otherwise the QUIC stack might
// read another ClientHello than the one returned here. An Assembler is not
// safe for concurrent use.
type Assembler struct {
	buf    []byte                // the stream from offset 0, as far as received
	have   [MaxHello / 64]uint64 // a bit set for each byte of buf received
	prefix int                   // bytes received without a gap from offset 0
	err    error                 // the first error, returned ever after
}

// Add records frames. It returns an error if a frame reaches beyond MaxHello
// or brings other data than what an earlier one brought at the same offset.
// After an error, Add and ClientHello return that error ever after.
func (a *Assembler) Add(frames []CryptoFrame) error {
	if a.err != nil {
		return a.err
	}
	for _, f := range frames {
		if f.Offset > MaxHello || uint64(len(f.Data)) > MaxHello-f.Offset {
			a.err = fmt.Errorf("quicinitial: CRYPTO frame beyond the first %d bytes of the stream", MaxHello)
			return a.err
		}
		off := int(f.Offset)
		if end := off + len(f.Data); end > len(a.buf) {
			a.buf = append(a.buf, make([]byte, end-len(a.buf))...)
		}
		for i, c := range f.Data {
			j := off + i
			w, bit := j/64, uint64(1)<<(j%64)
			if a.have[w]&bit == 0 {
				a.buf[j] = c
				a.have[w] |= bit
			} else if a.buf[j] != c {
				a.err = fmt.Errorf("quicinitial: CRYPTO frames disagree at offset %d", j)
				return a.err
			}
		}
	}
	for a.prefix < len(a.buf) && a.have[a.prefix/64]&(1<<(a.prefix%64)) != 0 {
		a.prefix++
	}
	return nil
}

// ClientHello returns the first handshake message of the stream, its 4-byte
// header (type 1, client_hello, and a 3-byte length) and body, once all of
// it has arrived, and ok false while part of it is missing. It returns an
// error if the first byte is not 1 or the announced length exceeds
// MaxHello-4. The message is a copy, for the caller to keep.
func (a *Assembler) ClientHello() (msg []byte, ok bool, err error) {
	if a.err != nil {
		return nil, false, a.err
	}
	if a.prefix == 0 {
		return nil, false, nil
	}
	if a.buf[0] != handshakeClientHello {
		a.err = fmt.Errorf("quicinitial: handshake message type %d is not client_hello", a.buf[0])
		return nil, false, a.err
	}
	if a.prefix < 4 {
		return nil, false, nil
	}
	n := int(a.buf[1])<<16 | int(a.buf[2])<<8 | int(a.buf[3])
	if n > MaxHello-4 {
		a.err = fmt.Errorf("quicinitial: ClientHello of %d bytes announced, over %d", 4+n, MaxHello)
		return nil, false, a.err
	}
	if a.prefix < 4+n {
		return nil, false, nil
	}
	return bytes.Clone(a.buf[:4+n]), true, nil
}
