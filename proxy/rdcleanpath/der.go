package rdcleanpath

import (
	"errors"
	"fmt"
	"math"
)

// The DER identifier octets RDCleanPath uses. Context-specific tags are
// constructed, as EXPLICIT tags always are; their number is the low five
// bits (RDCleanPath's are all below 31, the low-tag-number form).
const (
	tagInteger     = 0x02
	tagOctetString = 0x04
	tagUTF8String  = 0x0c
	tagSequence    = 0x30
	tagContext     = 0xa0 // | field number
)

// maxLengthOctets is the longest long-form length accepted: four octets
// already say 4 GiB, far past any bound a caller sets.
const maxLengthOctets = 4

// ErrMalformed is wrapped by every error that says a PDU's bytes are wrong,
// as opposed to the stream they came from: a gateway answers those with
// HTTP status 400.
var ErrMalformed = errors.New("rdcleanpath: malformed PDU")

// malformedError is an ErrMalformed that says what is wrong.
type malformedError struct{ msg string }

func malformed(format string, args ...any) error {
	return &malformedError{"rdcleanpath: " + fmt.Sprintf(format, args...)}
}

func (e *malformedError) Error() string { return e.msg }
func (e *malformedError) Unwrap() error { return ErrMalformed }

// longLength decodes the octets of a long-form DER length, refusing any
// form that is not the shortest: a leading zero octet, or a long form for a
// length that fits the short one.
func longLength(octets []byte) (int, error) {
	if len(octets) > maxLengthOctets {
		return 0, malformed("length of %d octets", len(octets))
	}
	if octets[0] == 0 {
		return 0, malformed("non-minimal length (leading zero octet)")
	}
	var n uint64
	for _, o := range octets {
		n = n<<8 | uint64(o)
	}
	switch {
	case n < 0x80:
		return 0, malformed("non-minimal length (long form for %d)", n)
	case n > math.MaxInt32: // an int everywhere
		return 0, malformed("length %d too large", n)
	}
	return int(n), nil
}

// element splits off the DER element at the start of b: its identifier
// octet, its contents and the bytes after it.
func element(b []byte) (tag byte, body, rest []byte, err error) {
	if len(b) < 2 {
		return 0, nil, nil, malformed("truncated element")
	}
	tag = b[0]
	if tag&0x1f == 0x1f {
		return 0, nil, nil, malformed("high tag number form (tag 0x%02x)", tag)
	}
	n, hdr := int(b[1]), 2
	switch {
	case b[1] == 0x80:
		return 0, nil, nil, malformed("indefinite length (tag 0x%02x)", tag)
	case b[1] > 0x80:
		k := int(b[1] & 0x7f)
		if len(b) < 2+k {
			return 0, nil, nil, malformed("truncated length (tag 0x%02x)", tag)
		}
		if n, err = longLength(b[2 : 2+k]); err != nil {
			return 0, nil, nil, err
		}
		hdr += k
	}
	if n > len(b)-hdr {
		return 0, nil, nil, malformed("element of %d bytes in %d (tag 0x%02x)", n, len(b)-hdr, tag)
	}
	return tag, b[hdr : hdr+n], b[hdr+n:], nil
}

// explicit reads the one element inside the contents of an EXPLICIT tag,
// which must have identifier want.
func explicit(field string, body []byte, want byte) ([]byte, error) {
	tag, inner, rest, err := element(body)
	if err != nil {
		return nil, err
	}
	if tag != want {
		return nil, malformed("%s: tag 0x%02x, want 0x%02x", field, tag, want)
	}
	if len(rest) != 0 {
		return nil, malformed("%s: %d bytes after the value", field, len(rest))
	}
	return inner, nil
}

// integer decodes the contents of a DER INTEGER, at most 64 bits, in its
// shortest two's complement form.
func integer(field string, b []byte) (int64, error) {
	switch {
	case len(b) == 0:
		return 0, malformed("%s: empty INTEGER", field)
	case len(b) > 8:
		return 0, malformed("%s: INTEGER of %d bytes", field, len(b))
	case len(b) > 1 && (b[0] == 0 && b[1] < 0x80 || b[0] == 0xff && b[1] >= 0x80):
		return 0, malformed("%s: non-minimal INTEGER", field)
	}
	v := int64(int8(b[0])) // sign extension
	for _, o := range b[1:] {
		v = v<<8 | int64(o)
	}
	return v, nil
}

// appendElement appends the DER element tag with contents body.
func appendElement(b []byte, tag byte, body []byte) []byte {
	b = append(b, tag)
	b = appendLength(b, len(body))
	return append(b, body...)
}

// appendLength appends n in the shortest DER length form. Marshal keeps n
// below 1<<32.
func appendLength(b []byte, n int) []byte {
	if n < 0x80 {
		return append(b, byte(n))
	}
	k := 1
	for n>>(8*k) != 0 {
		k++
	}
	b = append(b, 0x80|byte(k))
	for i := k - 1; i >= 0; i-- {
		b = append(b, byte(n>>(8*i)))
	}
	return b
}

// appendInteger appends v as a DER INTEGER: the fewest two's complement
// octets that keep its sign.
func appendInteger(b []byte, v int64) []byte {
	k := 1
	for k < 8 && (v>>(8*k-1) != 0 && v>>(8*k-1) != -1) {
		k++
	}
	b = append(b, tagInteger, byte(k))
	for i := k - 1; i >= 0; i-- {
		b = append(b, byte(v>>(8*i)))
	}
	return b
}
