package gate

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"

	"github.com/quic-go/quic-go"

	"github.com/bastiond/bastiond/api/tunnelwire"
	"github.com/bastiond/bastiond/internal/source"
	"github.com/bastiond/bastiond/proxy/certs"
	"github.com/bastiond/bastiond/proxy/gate/gatetest"
	"github.com/bastiond/bastiond/proxy/gate/quicinitial"
	"github.com/bastiond/bastiond/proxy/handover"
)

// testDoor is a Door for gatetest.ServerName with set, whose zero fields
// take the front door's defaults.
func testDoor(t testing.TB, set Settings) *Door {
	t.Helper()
	if set.ServerName == "" {
		set.ServerName = gatetest.ServerName
	}
	if set.HandshakeTimeout == 0 {
		set.HandshakeTimeout = 10 * time.Second
	}
	if set.ClientTimeout == 0 {
		set.ClientTimeout = 30 * time.Second
	}
	if set.MaxConnsPerSource == 0 {
		set.MaxConnsPerSource = 256
	}
	if set.MaxPendingTunnels == 0 {
		set.MaxPendingTunnels = 1024
	}
	return New(Config{Log: zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel)), Settings: func() Settings { return set },
		ALPN: tunnelwire.ALPN, IDs: handover.NewConnIDs(handover.NewLineage())})
}

// serverTLS is the TLS configuration of a tunnel server for
// gatetest.ServerName, with a self-signed certificate.
func serverTLS(t testing.TB) *tls.Config {
	t.Helper()
	store := &certs.Store{}
	if err := store.Load(certs.Config{SelfSigned: true, ServerName: gatetest.ServerName, Dir: t.TempDir()}); err != nil {
		t.Fatal(err)
	}
	return &tls.Config{MinVersion: tls.VersionTLS13, GetCertificate: store.GetCertificate, NextProtos: []string{tunnelwire.ALPN}}
}

// fakeSocket serves datagrams to the gate's ReadFrom path from a script.
type fakeSocket struct {
	net.PacketConn
	in []fakeDatagram
}

type fakeDatagram struct {
	data []byte
	from net.Addr
}

func (f *fakeSocket) ReadFrom(p []byte) (int, net.Addr, error) {
	if len(f.in) == 0 {
		return 0, nil, os.ErrDeadlineExceeded
	}
	d := f.in[0]
	f.in = f.in[1:]
	return copy(p, d.data), d.from, nil
}

func (f *fakeSocket) Close() error { return nil }

// readAll reads what passes the gate until the script ends.
func readAll(g *QUIC) [][]byte {
	var out [][]byte
	buf := make([]byte, 2048)
	for {
		n, _, err := g.ReadFrom(buf)
		if err != nil {
			return out
		}
		out = append(out, append([]byte(nil), buf[:n]...))
	}
}

func TestQUICGateState(t *testing.T) {
	d := testDoor(t, Settings{HandshakeTimeout: 10 * time.Second})
	src := func(i int) net.Addr { return &net.UDPAddr{IP: net.IPv4(192, 0, 2, byte(i)), Port: 4433} }
	flights := gatetest.CaptureInitials(t, "udp4", gatetest.TunnelTLS(gatetest.ServerName, gatetest.BigHello...), 12)
	clock := time.Now()
	newGate := func(in ...fakeDatagram) (*QUIC, *fakeSocket) {
		f := &fakeSocket{in: in}
		g := d.QUIC(f, nil)
		g.now = func() time.Time { return clock }
		return g, f
	}

	t.Run("admitted datagrams come out in order", func(t *testing.T) {
		short := []byte{0x40, 1, 2, 3}
		f := tokened(t, flights[0], []byte("a token"))
		g, _ := newGate(fakeDatagram{f[0], src(1)}, fakeDatagram{short, src(2)}, fakeDatagram{f[1], src(1)},
			fakeDatagram{f[2], src(1)}, fakeDatagram{f[0], src(1)})
		got := readAll(g)
		want := [][]byte{short, f[0], f[1], f[2], f[0]}
		if len(got) != len(want) {
			t.Fatalf("got %d datagrams, want %d", len(got), len(want))
		}
		for i := range want {
			if string(got[i]) != string(want[i]) {
				t.Errorf("datagram %d is not the one expected", i)
			}
		}
		if len(g.pending) != 0 || len(g.decided) != 1 {
			t.Errorf("%d pending, %d decided", len(g.pending), len(g.decided))
		}
	})

	// quic-go answers a first flight without a token with a Retry, and
	// the client then sends the whole flight again with the token: of the
	// flight, quic-go gets the first datagram, one Retry's worth. A
	// datagram sent again after the decision passes as it is.
	t.Run("a flight without a token is released as its first datagram", func(t *testing.T) {
		f := flights[1]
		g, _ := newGate(fakeDatagram{f[1], src(1)}, fakeDatagram{f[0], src(1)}, fakeDatagram{f[2], src(1)}, fakeDatagram{f[2], src(1)})
		got := readAll(g)
		if len(got) != 2 || string(got[0]) != string(f[1]) || string(got[1]) != string(f[2]) {
			t.Fatalf("got %d datagrams, want the first held (%d bytes) and the one sent again", len(got), len(f[1]))
		}
		if len(g.pending) != 0 || len(g.decided) != 1 {
			t.Errorf("%d pending, %d decided", len(g.pending), len(g.decided))
		}
	})

	t.Run("batches keep order, control messages, flags and addresses", func(t *testing.T) {
		f := tokened(t, flights[2], []byte("a token"))
		in := []fakeDatagram{{[]byte{0x40, 1}, src(2)}, {gatetest.LongHeader(0xc0, 7, 1200), src(3)}, {[]byte{0x40, 2}, src(2)},
			{f[0], src(1)}, {f[1], src(1)}, {f[2], src(1)}, {[]byte{0x40, 3}, src(2)}}
		g, _ := newGate()
		g.read = func(ms []ipv4.Message) (int, error) {
			if len(in) == 0 {
				return 0, os.ErrDeadlineExceeded
			}
			n := 0
			for ; n < len(ms) && len(in) > 0; n++ {
				m, d := &ms[n], in[0]
				in = in[1:]
				m.N, m.Addr = copy(m.Buffers[0], d.data), d.from
				m.NN = copy(m.OOB, []byte{byte(len(in)), 0xee})
				m.Flags = len(in)
			}
			return n, nil
		}
		ms := make([]ipv4.Message, 8) // as quic-go's
		for i := range ms {
			ms[i].Buffers, ms[i].OOB = [][]byte{make([]byte, 1452)}, make([]byte, 128)
		}
		type out struct {
			data        string
			oob         string
			flags, slot int
			from        string
		}
		var got []out
		for {
			n, err := udpGate{g}.ReadBatch(ms, 0)
			if err != nil {
				break
			}
			for i, m := range ms[:n] {
				got = append(got, out{string(m.Buffers[0][:m.N]), string(m.OOB[:m.NN]), m.Flags, i, m.Addr.String()})
			}
		}
		// One read of the socket: the first short-header datagram passes,
		// the second moves up a slot past the dropped one; the hello is
		// held, then released with the datagram behind it, on the next
		// call. Flags and OOB count the datagrams behind each in the batch.
		want := []out{
			{"\x40\x01", "\x06\xee", 6, 0, src(2).String()},
			{"\x40\x02", "\x04\xee", 4, 1, src(2).String()},
			{string(f[0]), "\x03\xee", 3, 0, src(1).String()},
			{string(f[1]), "\x02\xee", 2, 1, src(1).String()},
			{string(f[2]), "\x01\xee", 1, 2, src(1).String()},
			{"\x40\x03", "\x00\xee", 0, 3, src(2).String()},
		}
		if len(got) != len(want) {
			t.Fatalf("got %d datagrams, want %d", len(got), len(want))
		}
		for i := range want {
			if got[i] != want[i] {
				t.Errorf("datagram %d: flags %d, oob %x, slot %d, from %s; want flags %d, oob %x, slot %d, from %s", i,
					got[i].flags, got[i].oob, got[i].slot, got[i].from, want[i].flags, want[i].oob, want[i].slot, want[i].from)
			}
		}
	})

	// The per-source cap counts an IPv6 /64 as one source: a client
	// rotating its addresses inside it gets no more room than one address.
	t.Run("one source is an IPv4 address or an IPv6 /64", func(t *testing.T) {
		for _, c := range []struct {
			name  string
			from  func(i int) net.Addr
			other net.Addr // another source
		}{
			{"IPv4", func(int) net.Addr { return &net.UDPAddr{IP: net.IPv4(192, 0, 2, 7), Port: 4433} },
				&net.UDPAddr{IP: net.IPv4(192, 0, 2, 8), Port: 4433}},
			{"IPv6 addresses in one /64", func(i int) net.Addr {
				return &net.UDPAddr{IP: net.ParseIP(fmt.Sprintf("2001:db8:cafe:0:%x::%x", i, i+1)), Port: 4433 + i}
			}, &net.UDPAddr{IP: net.ParseIP("2001:db8:cafe:1::1"), Port: 4433}},
		} {
			t.Run(c.name, func(t *testing.T) {
				g, _ := newGate()
				g.maxPerSource = 4
				for i, f := range flights {
					g.in(f[:1], c.from(i))
				}
				readAll(g)
				if st := g.stats(); st.pending != 4 || st.sources != 1 || st.refused != int64(len(flights)-4) {
					t.Errorf("stats %+v: want 4 pending from 1 source, %d refused", st, len(flights)-4)
				}
				g.in(flights[0][:1], c.other)
				readAll(g)
				if st := g.stats(); st.pending != 5 || st.sources != 2 {
					t.Errorf("another source: stats %+v, want 5 pending from 2 sources", st)
				}
			})
		}
	})

	t.Run("per-source and total caps", func(t *testing.T) {
		g, _ := newGate()
		g.maxPerSource, g.maxPending = 4, 9
		for _, f := range flights {
			g.in(f[:1], src(1))
		}
		if got := readAll(g); len(got) != 0 {
			t.Fatalf("%d datagrams passed", len(got))
		}
		if len(g.pending) != 4 || g.perSource[source.Of(addrPort(src(1)).Addr())] != 4 || g.refused != int64(len(flights)-4) {
			t.Errorf("%d pending, per source %v, %d refused", len(g.pending), g.perSource, g.refused)
		}
		// A hello completed from a full source is still admitted (its
		// first datagram, all quic-go needs to answer with a Retry).
		g.in(flights[0][1:], src(1))
		if got := readAll(g); len(got) != 1 || string(got[0]) != string(flights[0][0]) {
			t.Errorf("%d datagrams released, want the flight's first", len(got))
		}
		// Past the total, new hellos evict others.
		for i, f := range flights {
			g.in(f[:1], src(10+i))
		}
		if got := readAll(g); len(got) != 0 {
			t.Fatalf("%d datagrams passed", len(got))
		}
		held, counted := 0, 0
		for _, p := range g.pending {
			held += len(p.held)
		}
		for _, n := range g.perSource {
			counted += n
		}
		if len(g.pending) != 9 || held != 9 || counted != 9 {
			t.Errorf("%d pending, %d held, %d counted per source", len(g.pending), held, counted)
		}
		if st := g.stats(); st.evicted == 0 || st.pending != 9 {
			t.Errorf("stats %+v: want 9 pending and evictions counted", st)
		}

		// Past the handshake timeout, the entries go.
		clock = clock.Add(11 * time.Second)
		g.in([][]byte{{0xc3, 0, 0, 0, 1, 0, 0, 0}}, src(99)) // any Initial triggers the sweep
		readAll(g)
		if len(g.pending) != 0 || len(g.perSource) != 0 || len(g.decided) != 1 {
			t.Errorf("after the timeout: %d pending, %v, %d decided", len(g.pending), g.perSource, len(g.decided))
		}
		clock = clock.Add(10 * time.Second)
		g.in([][]byte{{0xc3, 0, 0, 0, 1, 0, 0, 0}}, src(99))
		readAll(g)
		if len(g.decided) != 0 {
			t.Errorf("after twice the timeout: %d decided", len(g.decided))
		}
	})

	t.Run("a hello over four datagrams is rejected", func(t *testing.T) {
		f := flights[1]
		g, _ := newGate(fakeDatagram{f[0], src(1)}, fakeDatagram{f[0], src(1)}, fakeDatagram{f[0], src(1)},
			fakeDatagram{f[0], src(1)}, fakeDatagram{f[1], src(1)}, fakeDatagram{f[2], src(1)})
		if got := readAll(g); len(got) != 0 {
			t.Errorf("%d datagrams passed", len(got))
		}
		if d, ok := g.decided[keyOf(t, f[0], src(1))]; !ok || d.admit {
			t.Errorf("decision %v, %v", d, ok)
		}
	})

	t.Run("issued connection IDs", func(t *testing.T) {
		g, _ := newGate()
		id, err := g.ids.GenerateConnectionID()
		if err != nil || id.Len() != handover.ConnIDLen {
			t.Fatal(id, err)
		}
		if !g.ids.Issued(id.Bytes(), time.Now(), time.Minute) {
			t.Error("an issued ID is not recognized")
		}
		if g.ids.Issued(id.Bytes(), time.Now().Add(2*time.Minute), time.Minute) {
			t.Error("an old ID is recognized")
		}
		other := handover.NewConnIDs(handover.NewLineage())
		if other.Issued(id.Bytes(), time.Now(), time.Minute) {
			t.Error("another gate's ID is recognized")
		}
		// An Initial to an issued ID that its keys do not open passes; one
		// to another ID does not.
		d := gatetest.LongHeader(0xc3, quicinitial.Version1, 1200)
		copy(d[6:], id.Bytes())
		d[5], d[6+handover.ConnIDLen], d[7+handover.ConnIDLen] = handover.ConnIDLen, 0, 0 // no SCID, no token
		g.in([][]byte{d}, src(1))
		if got := readAll(g); len(got) != 1 {
			t.Errorf("%d datagrams passed, want 1", len(got))
		}
		d[7]++
		g.in([][]byte{d}, src(1))
		if got := readAll(g); len(got) != 0 {
			t.Errorf("%d datagrams passed, want 0", len(got))
		}
	})
}

// in scripts more datagrams for the fake socket under g.
// tokened is flight sealed again with token, as a client sends it after a
// Retry (to the Retry's connection ID) or with a token from an earlier
// connection: quic-go answers it without a Retry, so the gate releases all
// of it.
func tokened(t testing.TB, flight [][]byte, token []byte) [][]byte {
	t.Helper()
	var out [][]byte
	for i, d := range flight {
		hdr, frames, err := quicinitial.OpenInitial(d)
		if err != nil {
			t.Fatal(err)
		}
		keys, err := gatetest.ClientInitialKeys(hdr.DCID)
		if err != nil {
			t.Fatal(err)
		}
		var payload []byte
		for _, f := range frames {
			payload = gatetest.CryptoFrame(payload, f.Offset, f.Data)
		}
		out = append(out, keys.SealInitial(nil, hdr.DCID, hdr.SCID, token, uint32(i), payload, 1200))
	}
	return out
}

func (g *QUIC) in(dgrams [][]byte, from net.Addr) {
	f := g.pc.(*fakeSocket)
	for _, d := range dgrams {
		f.in = append(f.in, fakeDatagram{d, from})
	}
}

func keyOf(t *testing.T, d []byte, from net.Addr) gateKey {
	hdr, err := quicinitial.ParseLongHeader(d)
	if err != nil {
		t.Fatal(err)
	}
	k := gateKey{src: addrPort(from), n: uint8(len(hdr.DCID))}
	copy(k.dcid[:], hdr.DCID)
	return k
}

// TestQUICGateKeepsOptimizations checks that quic-go reads through the gate
// in batches, with the ECN control messages it enables on the socket.
func TestQUICGateKeepsOptimizations(t *testing.T) {
	d := testDoor(t, Settings{})
	pc := gatetest.LoopbackUDP(t, "udp4")
	g := d.QUIC(pc, nil)
	var batch, tos atomic.Int32
	read := g.read
	g.read = func(ms []ipv4.Message) (int, error) {
		batch.Store(int32(len(ms)))
		n, err := read(ms)
		for _, m := range ms[:max(n, 0)] {
			cmsgs, _ := unix.ParseSocketControlMessage(m.OOB[:m.NN])
			for _, c := range cmsgs {
				if c.Header.Level == unix.IPPROTO_IP && c.Header.Type == unix.IP_TOS {
					tos.Add(1)
				}
			}
		}
		return n, err
	}
	oc, ok := g.Conn().(quic.OOBCapablePacketConn)
	if !ok {
		t.Fatal("the gate is not an OOBCapablePacketConn")
	}
	// quic-go enables GSO when this getsockopt succeeds on SyscallConn.
	rc, err := oc.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var gsoErr error
	if err := rc.Control(func(fd uintptr) { _, gsoErr = unix.GetsockoptInt(int(fd), unix.IPPROTO_UDP, unix.UDP_SEGMENT) }); err != nil || gsoErr != nil {
		t.Errorf("UDP_SEGMENT through the gate: %v, %v", err, gsoErr)
	}
	tr := &quic.Transport{Conn: g.Conn(), ConnectionIDGenerator: d.cfg.IDs}
	ql, err := tr.Listen(serverTLS(t), &quic.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	defer tr.Close()
	defer ql.Close()
	go func() {
		if c, err := ql.Accept(context.Background()); err == nil {
			c.CloseWithError(0, "")
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if c, err := quic.DialAddr(ctx, pc.LocalAddr().String(), gatetest.TunnelTLS(gatetest.ServerName), &quic.Config{}); err != nil {
		t.Errorf("handshake through the gate: %v", err)
	} else {
		c.CloseWithError(0, "")
	}
	if batch.Load() < 2 {
		t.Errorf("quic-go reads %d datagrams at a time", batch.Load())
	}
	if tos.Load() == 0 {
		t.Error("no control messages: ECN is off")
	}
}
