// Package gatetest gives the tests of the gates, and of the server behind
// them, what real clients send first: TLS ClientHellos and the Initial
// packets of QUIC first flights, made by crypto/tls and quic-go against
// sockets on loopback.
package gatetest

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"io"
	"math/rand/v2"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/bastiond/bastiond/api/tunnelwire"
	"github.com/bastiond/bastiond/proxy/gate/quicinitial"
)

// ServerName is the server name the tests' bastions answer to.
const ServerName = "bastion.test.example"

// LoopbackUDP listens on a loopback UDP port of network (udp4 or udp6), or
// skips the test.
func LoopbackUDP(t testing.TB, network string) *net.UDPConn {
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

// TunnelTLS is the TLS configuration of a tunnel client that names name,
// offering alpn (default: the tunnel's ALPN).
func TunnelTLS(name string, alpn ...string) *tls.Config {
	if alpn == nil {
		alpn = []string{tunnelwire.ALPN}
	}
	return &tls.Config{ServerName: name, InsecureSkipVerify: true, NextProtos: alpn}
}

// BigHello is the tunnel's ALPN and more protocols, so that a client's
// ClientHello takes three Initial datagrams.
var BigHello = append([]string{tunnelwire.ALPN}, strings.Repeat("x", 250), strings.Repeat("y", 250), strings.Repeat("z", 250),
	strings.Repeat("w", 250), strings.Repeat("v", 250), strings.Repeat("u", 250), strings.Repeat("t", 250))

// CaptureInitials dials a plain UDP socket with a quic-go client n times,
// each with its own DCID, and returns the datagrams of each client's first
// flight, the Initial packets of its ClientHello.
func CaptureInitials(t testing.TB, network string, tlsConf *tls.Config, n int) [][][]byte {
	t.Helper()
	target, client := LoopbackUDP(t, network), LoopbackUDP(t, network)
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

// FirstFlight is the first flight of one client configured with tlsConf.
func FirstFlight(t testing.TB, network string, tlsConf *tls.Config) [][]byte {
	return CaptureInitials(t, network, tlsConf, 1)[0]
}

// LongHeader is a datagram of size bytes with a long header of version v
// and random contents behind it.
func LongHeader(first byte, v uint32, size int) []byte {
	b := make([]byte, size)
	for i := range b {
		b[i] = byte(rand.Uint32())
	}
	b[0] = first
	binary.BigEndian.PutUint32(b[1:], v)
	b[5], b[14] = 8, 8 // DCID and SCID lengths
	return b
}

// ClientHello returns the first flight a crypto/tls client sends with cfg:
// one record holding its ClientHello.
func ClientHello(t testing.TB, cfg *tls.Config) []byte {
	t.Helper()
	a, b := net.Pipe()
	go func() {
		tls.Client(a, cfg).Handshake()
		a.Close()
	}()
	b.SetReadDeadline(time.Now().Add(5 * time.Second))
	var hdr [5]byte
	if _, err := io.ReadFull(b, hdr[:]); err != nil {
		t.Fatal(err)
	}
	body := make([]byte, int(hdr[3])<<8|int(hdr[4]))
	if _, err := io.ReadFull(b, body); err != nil {
		t.Fatal(err)
	}
	b.Close()
	return append(hdr[:], body...)
}
