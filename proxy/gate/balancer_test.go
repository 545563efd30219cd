package gate

import (
	"bytes"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/bastiond/bastiond/internal/audit"
	"github.com/bastiond/bastiond/internal/audit/audittest"
	"github.com/bastiond/bastiond/proxy/gate/gatetest"
	"github.com/bastiond/bastiond/proxy/gate/proxyproto"
)

// balancerGate serves a TCP gate on the loopback of network (tcp4 or
// tcp6) with set, and returns it with the channel of what it passed.
func balancerGate(t *testing.T, network string, set Settings) (*Door, *TCP, <-chan net.Conn) {
	t.Helper()
	d := testDoor(t, set)
	addr := "127.0.0.1:0"
	if network == "tcp6" {
		addr = "[::1]:0"
	}
	ln, err := net.Listen(network, addr)
	if err != nil {
		t.Skipf("no %s loopback: %v", network, err)
	}
	g := d.TCP(ln)
	out := make(chan net.Conn, 16)
	go func() {
		for {
			c, err := g.Accept()
			if err != nil {
				close(out)
				return
			}
			out <- c
		}
	}()
	t.Cleanup(func() {
		g.Close()
		for c := range out {
			c.Close()
		}
	})
	return d, g, out
}

// loopback is the loopback address of network, the peer of every
// connection the tests open.
func loopback(network string) netip.Addr {
	if network == "tcp6" {
		return netip.IPv6Loopback()
	}
	return netip.MustParseAddr("127.0.0.1")
}

// send opens a connection to g, writes b, and returns how many bytes came
// back before g closed it.
func send(t *testing.T, g *TCP, b []byte) (net.Conn, func() int) {
	t.Helper()
	c, err := net.DialTimeout("tcp", g.Addr().String(), 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if _, err := c.Write(b); err != nil {
		t.Fatal(err)
	}
	return c, func() int {
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, err := io.Copy(io.Discard, c)
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatal("the gate neither passed nor closed the connection within 5s")
		}
		return int(n)
	}
}

// passed waits for the gate to pass a connection.
func passed(t *testing.T, out <-chan net.Conn) net.Conn {
	t.Helper()
	select {
	case c := <-out:
		return c
	case <-time.After(5 * time.Second):
		t.Fatal("the gate passed nothing within 5s")
		return nil
	}
}

func headerCount(t *testing.T, d *Door, result string) float64 {
	t.Helper()
	return testutil.ToFloat64(collectorFor(d, result))
}

// collectorFor is the one series of bastiond_proxy_protocol_headers_total
// labelled result.
func collectorFor(d *Door, result string) *singleSeries {
	return &singleSeries{d: d, result: result}
}

// TestBalancerHeader: a listed balancer's connection is the user's its
// PROXY v2 header names (IPv4 or IPv6, whatever the family the balancer
// connects over), or the balancer's own for LOCAL; the ClientHello behind
// the header is screened as always; a broken or missing header is dropped
// with nothing sent and counted; the same header from anyone else is
// dropped with nothing sent.
func TestBalancerHeader(t *testing.T) {
	hello := gatetest.ClientHello(t, &tls.Config{ServerName: gatetest.ServerName})
	other := gatetest.ClientHello(t, &tls.Config{ServerName: "other.example"})
	front := netip.MustParseAddrPort("198.51.100.1:443")
	front6 := netip.MustParseAddrPort("[2001:db8:f00d::1]:443")
	users := []netip.AddrPort{netip.MustParseAddrPort("203.0.113.7:51234"), netip.MustParseAddrPort("[2001:db8:cafe::7]:51234")}
	for _, network := range []string{"tcp4", "tcp6"} {
		t.Run(network, func(t *testing.T) {
			peer := loopback(network)
			// A second to send a whole header: "a header cut short" waits it out.
			d, g, out := balancerGate(t, network, Settings{HandshakeTimeout: time.Second, Balancers: []netip.Prefix{
				netip.MustParsePrefix("192.0.2.0/24"), netip.PrefixFrom(peer, peer.BitLen())}})
			for _, user := range users {
				t.Run("PROXY from "+user.String(), func(t *testing.T) {
					dst := front
					if user.Addr().Is6() {
						dst = front6
					}
					before := headerCount(t, d, "proxy")
					send(t, g, append(proxyproto.Append(nil, proxyproto.Header{Command: proxyproto.Proxy, Source: user, Destination: dst}), hello...))
					c := passed(t, out)
					defer c.Close()
					if got := c.RemoteAddr().String(); got != user.String() {
						t.Errorf("RemoteAddr %s, want the user's %s", got, user)
					}
					if via, ok := Balancer(tls.Server(c, &tls.Config{})); !ok || via.Balancer.Addr() != peer || via.Own {
						t.Errorf("Balancer of the TLS connection: %+v %v, want a user's connection through %v", via, ok, peer)
					}
					got := make([]byte, len(hello))
					if _, err := io.ReadFull(c, got); err != nil || !bytes.Equal(got, hello) {
						t.Errorf("the ClientHello read back: %v", err)
					}
					if n := headerCount(t, d, "proxy") - before; n != 1 {
						t.Errorf("proxy headers counted: %v", n)
					}
				})
			}
			t.Run("LOCAL is the balancer's own", func(t *testing.T) {
				send(t, g, append(proxyproto.Append(nil, proxyproto.Header{Command: proxyproto.Local}), hello...))
				c := passed(t, out)
				defer c.Close()
				if ap, _ := peerAddr(c); ap.Addr() != peer {
					t.Errorf("RemoteAddr %s, want the balancer's", c.RemoteAddr())
				}
				if via, ok := Balancer(c); !ok || !via.Own {
					t.Errorf("a LOCAL connection: %+v %v, want the balancer's own", via, ok)
				}
			})
			dropped := []struct {
				name, result string
				b            []byte
			}{
				{"a ClientHello without a header", "malformed", hello},
				{"a version 1 header", "malformed", append([]byte("PROXY TCP4 203.0.113.7 198.51.100.1 51234 443\r\n"), hello...)},
				{"a header for UDP", "malformed", append(bytes.Replace(proxyproto.Append(nil, proxyproto.Header{Command: proxyproto.Proxy,
					Source: users[0], Destination: front}), []byte{0x21, 0x11}, []byte{0x21, 0x12}, 1), hello...)},
				{"a header cut short, then silence", "malformed", proxyproto.Append(nil, proxyproto.Header{Command: proxyproto.Proxy, Source: users[1], Destination: front6})[:30]},
				{"a header, then another server name", "proxy", append(proxyproto.Append(nil, proxyproto.Header{Command: proxyproto.Proxy,
					Source: users[1], Destination: front6}), other...)},
				{"nothing", "empty", nil},
			}
			for _, tc := range dropped {
				t.Run(tc.name+": closed with nothing sent", func(t *testing.T) {
					before := headerCount(t, d, tc.result)
					c, read := send(t, g, tc.b)
					if tc.b == nil {
						c.(*net.TCPConn).CloseWrite()
					}
					if n := read(); n != 0 {
						t.Errorf("the gate sent %d bytes", n)
					}
					if n := headerCount(t, d, tc.result) - before; n != 1 {
						t.Errorf("%s counted %v times", tc.result, n)
					}
				})
			}
			select {
			case c := <-out:
				t.Errorf("the gate passed a connection from %s", c.RemoteAddr())
			default:
			}
		})
	}
}

// TestBalancerHeaderFromStranger: with balancers listed, a PROXY header
// from anyone else is not read as one: the connection is closed with
// nothing sent (counted as not_from_balancer), and the stranger's plain
// ClientHello still passes under its own address.
func TestBalancerHeaderFromStranger(t *testing.T) {
	hello := gatetest.ClientHello(t, &tls.Config{ServerName: gatetest.ServerName})
	for _, network := range []string{"tcp4", "tcp6"} {
		t.Run(network, func(t *testing.T) {
			d, g, out := balancerGate(t, network, Settings{Balancers: []netip.Prefix{
				netip.MustParsePrefix("127.0.0.2/32"), netip.MustParsePrefix("::2/128"), netip.MustParsePrefix("2001:db8::/64")}})
			for _, h := range []proxyproto.Header{
				{Command: proxyproto.Proxy, Source: netip.MustParseAddrPort("203.0.113.7:1"), Destination: netip.MustParseAddrPort("198.51.100.1:443")},
				{Command: proxyproto.Proxy, Source: netip.MustParseAddrPort("[2001:db8:cafe::7]:1"), Destination: netip.MustParseAddrPort("[2001:db8::1]:443")},
				{Command: proxyproto.Local},
			} {
				before := headerCount(t, d, "not_from_balancer")
				_, read := send(t, g, append(proxyproto.Append(nil, h), hello...))
				if n := read(); n != 0 {
					t.Errorf("%v: the gate sent %d bytes", h, n)
				}
				if n := headerCount(t, d, "not_from_balancer") - before; n != 1 {
					t.Errorf("%v: not_from_balancer counted %v times", h, n)
				}
			}
			_, read := send(t, g, []byte("PROXY TCP4 203.0.113.7 198.51.100.1 51234 443\r\n"))
			if n := read(); n != 0 {
				t.Errorf("version 1: the gate sent %d bytes", n)
			}
			send(t, g, hello)
			c := passed(t, out)
			defer c.Close()
			if ap, _ := peerAddr(c); ap.Addr() != loopback(network) {
				t.Errorf("RemoteAddr %s, want the peer's own", c.RemoteAddr())
			}
			if _, ok := Balancer(c); ok {
				t.Error("a stranger's connection is known as a balancer's")
			}
		})
	}
}

// TestBalancerCapCountsUsers: behind a balancer the per-source cap counts
// the users the headers name, not the balancer, which carries them all.
func TestBalancerCapCountsUsers(t *testing.T) {
	hello := gatetest.ClientHello(t, &tls.Config{ServerName: gatetest.ServerName})
	for _, network := range []string{"tcp4", "tcp6"} {
		t.Run(network, func(t *testing.T) {
			peer := loopback(network)
			_, g, out := balancerGate(t, network, Settings{MaxConnsPerSource: 1, Balancers: []netip.Prefix{netip.PrefixFrom(peer, peer.BitLen())}})
			for _, pair := range [][2]string{{"203.0.113.7:1", "203.0.113.8:1"}, {"[2001:db8:cafe::7]:1", "[2001:db8:beef::7]:1"}} {
				a, b := netip.MustParseAddrPort(pair[0]), netip.MustParseAddrPort(pair[1])
				hdr := func(src netip.AddrPort) []byte {
					return append(proxyproto.Append(nil, proxyproto.Header{Command: proxyproto.Proxy, Source: src, Destination: src}), hello...)
				}
				send(t, g, hdr(a))
				first := passed(t, out)
				_, read := send(t, g, hdr(a))
				if n := read(); n != 0 {
					t.Errorf("%s over its cap: %d bytes sent", a, n)
				}
				send(t, g, hdr(b))
				second := passed(t, out)
				if second.RemoteAddr().String() != b.String() {
					t.Errorf("passed %s, want %s", second.RemoteAddr(), b)
				}
				first.Close()
				second.Close()
			}
		})
	}
}

// singleSeries is one series of the door's PROXY header counter, for
// testutil.ToFloat64.
type singleSeries struct {
	d      *Door
	result string
}

func (s *singleSeries) Describe(ch chan<- *prometheus.Desc) { ch <- proxyHeadersDesc }

func (s *singleSeries) Collect(ch chan<- prometheus.Metric) {
	for i, name := range headerOutcomeNames {
		if name == s.result {
			ch <- prometheus.MustNewConstMetric(proxyHeadersDesc, prometheus.CounterValue, float64(s.d.headers[i].Load()), name)
		}
	}
}

// TestFromBalancer: a balancer listed by its IPv4 address is known on a
// dual-stack socket too, where its address is IPv4-mapped; IPv6 prefixes
// match IPv6 peers only.
func TestFromBalancer(t *testing.T) {
	list := []netip.Prefix{netip.MustParsePrefix("10.0.0.5/32"), netip.MustParsePrefix("fd00::/120")}
	for _, tc := range []struct {
		remote string
		want   bool
	}{
		{"10.0.0.5:4000", true},
		{"[::ffff:10.0.0.5]:4000", true},
		{"10.0.0.6:4000", false},
		{"[::ffff:10.0.0.6]:4000", false},
		{"[fd00::5]:4000", true},
		{"[fd00::1:5]:4000", false},
		{"[::a00:5]:4000", false}, // IPv4-compatible, not mapped: another address
	} {
		ap, ok := peerAddr(addrConn{remote: net.TCPAddrFromAddrPort(netip.MustParseAddrPort(tc.remote))})
		if !ok {
			t.Fatalf("%s: no peer address", tc.remote)
		}
		if got := fromBalancer(list, ap.Addr()); got != tc.want {
			t.Errorf("%s: fromBalancer %v, want %v", tc.remote, got, tc.want)
		}
	}
}

// TestBalancerHeaderAudited: a configured balancer's connection dropped for
// its header is a security event with the balancer's address, at most one
// every logEvery, the next one counting those held back in between.
func TestBalancerHeaderAudited(t *testing.T) {
	hello := gatetest.ClientHello(t, &tls.Config{ServerName: gatetest.ServerName})
	for _, network := range []string{"tcp4", "tcp6"} {
		t.Run(network, func(t *testing.T) {
			peer := loopback(network)
			d, g, _ := balancerGate(t, network, Settings{HandshakeTimeout: time.Second, Balancers: []netip.Prefix{netip.PrefixFrom(peer, peer.BitLen())}})
			events := &audit.Capture{}
			d.cfg.Audit = events
			drop := func() {
				t.Helper()
				if _, read := send(t, g, hello); read() != 0 {
					t.Fatal("the gate answered a connection without a header")
				}
			}
			for range 3 {
				drop()
			}
			audittest.Check(t, "three headerless connections within logEvery", events.Take(),
				audittest.Want{Event: audit.BalancerHeaderRefused, Actor: audit.ActorAnonymous, Source: peer.String(), Reason: "malformed"})
			d.headerLog.mu.Lock()
			d.headerLog.last = time.Time{} // logEvery has passed
			d.headerLog.mu.Unlock()
			drop()
			got := events.Take()
			audittest.Check(t, "the next one, logEvery later", got,
				audittest.Want{Event: audit.BalancerHeaderRefused, Actor: audit.ActorAnonymous, Source: peer.String(), Reason: "malformed"})
			if len(got) == 1 && !strings.Contains(got[0].Detail, "(2 more since the last such event)") {
				t.Errorf("detail %q does not count the two held back", got[0].Detail)
			}
		})
	}
}
