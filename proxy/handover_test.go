package proxy

import (
	"bufio"
	"bytes"
	"context"
	crand "crypto/rand"
	"crypto/tls"
	"errors"
	"net"
	"net/http"
	"net/netip"
	"os"
	"runtime"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"golang.org/x/net/ipv4"

	"github.com/bastiond/bastiond/api/tunnelwire"
	"github.com/bastiond/bastiond/proxy/auth"
	"github.com/bastiond/bastiond/proxy/gate/gatetest"
	"github.com/bastiond/bastiond/proxy/gate/quicinitial"
	"github.com/bastiond/bastiond/proxy/handover"
)

// families are the loopback addresses the hand-over tests run on.
var families = []struct{ name, ip string }{{"ipv4", "127.0.0.1"}, {"ipv6", "::1"}}

// loopbackSockets listens on TCP and UDP on ip, or skips the test.
func loopbackSockets(t *testing.T, ip string) (*net.TCPListener, *net.UDPConn) {
	t.Helper()
	a := netip.MustParseAddr(ip)
	ln, err := net.ListenTCP("tcp", net.TCPAddrFromAddrPort(netip.AddrPortFrom(a, 0)))
	if err != nil {
		t.Skipf("no loopback %s: %v", ip, err)
	}
	pc, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(a, 0)))
	if err != nil {
		ln.Close()
		t.Skipf("no loopback %s: %v", ip, err)
	}
	t.Cleanup(func() {
		ln.Close()
		pc.Close()
	})
	return ln, pc
}

// generation is one process of a lineage, as the tests play it: a Server
// on its own descriptors of the listening sockets.
type generation struct {
	s     *Server
	tcp   *net.TCPListener
	udp   *net.UDPConn
	pred  *generation
	token string // a tunnel token that only this Server's account store knows
	cert  []byte // this Server's certificate
}

// startGeneration serves a Server of lineage l (nil: a new one) on ln and
// pc, with links to its predecessor, until the test ends.
func startGeneration(t *testing.T, ln *net.TCPListener, pc *net.UDPConn, l *handover.Lineage, pred []*net.UnixConn) *generation {
	t.Helper()
	s := newTestServer(t, Config{Lineage: l})
	if pred != nil {
		s.SetPredecessor(pred)
	}
	serve(t, s, []net.Listener{ln}, []net.PacketConn{pc})
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
		s.mu.Lock()
		n := len(s.quic)
		s.mu.Unlock()
		if n == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the server does not serve QUIC")
		}
	}
	token, _, err := s.auth.Store().IssueToken("carol", []string{auth.ScopeTunnel}, time.Hour, "test", "")
	if err != nil {
		t.Fatal(err)
	}
	cert, err := s.cfg.Load().Certs.GetCertificate(&tls.ClientHelloInfo{ServerName: testName})
	if err != nil {
		t.Fatal(err)
	}
	return &generation{s: s, tcp: ln, udp: pc, token: token, cert: cert.Certificate[0]}
}

// handOver starts g's successor on duplicates of g's sockets, as the
// daemon does: g pauses, the successor serves with the next generation
// and links to g, g retires.
func (g *generation) handOver(t *testing.T) *generation {
	t.Helper()
	g.s.Pause()
	f, err := g.tcp.File()
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.FileListener(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	if f, err = g.udp.File(); err != nil {
		t.Fatal(err)
	}
	pc, err := net.FilePacketConn(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	mine, theirs, err := handover.LinkPair()
	if err != nil {
		t.Fatal(err)
	}
	next := g.s.Lineage().Next()
	n := startGeneration(t, ln.(*net.TCPListener), pc.(*net.UDPConn), &next, []*net.UnixConn{mine})
	n.pred = g
	if err := g.s.Retire([]*net.UnixConn{theirs}); err != nil {
		t.Fatal(err)
	}
	// A predecessor ends before its successor, whose link it reads: ended
	// after, it would lose its link first, and end its connections with
	// an error.
	t.Cleanup(g.closeLine)
	return n
}

// closeLine closes g and its predecessors, oldest first.
func (g *generation) closeLine() {
	var line []*generation
	for p := g; p != nil; p = p.pred {
		line = append(line, p)
	}
	for i := len(line) - 1; i >= 0; i-- {
		line[i].s.Close()
	}
}

// ask opens a stream on conn and asks for a tunnel to vm2 port 5985, which
// carol may open, with token. A server that knows the token answers that
// it carries no sessions (it has no broker); any other, unauthorized.
func ask(t *testing.T, conn *quic.Conn, token string) tunnelwire.Status {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	str, err := conn.OpenStreamSync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	req := tunnelRequest(t, token)
	if _, err := str.Write(req); err != nil {
		t.Fatal(err)
	}
	return answerOf(t, str)
}

func tunnelRequest(t *testing.T, token string) []byte {
	t.Helper()
	req, err := tunnelwire.Request{Token: token, Target: "vm2", Port: 5985}.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return req
}

func answerOf(t *testing.T, str *quic.Stream) tunnelwire.Status {
	t.Helper()
	defer str.CancelRead(0)
	str.SetReadDeadline(time.Now().Add(5 * time.Second))
	resp, err := tunnelwire.ReadResponse(str)
	if err != nil {
		t.Fatal(err)
	}
	return resp.Status
}

// servedBy checks that g, and g alone, serves the streams of conn.
// servedBy checks that conn's datagrams reach g. A serving g answers a new
// tunnel itself (unavailable with its token: it knows the token but has no
// broker; unauthorized with another generation's); a retired g sends it
// on to the new process (moved), and counts it.
func servedBy(t *testing.T, conn *quic.Conn, g, other *generation) {
	t.Helper()
	g.s.mu.Lock()
	retired := g.s.retired
	g.s.mu.Unlock()
	if retired {
		before := g.s.movedTunnels.Load()
		if st := ask(t, conn, g.token); st != tunnelwire.StatusMoved || g.s.movedTunnels.Load() != before+1 {
			t.Errorf("a new tunnel on a retired generation's connection: %v (moved by it: %d), want moved",
				st, g.s.movedTunnels.Load()-before)
		}
		return
	}
	if st := ask(t, conn, g.token); st != tunnelwire.StatusUnavailable {
		t.Errorf("with its own token: %v, want %v", st, tunnelwire.StatusUnavailable)
	}
	if st := ask(t, conn, other.token); st != tunnelwire.StatusUnauthorized {
		t.Errorf("with another generation's token: %v, want %v", st, tunnelwire.StatusUnauthorized)
	}
}

func peerCert(conn *quic.Conn) []byte { return conn.ConnectionState().TLS.PeerCertificates[0].Raw }

// dialTLS completes a TLS handshake with the front door at addr and
// returns the connection.
func dialTLS(t *testing.T, addr string) *tls.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	d := tls.Dialer{Config: &tls.Config{ServerName: testName, InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}}}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c.(*tls.Conn)
}

// getPortal asks for / on c, an HTTP/1.1 connection, and checks the answer.
func getPortal(t *testing.T, c *tls.Conn, br *bufio.Reader) {
	t.Helper()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte("GET / HTTP/1.1\r\nHost: " + testName + "\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("GET /: %s", resp.Status)
	}
}

func TestHandover(t *testing.T) {
	for _, fam := range families {
		t.Run(fam.name, func(t *testing.T) {
			ln, pc := loopbackSockets(t, fam.ip)
			old := startGeneration(t, ln, pc, nil, nil)
			addr := old.udp.LocalAddr().String()
			conn, err := quicDialForTest(t, addr)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(peerCert(conn), old.cert) {
				t.Fatal("the first connection is not the old server's")
			}
			if st := ask(t, conn, old.token); st != tunnelwire.StatusUnavailable {
				t.Fatalf("before the hand-over: %v", st)
			}
			// A stream with half a request on the wire across the hand-over.
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			live, err := conn.OpenStreamSync(ctx)
			if err != nil {
				t.Fatal(err)
			}
			req := tunnelRequest(t, old.token)
			if _, err := live.Write(req[:len(req)/2]); err != nil {
				t.Fatal(err)
			}

			next := old.handOver(t)

			if _, err := live.Write(req[len(req)/2:]); err != nil {
				t.Fatal(err)
			}
			// Its request completes after the hand-over: the old server
			// answers it (the datagrams reach it through the link), sending
			// this new tunnel on to the new process.
			if st := answerOf(t, live); st != tunnelwire.StatusMoved {
				t.Errorf("the stream whose request spans the hand-over: %v, want %v", st, tunnelwire.StatusMoved)
			}
			t.Run("the old connection stays with the old server", func(t *testing.T) {
				servedBy(t, conn, old, next)
				if !old.s.quic[0].gate.Retired() {
					t.Error("the old gate still reads the socket")
				}
			})
			t.Run("a new QUIC connection is the new server's", func(t *testing.T) {
				c, err := quicDialForTest(t, addr)
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(peerCert(c), next.cert) {
					t.Error("served by another server's certificate")
				}
				servedBy(t, c, next, old)
			})
			t.Run("new TLS connections are the new server's", func(t *testing.T) {
				for range 4 {
					c := dialTLS(t, old.tcp.Addr().String())
					if !bytes.Equal(c.ConnectionState().PeerCertificates[0].Raw, next.cert) {
						t.Fatal("served by another server's certificate")
					}
				}
			})
		})
	}
}

// TestHandoverLeavesNoGoroutines hands over with a live connection, closes
// both servers and waits for the goroutines to end.
func TestHandoverLeavesNoGoroutines(t *testing.T) {
	before := runtime.NumGoroutine()
	t.Run("hand-over", func(t *testing.T) {
		ln, pc := loopbackSockets(t, "127.0.0.1")
		old := startGeneration(t, ln, pc, nil, nil)
		conn, err := quicDialForTest(t, pc.LocalAddr().String())
		if err != nil {
			t.Fatal(err)
		}
		servedBy(t, conn, old, old.handOver(t))
	})
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		buf := make([]byte, 1<<20)
		t.Errorf("%d goroutines before, %d after:\n%s", before, n, buf[:runtime.Stack(buf, true)])
	}
}

func TestHandoverChain(t *testing.T) {
	for _, fam := range families {
		t.Run(fam.name, func(t *testing.T) {
			ln, pc := loopbackSockets(t, fam.ip)
			gen0 := startGeneration(t, ln, pc, nil, nil)
			addr := gen0.udp.LocalAddr().String()
			c0, err := quicDialForTest(t, addr)
			if err != nil {
				t.Fatal(err)
			}
			gen1 := gen0.handOver(t)
			servedBy(t, c0, gen0, gen1)
			c1, err := quicDialForTest(t, addr)
			if err != nil {
				t.Fatal(err)
			}
			gen2 := gen1.handOver(t)
			if g := gen2.s.Lineage().Generation; g != 2 {
				t.Fatalf("generation %d", g)
			}
			servedBy(t, c0, gen0, gen2)
			servedBy(t, c1, gen1, gen2)
			c2, err := quicDialForTest(t, addr)
			if err != nil {
				t.Fatal(err)
			}
			servedBy(t, c2, gen2, gen1)
		})
	}
}

func TestPauseResume(t *testing.T) {
	for _, fam := range families {
		t.Run(fam.name, func(t *testing.T) {
			ln, pc := loopbackSockets(t, fam.ip)
			g := startGeneration(t, ln, pc, nil, nil)
			tcpAddr, udpAddr := g.tcp.Addr().String(), g.udp.LocalAddr().String()
			liveQUIC, err := quicDialForTest(t, udpAddr)
			if err != nil {
				t.Fatal(err)
			}
			liveTLS := dialTLS(t, tcpAddr)
			br := bufio.NewReader(liveTLS)
			getPortal(t, liveTLS, br)

			g.s.Pause()
			g.s.Pause() // twice is once

			// A TCP connection completes in the kernel, its handshake waits.
			raw, err := net.DialTimeout("tcp", tcpAddr, 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			defer raw.Close()
			tc := tls.Client(raw, &tls.Config{ServerName: testName, InsecureSkipVerify: true})
			tc.SetDeadline(time.Now().Add(10 * time.Second))
			handshook := make(chan error, 1)
			go func() { handshook <- tc.Handshake() }()
			dialed := make(chan error, 1)
			go func() {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				c, err := quic.DialAddr(ctx, udpAddr, gatetest.TunnelTLS(testName), &quic.Config{Versions: []quic.Version{quic.Version1}})
				if err == nil {
					c.CloseWithError(0, "")
				}
				dialed <- err
			}()

			// Live connections go on meanwhile; a new tunnel on one is sent
			// to the new process (its state store may be the new one's).
			if st := ask(t, liveQUIC, g.token); st != tunnelwire.StatusMoved {
				t.Errorf("a new tunnel on a live QUIC connection while paused: %v, want moved", st)
			}
			getPortal(t, liveTLS, br)
			select {
			case err := <-handshook:
				t.Fatalf("a TLS handshake while paused: %v", err)
			case err := <-dialed:
				t.Fatalf("a QUIC handshake while paused: %v", err)
			case <-time.After(700 * time.Millisecond):
			}

			g.s.Resume()
			g.s.Resume()
			if err := <-handshook; err != nil {
				t.Errorf("the TLS handshake after Resume: %v", err)
			}
			if err := <-dialed; err != nil {
				t.Errorf("the QUIC handshake after Resume: %v", err)
			}
		})
	}
}

// shortHeader is a 1-RTT packet to id.
func shortHeader(id []byte) []byte {
	b := make([]byte, 1+len(id)+40)
	crand.Read(b)
	b[0] = 0x41
	copy(b[1:], id)
	return b
}

// longTo is a version 1 long-header packet of type first to id, with no
// SCID, of size bytes.
func longTo(first byte, id []byte, size int) []byte {
	b := gatetest.LongHeader(first, quicinitial.Version1, size)
	b[5] = byte(len(id))
	copy(b[6:], id)
	b[6+len(id)] = 0
	return b
}

func randomID() []byte {
	b := make([]byte, handover.ConnIDLen)
	crand.Read(b)
	return b
}

func newID(t *testing.T, c *handover.ConnIDs) []byte {
	id, err := c.GenerateConnectionID()
	if err != nil {
		t.Fatal(err)
	}
	return id.Bytes()
}

// garbage is what must never reach a predecessor of generation 1 in l:
// noise, packets to IDs of no lineage, and to IDs of generations 1 and 2.
func garbage(t *testing.T, l handover.Lineage) [][]byte {
	var out [][]byte
	for _, n := range []int{1, 5, 17, 100, 1200, 1452} {
		b := make([]byte, n)
		crand.Read(b)
		out = append(out, b)
	}
	for range 4 {
		out = append(out, shortHeader(randomID()), longTo(0xc3, randomID(), 1200), longTo(0xe3, randomID(), 300))
	}
	for _, gen := range []uint16{1, 2} {
		id := newID(t, handover.NewConnIDs(handover.Lineage{Key: l.Key, Born: l.Born, Generation: gen}))
		out = append(out, shortHeader(id), longTo(0xc3, id, 1200), longTo(0xe3, id, 300), longTo(0xd3, id, 300))
	}
	return out
}

// nextLinkMessage reads the next message of the link end c within d, or
// returns nil.
func nextLinkMessage(t *testing.T, c *net.UnixConn, d time.Duration) []byte {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(d))
	buf := make([]byte, handover.MaxMessage)
	n, err := c.Read(buf)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return buf[:n]
}

// checkForwarded checks that the next message on c is the datagram want
// from addr, and that nothing follows.
func checkForwarded(t *testing.T, c *net.UnixConn, want []byte, from netip.AddrPort) {
	t.Helper()
	msg := nextLinkMessage(t, c, 5*time.Second)
	if msg == nil {
		t.Fatal("nothing reached the predecessor")
	}
	m := ipv4.Message{Buffers: [][]byte{make([]byte, 1452)}, OOB: make([]byte, 128)}
	if err := handover.DecodeDatagram(msg, &m); err != nil {
		t.Fatal(err)
	}
	if got := m.Buffers[0][:m.N]; !bytes.Equal(got, want) {
		t.Fatalf("the predecessor got %x first, want %x", got[:min(len(got), 24)], want[:24])
	}
	if got := addrPortOf(m.Addr); got != from {
		t.Errorf("from %v, want %v", got, from)
	}
	if msg := nextLinkMessage(t, c, 300*time.Millisecond); msg != nil {
		t.Errorf("more reached the predecessor: %x", msg[:min(len(msg), 24)])
	}
}

// withPredecessor starts a generation 1 on ip whose predecessor the test
// plays: pred is the predecessor's end of the link.
func withPredecessor(t *testing.T, ip string) (pred *net.UnixConn, l handover.Lineage, g *generation) {
	t.Helper()
	pred, link, err := handover.LinkPair()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pred.Close() })
	l = handover.NewLineage().Next()
	ln, pc := loopbackSockets(t, ip)
	return pred, l, startGeneration(t, ln, pc, &l, []*net.UnixConn{link})
}

func TestHandoverGarbage(t *testing.T) {
	for _, fam := range families {
		t.Run(fam.name+"/serving", func(t *testing.T) {
			// Generation 1, with a predecessor the test plays.
			pred, l, g := withPredecessor(t, fam.ip)
			client, err := net.DialUDP("udp", nil, g.udp.LocalAddr().(*net.UDPAddr))
			if err != nil {
				t.Fatal(err)
			}
			defer client.Close()
			for _, d := range garbage(t, l) {
				if _, err := client.Write(d); err != nil {
					t.Fatal(err)
				}
			}
			// The socket is read in order: what reaches the predecessor
			// first must be this.
			want := shortHeader(newID(t, handover.NewConnIDs(handover.Lineage{Key: l.Key, Born: l.Born})))
			if _, err := client.Write(want); err != nil {
				t.Fatal(err)
			}
			checkForwarded(t, pred, want, addrPortOf(client.LocalAddr()))
		})

		t.Run(fam.name+"/retired", func(t *testing.T) {
			// Generation 1, retired, between a successor and a
			// predecessor the test plays.
			pred, l, g := withPredecessor(t, fam.ip)
			succ, theirs, err := handover.LinkPair()
			if err != nil {
				t.Fatal(err)
			}
			defer succ.Close()
			defer g.s.Close() // first: without its successor's link, it would end its connections with an error
			if err := g.s.Retire(nil); err == nil {
				t.Fatal("retired without a link for its UDP socket")
			}
			if err := g.s.Retire([]*net.UnixConn{theirs}); err != nil {
				t.Fatal(err)
			}
			if err := g.s.Retire([]*net.UnixConn{theirs}); err == nil {
				t.Error("retired twice")
			}
			earlier := handover.NewConnIDs(handover.Lineage{Key: l.Key, Born: l.Born})
			// The socket is the successor's now: a datagram on it must not
			// go anywhere.
			client, err := net.DialUDP("udp", nil, g.udp.LocalAddr().(*net.UDPAddr))
			if err != nil {
				t.Fatal(err)
			}
			defer client.Close()
			if _, err := client.Write(shortHeader(newID(t, earlier))); err != nil {
				t.Fatal(err)
			}
			from := netip.MustParseAddrPort("[2001:db8::7]:50000")
			send := func(msg []byte) {
				t.Helper()
				if _, err := succ.Write(msg); err != nil {
					t.Fatal(err)
				}
			}
			for _, msg := range [][]byte{{2, 0}, {1, 200, 1}, bytes.Repeat([]byte{1}, 100)} {
				send(msg)
			}
			for _, d := range garbage(t, l) {
				msg, err := handover.AppendDatagram(nil, from, nil, d)
				if err != nil {
					t.Fatal(err)
				}
				send(msg)
			}
			want := shortHeader(newID(t, earlier))
			msg, err := handover.AppendDatagram(nil, from, []byte{1, 2, 3}, want)
			if err != nil {
				t.Fatal(err)
			}
			send(msg)
			checkForwarded(t, pred, want, from)
			if msg := nextLinkMessage(t, succ, 100*time.Millisecond); msg != nil {
				t.Error("the retired server wrote back on the link it reads")
			}
		})
	}
}

func TestServeChecksPredecessorLinks(t *testing.T) {
	a, b, err := handover.LinkPair()
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	s := newTestServer(t, Config{})
	s.SetPredecessor([]*net.UnixConn{a})
	defer s.Close()
	if err := s.Serve(nil, nil); err == nil {
		t.Error("served without a UDP socket for the predecessor's link")
	}
}
