package quicinitial

import (
	"bytes"
	"crypto/hkdf"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"strings"
	"testing"
)

// rfcDCID is the Destination Connection ID of RFC 9001 appendix A.
var rfcDCID = unhex("8394c8f03e515708")

func unhex(s string) []byte {
	b, err := hex.DecodeString(s)
	if err != nil {
		panic(err)
	}
	return b
}

// rfcClientInitial returns the protected client Initial packet of RFC 9001
// appendix A.2.
func rfcClientInitial(tb testing.TB) []byte {
	tb.Helper()
	b, err := os.ReadFile("testdata/rfc9001-client-initial.hex")
	if err != nil {
		tb.Fatal(err)
	}
	pkt, err := hex.DecodeString(strings.TrimSpace(string(b)))
	if err != nil {
		tb.Fatal(err)
	}
	if len(pkt) != 1200 {
		tb.Fatalf("RFC 9001 client Initial is %d bytes, want 1200", len(pkt))
	}
	return pkt
}

// TestClientInitialKeys checks the key derivation against RFC 9001
// appendix A.1: the secrets on the way, the client's keys, and, through the
// same HKDF-Expand-Label, the server's.
func TestClientInitialKeys(t *testing.T) {
	k, err := clientInitialKeys(rfcDCID)
	if err != nil {
		t.Fatal(err)
	}
	initial, err := hkdf.Extract(sha256.New, rfcDCID, initialSalt)
	if err != nil {
		t.Fatal(err)
	}
	expand := func(secret []byte, label string, n int) []byte {
		b, err := expandLabel(secret, label, n)
		if err != nil {
			t.Fatalf("expandLabel(%q, %d): %v", label, n, err)
		}
		if len(b) != n {
			t.Fatalf("expandLabel(%q, %d) returned %d bytes", label, n, len(b))
		}
		return b
	}
	client := expand(initial, "client in", 32)
	server := expand(initial, "server in", 32)
	for _, c := range []struct {
		name      string
		got, want []byte
	}{
		{"initial_secret", initial, unhex("7db5df06e7a69e432496adedb00851923595221596ae2ae9fb8115c1e9ed0a44")},
		{"client_initial_secret", client, unhex("c00cf151ca5be075ed0ebfb5c80323c42d6b7db67881289af4008f1f6c357aea")},
		{"client key", k.key[:], unhex("1f369613dd76d5467730efcbe3b1a22d")},
		{"client iv", k.iv[:], unhex("fa044b2f42a3fd3b46fb255c")},
		{"client hp", k.hp[:], unhex("9f50449e04a0e810283a1e9933adedd2")},
		{"server_initial_secret", server, unhex("3c199828fd139efd216c155ad844cc81fb82fa8d7446fa7d78be803acdda951b")},
		{"server key", expand(server, "quic key", 16), unhex("cf3a5331653c364c88f0f379b6067e37")},
		{"server iv", expand(server, "quic iv", 12), unhex("0ac1493ca1905853b0bba03e")},
		{"server hp", expand(server, "quic hp", 16), unhex("c206b8d9b9f0f37644430b490eeaa314")},
	} {
		if !bytes.Equal(c.got, c.want) {
			t.Errorf("%s = %x, want %x", c.name, c.got, c.want)
		}
	}
}

func TestRFC9001ClientInitial(t *testing.T) {
	pkt := rfcClientInitial(t)
	h, frames, err := OpenInitial(pkt)
	if err != nil {
		t.Fatal(err)
	}
	if h.Version != Version1 || h.Type != 0 || !bytes.Equal(h.DCID, rfcDCID) || len(h.SCID) != 0 || len(h.Token) != 0 {
		t.Errorf("header = %+v", h)
	}
	if len(frames) != 1 {
		t.Fatalf("got %d CRYPTO frames, want 1", len(frames))
	}
	f := frames[0]
	if f.Offset != 0 || len(f.Data) != 241 || !bytes.HasPrefix(f.Data, []byte{1, 0, 0, 0xed}) {
		t.Fatalf("CRYPTO frame at %d, %d bytes, starting %x", f.Offset, len(f.Data), f.Data[:min(4, len(f.Data))])
	}

	var a Assembler
	if err := a.Add(frames); err != nil {
		t.Fatal(err)
	}
	msg, ok, err := a.ClientHello()
	if err != nil || !ok || !bytes.Equal(msg, f.Data) {
		t.Fatalf("ClientHello() = %x, %v, %v", msg, ok, err)
	}

	// Sealing the same payload again gives the RFC's packet byte for byte:
	// the test helper is right too.
	if got := sealInitial(rfcDCID, nil, nil, 2, cryptoFrame(0, f.Data), 1200); !bytes.Equal(got, pkt) {
		t.Errorf("sealInitial differs from RFC 9001 A.2:\n%x", got)
	}
}

// syntheticHello returns a ClientHello-shaped message of n bytes.
func syntheticHello(rng *rand.Rand, n int) []byte {
	msg := make([]byte, n)
	for i := range msg {
		msg[i] = byte(rng.Uint32())
	}
	msg[0], msg[1], msg[2], msg[3] = 1, byte((n-4)>>16), byte((n-4)>>8), byte(n-4)
	return msg
}

// scatter splits msg into CRYPTO frames the way Chrome does and worse: out
// of order, overlapping, duplicated, with PING and PADDING between them,
// over at least npkt Initial packets of up to 1200 bytes, which it returns
// in random order.
func scatter(t *testing.T, rng *rand.Rand, dcid []byte, msg []byte, npkt int) [][]byte {
	t.Helper()
	var frames [][]byte
	for start := 0; start < len(msg); {
		end := min(len(msg), start+1+rng.IntN(300))
		frames = append(frames, cryptoFrame(uint64(start), msg[start:end]))
		switch rng.IntN(4) {
		case 0: // a duplicate
			frames = append(frames, cryptoFrame(uint64(start), msg[start:end]))
		case 1: // an overlap
			s, e := max(0, start-rng.IntN(20)), min(len(msg), end+rng.IntN(20))
			frames = append(frames, cryptoFrame(uint64(s), msg[s:e]))
		}
		start = end
	}
	rng.Shuffle(len(frames), func(i, j int) { frames[i], frames[j] = frames[j], frames[i] })

	// Spread the frames over npkt packets at random, or more if they do
	// not fit in 1200-byte packets.
	const room = 1100
	payloads := make([][]byte, npkt)
	for _, f := range frames {
		var pad []byte
		switch rng.IntN(3) {
		case 0:
			pad = []byte{framePing}
		case 1:
			pad = make([]byte, rng.IntN(5))
		}
		var fits []int
		for i, p := range payloads {
			if len(p)+len(pad)+len(f) <= room {
				fits = append(fits, i)
			}
		}
		if len(fits) == 0 {
			payloads = append(payloads, nil)
			fits = []int{len(payloads) - 1}
		}
		p := &payloads[fits[rng.IntN(len(fits))]]
		*p = append(append(*p, pad...), f...)
	}
	pkts := make([][]byte, len(payloads))
	for i, p := range payloads {
		pkts[i] = sealInitial(dcid, []byte{1, 2, 3, 4}, nil, uint32(i), p, 1200)
		if len(pkts[i]) > 1200 {
			t.Fatalf("packet %d is %d bytes", i, len(pkts[i]))
		}
	}
	rng.Shuffle(len(pkts), func(i, j int) { pkts[i], pkts[j] = pkts[j], pkts[i] })
	return pkts
}

// reassemble opens pkts and returns the ClientHello they carry.
func reassemble(t *testing.T, dcid []byte, pkts [][]byte) []byte {
	t.Helper()
	var a Assembler
	if _, ok, err := a.ClientHello(); ok || err != nil {
		t.Fatalf("empty Assembler: ok %v, err %v", ok, err)
	}
	for _, pkt := range pkts {
		h, frames, err := OpenInitial(pkt)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(h.DCID, dcid) {
			t.Fatalf("DCID %x, want %x", h.DCID, dcid)
		}
		if err := a.Add(frames); err != nil {
			t.Fatal(err)
		}
	}
	msg, ok, err := a.ClientHello()
	if err != nil || !ok {
		t.Fatalf("ClientHello: ok %v, err %v", ok, err)
	}
	return msg
}

func TestScrambledClientHello(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	dcid := unhex("0011223344556677")
	for i := range 50 {
		msg := syntheticHello(rng, 1700+rng.IntN(200))
		pkts := scatter(t, rng, dcid, msg, 2+i%2)
		if i == 0 {
			t.Logf("%d-byte ClientHello in %d packets", len(msg), len(pkts))
		}
		if got := reassemble(t, dcid, pkts); !bytes.Equal(got, msg) {
			t.Fatalf("round %d: reassembled ClientHello differs", i)
		}
	}
}

// goClientHello returns the ClientHello handshake message crypto/tls sends.
func goClientHello(t *testing.T) []byte {
	t.Helper()
	c, s := net.Pipe()
	done := make(chan error, 1)
	go func() {
		done <- tls.Client(c, &tls.Config{
			ServerName: "bastion.example",
			NextProtos: []string{"bastion-tunnel/1"},
			MinVersion: tls.VersionTLS13,
		}).Handshake()
	}()
	var hdr [5]byte
	if _, err := io.ReadFull(s, hdr[:]); err != nil {
		t.Fatal(err)
	}
	if hdr[0] != 22 {
		t.Fatalf("record type %d, want handshake", hdr[0])
	}
	rec := make([]byte, int(hdr[3])<<8|int(hdr[4]))
	if _, err := io.ReadFull(s, rec); err != nil {
		t.Fatal(err)
	}
	s.Close()
	<-done
	c.Close()
	if len(rec) < 4 || rec[0] != 1 || len(rec) != 4+(int(rec[1])<<16|int(rec[2])<<8|int(rec[3])) {
		t.Fatalf("record is not one ClientHello: %x", rec)
	}
	return rec
}

func TestGoClientHello(t *testing.T) {
	msg := goClientHello(t)
	t.Logf("crypto/tls ClientHello: %d bytes", len(msg))
	if !bytes.Contains(msg, []byte("bastion.example")) || !bytes.Contains(msg, []byte("bastion-tunnel/1")) {
		t.Fatal("ClientHello lacks the server name or ALPN")
	}
	rng := rand.New(rand.NewPCG(3, 4))
	dcid := unhex("c0ffee00c0ffee00c0ffee")
	for _, npkt := range []int{1, 2, 3} {
		pkts := scatter(t, rng, dcid, msg, npkt)
		if got := reassemble(t, dcid, pkts); !bytes.Equal(got, msg) {
			t.Fatalf("%d packets: reassembled ClientHello differs", len(pkts))
		}
	}
}

func TestOpenInitialKeepsDatagram(t *testing.T) {
	pkt := rfcClientInitial(t)
	orig := bytes.Clone(pkt)
	_, frames, err := OpenInitial(pkt)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(pkt, orig) {
		t.Fatal("OpenInitial modified the datagram")
	}
	data := bytes.Clone(frames[0].Data)
	clear(pkt)
	if !bytes.Equal(frames[0].Data, data) {
		t.Fatal("CRYPTO frame data aliases the datagram")
	}
}

func TestOpenInitialCoalesced(t *testing.T) {
	hello := syntheticHello(rand.New(rand.NewPCG(5, 6)), 300)
	pkt := sealInitial(rfcDCID, nil, []byte("token"), 0, cryptoFrame(0, hello), 0)
	// A Handshake packet behind the Initial is none of OpenInitial's business.
	dgram := append(bytes.Clone(pkt), 0xe0, 0, 0, 0, 1, 0, 0, 0x40, 0x20, 0xff, 0xff)
	h, frames, err := OpenInitial(dgram)
	if err != nil {
		t.Fatal(err)
	}
	if string(h.Token) != "token" || len(frames) != 1 || !bytes.Equal(frames[0].Data, hello) {
		t.Fatalf("header %+v, frames %v", h, frames)
	}
}

func TestOpenInitialPacketNumberLengths(t *testing.T) {
	for pnLen := 1; pnLen <= 4; pnLen++ {
		for _, pn := range []uint32{0, 1, 0xff} {
			frames := append([]byte{framePing}, cryptoFrame(7, []byte("x"))...)
			pkt := sealInitialPN(rfcDCID, nil, nil, pn, pnLen, frames, 0)
			_, got, err := OpenInitial(pkt)
			if err != nil {
				t.Fatalf("pn %d in %d bytes: %v", pn, pnLen, err)
			}
			if len(got) != 1 || got[0].Offset != 7 || string(got[0].Data) != "x" {
				t.Fatalf("pn %d in %d bytes: frames %v", pn, pnLen, got)
			}
		}
	}
}

func TestOpenInitialHeaderBits(t *testing.T) {
	frames := cryptoFrame(0, []byte{1, 0, 0, 0})
	for _, c := range []struct {
		first byte
		ok    bool
	}{{0xc0, true}, {0x80, false}, {0xc4, false}, {0xc8, false}} {
		_, _, err := OpenInitial(sealPacket(c.first, rfcDCID, nil, nil, 0, 2, frames, 1200))
		if (err == nil) != c.ok {
			t.Errorf("first byte %#x: err %v", c.first, err)
		}
	}
}

func TestOpenInitialTampered(t *testing.T) {
	pkt := sealInitial(rfcDCID, []byte{9, 9}, []byte("tok"), 1, cryptoFrame(0, []byte{1, 0, 0, 0}), 1200)
	for i := range pkt {
		if i >= 1 && i < 5 {
			continue // the version: another version is another error
		}
		bad := bytes.Clone(pkt)
		bad[i] ^= 0x04
		if _, _, err := OpenInitial(bad); err == nil {
			t.Fatalf("byte %d flipped: no error", i)
		}
	}
}

func TestOpenInitialWrongDCID(t *testing.T) {
	pkt := sealInitial(rfcDCID, nil, nil, 0, cryptoFrame(0, []byte{1, 0, 0, 0}), 1200)
	if _, _, err := OpenInitial(pkt); err != nil {
		t.Fatal(err)
	}
	pkt[6] ^= 1 // first byte of the DCID
	_, _, err := OpenInitial(pkt)
	if err == nil || errors.Is(err, ErrNotInitial) {
		t.Fatalf("wrong DCID: err %v", err)
	}
}

func TestOpenInitialTruncated(t *testing.T) {
	for _, pkt := range [][]byte{
		rfcClientInitial(t),
		sealInitial(rfcDCID, []byte{1}, []byte("token"), 0, cryptoFrame(0, []byte{1, 0, 0, 0}), 0),
	} {
		for n := range len(pkt) {
			if _, _, err := OpenInitial(pkt[:n]); err == nil {
				t.Fatalf("truncated to %d of %d bytes: no error", n, len(pkt))
			}
		}
	}
}

func TestNotInitial(t *testing.T) {
	pkt := rfcClientInitial(t)
	for _, c := range []struct {
		name  string
		dgram []byte
		not   bool // want ErrNotInitial
	}{
		{"empty", nil, true},
		{"short header", append([]byte{0x41}, pkt[1:]...), true},
		{"handshake", append([]byte{0xe0}, pkt[1:]...), true},
		{"0-RTT", append([]byte{0xd0}, pkt[1:]...), true},
		{"retry", append([]byte{0xf0}, pkt[1:]...), true},
		{"version 2", append([]byte{0xc0, 0x6b, 0x33, 0x43, 0xcf}, pkt[5:]...), false},
		{"version negotiation", append([]byte{0xc0, 0, 0, 0, 0}, pkt[5:]...), false},
	} {
		_, _, err := OpenInitial(c.dgram)
		if err == nil || errors.Is(err, ErrNotInitial) != c.not {
			t.Errorf("%s: err %v", c.name, err)
		}
	}
	if _, err := ParseLongHeader(append([]byte{0x41}, pkt[1:]...)); !errors.Is(err, ErrNotInitial) {
		t.Errorf("ParseLongHeader of a short header: err %v", err)
	}
}

func TestParseLongHeader(t *testing.T) {
	pkt := sealInitial([]byte{1, 2, 3, 4, 5, 6, 7, 8}, []byte{9, 10}, []byte("tok"), 0, []byte{framePing}, 0)
	h, err := ParseLongHeader(pkt)
	if err != nil {
		t.Fatal(err)
	}
	if h.Version != Version1 || h.Type != 0 || len(h.DCID) != 8 || !bytes.Equal(h.SCID, []byte{9, 10}) || string(h.Token) != "tok" {
		t.Fatalf("header %+v", h)
	}

	long := append([]byte{0xc0, 0, 0, 0, 1, 21}, make([]byte, 21+1+1+2)...)
	if _, err := ParseLongHeader(long); err == nil {
		t.Error("v1 DCID of 21 bytes: no error")
	}
	long[4] = 2 // any other version may have long connection IDs
	if h, err := ParseLongHeader(long); err != nil || len(h.DCID) != 21 || h.Token != nil {
		t.Errorf("version 2 DCID of 21 bytes: %+v, %v", h, err)
	}
	for n := range 1 + 4 + 1 + 8 + 1 + 2 + 1 + 3 { // up to the token's end
		if _, err := ParseLongHeader(pkt[:n]); err == nil {
			t.Fatalf("header truncated to %d bytes: no error", n)
		}
	}
}

func TestFrames(t *testing.T) {
	hello := []byte{1, 0, 0, 2, 0xaa, 0xbb}
	var ok []byte
	ok = append(ok, framePadding, framePing)
	ok = append(ok, frameAck, 0x40, 0x10, 0, 2, 1, 1, 2, 0x80, 0, 0, 3, 1) // 2 ranges
	ok = append(ok, cryptoFrame(3, hello[3:])...)
	ok = append(ok, frameAckECN, 5, 0, 0, 2, 1, 2, 3)
	ok = append(ok, cryptoFrame(0, hello[:3])...)
	ok = append(ok, frameConnClose, 0x0a, 0, 3, 'b', 'y', 'e')
	ok = append(ok, cryptoFrame(1, nil)...)
	_, frames, err := OpenInitial(sealInitial(rfcDCID, nil, nil, 0, ok, 0))
	if err != nil {
		t.Fatal(err)
	}
	want := []CryptoFrame{{3, hello[3:]}, {0, hello[:3]}, {1, []byte{}}}
	if len(frames) != len(want) {
		t.Fatalf("frames %v, want %v", frames, want)
	}
	for i := range want {
		if frames[i].Offset != want[i].Offset || !bytes.Equal(frames[i].Data, want[i].Data) {
			t.Fatalf("frames %v, want %v", frames, want)
		}
	}

	for _, bad := range []struct {
		name   string
		frames []byte
	}{
		{"no frames", nil},
		{"STREAM", append([]byte{0x08, 0, 1, 'x'}, 0, 0)},
		{"NEW_TOKEN", []byte{0x07, 1, 'x'}},
		{"application CONNECTION_CLOSE", []byte{0x1d, 0, 0}},
		{"HANDSHAKE_DONE", []byte{0x1e}},
		{"CRYPTO as a 2-byte varint", append([]byte{0x40}, cryptoFrame(0, hello)[1:]...)},
		{"truncated CRYPTO", cryptoFrame(0, hello)[:5]},
		{"truncated ACK", []byte{frameAck, 1, 0, 1, 0, 0}},
		{"ACK with huge range count", []byte{frameAck, 1, 0, 0xbf, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 0}},
		{"truncated ACK ECN", []byte{frameAckECN, 1, 0, 0, 0, 1, 1}},
		{"truncated CONNECTION_CLOSE", []byte{frameConnClose, 0, 0, 5, 'b', 'y'}},
		{"CRYPTO past 2^62-1", append([]byte{frameCrypto, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 1}, 'x')},
	} {
		if _, _, err := OpenInitial(sealInitial(rfcDCID, nil, nil, 0, bad.frames, 0)); err == nil {
			t.Errorf("%s: no error", bad.name)
		}
	}
}

func BenchmarkOpenInitial(b *testing.B) {
	pkt := rfcClientInitial(b)
	b.SetBytes(int64(len(pkt)))
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := OpenInitial(pkt); err != nil {
			b.Fatal(err)
		}
	}
}
