package handover

import (
	"bytes"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"
)

func TestQUICLinkPair(t *testing.T) {
	a, b, err := LinkPair()
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	defer b.Close()
	rc, err := a.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var typ, fdFlags int
	rc.Control(func(fd uintptr) {
		typ, _ = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_TYPE)
		fdFlags, _ = unix.FcntlInt(fd, unix.F_GETFD, 0)
	})
	if typ != unix.SOCK_SEQPACKET || fdFlags&unix.FD_CLOEXEC == 0 {
		t.Errorf("socket type %d, descriptor flags %#x", typ, fdFlags)
	}
	// One message is one datagram, whatever its size.
	for _, n := range []int{1, 1452, 3000} {
		if _, err := a.Write(make([]byte, n)); err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range []int{1, 1452, 3000} {
		b.SetReadDeadline(time.Now().Add(time.Second))
		got, err := b.Read(make([]byte, MaxMessage))
		if err != nil || got != n {
			t.Errorf("read %d bytes, %v; want %d", got, err, n)
		}
	}
}

// linkSeeds are link messages of every kind of address.
func linkSeeds(t testing.TB) [][]byte {
	var out [][]byte
	for _, a := range []string{"192.0.2.1:443", "[2001:db8::1]:65535", "[::ffff:192.0.2.1]:1", "[fe80::1%eth0]:4433"} {
		for _, oob := range [][]byte{nil, bytes.Repeat([]byte{0xee}, 128)} {
			b, err := AppendDatagram(nil, netip.MustParseAddrPort(a), oob, []byte{0x40, 1, 2, 3})
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, b)
		}
	}
	return out
}

func TestLinkCodec(t *testing.T) {
	data := bytes.Repeat([]byte{0x55}, 1452)
	for _, a := range []string{"192.0.2.1:443", "[2001:db8::1]:65535", "[::ffff:192.0.2.1]:1", "[fe80::1%eth0]:4433"} {
		for _, oob := range [][]byte{nil, {1, 2, 3}, bytes.Repeat([]byte{0xee}, 128)} {
			for _, d := range [][]byte{data[:1], data} {
				addr := netip.MustParseAddrPort(a)
				b, err := AppendDatagram([]byte("prefix"), addr, oob, d)
				if err != nil || !bytes.HasPrefix(b, []byte("prefix")) {
					t.Fatal(a, err)
				}
				m := ipv4.Message{Buffers: [][]byte{make([]byte, 1452)}, OOB: make([]byte, 128), Flags: 7}
				if err := DecodeDatagram(b[len("prefix"):], &m); err != nil {
					t.Fatalf("%s, %d bytes of control, %d of data: %v", a, len(oob), len(d), err)
				}
				u, ok := m.Addr.(*net.UDPAddr)
				if !ok || u.AddrPort() != addr || !bytes.Equal(m.OOB[:m.NN], oob) || !bytes.Equal(m.Buffers[0][:m.N], d) || m.Flags != 0 {
					t.Errorf("%s, %d bytes of control, %d of data: decoded from %v, %x, %d bytes", a, len(oob), len(d), m.Addr, m.OOB[:m.NN], m.N)
				}
			}
		}
	}

	good, err := AppendDatagram(nil, netip.MustParseAddrPort("192.0.2.1:443"), []byte{1, 2}, []byte{3})
	if err != nil {
		t.Fatal(err)
	}
	big, err := AppendDatagram(nil, netip.MustParseAddrPort("192.0.2.1:443"), nil, make([]byte, 1453))
	if err != nil {
		t.Fatal(err)
	}
	bigOOB, err := AppendDatagram(nil, netip.MustParseAddrPort("192.0.2.1:443"), make([]byte, 129), []byte{3})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		msg  []byte
	}{
		{"empty", nil},
		{"version 2", append([]byte{2}, good[1:]...)},
		{"address cut", good[:5]},
		{"address of 5 bytes", []byte{1, 7, 1, 2, 3, 4, 5, 0, 0, 0, 0, 3}},
		{"no address", []byte{1, 2, 0, 0, 0, 0, 3}},
		{"control messages cut", good[:len(good)-2]},
		{"no datagram", good[:len(good)-1]},
		{"a datagram larger than quic-go's buffer", big},
		{"control messages larger than quic-go's buffer", bigOOB},
	} {
		m := ipv4.Message{Buffers: [][]byte{make([]byte, 1452)}, OOB: make([]byte, 128)}
		if err := DecodeDatagram(c.msg, &m); err == nil {
			t.Errorf("%s: decoded", c.name)
		}
	}
	for _, c := range []struct {
		name string
		addr netip.AddrPort
		oob  []byte
	}{
		{"no address", netip.AddrPort{}, nil},
		{"a zone too long", netip.AddrPortFrom(netip.MustParseAddr("fe80::1").WithZone(strings.Repeat("z", 300)), 1), nil},
		{"too many control messages", netip.MustParseAddrPort("192.0.2.1:443"), make([]byte, 1<<16)},
	} {
		if b, err := AppendDatagram([]byte("x"), c.addr, c.oob, []byte{1}); err == nil || string(b) != "x" {
			t.Errorf("%s: encoded", c.name)
		}
	}
}

// FuzzLinkDatagram: the decoder of link messages takes any bytes without
// failing, and what it accepts is what the encoder writes.
func FuzzLinkDatagram(f *testing.F) {
	for _, s := range linkSeeds(f) {
		f.Add(s)
		f.Add(s[:len(s)-1])
	}
	f.Add([]byte{1, 0, 0, 0, 1})
	f.Fuzz(func(t *testing.T, p []byte) {
		m := ipv4.Message{Buffers: [][]byte{make([]byte, 1452)}, OOB: make([]byte, 128)}
		if DecodeDatagram(p, &m) != nil {
			return
		}
		b, err := AppendDatagram(nil, m.Addr.(*net.UDPAddr).AddrPort(), m.OOB[:m.NN], m.Buffers[0][:m.N])
		if err != nil || !bytes.Equal(b, p) {
			t.Fatalf("%x decodes to %v, %x, %x, which encodes to %x, %v", p, m.Addr, m.OOB[:m.NN], m.Buffers[0][:m.N], b, err)
		}
	})
}
