package security

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/bastiond/bastiond/test/e2e"
)

// Invariant 17a: an IPv6 /64 is one source. One subscriber's link gets a
// whole /64, so every per-source limit counts it as one: the scan-trap
// blocklist, the connection-rate meter and the per-source TCP connection
// cap. An IPv4 source stays one address.
//
// The client speaks from several addresses of its own /64
// (2001:db8:cafe::/64, on the bastion's public link) and from other /64s
// that the bastion routes to it.
func TestInvariant17ASlash64IsOneSource(t *testing.T) {
	e2e.NeedLab(t)
	const connRate, capPerSource = 5, 4 // conn_rate bursts of 10
	d := e2e.StartDaemon(t, e2e.ViaFDs, fmt.Sprintf("firewall:\n  conn_rate: %d\n"+
		// A long handshake timeout: connections held without a ClientHello
		// stay counted against their source for the whole test.
		"limits:\n  connections_per_source: %d\n  handshake_timeout: 2m\n", connRate, capPerSource))
	removeFirewallAtEnd(t)
	ns := e2e.LabValue(t, "NS_CLIENT")
	client4, client6 := e2e.LabValue(t, "CLIENT4"), e2e.LabValue(t, "CLIENT6")
	pub4, pub6 := e2e.LabValue(t, "BASTION_PUB4"), e2e.LabValue(t, "BASTION_PUB6")
	home := netip.PrefixFrom(netip.MustParseAddr(client6), 64).Masked() // 2001:db8:cafe::/64

	// Addresses of the client's own /64: sameNet[0] is the lab's own.
	sameNet := []string{client6}
	for i := range 8 {
		sameNet = append(sameNet, e2e.ClientAddr(t, fmt.Sprintf("2001:db8:cafe::%x/64", 0x21+i)).String())
	}
	// Four other /64s, each one address, routed through the client.
	var otherNets []string
	for i := 1; i <= 4; i++ {
		a := e2e.ClientAddr(t, fmt.Sprintf("2001:db8:cafe:%x::10/64", i))
		e2e.RouteToClient(t, fmt.Sprintf("2001:db8:cafe:%x::/64", i))
		otherNets = append(otherNets, a.String())
	}
	other4 := e2e.ClientAddr(t, "203.0.113.21/24").String()
	for _, from := range append(append([]string{}, sameNet[:2]...), otherNets...) {
		e2e.ExpectProbeFrom(t, ns, from, pub6, 443, "open") // the lab reaches every one
	}
	if t.Failed() {
		t.FailNow()
	}

	t.Run("blocklist", func(t *testing.T) {
		t.Cleanup(func() { d.Ctl(nil, "policy", "blocklist", "clear", "--all") })
		// One address of the /64 probes a closed port...
		e2e.ExpectProbeFrom(t, ns, sameNet[1], pub6, 22, "filtered")
		// ...and every address of it meets silence on 443, TCP and QUIC.
		for _, from := range []string{sameNet[2], sameNet[0]} {
			e2e.ExpectProbeFrom(t, ns, from, pub6, 443, "filtered")
			if n, err := quicHelloFrom(t, from, pub6); err == nil || n != 0 {
				t.Errorf("from %s, in the blocklisted %v: QUIC got %d bytes back (%v), want silence", from, home, n, err)
			}
		}
		// Another /64 is another source.
		e2e.ExpectProbeFrom(t, ns, otherNets[0], pub6, 443, "open")
		if _, err := quicHelloFrom(t, otherNets[0], pub6); err != nil {
			t.Errorf("from %s, another /64: QUIC handshake: %v", otherNets[0], err)
		}

		out, err := d.Ctl(nil, "policy", "blocklist")
		if err != nil || !strings.Contains(out, home.String()) || strings.Contains(out, sameNet[1]) {
			t.Errorf("bastionctl policy blocklist: %v, want %v listed as one /64:\n%s", err, home, out)
		}
		if out, err := d.Ctl(nil, "policy", "blocklist", "--json"); err != nil || !strings.Contains(out, `"prefix": "`+home.String()+`"`) {
			t.Errorf("bastionctl policy blocklist --json: %v, want %v:\n%s", err, home, out)
		}
		// Clearing one address of the /64 frees the whole /64.
		if out, err := d.Ctl(nil, "policy", "blocklist", "clear", sameNet[3]); err != nil || !strings.Contains(out, "removed 1 ") {
			t.Fatalf("clear %s: %v: %s", sameNet[3], err, out)
		}
		for _, from := range []string{sameNet[1], sameNet[0]} {
			e2e.ExpectProbeFrom(t, ns, from, pub6, 443, "open")
		}

		// IPv4: one address probing does not block another.
		e2e.ExpectProbeFrom(t, ns, other4, pub4, 22, "filtered")
		e2e.ExpectProbeFrom(t, ns, other4, pub4, 443, "filtered")
		e2e.ExpectProbeFrom(t, ns, client4, pub4, 443, "open")
		if out, err := d.Ctl(nil, "policy", "blocklist"); err != nil || !strings.Contains(out, other4+"/32") || strings.Contains(out, client4) {
			t.Errorf("bastionctl policy blocklist: %v, want %s/32 alone:\n%s", err, other4, out)
		}
	})

	t.Run("tcp cap", func(t *testing.T) {
		const refusedMetric = `bastiond_tcp_refused_total{reason="connection_per_source"}`
		before := max(e2e.Metric(t, refusedMetric), 0) // -1: no refusal yet
		// Connections held open from rotating addresses of one /64, sending
		// nothing: the gate counts each while it waits for a ClientHello.
		for i := range capPerSource {
			if _, err := e2e.DialFrom(t, sameNet[1+i], pub6, 443); err != nil {
				t.Fatalf("connection %d from %s: %v", i+1, sameNet[1+i], err)
			}
		}
		// The next, from yet another address of the /64, is closed unanswered.
		// The gate accepts in order, so the held ones are counted first.
		if err := tlsHelloFrom(t, sameNet[1+capPerSource], pub6); err == nil {
			t.Errorf("from %s: a TLS handshake completed past the cap of %d connections for %v", sameNet[1+capPerSource], capPerSource, home)
		}
		// Another /64 still connects.
		if err := tlsHelloFrom(t, otherNets[1], pub6); err != nil {
			t.Errorf("from %s, another /64: %v", otherNets[1], err)
		}
		// IPv4: another address is another source.
		for i := range capPerSource {
			if _, err := e2e.DialFrom(t, client4, pub4, 443); err != nil {
				t.Fatalf("IPv4 connection %d: %v", i+1, err)
			}
		}
		if err := tlsHelloFrom(t, client4, pub4); err == nil {
			t.Errorf("from %s: a TLS handshake completed past the cap of %d", client4, capPerSource)
		}
		if err := tlsHelloFrom(t, other4, pub4); err != nil {
			t.Errorf("from %s, another IPv4 address: %v", other4, err)
		}
		if after := e2e.Metric(t, refusedMetric); after != before+2 {
			t.Errorf("%s went from %v to %v, want 2 more", refusedMetric, before, after)
		}
	})

	t.Run("rate", func(t *testing.T) {
		// New connections from rotating addresses of one /64: the meter sees
		// one source and drops past its burst. Bounded: at most 40 attempts
		// (4 times the burst) and a minute; the first silent one ends it.
		opened, limited := 0, false
		start := time.Now()
		for i := 0; i < 40 && time.Since(start) < time.Minute; i++ {
			if e2e.Probe(t, ns, pub6, 443, sameNet[i%len(sameNet)]) != "open" {
				limited = true
				break
			}
			opened++
		}
		t.Logf("%d new connections from %d addresses of %v opened before the first was dropped", opened, len(sameNet), home)
		if !limited || opened > 4*connRate {
			t.Errorf("%d connections from rotating addresses of %v opened (limited: %v); want a drop after the burst of %d, give or take the refill",
				opened, home, limited, 2*connRate)
		}
		// As many (and more than one burst), spread over other /64s: each
		// has its own budget, of which they use at most half.
		n := min(max(opened+1, 2*connRate+1), 4*connRate)
		for i := range n {
			from := otherNets[i%len(otherNets)]
			if got := e2e.Probe(t, ns, pub6, 443, from); got != "open" {
				t.Errorf("connection %d of %d spread over %d other /64s, from %s: %s", i+1, n, len(otherNets), from, got)
				break
			}
		}
	})
}

// quicHelloFrom starts a QUIC handshake with the bastion at addr:443 from
// the client's address from and returns how many bytes came back and how
// the handshake ended.
func quicHelloFrom(t testing.TB, from, addr string) (int, error) {
	t.Helper()
	counted := &countingPacketConn{PacketConn: e2e.ClientUDPFrom(t, from)}
	tr := &quic.Transport{Conn: counted}
	defer tr.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	conn, err := tr.Dial(ctx, &net.UDPAddr{IP: net.ParseIP(addr), Port: 443},
		&tls.Config{ServerName: e2e.ServerName, InsecureSkipVerify: true, NextProtos: []string{"bastion-tunnel/1"}},
		&quic.Config{HandshakeIdleTimeout: 3 * time.Second})
	if err == nil {
		conn.CloseWithError(0, "")
	}
	return int(counted.n.Load()), err
}

// tlsHelloFrom completes a TLS handshake with the bastion at addr:443 from
// the client's address from.
func tlsHelloFrom(t testing.TB, from, addr string) error {
	t.Helper()
	c, err := e2e.DialFrom(t, from, addr, 443)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	tc := tls.Client(c, &tls.Config{ServerName: e2e.ServerName, InsecureSkipVerify: true})
	if err := tc.Handshake(); err != nil {
		if errors.Is(err, io.EOF) {
			return fmt.Errorf("closed with nothing sent: %w", err)
		}
		return err
	}
	return nil
}
