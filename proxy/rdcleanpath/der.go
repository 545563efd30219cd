package rdcleanpath

import (
	"errors"
	"fmt"
	"math"

	"golang.org/x/crypto/cryptobyte"
	"golang.org/x/crypto/cryptobyte/asn1"
)

// The DER identifier octets RDCleanPath uses. Its fields are EXPLICIT
// context-specific tags, which are constructed; their numbers are all below
// 31, the low-tag-number form cryptobyte reads.
const (
	tagInteger     = asn1.INTEGER
	tagOctetString = asn1.OCTET_STRING
	tagUTF8String  = asn1.UTF8String
	tagSequence    = asn1.SEQUENCE
)

// tagField is the identifier of the PDU field or error field number n.
func tagField(n int) asn1.Tag { return asn1.Tag(n).ContextSpecific().Constructed() }

// fieldNumber returns the field number of a field's identifier, and false
// for any identifier other than a constructed context-specific one.
func fieldNumber(tag asn1.Tag) (int, bool) {
	n := int(tag &^ tagField(0))
	return n, tagField(n) == tag
}

// maxLengthOctets is the longest long-form length accepted, as cryptobyte
// does: four octets already say 4 GiB, far past any bound a caller sets.
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
// length that fits the short one. Read uses it for a PDU's header, which it
// checks before the body has arrived; elsewhere it only says why cryptobyte
// refused an element.
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

// readElement splits off the DER element at the start of s and returns its
// identifier and contents. cryptobyte decides what is DER; when it refuses,
// the error says why.
func readElement(s *cryptobyte.String) (asn1.Tag, cryptobyte.String, error) {
	var tag asn1.Tag
	var body cryptobyte.String
	if !s.ReadAnyASN1(&body, &tag) {
		return 0, nil, elementError(*s)
	}
	return tag, body, nil
}

// elementError says why cryptobyte refused the element at the start of b:
// the identifier and length octets, or contents shorter than announced.
func elementError(b []byte) error {
	if len(b) < 2 {
		return malformed("truncated element")
	}
	tag := b[0]
	if tag&0x1f == 0x1f {
		return malformed("high tag number form (tag 0x%02x)", tag)
	}
	n, hdr := int(b[1]), 2
	switch {
	case b[1] == 0x80:
		return malformed("indefinite length (tag 0x%02x)", tag)
	case b[1] > 0x80:
		k := int(b[1] & 0x7f)
		if len(b) < 2+k {
			return malformed("truncated length (tag 0x%02x)", tag)
		}
		var err error
		if n, err = longLength(b[2 : 2+k]); err != nil {
			return err
		}
		hdr += k
	}
	if n > len(b)-hdr {
		return malformed("element of %d bytes in %d (tag 0x%02x)", n, len(b)-hdr, tag)
	}
	return malformed("not DER (tag 0x%02x)", tag)
}

// explicit reads the one element inside the contents of an EXPLICIT tag,
// which must have identifier want, and returns its contents.
func explicit(field string, body cryptobyte.String, want asn1.Tag) (cryptobyte.String, error) {
	var inner cryptobyte.String
	var tag asn1.Tag
	if !body.ReadAnyASN1(&inner, &tag) {
		return nil, elementError(body)
	}
	if tag != want {
		return nil, malformed("%s: tag 0x%02x, want 0x%02x", field, uint8(tag), uint8(want))
	}
	if !body.Empty() {
		return nil, malformed("%s: %d bytes after the value", field, len(body))
	}
	return inner, nil
}

// integer reads the DER INTEGER inside the contents of an EXPLICIT tag: at
// most 64 bits, in its shortest two's complement form.
func integer(field string, body cryptobyte.String) (int64, error) {
	var v int64
	if rest := body; rest.ReadASN1Integer(&v) && rest.Empty() {
		return v, nil
	}
	b, err := explicit(field, body, tagInteger)
	switch {
	case err != nil:
		return 0, err
	case len(b) == 0:
		return 0, malformed("%s: empty INTEGER", field)
	case len(b) > 8:
		return 0, malformed("%s: INTEGER of %d bytes", field, len(b))
	default:
		return 0, malformed("%s: non-minimal INTEGER", field)
	}
}
