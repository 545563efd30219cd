package rdcleanpath

import (
	"bytes"
	"encoding/binary"
	"errors"
	"reflect"
	"testing"
	"testing/iotest"
)

// allocBound is the most a parser may allocate for n bytes of input: a
// small multiple of n (a certificate chain of empty certificates costs a
// slice header for every 2 bytes), never anything in proportion to a length
// the input only announces.
func allocBound(n int) uint64 { return 32*uint64(n) + 32<<10 }

// leastAllocated is the least f allocates in up to three runs: the
// counter is the process's, and the fuzzing engine allocates too.
func leastAllocated(f func(), bound uint64) uint64 {
	n := allocated(f)
	for i := 0; i < 2 && n > bound; i++ {
		n = min(n, allocated(f))
	}
	return n
}

// fuzzReadMax is far above the input the fuzzer makes, so that a Read that
// allocated what a header announces would show.
const fuzzReadMax = 1 << 20

func pduSeeds(f *testing.F) {
	for _, v := range vectors {
		der := unhex(f, v.hex)
		f.Add(der)
		f.Add(append(bytes.Clone(der), 0x03, 0x00, 0x00, 0x13)) // the RDP stream follows
		f.Add(der[:len(der)-1])
	}
	for _, p := range combinations()[:40] {
		f.Add(must(p.Marshal()))
	}
	f.Add(unhex(f, "308401000000"+"a00402020d3e"))
	f.Add(unhex(f, "3080a00402020d3e0000"))
	f.Add(unhex(f, "3025a00402020d3ea111300fa003020101a103020100a203020100a2020c00a6020400a7023000"))
}

// checkPDU checks what a parser returned for der: a PDU whose encoding is
// canonical, no longer than der, a fixed point of Marshal and Parse, and
// what encoding/asn1 makes of it too.
func checkPDU(t *testing.T, p *PDU, der []byte) {
	m, err := p.Marshal()
	if err != nil {
		t.Fatalf("parsed %x, cannot marshal it: %v", der, err)
	}
	if len(m) > len(der) {
		t.Fatalf("parsed %x, marshalled longer: %x", der, m)
	}
	q, err := Parse(m)
	if err != nil {
		t.Fatalf("Parse(Marshal(Parse(%x))) = %v", der, err)
	}
	if !reflect.DeepEqual(p, q) {
		t.Fatalf("round trip of %x:\n got %+v\nwant %+v", der, q, p)
	}
	if m2 := must(q.Marshal()); !bytes.Equal(m, m2) {
		t.Fatalf("marshal not canonical: %x then %x", m, m2)
	}
	if want := asn1Marshal(t, p); !bytes.Equal(m, want) {
		t.Fatalf("Marshal = %x, encoding/asn1 makes %x", m, want)
	}
}

func FuzzParse(f *testing.F) {
	pduSeeds(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		bound := allocBound(len(data))
		if n := leastAllocated(func() { Parse(data) }, bound); n > bound {
			t.Fatalf("Parse allocated %d bytes for %d", n, len(data))
		}
		p, err := Parse(data)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("Parse error %v does not wrap ErrMalformed", err)
			}
			return
		}
		checkPDU(t, p, data)
	})
}

func FuzzRead(f *testing.F) {
	pduSeeds(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		bound := allocBound(len(data))
		if n := leastAllocated(func() { Read(bytes.NewReader(data), fuzzReadMax) }, bound); n > bound {
			t.Fatalf("Read allocated %d bytes for %d", n, len(data))
		}
		r := bytes.NewReader(data)
		p, err := Read(r, fuzzReadMax)
		used := len(data) - r.Len()

		// Byte by byte, the same.
		r1 := bytes.NewReader(data)
		p1, err1 := Read(iotest.OneByteReader(r1), fuzzReadMax)
		if (err == nil) != (err1 == nil) || !reflect.DeepEqual(p, p1) || r1.Len() != r.Len() {
			t.Fatalf("one byte at a time: %+v, %v, %d left; at once: %+v, %v, %d left", p1, err1, r1.Len(), p, err, r.Len())
		}

		if err != nil {
			if _, perr := Parse(data); perr == nil {
				t.Fatalf("Parse accepts %x, Read refuses it: %v", data, err)
			}
			return
		}
		// Exactly the PDU was read: Parse refuses a byte more or less.
		q, err := Parse(data[:used])
		if err != nil {
			t.Fatalf("Read took %d bytes that Parse refuses: %v", used, err)
		}
		if !reflect.DeepEqual(p, q) {
			t.Fatalf("Read %+v, Parse %+v", p, q)
		}
		checkPDU(t, p, data[:used])
	})
}

func x224Seeds(f *testing.F) {
	for _, h := range []string{
		liveRequest,
		"0300000b06e00000000000",
		"030000221de00000000000" + cookieUser,
		"0300002a25e00000000000" + cookieUser + "0103080003000000",
		"0300003732e00000000000" + "436f6f6b69653a206d7374733d333634303230353232382e31353632392e30303030" + "0d0a" + "0100080001000000",
		"0300003732e00000000000" + "0108080003000000" + "060024000000000000000000000000000000000000000000000000000000000000000000",
		"030000130ed000000000000" + "21f080002000000",
		"030000130ed000000000000300080006000000",
		"030000130ed000001234000200080000000000",
		"0300000b06d00000123400",
		"030000130ed00000000000af1f080002000000",
		"0300040106d00000000000",
	} {
		pkt := unhex(f, h)
		f.Add(pkt)
		f.Add(append(bytes.Clone(pkt), 0x16, 0x03, 0x03))
	}
	f.Add(ConnectionRequestPDU("é\r\n", 0xffffffff))
}

// buildCR is the Connection Request cr was read from, with SRC-REF src;
// emptyCookie says whether a "Cookie: mstshash=" line with no name was
// there.
func buildCR(cr ConnectionRequest, src uint16, emptyCookie bool) []byte {
	b := []byte{3, 0, 0, 0, 0, codeCR, 0, 0, byte(src >> 8), byte(src), 0}
	switch {
	case cr.Cookie != "" || emptyCookie:
		b = append(b, cookiePrefix+cr.Cookie+"\r\n"...)
	case cr.RoutingToken != nil:
		b = append(append(b, cr.RoutingToken...), "\r\n"...)
	}
	if cr.HasNegotiation {
		b = append(b, RDPNegReq, cr.Flags, negLen, 0)
		b = binary.LittleEndian.AppendUint32(b, cr.Protocols)
	}
	binary.BigEndian.PutUint16(b[2:], uint16(len(b)))
	b[4] = byte(len(b) - 5)
	return b
}

func FuzzParseConnectionRequest(f *testing.F) {
	x224Seeds(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		cr, err := ParseConnectionRequest(data)
		if err == nil {
			empty := bytes.HasPrefix(data[11:], []byte(cookiePrefix+"\r\n"))
			if b := buildCR(cr, binary.BigEndian.Uint16(data[8:]), empty); !bytes.Equal(b, data) {
				t.Fatalf("read %+v from %x, which makes %x", cr, data, b)
			}
			if cr.Protocols != 0 && !cr.HasNegotiation {
				t.Fatalf("protocols %#x without a negotiation", cr.Protocols)
			}
		}
		// Whatever the cookie, the Request built with it parses.
		pkt := ConnectionRequestPDU(string(data), 0x0b)
		cr, err = ParseConnectionRequest(pkt)
		if err != nil {
			t.Fatalf("ConnectionRequestPDU(%q) = %x: %v", data, pkt, err)
		}
		if cr.Protocols != 0x0b || !cr.HasNegotiation || cr.RoutingToken != nil || len(pkt) > 259 {
			t.Fatalf("ConnectionRequestPDU(%q) = %x, read as %+v", data, pkt, cr)
		}
	})
}

func FuzzParseConnectionConfirm(f *testing.F) {
	x224Seeds(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		cc, err := ParseConnectionConfirm(data)
		if err != nil {
			return
		}
		b := []byte{3, 0, 0, 0, 0, codeCC, data[6], data[7], data[8], data[9], 0}
		if cc.Negotiation != 0 {
			b = append(b, cc.Negotiation, cc.Flags, negLen, 0)
			b = binary.LittleEndian.AppendUint32(b, cc.Protocol|cc.FailureCode)
			if cc.Protocol != 0 && cc.FailureCode != 0 {
				t.Fatalf("both a protocol and a failure code: %+v", cc)
			}
		}
		binary.BigEndian.PutUint16(b[2:], uint16(len(b)))
		b[4] = byte(len(b) - 5)
		if !bytes.Equal(b, data) {
			t.Fatalf("read %+v from %x, which makes %x", cc, data, b)
		}
		err = cc.Err()
		if ok := cc.Negotiation == RDPNegRsp && cc.Protocol != ProtocolRDP; ok != (err == nil) {
			t.Fatalf("%+v: Err() = %v", cc, err)
		}
		if err != nil && !errors.Is(err, ErrNegotiationFailed) && !errors.Is(err, ErrStandardSecurity) {
			t.Fatalf("%+v: Err() = %v wraps neither sentinel", cc, err)
		}
	})
}

func FuzzReadTPKT(f *testing.F) {
	x224Seeds(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		r := bytes.NewReader(data)
		pkt, err := ReadTPKT(r, MaxTPKT)
		used := len(data) - r.Len()
		if err != nil {
			if len(data) >= 4 && data[0] == 3 {
				if n := int(binary.BigEndian.Uint16(data[2:])); n >= 7 && n <= MaxTPKT && n <= len(data) {
					t.Fatalf("refused a packet of %d bytes: %v", n, err)
				}
			}
			return
		}
		n := int(binary.BigEndian.Uint16(pkt[2:]))
		if n != len(pkt) || n != used || n < 7 || n > MaxTPKT || !bytes.Equal(pkt, data[:used]) {
			t.Fatalf("read %x (%d bytes used) from %x", pkt, used, data)
		}
	})
}
