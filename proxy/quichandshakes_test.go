package proxy

import (
	"context"
	"crypto/rand"
	"net"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/bastiond/bastiond/proxy/gate"
	"github.com/bastiond/bastiond/proxy/gate/gatetest"
)

// forgedClient sends a tunnel client's ClientHello from a socket of its
// own, as a flood does, without a QUIC stack.
type forgedClient struct {
	t     *testing.T
	pc    *net.UDPConn
	addr  *net.UDPAddr
	hello []byte
	scid  []byte
	retry gatetest.Retry
}

// flight sends the ClientHello to dcid with token, in two datagrams.
func (c *forgedClient) flight(dcid, token []byte) {
	keys, err := gatetest.ClientInitialKeys(dcid)
	if err != nil {
		c.t.Fatal(err)
	}
	half := len(c.hello) / 2
	for i, r := range [][2]int{{0, half}, {half, len(c.hello)}} {
		pkt := keys.SealInitial(nil, dcid, c.scid, token, uint32(i), gatetest.CryptoFrame(nil, uint64(r[0]), c.hello[r[0]:r[1]]), 1200)
		if _, err := c.pc.WriteTo(pkt, c.addr); err != nil {
			c.t.Fatal(err)
		}
	}
}

// getRetry sends a first flight to a fresh DCID and waits for its Retry.
func getRetry(t *testing.T, network string, addr *net.UDPAddr, hello, scid []byte) *forgedClient {
	t.Helper()
	c := &forgedClient{t: t, pc: gatetest.LoopbackUDP(t, network), addr: addr, hello: hello, scid: scid}
	dcid := make([]byte, 8)
	rand.Read(dcid)
	c.flight(dcid, nil)
	buf := make([]byte, 2048)
	c.pc.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, _, err := c.pc.ReadFrom(buf)
	if err != nil {
		t.Fatalf("no Retry: %v", err)
	}
	if c.retry, err = gatetest.ParseRetry(buf[:n]); err != nil {
		t.Fatal(err)
	}
	return c
}

// answer answers the Retry and waits for the server's first Initial:
// the first of its TLS handshake, or a CONNECTION_CLOSE.
func (c *forgedClient) answer() {
	c.t.Helper()
	c.flight(c.retry.SCID, c.retry.Token)
	buf := make([]byte, 2048)
	c.pc.SetReadDeadline(time.Now().Add(5 * time.Second))
	for range 4 { // the Retry of the first flight's other datagram may come first
		if _, _, err := c.pc.ReadFrom(buf); err != nil {
			c.t.Fatalf("no Initial from the server after the Retry: %v", err)
		}
		if buf[0]&0xf0 == 0xc0 {
			return
		}
	}
	c.t.Fatal("no Initial from the server after the Retry")
}

// stallHandshake starts a handshake and stalls it: the server's TLS
// handshake is under way and the client answers nothing more.
func stallHandshake(t *testing.T, network string, addr *net.UDPAddr, hello, scid []byte) {
	t.Helper()
	getRetry(t, network, addr, hello, scid).answer()
}

// TestQUICHandshakesPerSource: a source has at most gate.HandshakesPerSource
// handshakes under way. Past that, the gate drops its new first flights
// unanswered, and quic-go refuses its answers to earlier Retries before
// their TLS handshake; both are counted. A completed handshake holds no
// place, a stalled one gives its place back when it times out, and another
// source is not held back.
func TestQUICHandshakesPerSource(t *testing.T) {
	hello, scid := realClientHello(t)
	for _, network := range []string{"udp4", "udp6"} {
		t.Run(network, func(t *testing.T) {
			s, addr := startQUIC(t, network, Config{HandshakeTimeout: 2 * time.Second})
			// Completed handshakes, their connections kept open, hold
			// no place among those under way.
			for i := range gate.HandshakesPerSource + 4 {
				if _, err := dialQUIC(t, network, addr); err != nil {
					t.Fatalf("connection %d: %v", i, err)
				}
			}
			late := getRetry(t, network, addr, hello, scid)
			for range gate.HandshakesPerSource {
				stallHandshake(t, network, addr, hello, scid)
			}
			if n := quicRefused(t, s, "handshake_per_source"); n != 0 {
				t.Fatalf("%d refusals within the cap", n)
			}
			// A new connection gets nothing back: its first flight is
			// dropped (and so are the ones it sends again).
			tr := &quic.Transport{Conn: gatetest.LoopbackUDP(t, network)}
			defer tr.Close()
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			if _, err := tr.Dial(ctx, addr, gatetest.TunnelTLS(testName), &quic.Config{Versions: []quic.Version{quic.Version1}}); err == nil {
				t.Fatal("a connection past the cap completed its handshake")
			}
			dropped := quicRefused(t, s, "handshake_per_source")
			if dropped < 1 {
				t.Errorf("%d refusals counted for a first flight past the cap", dropped)
			}
			// An answer to a Retry got before is refused (CONNECTION_REFUSED
			// in an Initial, not a TLS handshake).
			late.answer()
			if n := quicRefused(t, s, "handshake_per_source"); n <= dropped {
				t.Errorf("an answer to a Retry past the cap: %d refusals counted, %d before", n, dropped)
			}
			if n := quicRefused(t, s, "connection_per_source"); n != 0 {
				t.Errorf("%d refusals counted at the connection cap", n)
			}
			// The stalled handshakes end at the handshake timeout (2 s),
			// and their places with them.
			var err error
			for range 100 {
				if _, err = dialQUIC(t, network, addr); err == nil {
					break
				}
				time.Sleep(100 * time.Millisecond)
			}
			if err != nil {
				t.Errorf("a connection after the stalled handshakes timed out: %v", err)
			}
		})
	}
	t.Run("another source", func(t *testing.T) {
		_, addr := startQUIC(t, "udp4", Config{})
		for range gate.HandshakesPerSource {
			stallHandshake(t, "udp4", addr, hello, scid)
		}
		pc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 2)})
		if err != nil {
			t.Skipf("no 127.0.0.2: %v", err)
		}
		tr := &quic.Transport{Conn: pc}
		defer tr.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		conn, err := tr.Dial(ctx, addr, gatetest.TunnelTLS(testName), &quic.Config{Versions: []quic.Version{quic.Version1}})
		if err != nil {
			t.Fatalf("from 127.0.0.2, while 127.0.0.1 is at its cap: %v", err)
		}
		conn.CloseWithError(0, "")
	})
}
