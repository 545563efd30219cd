package proxyproto

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net/netip"
	"testing"
)

var (
	client4 = netip.MustParseAddrPort("203.0.113.7:51234")
	front4  = netip.MustParseAddrPort("198.51.100.1:443")
	client6 = netip.MustParseAddrPort("[2001:db8:cafe::7]:51234")
	front6  = netip.MustParseAddrPort("[2001:db8:f00d::1]:443")
)

// raw builds a header by hand: version-command, family-transport, and the
// block after the length.
func raw(vc, ft byte, block []byte) []byte {
	b := append(Signature[:], vc, ft)
	b = binary.BigEndian.AppendUint16(b, uint16(len(block)))
	return append(b, block...)
}

func inet4(src, dst netip.AddrPort) []byte {
	s, d := src.Addr().As4(), dst.Addr().As4()
	b := append(s[:], d[:]...)
	b = binary.BigEndian.AppendUint16(b, src.Port())
	return binary.BigEndian.AppendUint16(b, dst.Port())
}

func inet6(src, dst netip.AddrPort) []byte {
	s, d := src.Addr().As16(), dst.Addr().As16()
	b := append(s[:], d[:]...)
	b = binary.BigEndian.AppendUint16(b, src.Port())
	return binary.BigEndian.AppendUint16(b, dst.Port())
}

// TestRead: every header a balancer sends is read whole, and the bytes
// behind it (a ClientHello) are left for the next reader; every broken
// or unusable one is refused with an error that says why.
func TestRead(t *testing.T) {
	tlvs := []TLV{{Type: 0x01, Value: []byte("h2")}, {Type: 0x02, Value: []byte("bastion.example")}, {Type: 0x04}}
	good := []struct {
		name   string
		header []byte
		want   Header
	}{
		{"IPv4 client", Append(nil, Header{Command: Proxy, Source: client4, Destination: front4}), Header{Proxy, client4, front4}},
		{"IPv6 client", Append(nil, Header{Command: Proxy, Source: client6, Destination: front6}), Header{Proxy, client6, front6}},
		{"IPv4 client with TLVs", Append(nil, Header{Command: Proxy, Source: client4, Destination: front4}, tlvs...), Header{Proxy, client4, front4}},
		{"IPv6 client with TLVs", Append(nil, Header{Command: Proxy, Source: client6, Destination: front6}, tlvs...), Header{Proxy, client6, front6}},
		{"IPv4 client IPv4-mapped in an IPv6 header", raw(0x21, 0x21, inet6(netip.AddrPortFrom(netip.AddrFrom16(client4.Addr().As16()), client4.Port()),
			netip.AddrPortFrom(netip.AddrFrom16(front4.Addr().As16()), front4.Port()))), Header{Proxy, client4, front4}},
		{"LOCAL", Append(nil, Header{Command: Local}), Header{Command: Local}},
		{"LOCAL with IPv4 addresses, ignored", raw(0x20, 0x11, inet4(client4, front4)), Header{Command: Local}},
		{"LOCAL with IPv6 addresses and a TLV, ignored", raw(0x20, 0x21, append(inet6(client6, front6), 0xEE, 0, 1, 9)), Header{Command: Local}},
		{"LOCAL over UNIX, ignored", raw(0x20, 0x31, make([]byte, 216)), Header{Command: Local}},
	}
	rest := []byte("\x16\x03\x01 the ClientHello")
	for _, tc := range good {
		t.Run(tc.name, func(t *testing.T) {
			r := bytes.NewReader(append(append([]byte(nil), tc.header...), rest...))
			h, err := Read(r)
			if err != nil {
				t.Fatal(err)
			}
			if h != tc.want {
				t.Errorf("got %+v, want %+v", h, tc.want)
			}
			left, _ := io.ReadAll(r)
			if !bytes.Equal(left, rest) {
				t.Errorf("left %q unread, want %q", left, rest)
			}
		})
	}

	long := raw(0x21, 0x11, append(inet4(client4, front4), append([]byte{0xEE, 0x08, 0x00}, make([]byte, 0x800)...)...))
	bad := []struct {
		name   string
		header []byte
		want   error // errors.Is; nil: an *Error
	}{
		{"a TLS ClientHello", []byte("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"), ErrNotProxy},
		{"plain HTTP", []byte("GET / HTTP/1.1\r\n\r\n"), ErrNotProxy},
		{"version 1 IPv4", []byte("PROXY TCP4 203.0.113.7 198.51.100.1 51234 443\r\n"), ErrVersion1},
		{"version 1 IPv6", []byte("PROXY TCP6 2001:db8:cafe::7 2001:db8:f00d::1 51234 443\r\n"), ErrVersion1},
		{"a signature that breaks after 6 bytes", append(Signature[:6:6], "PROXY\n and more"...), ErrNotProxy},
		{"version 1 in the version nibble", raw(0x11, 0x11, inet4(client4, front4)), nil},
		{"version 3", raw(0x31, 0x11, inet4(client4, front4)), nil},
		{"command 2", raw(0x22, 0x11, inet4(client4, front4)), nil},
		{"family 4", raw(0x21, 0x41, inet4(client4, front4)), nil},
		{"transport 3", raw(0x21, 0x13, inet4(client4, front4)), nil},
		{"IPv4 addresses cut short", raw(0x21, 0x11, inet4(client4, front4)[:11]), nil},
		{"IPv6 addresses cut short", raw(0x21, 0x21, inet6(client6, front6)[:35]), nil},
		{"IPv6 family with IPv4 addresses", raw(0x21, 0x21, inet4(client4, front4)), nil},
		{"PROXY over UDP, IPv4", raw(0x21, 0x12, inet4(client4, front4)), nil},
		{"PROXY over UDP, IPv6", raw(0x21, 0x22, inet6(client6, front6)), nil},
		{"PROXY with no family", raw(0x21, 0x00, nil), nil},
		{"PROXY over a UNIX socket", raw(0x21, 0x31, make([]byte, 216)), nil},
		{"an unspecified IPv4 client", raw(0x21, 0x11, inet4(netip.MustParseAddrPort("0.0.0.0:1"), front4)), nil},
		{"an unspecified IPv6 client", raw(0x21, 0x21, inet6(netip.MustParseAddrPort("[::]:1"), front6)), nil},
		{"a multicast IPv6 client", raw(0x21, 0x21, inet6(netip.MustParseAddrPort("[ff02::1]:1"), front6)), nil},
		{"the IPv4 broadcast address as client", raw(0x21, 0x11, inet4(netip.MustParseAddrPort("255.255.255.255:1"), front4)), nil},
		{"a TLV longer than the header, IPv4", raw(0x21, 0x11, append(inet4(client4, front4), 0x01, 0x00, 0x09, 'h')), nil},
		{"a TLV longer than the header, IPv6", raw(0x21, 0x21, append(inet6(client6, front6), 0x01, 0x00, 0x09, 'h')), nil},
		{"stray bytes after the TLVs", raw(0x21, 0x11, append(inet4(client4, front4), 0x01, 0x00)), nil},
		{"a header over MaxLen", long, nil},
		{"cut in the signature", Signature[:9], io.ErrUnexpectedEOF},
		{"cut in the block, IPv4", Append(nil, Header{Command: Proxy, Source: client4, Destination: front4})[:20], io.ErrUnexpectedEOF},
		{"cut in the block, IPv6", Append(nil, Header{Command: Proxy, Source: client6, Destination: front6})[:40], io.ErrUnexpectedEOF},
		{"nothing", nil, io.EOF},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			h, err := Read(bytes.NewReader(tc.header))
			if err == nil {
				t.Fatalf("read %+v", h)
			}
			var e *Error
			if tc.want == nil && !errors.As(err, &e) || tc.want != nil && !errors.Is(err, tc.want) {
				t.Errorf("error %v (%T), want %v", err, err, tc.want)
			}
		})
	}
}

// TestReadStopsEarly: a reader that is not a PROXY header is not read
// past its 6th byte, nor a header past its end: the gate reads the rest.
func TestReadStopsEarly(t *testing.T) {
	r := &countingReader{r: bytes.NewReader([]byte("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 and more"))}
	if _, err := Read(r); !errors.Is(err, ErrNotProxy) {
		t.Fatal(err)
	}
	if r.n != 6 {
		t.Errorf("read %d bytes to tell a ClientHello, want 6", r.n)
	}
}

type countingReader struct {
	r io.Reader
	n int
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += n
	return n, err
}

func TestHasSignature(t *testing.T) {
	for _, tc := range []struct {
		b    string
		want bool
	}{
		{string(Signature[:]), true},
		{string(Signature[:5]), true},
		{string(Signature[:4]), false},
		{"PROXY TCP4 ", true},
		{"PROXY", true},
		{"PROX", false},
		{"\x16\x03\x01\x02\x00", false},
		{"", false},
	} {
		if got := HasSignature([]byte(tc.b)); got != tc.want {
			t.Errorf("HasSignature(%q) = %v", tc.b, got)
		}
	}
}

// FuzzRead: Read never panics nor reads past MaxLen+16 bytes, and what it
// accepts, Append writes back into a header that reads the same.
func FuzzRead(f *testing.F) {
	f.Add(Append(nil, Header{Command: Proxy, Source: client4, Destination: front4}))
	f.Add(Append(nil, Header{Command: Proxy, Source: client6, Destination: front6}, TLV{Type: 1, Value: []byte("h2")}))
	f.Add(Append(nil, Header{Command: Local}))
	f.Add(raw(0x20, 0x31, make([]byte, 216)))
	f.Add(raw(0x21, 0x21, append(inet6(client6, front6), 0xEE, 0, 1, 9)))
	f.Add([]byte("PROXY TCP4 203.0.113.7 198.51.100.1 51234 443\r\n"))
	f.Add([]byte("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"))
	f.Fuzz(func(t *testing.T, b []byte) {
		r := &countingReader{r: bytes.NewReader(b)}
		h, err := Read(r)
		if r.n > 16+MaxLen {
			t.Fatalf("read %d bytes", r.n)
		}
		if err != nil {
			return
		}
		if h.Command == Proxy && (!h.Source.IsValid() || h.Source.Addr().Is4In6()) {
			t.Fatalf("accepted %+v", h)
		}
		again, err := Read(bytes.NewReader(Append(nil, h)))
		if err != nil || again != h {
			t.Fatalf("round trip of %+v: %+v, %v", h, again, err)
		}
	})
}

// BenchmarkRead reads the headers HAProxy sends: an IPv4 and an IPv6
// client, and LOCAL for its checks.
func BenchmarkRead(b *testing.B) {
	for _, bc := range []struct {
		name string
		h    Header
	}{
		{"ipv4", Header{Command: Proxy, Source: client4, Destination: front4}},
		{"ipv6", Header{Command: Proxy, Source: client6, Destination: front6}},
		{"local", Header{Command: Local}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			hdr := Append(nil, bc.h)
			r := bytes.NewReader(hdr)
			b.ReportAllocs()
			for b.Loop() {
				r.Reset(hdr)
				if _, err := Read(r); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
