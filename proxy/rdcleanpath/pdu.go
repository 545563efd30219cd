package rdcleanpath

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"unicode/utf8"

	"golang.org/x/crypto/cryptobyte"
)

// Version is the RDCleanPath protocol version, the only one accepted
// (3389, the RDP port, plus one).
const Version = 3390

// MaxRequest bounds a request PDU from the client: the X.224 Connection
// Request and the preconnection blob it carries are small.
const MaxRequest = 16 << 10

// maxMarshal bounds what Marshal encodes, far above any real PDU (a
// certificate chain is a few KiB), so that every length fits four octets.
const maxMarshal = 1 << 30

// PDU is one RDCleanPath message. A string field is absent when empty; a
// byte field is absent when nil, so that a response can carry an empty
// certificate chain.
type PDU struct {
	// Version is the protocol version; Marshal writes Version when it is 0.
	Version int64
	// Error is set in an error PDU (gateway to client).
	Error *Error
	// Destination is the server the client asks for (client to gateway).
	// The gateway takes the server from its own authorization instead.
	Destination string
	// ProxyAuth is the client's authorization for the gateway (client to
	// gateway): the bastion's connect ticket.
	ProxyAuth string
	// ServerAuth is unused by IronRDP.
	ServerAuth string
	// PreconnectionBlob is sent to the server before the X.224 Connection
	// Request (client to gateway; Hyper-V uses it to pick a virtual machine).
	PreconnectionBlob string
	// X224ConnectionPDU is the client's X.224 Connection Request in a
	// request, the server's Connection Confirm in a response or a
	// negotiation failure; each a whole TPKT packet.
	X224ConnectionPDU []byte
	// ServerCertChain is the server's TLS certificate chain, DER, leaf first
	// (gateway to client).
	ServerCertChain [][]byte
	// ServerAddr is the address the gateway connected to (gateway to
	// client); IronRDP needs it to parse a response.
	ServerAddr string
}

// Error codes of an Error.
const (
	ErrorGeneral     = 1
	ErrorNegotiation = 2 // the PDU's X224ConnectionPDU is the server's Confirm
)

// Error is the error of an error PDU. IronRDP reads the codes as 16-bit
// unsigned numbers and the alert as an 8-bit one; 0 means absent for each
// of the optional ones (no status, socket error or alert is 0: a
// close_notify alert is not an error).
type Error struct {
	Code         int64
	HTTPStatus   int64
	WSALastError int64
	TLSAlert     int64
}

func (e *Error) Error() string {
	var b strings.Builder
	switch e.Code {
	case ErrorGeneral:
		b.WriteString("rdcleanpath: general error")
	case ErrorNegotiation:
		b.WriteString("rdcleanpath: negotiation failure")
	default:
		fmt.Fprintf(&b, "rdcleanpath: error code %d", e.Code)
	}
	sep := ": "
	if e.HTTPStatus != 0 {
		fmt.Fprintf(&b, "%sHTTP %d", sep, e.HTTPStatus)
		if t := http.StatusText(int(e.HTTPStatus)); t != "" {
			fmt.Fprintf(&b, " (%s)", t)
		}
		sep = ", "
	}
	if e.WSALastError != 0 {
		fmt.Fprintf(&b, "%sWSA error %d", sep, e.WSALastError)
		if t := wsaText[e.WSALastError]; t != "" {
			fmt.Fprintf(&b, " (%s)", t)
		}
		sep = ", "
	}
	if e.TLSAlert != 0 {
		fmt.Fprintf(&b, "%sTLS alert %d", sep, e.TLSAlert)
		if e.TLSAlert > 0 && e.TLSAlert <= 0xff {
			if t := strings.TrimPrefix(tls.AlertError(e.TLSAlert).Error(), "tls: "); !strings.HasPrefix(t, "alert(") {
				fmt.Fprintf(&b, " (%s)", t)
			}
		}
	}
	return b.String()
}

// check says which value IronRDP could not decode, if any.
func (e *Error) check() string {
	for _, f := range []struct {
		name string
		v    int64
		max  int64
	}{
		{"errorCode", e.Code, 0xffff},
		{"httpStatusCode", e.HTTPStatus, 0xffff},
		{"wsaLastError", e.WSALastError, 0xffff},
		{"tlsAlertCode", e.TLSAlert, 0xff},
	} {
		if f.v < 0 || f.v > f.max {
			return fmt.Sprintf("%s %d out of range [0, %d]", f.name, f.v, f.max)
		}
	}
	return ""
}

// Response is the answer to a request once the gateway has connected: x224
// is the server's Connection Confirm, chain its certificates (leaf first),
// serverAddr the address connected to.
func Response(x224 []byte, chain [][]byte, serverAddr string) *PDU {
	if x224 == nil {
		x224 = []byte{}
	}
	if chain == nil {
		chain = [][]byte{} // IronRDP requires the field in a response
	}
	return &PDU{Version: Version, X224ConnectionPDU: x224, ServerCertChain: chain, ServerAddr: serverAddr}
}

// GeneralError is a general error with an HTTP-like status: 400 for a
// request the gateway cannot read, 401 or 403 for one it does not
// authorize, 500 for its own failure.
func GeneralError(httpStatus int) *PDU {
	return &PDU{Version: Version, Error: &Error{Code: ErrorGeneral, HTTPStatus: int64(httpStatus)}}
}

// WSAError is a general error with the Windows socket error code of a
// failed connection to the server (see WSACode).
func WSAError(code int) *PDU {
	return &PDU{Version: Version, Error: &Error{Code: ErrorGeneral, WSALastError: int64(code)}}
}

// TLSAlertError is a general error with the TLS alert that ended the
// handshake with the server (see TLSAlert).
func TLSAlertError(alert uint8) *PDU {
	return &PDU{Version: Version, Error: &Error{Code: ErrorGeneral, TLSAlert: int64(alert)}}
}

// NegotiationFailure is the error for a server that refused the client's
// security protocols: cc is the server's Connection Confirm, from which the
// client reads why.
func NegotiationFailure(cc []byte) *PDU {
	if cc == nil {
		cc = []byte{}
	}
	return &PDU{Version: Version, Error: &Error{Code: ErrorNegotiation}, X224ConnectionPDU: cc}
}

// Marshal returns the DER encoding of p, the bytes IronRDP's encoder
// produces for the same message. It refuses a version other than Version,
// error codes out of their range and strings that are not UTF-8.
func (p *PDU) Marshal() ([]byte, error) {
	v := p.Version
	if v == 0 {
		v = Version
	}
	if v != Version {
		return nil, fmt.Errorf("rdcleanpath: marshal: version %d, want %d", v, Version)
	}
	size := len(p.Destination) + len(p.ProxyAuth) + len(p.ServerAuth) + len(p.PreconnectionBlob) +
		len(p.X224ConnectionPDU) + len(p.ServerAddr)
	for _, c := range p.ServerCertChain {
		size += len(c)
	}
	if size > maxMarshal {
		return nil, fmt.Errorf("rdcleanpath: marshal: %d bytes of fields exceed %d", size, maxMarshal)
	}

	if p.Error != nil {
		if bad := p.Error.check(); bad != "" {
			return nil, fmt.Errorf("rdcleanpath: marshal: error: %s", bad)
		}
	}
	for _, s := range []struct {
		n int
		v string
	}{{2, p.Destination}, {3, p.ProxyAuth}, {4, p.ServerAuth}, {5, p.PreconnectionBlob}, {9, p.ServerAddr}} {
		if !utf8.ValidString(s.v) {
			return nil, fmt.Errorf("rdcleanpath: marshal: %s is not UTF-8", fieldNames[s.n])
		}
	}

	b := cryptobyte.NewBuilder(make([]byte, 0, size+64+8*len(p.ServerCertChain)))
	b.AddASN1(tagSequence, func(b *cryptobyte.Builder) {
		b.AddASN1(tagField(0), func(b *cryptobyte.Builder) { b.AddASN1Int64(v) })
		if e := p.Error; e != nil {
			b.AddASN1(tagField(1), func(b *cryptobyte.Builder) {
				b.AddASN1(tagSequence, func(b *cryptobyte.Builder) {
					for i, v := range []int64{e.Code, e.HTTPStatus, e.WSALastError, e.TLSAlert} {
						if i == 0 || v != 0 {
							b.AddASN1(tagField(i), func(b *cryptobyte.Builder) { b.AddASN1Int64(v) })
						}
					}
				})
			})
		}
		addString := func(n int, v string) {
			if v != "" {
				b.AddASN1(tagField(n), func(b *cryptobyte.Builder) {
					b.AddASN1(tagUTF8String, func(b *cryptobyte.Builder) { b.AddBytes([]byte(v)) })
				})
			}
		}
		addString(2, p.Destination)
		addString(3, p.ProxyAuth)
		addString(4, p.ServerAuth)
		addString(5, p.PreconnectionBlob)
		if p.X224ConnectionPDU != nil {
			b.AddASN1(tagField(6), func(b *cryptobyte.Builder) { b.AddASN1OctetString(p.X224ConnectionPDU) })
		}
		if p.ServerCertChain != nil {
			b.AddASN1(tagField(7), func(b *cryptobyte.Builder) {
				b.AddASN1(tagSequence, func(b *cryptobyte.Builder) {
					for _, c := range p.ServerCertChain {
						b.AddASN1OctetString(c)
					}
				})
			})
		}
		addString(9, p.ServerAddr)
	})
	der, err := b.Bytes()
	if err != nil {
		return nil, fmt.Errorf("rdcleanpath: marshal: %w", err)
	}
	return der, nil
}

// fieldNames are the ASN.1 names of the PDU's fields, by tag number.
var fieldNames = [...]string{
	0: "version", 1: "error", 2: "destination", 3: "proxyAuth", 4: "serverAuth",
	5: "preconnectionBlob", 6: "x224ConnectionPdu", 7: "serverCertChain", 9: "serverAddr",
}

// Parse decodes exactly one PDU from der: DER only (shortest lengths and
// integers, no indefinite length), every field in its place and of its
// type, no unknown field, no byte after the PDU, and version Version. The
// PDU does not alias der. Errors wrap ErrMalformed.
func Parse(der []byte) (*PDU, error) {
	s := cryptobyte.String(der)
	tag, body, err := readElement(&s)
	if err != nil {
		return nil, err
	}
	if tag != tagSequence {
		return nil, malformed("not a DER SEQUENCE (tag 0x%02x)", uint8(tag))
	}
	if !s.Empty() {
		return nil, malformed("%d bytes after the PDU", len(s))
	}
	p := &PDU{}
	last := -1
	for !body.Empty() {
		tag, field, err := readElement(&body)
		if err != nil {
			return nil, err
		}
		n, ok := fieldNumber(tag)
		if !ok || n >= len(fieldNames) || fieldNames[n] == "" {
			return nil, malformed("unknown field (tag 0x%02x)", uint8(tag))
		}
		if n <= last {
			return nil, malformed("%s out of order or repeated", fieldNames[n])
		}
		if last < 0 && n != 0 {
			return nil, malformed("no version")
		}
		last = n
		name := fieldNames[n]
		switch n {
		case 0:
			if p.Version, err = integer(name, field); err != nil {
				return nil, err
			}
			if p.Version != Version {
				return nil, malformed("unsupported version %d, want %d", p.Version, Version)
			}
		case 1:
			v, err := explicit(name, field, tagSequence)
			if err == nil {
				p.Error, err = parseError(v)
			}
			if err != nil {
				return nil, err
			}
		case 2, 3, 4, 5, 9:
			v, err := explicit(name, field, tagUTF8String)
			if err != nil {
				return nil, err
			}
			if !utf8.Valid(v) {
				return nil, malformed("%s is not UTF-8", name)
			}
			s := string(v)
			switch n {
			case 2:
				p.Destination = s
			case 3:
				p.ProxyAuth = s
			case 4:
				p.ServerAuth = s
			case 5:
				p.PreconnectionBlob = s
			case 9:
				p.ServerAddr = s
			}
		case 6:
			v, err := explicit(name, field, tagOctetString)
			if err != nil {
				return nil, err
			}
			p.X224ConnectionPDU = append([]byte{}, v...)
		case 7:
			v, err := explicit(name, field, tagSequence)
			if err == nil {
				p.ServerCertChain, err = parseChain(v)
			}
			if err != nil {
				return nil, err
			}
		}
	}
	if last < 0 {
		return nil, malformed("no version")
	}
	return p, nil
}

// parseError decodes the contents of an RDCleanPathErr.
func parseError(b cryptobyte.String) (*Error, error) {
	e := &Error{}
	names := [...]string{"errorCode", "httpStatusCode", "wsaLastError", "tlsAlertCode"}
	vals := [...]*int64{&e.Code, &e.HTTPStatus, &e.WSALastError, &e.TLSAlert}
	last := -1
	for !b.Empty() {
		tag, field, err := readElement(&b)
		if err != nil {
			return nil, err
		}
		n, ok := fieldNumber(tag)
		if !ok || n >= len(names) {
			return nil, malformed("error: unknown field (tag 0x%02x)", uint8(tag))
		}
		if n <= last {
			return nil, malformed("error: %s out of order or repeated", names[n])
		}
		if last < 0 && n != 0 {
			return nil, malformed("error: no errorCode")
		}
		last = n
		if *vals[n], err = integer("error: "+names[n], field); err != nil {
			return nil, err
		}
	}
	if last < 0 {
		return nil, malformed("error: no errorCode")
	}
	if bad := e.check(); bad != "" {
		return nil, malformed("error: %s", bad)
	}
	return e, nil
}

// parseChain decodes the contents of a SEQUENCE OF OCTET STRING. It counts
// the certificates first so that the slice is allocated once.
func parseChain(b cryptobyte.String) ([][]byte, error) {
	n := 0
	for rest := b; !rest.Empty(); n++ {
		tag, _, err := readElement(&rest)
		if err != nil {
			return nil, err
		}
		if tag != tagOctetString {
			return nil, malformed("serverCertChain: tag 0x%02x, want 0x%02x", uint8(tag), uint8(tagOctetString))
		}
	}
	chain := make([][]byte, 0, n)
	for !b.Empty() {
		var c []byte
		b.ReadASN1Bytes(&c, tagOctetString) // checked above
		chain = append(chain, append([]byte{}, c...))
	}
	return chain, nil
}

// Read reads exactly one PDU from r, a byte stream, and parses it. It reads
// the identifier and length octets first and refuses, before reading any
// more, anything but a DER SEQUENCE of at most max bytes in all (MaxRequest
// when max <= 0); then it reads exactly the contents, never past the PDU's
// end, so that what follows stays in r. The buffer grows as bytes arrive:
// a peer that announces max bytes and sends few costs few.
//
// A stream that ends before the PDU does gives an error wrapping
// io.ErrUnexpectedEOF, or io.EOF when it ends before the first byte; a
// refused PDU an error wrapping ErrMalformed.
func Read(r io.Reader, max int) (*PDU, error) {
	if max <= 0 {
		max = MaxRequest
	}
	var hdr [2 + maxLengthOctets]byte
	if _, err := io.ReadFull(r, hdr[:1]); err != nil {
		return nil, fmt.Errorf("rdcleanpath: read PDU: %w", err)
	}
	if hdr[0] != byte(tagSequence) {
		return nil, malformed("not a DER SEQUENCE (tag 0x%02x)", hdr[0])
	}
	if err := readFull(r, hdr[1:2]); err != nil {
		return nil, err
	}
	n, hlen := int(hdr[1]), 2
	switch {
	case hdr[1] == 0x80:
		return nil, malformed("indefinite length, not DER")
	case hdr[1] > 0x80:
		k := int(hdr[1] & 0x7f)
		if k > maxLengthOctets {
			return nil, malformed("length of %d octets", k)
		}
		if err := readFull(r, hdr[2:2+k]); err != nil {
			return nil, err
		}
		var err error
		if n, err = longLength(hdr[2 : 2+k]); err != nil {
			return nil, err
		}
		hlen += k
	}
	if n > max-hlen {
		return nil, malformed("PDU of %d bytes exceeds %d", hlen+n, max)
	}
	buf := make([]byte, hlen, hlen+min(n, 4<<10))
	copy(buf, hdr[:hlen])
	for total := hlen + n; len(buf) < total; {
		if len(buf) == cap(buf) {
			buf = slices.Grow(buf, min(total, 2*cap(buf))-len(buf))
		}
		m := min(total, cap(buf))
		if err := readFull(r, buf[len(buf):m]); err != nil {
			return nil, err
		}
		buf = buf[:m]
	}
	return Parse(buf)
}

// readFull fills b from r, where the PDU has already begun: an early end
// is io.ErrUnexpectedEOF.
func readFull(r io.Reader, b []byte) error {
	if _, err := io.ReadFull(r, b); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return fmt.Errorf("rdcleanpath: read PDU: %w", err)
	}
	return nil
}
