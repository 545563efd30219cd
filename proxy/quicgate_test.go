package proxy

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"

	"github.com/bastiond/bastiond/internal/source"
	"github.com/bastiond/bastiond/proxy/quicinitial"
	"github.com/bastiond/bastiond/tunnel"
)

// loopbackUDP listens on a loopback UDP port of network (udp4 or udp6), or
// skips the test.
func loopbackUDP(t testing.TB, network string) *net.UDPConn {
	t.Helper()
	ip := net.IPv4(127, 0, 0, 1)
	if network == "udp6" {
		ip = net.IPv6loopback
	}
	pc, err := net.ListenUDP(network, &net.UDPAddr{IP: ip})
	if err != nil {
		t.Skipf("no %s loopback: %v", network, err)
	}
	t.Cleanup(func() { pc.Close() })
	return pc
}

// startQUIC serves the front door's QUIC on a loopback UDP socket and
// returns the server and its address.
func startQUIC(t *testing.T, network string, cfg Config) (*Server, *net.UDPAddr) {
	t.Helper()
	return startTunedQUIC(t, network, cfg, tuning{})
}

// startTunedQUIC is startQUIC with the tuning tn.
func startTunedQUIC(t *testing.T, network string, cfg Config, tn tuning) (*Server, *net.UDPAddr) {
	t.Helper()
	s := newTunedTestServer(t, cfg, tn)
	pc := loopbackUDP(t, network)
	serve(t, s, nil, []net.PacketConn{pc})
	return s, pc.LocalAddr().(*net.UDPAddr)
}

// tunnelTLS is the TLS configuration of a tunnel client that names name.
func tunnelTLS(name string, alpn ...string) *tls.Config {
	if alpn == nil {
		alpn = []string{ALPNTunnel}
	}
	return &tls.Config{ServerName: name, InsecureSkipVerify: true, NextProtos: alpn}
}

// bigHello adds protocols to the ALPN list of a tunnel client so that its
// ClientHello takes three Initial datagrams.
var bigHello = append([]string{ALPNTunnel}, strings.Repeat("x", 250), strings.Repeat("y", 250), strings.Repeat("z", 250),
	strings.Repeat("w", 250), strings.Repeat("v", 250), strings.Repeat("u", 250), strings.Repeat("t", 250))

// captureInitials dials a plain UDP socket with a quic-go client n times,
// each with its own DCID, and returns the datagrams of each client's first
// flight, the Initial packets of its ClientHello.
func captureInitials(t testing.TB, network string, tlsConf *tls.Config, n int) [][][]byte {
	t.Helper()
	target, client := loopbackUDP(t, network), loopbackUDP(t, network)
	tr := &quic.Transport{Conn: client}
	defer tr.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	byDCID := map[string]int{}
	var flights [][][]byte
	for range n {
		wg.Go(func() {
			tr.Dial(ctx, target.LocalAddr(), tlsConf.Clone(), &quic.Config{Versions: []quic.Version{quic.Version1}})
		})
	}
	buf := make([]byte, 2048)
	target.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		m, _, err := target.ReadFrom(buf)
		if err != nil {
			if len(flights) < n {
				t.Fatalf("captured %d of %d first flights: %v", len(flights), n, err)
			}
			return flights
		}
		hdr, err := quicinitial.ParseLongHeader(buf[:m])
		if err != nil {
			t.Fatal(err)
		}
		i, ok := byDCID[string(hdr.DCID)]
		if !ok {
			i = len(flights)
			byDCID[string(hdr.DCID)] = i
			flights = append(flights, nil)
		}
		flights[i] = append(flights[i], append([]byte(nil), buf[:m]...))
		// The first flight goes out at once; retransmissions come a PTO later.
		target.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	}
}

// firstFlight is the first flight of one client configured with tlsConf.
func firstFlight(t testing.TB, network string, tlsConf *tls.Config) [][]byte {
	return captureInitials(t, network, tlsConf, 1)[0]
}

// answer sends dgrams to addr from a fresh socket and returns how many bytes
// come back within a second. It may run on any goroutine.
func answer(t *testing.T, addr *net.UDPAddr, dgrams [][]byte) int {
	c, err := net.DialUDP("udp", nil, addr)
	if err != nil {
		t.Error(err)
		return -1
	}
	defer c.Close()
	for _, d := range dgrams {
		if _, err := c.Write(d); err != nil {
			t.Error(err)
			return -1
		}
	}
	total := 0
	buf := make([]byte, 2048)
	c.SetReadDeadline(time.Now().Add(time.Second))
	for {
		n, err := c.Read(buf)
		if err != nil {
			return total
		}
		total += n
	}
}

// longHeader is a datagram of size bytes with a long header of version v
// and random contents behind it.
func longHeader(first byte, v uint32, size int) []byte {
	b := make([]byte, size)
	for i := range b {
		b[i] = byte(rand.Uint32())
	}
	b[0] = first
	binary.BigEndian.PutUint32(b[1:], v)
	b[5], b[14] = 8, 8 // DCID and SCID lengths
	return b
}

// retrySniffer counts the Retry packets a client receives. It is no
// OOBCapablePacketConn, so quic-go reads it with ReadFrom.
type retrySniffer struct {
	net.PacketConn
	udp     *net.UDPConn
	retries atomic.Int32
}

func (c *retrySniffer) SetReadBuffer(n int) error  { return c.udp.SetReadBuffer(n) }
func (c *retrySniffer) SetWriteBuffer(n int) error { return c.udp.SetWriteBuffer(n) }

func (c *retrySniffer) ReadFrom(p []byte) (int, net.Addr, error) {
	n, addr, err := c.PacketConn.ReadFrom(p)
	if n >= 5 && p[0]&0xf0 == 0xf0 && binary.BigEndian.Uint32(p[1:5]) == quicinitial.Version1 {
		c.retries.Add(1)
	}
	return n, addr, err
}

// dialTunnel runs a quic-go client handshake against addr, asks for a
// tunnel with a token that is not valid, and returns nil when the server
// answers that it is not, and how many Retry packets it received.
func dialTunnel(t *testing.T, network string, addr *net.UDPAddr, tlsConf *tls.Config) (error, int) {
	t.Helper()
	udp := loopbackUDP(t, network)
	sniff := &retrySniffer{PacketConn: udp, udp: udp}
	tr := &quic.Transport{Conn: sniff}
	defer tr.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, err := tr.Dial(ctx, addr, tlsConf, &quic.Config{Versions: []quic.Version{quic.Version1}})
	if err == nil {
		err = askBadToken(ctx, conn)
		conn.CloseWithError(0, "")
	}
	return err, int(sniff.retries.Load())
}

// askBadToken opens a tunnel stream with a token that is not valid and
// checks the server's answer.
func askBadToken(ctx context.Context, conn *quic.Conn) error {
	str, err := conn.OpenStreamSync(ctx)
	if err != nil {
		return err
	}
	defer str.CancelRead(0)
	req, err := tunnel.Request{Token: "bst_0000000000000000_notvalid", Target: "vm1", Port: 22}.Marshal()
	if err != nil {
		return err
	}
	if _, err := str.Write(req); err != nil {
		return err
	}
	str.SetReadDeadline(time.Now().Add(5 * time.Second))
	resp, err := tunnel.ReadResponse(str)
	if err != nil {
		return err
	}
	if resp.Status != tunnel.StatusUnauthorized {
		return fmt.Errorf("answer %v %q, want unauthorized", resp.Status, resp.Message)
	}
	return nil
}

func TestQUICGate(t *testing.T) {
	for _, network := range []string{"udp4", "udp6"} {
		t.Run(network, func(t *testing.T) {
			_, addr := startQUIC(t, network, Config{})
			t.Run("a tunnel client completes the handshake after a Retry", func(t *testing.T) {
				t.Parallel()
				for _, name := range []string{testName, "BASTION.test.example."} {
					for _, alpn := range [][]string{nil, bigHello} {
						err, retries := dialTunnel(t, network, addr, tunnelTLS(name, alpn...))
						if err != nil {
							t.Errorf("%s, %d protocols: %v", name, len(alpn), err)
						}
						if retries == 0 {
							t.Errorf("%s, %d protocols: no Retry", name, len(alpn))
						}
					}
				}
			})

			good := firstFlight(t, network, tunnelTLS(testName))
			big := firstFlight(t, network, tunnelTLS(testName, bigHello...))
			if len(big) < 3 {
				t.Fatalf("the big ClientHello took %d datagrams, want 3 or more", len(big))
			}
			t.Run("the right first flight replayed gets a Retry", func(t *testing.T) {
				t.Parallel()
				if n := answer(t, addr, good); n <= 0 {
					t.Error("no answer")
				}
			})
			cases := []struct {
				name   string
				dgrams [][]byte
			}{
				{"another server name", firstFlight(t, network, tunnelTLS("other.example"))},
				{"no server name", firstFlight(t, network, tunnelTLS(""))},
				{"a name that only starts like it", firstFlight(t, network, tunnelTLS(testName+".evil.example"))},
				{"another ALPN", firstFlight(t, network, tunnelTLS(testName, "h3"))},
				{"the right name in an incomplete hello", big[:len(big)-1]},
				{"QUIC version 2", [][]byte{longHeader(0xd0, 0x6b3343cf, 1200)}},
				{"an unknown version", [][]byte{longHeader(0xc0, 0x1a2a3a4a, 1200)}},
				{"a version negotiation packet", [][]byte{longHeader(0x80, 0, 1200)}},
				{"garbage in a v1 Initial", [][]byte{longHeader(0xc3, quicinitial.Version1, 1300)}},
				{"a short Initial", [][]byte{longHeader(0xc3, quicinitial.Version1, 300)}},
				{"a v1 Handshake packet", [][]byte{longHeader(0xe3, quicinitial.Version1, 1200)}},
				{"a short-header packet", [][]byte{longHeader(0x43, 0x01020304, 1200)}},
			}
			// A second of silence each, all at once.
			got := make([]int, len(cases))
			var wg sync.WaitGroup
			for i, tc := range cases {
				wg.Go(func() { got[i] = answer(t, addr, tc.dgrams) })
			}
			wg.Wait()
			for i, tc := range cases {
				if got[i] != 0 {
					t.Errorf("%s: the server sent %d bytes", tc.name, got[i])
				}
			}
			t.Run("without the gate, another server name gets an answer", func(t *testing.T) {
				t.Parallel()
				s := newTestServer(t, Config{})
				ql, err := quic.Listen(loopbackUDP(t, network), s.tlsConfig(ALPNTunnel), &quic.Config{})
				if err != nil {
					t.Fatal(err)
				}
				defer ql.Close()
				if n := answer(t, ql.Addr().(*net.UDPAddr), cases[0].dgrams); n <= 0 {
					t.Error("no answer: this test could not see one")
				}
			})
		})
	}
}

// TestQUICGateUnspecified serves on a dual-stack wildcard socket, as the
// daemon does: quic-go then reads the destination address of each datagram
// from its control messages, which the gate must keep on the datagrams it
// holds, for the replies to leave from the address the client sent to.
func TestQUICGateUnspecified(t *testing.T) {
	s := newTestServer(t, Config{})
	pc, err := net.ListenUDP("udp", &net.UDPAddr{})
	if err != nil {
		t.Skip(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(nil, []net.PacketConn{pc}) }()
	defer func() {
		s.Shutdown(context.Background())
		s.Close()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	}()
	port := pc.LocalAddr().(*net.UDPAddr).Port
	for _, c := range []struct{ network, ip string }{{"udp4", "127.0.0.1"}, {"udp6", "::1"}} {
		t.Run(c.network, func(t *testing.T) {
			err, retries := dialTunnel(t, c.network, &net.UDPAddr{IP: net.ParseIP(c.ip), Port: port}, tunnelTLS(testName, bigHello...))
			if err != nil || retries == 0 {
				t.Errorf("handshake: %v, %d Retry packets", err, retries)
			}
		})
	}
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
func readAll(g *quicGate) [][]byte {
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
	s := newTestServer(t, Config{HandshakeTimeout: 10 * time.Second})
	src := func(i int) net.Addr { return &net.UDPAddr{IP: net.IPv4(192, 0, 2, byte(i)), Port: 4433} }
	flights := captureInitials(t, "udp4", tunnelTLS(testName, bigHello...), 12)
	clock := time.Now()
	newGate := func(in ...fakeDatagram) (*quicGate, *fakeSocket) {
		f := &fakeSocket{in: in}
		g := newQUICGate(f, s, nil)
		g.now = func() time.Time { return clock }
		return g, f
	}

	t.Run("admitted datagrams come out in order", func(t *testing.T) {
		short := []byte{0x40, 1, 2, 3}
		f := flights[0]
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

	t.Run("batches keep order, control messages, flags and addresses", func(t *testing.T) {
		f := flights[2]
		in := []fakeDatagram{{[]byte{0x40, 1}, src(2)}, {longHeader(0xc0, 7, 1200), src(3)}, {[]byte{0x40, 2}, src(2)},
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
		// A hello completed from a full source is still admitted.
		g.in(flights[0][1:], src(1))
		if got := readAll(g); len(got) != len(flights[0]) {
			t.Errorf("%d datagrams released, want %d", len(got), len(flights[0]))
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
		if err != nil || id.Len() != connIDLen {
			t.Fatal(id, err)
		}
		if !g.ids.issued(id.Bytes(), time.Now(), time.Minute) {
			t.Error("an issued ID is not recognized")
		}
		if g.ids.issued(id.Bytes(), time.Now().Add(2*time.Minute), time.Minute) {
			t.Error("an old ID is recognized")
		}
		other := newConnIDs(NewLineage())
		if other.issued(id.Bytes(), time.Now(), time.Minute) {
			t.Error("another gate's ID is recognized")
		}
		// An Initial to an issued ID that its keys do not open passes; one
		// to another ID does not.
		d := longHeader(0xc3, quicinitial.Version1, 1200)
		copy(d[6:], id.Bytes())
		d[5], d[6+connIDLen], d[7+connIDLen] = connIDLen, 0, 0 // no SCID, no token
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
func (g *quicGate) in(dgrams [][]byte, from net.Addr) {
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
	s := newTestServer(t, Config{})
	pc := loopbackUDP(t, "udp4")
	g := newQUICGate(pc, s, nil)
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
	oc, ok := g.conn().(quic.OOBCapablePacketConn)
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
	tr := &quic.Transport{Conn: g.conn(), ConnectionIDGenerator: s.ids}
	ql, err := tr.Listen(s.tlsConfig(ALPNTunnel), &quic.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer (&quicEndpoint{ql, tr, g}).Close()
	go func() {
		if c, err := ql.Accept(context.Background()); err == nil {
			c.CloseWithError(0, "")
		}
	}()
	dialTunnel(t, "udp4", pc.LocalAddr().(*net.UDPAddr), tunnelTLS(testName))
	if batch.Load() < 2 {
		t.Errorf("quic-go reads %d datagrams at a time", batch.Load())
	}
	if tos.Load() == 0 {
		t.Error("no control messages: ECN is off")
	}
}

// TestQUICShutdownLeavesNoGoroutines serves QUIC, runs a handshake, shuts
// down and waits for the goroutines to end.
func TestQUICShutdownLeavesNoGoroutines(t *testing.T) {
	before := runtime.NumGoroutine()
	func() {
		s := newTestServer(t, Config{})
		pc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- s.Serve(nil, []net.PacketConn{pc}) }()
		err, _ = dialTunnel(t, "udp4", pc.LocalAddr().(*net.UDPAddr), tunnelTLS(testName))
		if err != nil {
			t.Errorf("handshake: %v", err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		s.Shutdown(ctx)
		s.Close()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
		if _, err := pc.WriteTo([]byte{0}, pc.LocalAddr()); !errors.Is(err, net.ErrClosed) {
			t.Errorf("the socket is still open: %v", err)
		}
	}()
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		buf := make([]byte, 1<<20)
		t.Errorf("%d goroutines before, %d after Shutdown:\n%s", before, n, buf[:runtime.Stack(buf, true)])
	}
}
