package rdcleanpath

import (
	"bytes"
	"encoding/asn1"
	"encoding/hex"
	"errors"
	"io"
	"reflect"
	"runtime/metrics"
	"strings"
	"testing"
	"testing/iotest"
)

func mustHex(s string) []byte {
	b, err := hex.DecodeString(s)
	if err != nil {
		panic(err)
	}
	return b
}

func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

var deadbeef = []byte{0xde, 0xad, 0xbe, 0xff}

// vectors are DER encodings with the PDU they encode.
var vectors = []struct {
	name string
	hex  string
	pdu  *PDU
}{
	// The first four are IronRDP's own, from Devolutions/IronRDP
	// crates/ironrdp-testsuite-core/tests/rdcleanpath.rs (REQUEST_DER,
	// RESPONSE_SUCCESS_DER, RESPONSE_HTTP_ERROR_DER,
	// RESPONSE_TLS_ERROR_DER), encoded there by the der crate.
	{
		name: "ironrdp/request",
		hex: "3032a00402020d3ea20d0c0b64657374696e6174696f6ea30c0c0a70726f78792061757468" +
			"a5050c03504342a6060404deadbeff",
		pdu: &PDU{Version: Version, Destination: "destination", ProxyAuth: "proxy auth",
			PreconnectionBlob: "PCB", X224ConnectionPDU: deadbeef},
	},
	{
		name: "ironrdp/response",
		hex: "3034a00402020d3ea6060404deadbeffa71430120404deadbeff0404deadbeff0404deadbeff" +
			"a90e0c0c3139322e3136382e372e3935",
		pdu: Response(deadbeef, [][]byte{deadbeef, deadbeef, deadbeef}, "192.168.7.95"),
	},
	{
		name: "ironrdp/http_500",
		hex:  "3015a00402020d3ea10d300ba003020101a104020201f4",
		pdu:  GeneralError(500),
	},
	{
		name: "ironrdp/tls_alert_48",
		hex:  "3014a00402020d3ea10c300aa003020101a303020130",
		pdu:  TLSAlertError(48),
	},
	// From docs/rdcleanpath.md, checked there with
	// encoding/asn1.
	{
		name: "notes/wsa_10061",
		hex:  "3015a00402020d3ea10d300ba003020101a2040202274d",
		pdu:  WSAError(WSAECONNREFUSED),
	},
	// Ours, checked against encoding/asn1 by TestMarshalMatchesEncodingASN1:
	// a negotiation failure carrying IronRDP's RDP_NEG_FAILURE Confirm
	// (tests/pdu/x224.rs nego_confirm_failure), a response with an empty
	// chain, HTTP 403 and a WSA code that needs a leading zero octet.
	{
		name: "ours/negotiation_failure",
		hex: "3026a00402020d3ea1073005a003020102" +
			"a6150413030000130ed000000000000300080006000000",
		pdu: NegotiationFailure(mustHex("030000130ed000000000000300080006000000")),
	},
	{
		name: "ours/response_empty_chain",
		hex:  "301aa00402020d3ea6020400a7023000a90a0c0831302e302e302e31",
		pdu:  Response([]byte{}, nil, "10.0.0.1"),
	},
	{
		name: "ours/http_403",
		hex:  "3015a00402020d3ea10d300ba003020101a104020201" + "93",
		pdu:  GeneralError(403),
	},
	{
		name: "ours/wsa_65535",
		hex:  "3016a00402020d3ea10e300ca003020101a20502030" + "0ffff",
		pdu:  WSAError(65535),
	},
}

func TestVectors(t *testing.T) {
	for _, v := range vectors {
		t.Run(v.name, func(t *testing.T) {
			der := unhex(t, v.hex)
			got, err := v.pdu.Marshal()
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, der) {
				t.Errorf("Marshal:\n got %x\nwant %x", got, der)
			}
			p, err := Parse(der)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(p, v.pdu) {
				t.Errorf("Parse:\n got %+v\nwant %+v", p, v.pdu)
			}
			p, err = Read(iotest.OneByteReader(bytes.NewReader(der)), 0)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(p, v.pdu) {
				t.Errorf("Read:\n got %+v\nwant %+v", p, v.pdu)
			}
		})
	}
}

// asn1PDU is the schema for encoding/asn1, an independent encoder that
// Marshal must agree with. Error is the whole [1] element, written as is,
// so that an error with code 0 is still present.
type asn1PDU struct {
	Version           int64         `asn1:"explicit,tag:0"`
	Error             asn1.RawValue `asn1:"optional"`
	Destination       string        `asn1:"optional,explicit,tag:2,utf8"`
	ProxyAuth         string        `asn1:"optional,explicit,tag:3,utf8"`
	ServerAuth        string        `asn1:"optional,explicit,tag:4,utf8"`
	PreconnectionBlob string        `asn1:"optional,explicit,tag:5,utf8"`
	X224ConnectionPDU []byte        `asn1:"optional,explicit,tag:6"`
	ServerCertChain   [][]byte      `asn1:"optional,explicit,tag:7"`
	ServerAddr        string        `asn1:"optional,explicit,tag:9,utf8"`
}

type asn1Error struct {
	Code         int64 `asn1:"explicit,tag:0"`
	HTTPStatus   int64 `asn1:"optional,explicit,tag:1"`
	WSALastError int64 `asn1:"optional,explicit,tag:2"`
	TLSAlert     int64 `asn1:"optional,explicit,tag:3"`
}

func asn1Marshal(t testing.TB, p *PDU) []byte {
	t.Helper()
	w := asn1PDU{
		Version: p.Version, Destination: p.Destination, ProxyAuth: p.ProxyAuth, ServerAuth: p.ServerAuth,
		PreconnectionBlob: p.PreconnectionBlob, X224ConnectionPDU: p.X224ConnectionPDU,
		ServerCertChain: p.ServerCertChain, ServerAddr: p.ServerAddr,
	}
	if w.Version == 0 {
		w.Version = Version
	}
	if p.Error != nil {
		b, err := asn1.Marshal(asn1Error(*p.Error))
		if err != nil {
			t.Fatal(err)
		}
		b, err = asn1.Marshal(asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 1, IsCompound: true, Bytes: b})
		if err != nil {
			t.Fatal(err)
		}
		w.Error = asn1.RawValue{FullBytes: b}
	}
	b, err := asn1.Marshal(w)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// combinations returns a PDU for every subset of the fields, with values
// that need long-form lengths and multi-octet integers in some of them.
func combinations() []*PDU {
	long := strings.Repeat("é", 100) // 200 bytes: a two-octet length
	var out []*PDU
	for mask := 0; mask < 1<<9; mask++ {
		p := &PDU{Version: Version}
		if mask&1 != 0 {
			p.Error = &Error{Code: ErrorGeneral, HTTPStatus: 401, WSALastError: WSAETIMEDOUT, TLSAlert: 255}
			if mask&2 != 0 {
				p.Error = &Error{Code: ErrorNegotiation}
			}
		}
		if mask&2 != 0 {
			p.Destination = "rdp.example:3389"
		}
		if mask&4 != 0 {
			p.ProxyAuth = "ticket." + long
		}
		if mask&8 != 0 {
			p.ServerAuth = "x"
		}
		if mask&16 != 0 {
			p.PreconnectionBlob = "vm-1234"
		}
		if mask&32 != 0 {
			p.X224ConnectionPDU = ConnectionRequestPDU("user", ProtocolSSL|ProtocolHybrid)
		}
		if mask&64 != 0 {
			p.ServerCertChain = [][]byte{bytes.Repeat([]byte{0x30}, 300), {}, deadbeef}
			if mask&8 != 0 {
				p.ServerCertChain = [][]byte{}
			}
		}
		if mask&128 != 0 {
			p.ServerAddr = "[2001:db8::1]:3389"
		}
		if mask&256 != 0 {
			if p.X224ConnectionPDU == nil {
				p.X224ConnectionPDU = []byte{}
			} else {
				p.Destination = long + long // 400 bytes
			}
		}
		out = append(out, p)
	}
	return out
}

func TestRoundTrip(t *testing.T) {
	for _, p := range combinations() {
		b, err := p.Marshal()
		if err != nil {
			t.Fatalf("%+v: %v", p, err)
		}
		q, err := Parse(b)
		if err != nil {
			t.Fatalf("%+v: %v", p, err)
		}
		if !reflect.DeepEqual(p, q) {
			t.Fatalf("round trip:\n got %+v\nwant %+v", q, p)
		}
	}
}

func TestMarshalMatchesEncodingASN1(t *testing.T) {
	pdus := combinations()
	for _, v := range vectors {
		pdus = append(pdus, v.pdu)
	}
	pdus = append(pdus, &PDU{Error: &Error{}}, &PDU{Error: &Error{Code: 0xffff, HTTPStatus: 128, WSALastError: 32768, TLSAlert: 127}})
	for _, p := range pdus {
		got, err := p.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		if want := asn1Marshal(t, p); !bytes.Equal(got, want) {
			t.Errorf("%+v:\n got %x\nwant %x (encoding/asn1)", p, got, want)
		}
	}
}

func TestMarshalRefuses(t *testing.T) {
	for _, tc := range []struct {
		name string
		pdu  *PDU
		want string
	}{
		{"version", &PDU{Version: 3389}, "version 3389"},
		{"negative code", &PDU{Error: &Error{Code: -1}}, "errorCode -1 out of range"},
		{"big status", &PDU{Error: &Error{Code: 1, HTTPStatus: 70000}}, "httpStatusCode 70000"},
		{"big wsa", &PDU{Error: &Error{Code: 1, WSALastError: 1 << 16}}, "wsaLastError 65536"},
		{"big alert", &PDU{Error: &Error{Code: 1, TLSAlert: 256}}, "tlsAlertCode 256"},
		{"not utf-8", &PDU{ProxyAuth: "\xff"}, "proxyAuth is not UTF-8"},
		{"addr not utf-8", &PDU{ServerAddr: "\xc3"}, "serverAddr is not UTF-8"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tc.pdu.Marshal()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want one saying %q", err, tc.want)
			}
		})
	}
}

func TestParseRefuses(t *testing.T) {
	for _, tc := range []struct {
		name, hex, want string
	}{
		{"empty", "", "truncated"},
		{"not a sequence", "3115a00402020d3ea10d300ba003020101a104020201f4", "not a DER SEQUENCE (tag 0x31)"},
		{"trailing byte", "3015a00402020d3ea10d300ba003020101a104020201f4" + "00", "1 bytes after the PDU"},
		{"short", "3016a00402020d3ea10d300ba003020101a104020201f4", "element of 22 bytes in 21"},
		{"indefinite length", "3080a00402020d3e0000", "indefinite length"},
		{"non-minimal length", "308106a00402020d3e", "non-minimal length (long form for 6)"},
		{"leading zero length", "30820006a00402020d3e", "leading zero"},
		{"long length", "3085000000000600", "length of 5 octets"},
		{"high tag number", "3007bf1f040202" + "0d3e", "high tag number"},
		{"old version", "3006a00402020d3d", "unsupported version 3389, want 3390"},
		{"no version", "3006a2040c026869", "no version"},
		{"empty sequence", "3000", "no version"},
		{"non-minimal integer", "3007a0050203000d3e", "non-minimal INTEGER"},
		{"negative version", "3005a0030201ff", "unsupported version -1"},
		{"version not an integer", "3006a00404020d3e", "version: tag 0x04, want 0x02"},
		{"two values in a field", "3009a00702020d3e020100", "version: 3 bytes after the value"},
		{"unknown field 8", "300aa00402020d3ea8020500", "unknown field (tag 0xa8)"},
		{"unknown field 10", "300aa00402020d3eaa020500", "unknown field (tag 0xaa)"},
		{"primitive context tag", "300aa00402020d3e82026869", "unknown field (tag 0x82)"},
		{"universal tag in sequence", "300aa00402020d3e0c026869", "unknown field (tag 0x0c)"},
		{"out of order", "3010a00402020d3ea3030c0161a2030c0162", "destination out of order or repeated"},
		{"repeated", "3010a00402020d3ea2030c0161a2030c0162", "destination out of order or repeated"},
		{"PrintableString", "300ba00402020d3ea203130161", "destination: tag 0x13, want 0x0c"},
		{"IA5String", "300ba00402020d3ea903160161", "serverAddr: tag 0x16, want 0x0c"},
		{"invalid UTF-8", "300ba00402020d3ea3030c01ff", "proxyAuth is not UTF-8"},
		{"x224 as a string", "300ba00402020d3ea6030c0161", "x224ConnectionPdu: tag 0x0c, want 0x04"},
		{"chain of strings", "300da00402020d3ea7053003" + "0c0161", "serverCertChain: tag 0x0c, want 0x04"},
		{"chain not a sequence", "300ba00402020d3ea703040161", "serverCertChain: tag 0x04, want 0x30"},
		{"error without code", "300ea00402020d3ea1063004a1020500", "error: no errorCode"},
		{"error empty", "300aa00402020d3ea1023000", "error: no errorCode"},
		{"error unknown field", "3013a00402020d3ea10b3009a003020101a4020500", "error: unknown field (tag 0xa4)"},
		{"error out of order", "3019a00402020d3ea111300fa003020101a203020101a103020101", "error: httpStatusCode out of order"},
		{"error code negative", "3010a00402020d3ea1083006a0040202ff00", "error: errorCode -256 out of range"},
		{"error code too big", "3011a00402020d3ea1093007a005020301" + "0000", "errorCode 65536 out of range"},
		{"alert too big", "3016a00402020d3ea10e300ca003020101a305020301" + "0000", "tlsAlertCode 65536 out of range"},
		{"alert 256", "3015a00402020d3ea10d300ba003020101a30402020100", "tlsAlertCode 256 out of range"},
		{"error value not an integer", "3015a00402020d3ea10d300ba003020101a10404020101", "error: httpStatusCode: tag 0x04"},
		{"integer of 9 bytes", "3011a00f020d" + "0100000000000000000000" + "0000", "version: INTEGER of 13 bytes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := Parse(unhex(t, tc.hex))
			if err == nil {
				t.Fatalf("parsed %+v", p)
			}
			if !errors.Is(err, ErrMalformed) {
				t.Errorf("err %v does not wrap ErrMalformed", err)
			}
			if !strings.HasPrefix(err.Error(), "rdcleanpath: ") || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %q, want one saying %q", err, tc.want)
			}
		})
	}
}

// TestParseAbsentValues: present but empty strings and zero codes read as
// absent, and a present empty octet string or chain stays present.
func TestParseAbsentValues(t *testing.T) {
	p, err := Parse(unhex(t, "3025a00402020d3ea111300fa003020101a103020100a203020100a2020c00a6020400a7023000"))
	if err != nil {
		t.Fatal(err)
	}
	want := &PDU{Version: Version, Error: &Error{Code: ErrorGeneral}, X224ConnectionPDU: []byte{}, ServerCertChain: [][]byte{}}
	if !reflect.DeepEqual(p, want) {
		t.Fatalf("got %+v, want %+v", p, want)
	}
}

func TestParseDoesNotAlias(t *testing.T) {
	der := unhex(t, vectors[1].hex)
	p, err := Parse(der)
	if err != nil {
		t.Fatal(err)
	}
	clear(der)
	if !bytes.Equal(p.X224ConnectionPDU, deadbeef) || !bytes.Equal(p.ServerCertChain[2], deadbeef) {
		t.Fatalf("the PDU changed with its input: %+v", p)
	}
}

func TestErrorText(t *testing.T) {
	for _, tc := range []struct {
		err  *Error
		want string
	}{
		{&Error{Code: ErrorGeneral, HTTPStatus: 403}, "rdcleanpath: general error: HTTP 403 (Forbidden)"},
		{&Error{Code: ErrorGeneral, WSALastError: 10061}, "rdcleanpath: general error: WSA error 10061 (connection refused)"},
		{&Error{Code: ErrorGeneral, TLSAlert: 48}, "rdcleanpath: general error: TLS alert 48 (unknown certificate authority)"},
		{&Error{Code: ErrorNegotiation}, "rdcleanpath: negotiation failure"},
		{&Error{Code: ErrorGeneral, HTTPStatus: 502, WSALastError: 10060, TLSAlert: 45},
			"rdcleanpath: general error: HTTP 502 (Bad Gateway), WSA error 10060 (connection timed out), TLS alert 45 (expired certificate)"},
		{&Error{Code: 99, HTTPStatus: 999, WSALastError: 65000, TLSAlert: 255},
			"rdcleanpath: error code 99: HTTP 999, WSA error 65000, TLS alert 255"},
	} {
		if got := tc.err.Error(); got != tc.want {
			t.Errorf("got  %q\nwant %q", got, tc.want)
		}
	}
}

// countingReader counts the bytes read from r.
type countingReader struct {
	r io.Reader
	n int
}

func (c *countingReader) Read(b []byte) (int, error) {
	n, err := c.r.Read(b)
	c.n += n
	return n, err
}

func TestRead(t *testing.T) {
	der := unhex(t, vectors[0].hex)

	t.Run("one byte at a time", func(t *testing.T) {
		// A chain of 10 KiB takes a long-form length and makes the
		// buffer grow several times.
		big := Response(deadbeef, [][]byte{bytes.Repeat([]byte{7}, 10<<10)}, "192.0.2.1")
		b, err := big.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		p, err := Read(iotest.OneByteReader(bytes.NewReader(b)), 64<<10)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(p, big) {
			t.Fatal("read a different PDU")
		}
	})

	t.Run("bytes after the PDU stay unread", func(t *testing.T) {
		after := []byte("\x03\x00\x00\x13 the RDP stream")
		r := bytes.NewReader(append(bytes.Clone(der), after...))
		if _, err := Read(r, MaxRequest); err != nil {
			t.Fatal(err)
		}
		if r.Len() != len(after) {
			t.Fatalf("%d bytes left, want %d", r.Len(), len(after))
		}
		// Two PDUs back to back read as two.
		r = bytes.NewReader(append(bytes.Clone(der), der...))
		for range 2 {
			if _, err := Read(iotest.HalfReader(r), MaxRequest); err != nil {
				t.Fatal(err)
			}
		}
		if r.Len() != 0 {
			t.Fatalf("%d bytes left", r.Len())
		}
	})

	t.Run("max", func(t *testing.T) {
		if _, err := Read(bytes.NewReader(der), len(der)); err != nil {
			t.Fatalf("a PDU of exactly max bytes: %v", err)
		}
		_, err := Read(bytes.NewReader(der), len(der)-1)
		if !errors.Is(err, ErrMalformed) || err.Error() != "rdcleanpath: PDU of 52 bytes exceeds 51" {
			t.Fatalf("err = %v", err)
		}
	})

	for _, tc := range []struct {
		name   string
		hex    string
		max    int
		want   string
		header int // bytes Read may consume before refusing
	}{
		{"too large", "3083011170" + "a00402020d3ea1", MaxRequest, "rdcleanpath: PDU of 70005 bytes exceeds 16384", 5},
		{"too large for the default", "30824001a004", 0, "rdcleanpath: PDU of 16389 bytes exceeds 16384", 4},
		{"not a sequence", "16030100", MaxRequest, "rdcleanpath: not a DER SEQUENCE (tag 0x16)", 1},
		{"http", "474554202f", MaxRequest, "rdcleanpath: not a DER SEQUENCE (tag 0x47)", 1},
		{"indefinite length", "3080a00402020d3e0000", MaxRequest, "rdcleanpath: indefinite length, not DER", 2},
		{"length of 5 octets", "30850000000032", 1 << 40, "rdcleanpath: length of 5 octets", 2},
		{"length of 4 GiB", "3084ffffffff" + "a004", 1 << 40, "rdcleanpath: length 4294967295 too large", 6},
		{"non-minimal short", "308132" + "a004", MaxRequest, "rdcleanpath: non-minimal length (long form for 50)", 3},
		{"leading zero", "30820032" + "a004", MaxRequest, "rdcleanpath: non-minimal length (leading zero octet)", 4},
		{"malformed body", "3006a00402020d3d", MaxRequest, "rdcleanpath: unsupported version 3389, want 3390", 8},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := &countingReader{r: bytes.NewReader(unhex(t, tc.hex))}
			_, err := Read(r, tc.max)
			if err == nil || err.Error() != tc.want {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
			if !errors.Is(err, ErrMalformed) {
				t.Errorf("err %v does not wrap ErrMalformed", err)
			}
			if r.n != tc.header {
				t.Errorf("read %d bytes before refusing, want %d", r.n, tc.header)
			}
		})
	}

	t.Run("truncated", func(t *testing.T) {
		for n := 1; n < len(der); n++ {
			_, err := Read(bytes.NewReader(der[:n]), MaxRequest)
			if !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Fatalf("%d of %d bytes: err = %v, want io.ErrUnexpectedEOF", n, len(der), err)
			}
			if errors.Is(err, ErrMalformed) {
				t.Fatalf("%d bytes: a short stream is not a malformed PDU: %v", n, err)
			}
		}
		_, err := Read(bytes.NewReader(nil), MaxRequest)
		if !errors.Is(err, io.EOF) {
			t.Fatalf("empty stream: err = %v, want io.EOF", err)
		}
	})

	t.Run("read error", func(t *testing.T) {
		boom := errors.New("boom")
		_, err := Read(io.MultiReader(bytes.NewReader(der[:10]), iotest.ErrReader(boom)), MaxRequest)
		if !errors.Is(err, boom) {
			t.Fatalf("err = %v, want boom", err)
		}
	})
}

// allocated returns the bytes f allocates on the heap (small allocations
// may be counted late, so this is for bounding large ones).
func allocated(f func()) uint64 {
	s := []metrics.Sample{{Name: "/gc/heap/allocs:bytes"}}
	metrics.Read(s)
	before := s[0].Value.Uint64()
	f()
	metrics.Read(s)
	return s[0].Value.Uint64() - before
}

// TestReadAllocatesWhatArrives: a header announcing a large PDU costs
// nothing until the bytes come.
func TestReadAllocatesWhatArrives(t *testing.T) {
	in := unhex(t, "308401000000"+"a00402020d3e") // announces 16 MiB, sends 6 bytes
	var err error
	n := allocated(func() { _, err = Read(bytes.NewReader(in), 32<<20) })
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("err = %v", err)
	}
	if n > 64<<10 {
		t.Fatalf("allocated %d bytes for %d bytes of input", n, len(in))
	}
}
