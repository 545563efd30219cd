package gate

import (
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/bastiond/bastiond/internal/source"
)

// addrConn is a connection that only has a remote address: enough for
// TCP.admit.
type addrConn struct {
	net.Conn
	remote net.Addr
}

func (c addrConn) RemoteAddr() net.Addr { return c.remote }
func (addrConn) Close() error           { return nil }

// TestGateCapCountsSources: the per-source cap counts an IPv4 address, or an
// IPv6 /64 whatever the address inside it, as one source; the metrics show
// the table and what the cap refused.
func TestGateCapCountsSources(t *testing.T) {
	const limit = 2
	cases := []struct {
		name string
		// held fill the source's places; next must then be refused, other
		// admitted.
		held        []string
		next, other string
	}{
		{"IPv4 one address", []string{"203.0.113.10:40000", "203.0.113.10:40001"}, "203.0.113.10:40002", "203.0.113.11:40000"},
		{"IPv4-mapped is the IPv4 address", []string{"[::ffff:203.0.113.10]:40000", "203.0.113.10:40001"}, "[::ffff:203.0.113.10]:40002", "[::ffff:203.0.113.11]:40000"},
		{"IPv6 rotating inside a /64", []string{"[2001:db8:cafe::10]:40000", "[2001:db8:cafe::21]:40000"}, "[2001:db8:cafe::ffff:1:2:3]:40000", "[2001:db8:cafe:1::10]:40000"},
		{"IPv6 one address", []string{"[2001:db8:cafe::10]:40000", "[2001:db8:cafe::10]:40001"}, "[2001:db8:cafe::10]:40002", "[2001:db8:beef::10]:40000"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d := testDoor(t, Settings{MaxConnsPerSource: limit})
			g := &TCP{d: d, sources: map[netip.Prefix]int{}}
			d.tcp = append(d.tcp, g)
			admit := func(addr string) (net.Conn, bool) {
				return g.admit(addrConn{remote: net.TCPAddrFromAddrPort(netip.MustParseAddrPort(addr))})
			}
			var held []net.Conn
			for _, a := range tc.held {
				c, ok := admit(a)
				if !ok {
					t.Fatalf("%s refused under the cap", a)
				}
				held = append(held, c)
			}
			if _, ok := admit(tc.next); ok {
				t.Errorf("%s admitted past the cap of its source %v", tc.next, source.Of(netip.MustParseAddrPort(tc.next).Addr()))
			}
			o, ok := admit(tc.other)
			if !ok {
				t.Errorf("%s refused: another source's connections counted against it", tc.other)
			}
			wantMetrics := `
# HELP bastiond_tcp_connections TCP connections open on 443, counted against their source's cap (limits.connections_per_source).
# TYPE bastiond_tcp_connections gauge
bastiond_tcp_connections 3
# HELP bastiond_tcp_refused_total TCP connections on 443 closed with nothing sent because a cap was reached (reason: connection_per_source).
# TYPE bastiond_tcp_refused_total counter
bastiond_tcp_refused_total{reason="connection_per_source"} 1
# HELP bastiond_tcp_sources Sources (IPv4 addresses, IPv6 /64s) with TCP connections open on 443, the size of the per-source table.
# TYPE bastiond_tcp_sources gauge
bastiond_tcp_sources 2
`
			if err := testutil.CollectAndCompare(d.TCPMetrics(), strings.NewReader(wantMetrics),
				"bastiond_tcp_connections", "bastiond_tcp_refused_total", "bastiond_tcp_sources"); err != nil {
				t.Error(err)
			}
			// Closing gives the place back, once however often it is closed.
			held[0].Close()
			held[0].Close()
			if c, ok := admit(tc.next); !ok {
				t.Errorf("%s refused after a place was given back", tc.next)
			} else {
				c.Close()
			}
			for _, c := range append(held[1:], o) {
				c.Close()
			}
			if n := g.counts(); n.sources != 0 || n.conns != 0 {
				t.Errorf("after every close: %+v, want an empty table", n)
			}
		})
	}
}
