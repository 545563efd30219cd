package proxy

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/bastiond/bastiond/api/tunnelwire"
	"github.com/bastiond/bastiond/proxy/gate/gatetest"
	"github.com/bastiond/bastiond/proxy/gate/quicinitial"
)

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
	pc := gatetest.LoopbackUDP(t, network)
	serve(t, s, nil, []net.PacketConn{pc})
	return s, pc.LocalAddr().(*net.UDPAddr)
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
	udp := gatetest.LoopbackUDP(t, network)
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
	req, err := tunnelwire.Request{Token: "bst_0000000000000000_notvalid", Target: "vm1", Port: 22}.Marshal()
	if err != nil {
		return err
	}
	if _, err := str.Write(req); err != nil {
		return err
	}
	str.SetReadDeadline(time.Now().Add(5 * time.Second))
	resp, err := tunnelwire.ReadResponse(str)
	if err != nil {
		return err
	}
	if resp.Status != tunnelwire.StatusUnauthorized {
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
					for _, alpn := range [][]string{nil, gatetest.BigHello} {
						err, retries := dialTunnel(t, network, addr, gatetest.TunnelTLS(name, alpn...))
						if err != nil {
							t.Errorf("%s, %d protocols: %v", name, len(alpn), err)
						}
						if retries == 0 {
							t.Errorf("%s, %d protocols: no Retry", name, len(alpn))
						}
					}
				}
			})

			good := gatetest.FirstFlight(t, network, gatetest.TunnelTLS(testName))
			big := gatetest.FirstFlight(t, network, gatetest.TunnelTLS(testName, gatetest.BigHello...))
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
				{"another server name", gatetest.FirstFlight(t, network, gatetest.TunnelTLS("other.example"))},
				{"no server name", gatetest.FirstFlight(t, network, gatetest.TunnelTLS(""))},
				{"a name that only starts like it", gatetest.FirstFlight(t, network, gatetest.TunnelTLS(testName+".evil.example"))},
				{"another ALPN", gatetest.FirstFlight(t, network, gatetest.TunnelTLS(testName, "h3"))},
				{"the right name in an incomplete hello", big[:len(big)-1]},
				{"QUIC version 2", [][]byte{gatetest.LongHeader(0xd0, 0x6b3343cf, 1200)}},
				{"an unknown version", [][]byte{gatetest.LongHeader(0xc0, 0x1a2a3a4a, 1200)}},
				{"a version negotiation packet", [][]byte{gatetest.LongHeader(0x80, 0, 1200)}},
				{"garbage in a v1 Initial", [][]byte{gatetest.LongHeader(0xc3, quicinitial.Version1, 1300)}},
				{"a short Initial", [][]byte{gatetest.LongHeader(0xc3, quicinitial.Version1, 300)}},
				{"a v1 Handshake packet", [][]byte{gatetest.LongHeader(0xe3, quicinitial.Version1, 1200)}},
				{"a short-header packet", [][]byte{gatetest.LongHeader(0x43, 0x01020304, 1200)}},
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
				ql, err := quic.Listen(gatetest.LoopbackUDP(t, network), s.tlsConfig(ALPNTunnel), &quic.Config{})
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
			err, retries := dialTunnel(t, c.network, &net.UDPAddr{IP: net.ParseIP(c.ip), Port: port}, gatetest.TunnelTLS(testName, gatetest.BigHello...))
			if err != nil || retries == 0 {
				t.Errorf("handshake: %v, %d Retry packets", err, retries)
			}
		})
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
		err, _ = dialTunnel(t, "udp4", pc.LocalAddr().(*net.UDPAddr), gatetest.TunnelTLS(testName))
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
