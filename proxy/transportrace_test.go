package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/bastiond/bastiond/tunnel"
)

// TestTransportRaceLoserLeavesNoTrace: on a path where QUIC answers after
// the client's fallback delay but before TLS on TCP completes (a long
// round trip, TCP slower than UDP), bastionctl races both, QUIC wins and
// the client cuts its TLS attempt mid-handshake. On such a path every
// tunnel does that, so the bastion must not take the loser for a failed
// handshake (the counter an operator watches for attacks) nor log it: its
// TLS stack had answered the ClientHello, which is all a client that
// gives up owes it.
func TestTransportRaceLoserLeavesNoTrace(t *testing.T) {
	for _, network := range []string{"4", "6"} {
		t.Run("IPv"+network, func(t *testing.T) {
			e := newTunnelEnv(t, network)
			broker := e.s.cfg.Load().Broker
			before := handshakeFailures(t, broker)

			// QUIC's round trip 2x60 ms, TCP's 2x150 ms: QUIC is done at
			// about 120 ms, TLS, started at 20 ms, is mid-handshake.
			relay := newDelayRelay(t, network, e.tcp, e.udp, 150*time.Millisecond, 60*time.Millisecond)
			cl, err := tunnel.NewClient(tunnel.ClientConfig{Server: testName, Address: relay.addr, TLS: &tls.Config{InsecureSkipVerify: true},
				Token: e.tokens["alice"], Transport: "auto", FallbackDelay: 20 * time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			via, err := cl.Connect(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if via != "quic" {
				t.Fatalf("connected over %s, want quic (the relay's delays must let QUIC win)", via)
			}
			cl.Close()

			// The bastion has seen the TLS connection end once its gate
			// holds none.
			deadline := time.Now().Add(10 * time.Second)
			for openTCP(t, e.s) > 0 {
				if time.Now().After(deadline) {
					t.Fatalf("%d TCP connections still open at the bastion", openTCP(t, e.s))
				}
				time.Sleep(10 * time.Millisecond)
			}
			if tcpConns := relay.tcpConns.Load(); tcpConns != 1 {
				t.Fatalf("%d TCP connections through the relay, want 1 (the race's TLS attempt)", tcpConns)
			}
			if n := handshakeFailures(t, broker) - before; n != 0 {
				t.Errorf("the losing TLS connection counted as %v failed handshakes, want 0", n)
			}
		})
	}
}

// metric reads the series name of c, the one whose label has value if
// label is not empty, the only one otherwise; 0 if there is none.
func metric(t *testing.T, c prometheus.Collector, name, label, value string) float64 {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c)
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			if label != "" && !slices.ContainsFunc(m.GetLabel(), func(l *dto.LabelPair) bool { return l.GetName() == label && l.GetValue() == value }) {
				continue
			}
			if g := m.GetGauge(); g != nil {
				return g.GetValue()
			}
			return m.GetCounter().GetValue()
		}
	}
	return 0
}

// handshakeFailures is bastiond_handshake_failures_total{layer="tls"}.
func handshakeFailures(t *testing.T, c prometheus.Collector) float64 {
	return metric(t, c, "bastiond_handshake_failures_total", "layer", "tls")
}

// openTCP is the TCP connections the gates of s count.
func openTCP(t *testing.T, s *Server) int {
	return int(metric(t, s.TCPMetrics(), "bastiond_tcp_connections", "", ""))
}

// delayRelay is a relay newDelayRelay started.
type delayRelay struct {
	addr     string       // host:port, TCP and UDP
	tcpConns atomic.Int64 // TCP connections accepted
}

// newDelayRelay listens on one loopback port for TCP and UDP, and relays
// to tcpTo and udpTo, delaying what it carries by tcpDelay and udpDelay
// each way: a long path for each transport. It serves one UDP client.
func newDelayRelay(t *testing.T, network, tcpTo, udpTo string, tcpDelay, udpDelay time.Duration) *delayRelay {
	t.Helper()
	host := "127.0.0.1"
	if network == "6" {
		host = "::1"
	}
	var ln net.Listener
	var pc net.PacketConn
	for range 20 { // the UDP port of the same number may be taken
		l, err := net.Listen("tcp"+network, net.JoinHostPort(host, "0"))
		if err != nil {
			t.Fatal(err)
		}
		p, err := net.ListenPacket("udp"+network, l.Addr().String())
		if err == nil {
			ln, pc = l, p
			break
		}
		l.Close()
	}
	if ln == nil {
		t.Fatal("no port free for both TCP and UDP")
	}
	r := &delayRelay{addr: ln.Addr().String()}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []io.Closer
	track := func(c io.Closer) {
		mu.Lock()
		defer mu.Unlock()
		conns = append(conns, c)
	}
	t.Cleanup(func() {
		ln.Close()
		pc.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})

	// delayed copies from src to dst, each read written delay later, in
	// order; it closes dst's writing side when src ends.
	delayed := func(dst, src net.Conn, delay time.Duration) {
		type chunk struct {
			b  []byte
			at time.Time
		}
		q := make(chan chunk, 64)
		wg.Go(func() {
			for c := range q {
				time.Sleep(time.Until(c.at))
				if _, err := dst.Write(c.b); err != nil {
					break
				}
			}
			for range q {
			}
			if tc, ok := dst.(*net.TCPConn); ok {
				tc.CloseWrite()
			}
		})
		wg.Go(func() {
			defer close(q)
			for {
				b := make([]byte, 32<<10)
				n, err := src.Read(b)
				if n > 0 {
					q <- chunk{b[:n], time.Now().Add(delay)}
				}
				if err != nil {
					return
				}
			}
		})
	}
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			r.tcpConns.Add(1)
			up, err := net.Dial("tcp", tcpTo)
			if err != nil {
				c.Close()
				continue
			}
			track(c)
			track(up)
			delayed(up, c, tcpDelay)
			delayed(c, up, tcpDelay)
		}
	})

	up, err := net.Dial("udp", udpTo)
	if err != nil {
		t.Fatal(err)
	}
	track(up)
	var client net.Addr
	var cmu sync.Mutex
	wg.Go(func() {
		b := make([]byte, 2048)
		for {
			n, from, err := pc.ReadFrom(b)
			if err != nil {
				return
			}
			cmu.Lock()
			client = from
			cmu.Unlock()
			d := append([]byte(nil), b[:n]...)
			time.AfterFunc(udpDelay, func() { up.Write(d) })
		}
	})
	wg.Go(func() {
		b := make([]byte, 2048)
		for {
			n, err := up.Read(b)
			if err != nil {
				if errors.Is(err, net.ErrClosed) {
					return
				}
				continue // ICMP unreachable after a client left
			}
			cmu.Lock()
			to := client
			cmu.Unlock()
			d := append([]byte(nil), b[:n]...)
			time.AfterFunc(udpDelay, func() { pc.WriteTo(d, to) })
		}
	})
	return r
}
