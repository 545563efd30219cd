package proxy

import (
	"context"
	"crypto/rand"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/bastiond/bastiond/proxy/gate"
	"github.com/bastiond/bastiond/proxy/gate/gatetest"
)

// stallHandshake starts a handshake with the server at addr from a socket
// of its own, as a flood would: it sends a tunnel client's ClientHello,
// answers the Retry, reads the server's first answer (the TLS handshake
// is under way) and then answers nothing more.
func stallHandshake(t *testing.T, network string, addr *net.UDPAddr, hello, scid []byte) {
	t.Helper()
	pc := gatetest.LoopbackUDP(t, network)
	send := func(dcid, token []byte) {
		keys, err := gatetest.ClientInitialKeys(dcid)
		if err != nil {
			t.Fatal(err)
		}
		half := len(hello) / 2
		for i, c := range [][2]int{{0, half}, {half, len(hello)}} {
			pkt := keys.SealInitial(nil, dcid, scid, token, uint32(i), gatetest.CryptoFrame(nil, uint64(c[0]), hello[c[0]:c[1]]), 1200)
			if _, err := pc.WriteTo(pkt, addr); err != nil {
				t.Fatal(err)
			}
		}
	}
	dcid := make([]byte, 8)
	rand.Read(dcid)
	send(dcid, nil)
	buf := make([]byte, 2048)
	pc.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, _, err := pc.ReadFrom(buf)
	if err != nil {
		t.Fatalf("no Retry: %v", err)
	}
	retry, err := gatetest.ParseRetry(buf[:n])
	if err != nil {
		t.Fatal(err)
	}
	send(retry.SCID, retry.Token)
	// The Retry of the flight's other datagram may come first.
	for range 4 {
		if n, _, err = pc.ReadFrom(buf); err != nil {
			t.Fatalf("no Initial from the server after the Retry: %v", err)
		}
		if buf[0]&0xf0 == 0xc0 {
			return
		}
	}
	t.Fatalf("no Initial from the server after the Retry: %x", buf[:min(n, 1)])
}

// TestQUICHandshakesPerSource: a source has at most gate.HandshakesPerSource
// handshakes under way; the next connection from it is refused before its
// TLS handshake and counted, a completed handshake holds no place, and a
// stalled one gives its place back when it times out.
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
			for range gate.HandshakesPerSource {
				stallHandshake(t, network, addr, hello, scid)
			}
			_, err := dialQUIC(t, network, addr)
			var te *quic.TransportError
			if !errors.As(err, &te) || te.ErrorCode != quic.ConnectionRefused {
				t.Fatalf("a connection past the cap: %v, want CONNECTION_REFUSED", err)
			}
			if n := quicRefused(t, s, "handshake_per_source"); n < 1 {
				t.Errorf("%d refusals counted", n)
			}
			if n := quicRefused(t, s, "connection_per_source"); n != 0 {
				t.Errorf("%d refusals counted at the connection cap", n)
			}
			// The stalled handshakes end at the handshake timeout (2 s),
			// and their places with them.
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
