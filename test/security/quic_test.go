package security

import (
	"bufio"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/bastiond/bastiond/test/e2e"
)

// Invariant 16: a stranger's unauthenticated QUIC connections are bounded
// in memory. From one source (an IPv4 address, or addresses rotating
// inside one IPv6 /64) the connections past limits.connections_per_source
// are refused; on those accepted, the streams that never send their tunnel
// request past 8 a connection are refused at once, the bastion holds at
// most limits.pending_tunnel_requests of them, and each is closed after
// the handshake timeout. Meanwhile a real user's tunnel works, and the
// daemon's goroutines and memory stay under a bound made of those caps.
func TestInvariant16UnauthenticatedQUICIsBounded(t *testing.T) {
	e2e.NeedLab(t)
	const (
		perSource  = 6  // limits.connections_per_source
		pendingCap = 40 // limits.pending_tunnel_requests
		perConn    = 8  // streams waiting for their request, a connection
		handshake  = 4 * time.Second
		conns      = 10 // each flood's connections, from one source
		streams    = 12 // each connection's streams
	)
	limits := fmt.Sprintf("  connections_per_source: %d\n  pending_tunnel_requests: %d\n  handshake_timeout: %s\n", perSource, pendingCap, handshake)
	d := e2e.StartDaemonWith(t, e2e.ViaFDs, func(dir string) string { return e2e.TunnelConfig(dir, e2e.TunnelAccess(limits)) })
	removeFirewallAtEnd(t)
	e2e.AddLabUsers(t, d, "alice")
	pub4, pub6 := e2e.LabValue(t, "BASTION_PUB4"), e2e.LabValue(t, "BASTION_PUB6")
	// The user works from the client's own address, a source of its own.
	user := e2e.TunnelClient(t, e2e.LoginAs(t, "alice", pub4), pub4, "quic")
	sshBanner := func(t *testing.T) {
		t.Helper()
		c, err := e2e.Dial(t, user, "vm1", 22)
		if err != nil {
			t.Fatalf("the user's tunnel: %v", err)
		}
		defer c.Close()
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if banner, err := bufio.NewReader(c).ReadString('\n'); err != nil || !strings.HasPrefix(banner, "SSH-2.0-") {
			t.Errorf("the user's tunnel to vm1:22: %q %v", banner, err)
		}
	}
	sshBanner(t)
	goroutines0, rss0 := e2e.Metric(t, "go_goroutines"), d.RSS()

	var rotating []netip.Addr
	for i := range conns {
		rotating = append(rotating, netip.MustParseAddr(fmt.Sprintf("2001:db8:cafe:0:%x::%x", i+1, 0xf00+i)))
	}
	for _, flood := range []struct {
		name    string
		bastion string
		from    []netip.Addr
	}{
		{"IPv4 from one address", pub4, []netip.Addr{netip.MustParseAddr("203.0.113.201")}},
		{"IPv6 from addresses rotating in one /64", pub6, rotating},
	} {
		t.Run(flood.name, func(t *testing.T) {
			e2e.AddClientAddrs(t, flood.from)
			var open []*quic.Conn
			refused := 0
			for i := range conns {
				conn, err := e2e.DialQUICFrom(t, flood.from[i%len(flood.from)], flood.bastion)
				switch {
				case err == nil:
					open = append(open, conn)
				case e2e.Refused(err):
					refused++
				default:
					t.Fatalf("connection %d: %v", i, err)
				}
			}
			t.Logf("%d connections: %d accepted, %d refused", conns, len(open), refused)
			if len(open) != perSource || refused != conns-perSource {
				t.Errorf("%d connections from one source: %d accepted and %d refused, want %d and %d", conns, len(open), refused, perSource, conns-perSource)
			}

			// Streams that never send their request. The refusals come at
			// once: a second is far less than the handshake timeout.
			var all []*quic.Stream
			perConnOpen := make([]int, len(open))
			owner := map[*quic.Stream]int{}
			for i, c := range open {
				for _, str := range e2e.StalledStreams(t, c, streams) {
					owner[str] = i
					all = append(all, str)
				}
			}
			ends := e2e.StreamEnds(all, time.Second)
			var waiting []*quic.Stream
			for i, end := range ends {
				if end == "open" {
					waiting = append(waiting, all[i])
					perConnOpen[owner[all[i]]]++
				}
			}
			busy := strings.Count(strings.Join(ends, " "), "busy")
			wantOpen := min(len(open)*perConn, pendingCap)
			t.Logf("%d streams: %d waiting, %d refused busy (per connection waiting: %v)", len(all), len(waiting), busy, perConnOpen)
			if len(waiting) != wantOpen || busy != len(all)-wantOpen {
				t.Errorf("%d streams on %d connections: %d waiting and %d refused, want %d and %d",
					len(all), len(open), len(waiting), busy, wantOpen, len(all)-wantOpen)
			}
			if m := slices.Max(append(perConnOpen, 0)); m > perConn {
				t.Errorf("a connection has %d streams waiting for their request, more than %d", m, perConn)
			}
			if n := e2e.Metric(t, "bastiond_quic_pending_tunnel_requests"); n != float64(len(waiting)) {
				t.Errorf("bastiond_quic_pending_tunnel_requests %v, want %d", n, len(waiting))
			}

			// What the flood costs the daemon is bounded by the caps: a
			// connection's goroutines (quic-go's loop, the stream
			// acceptor, and a few while it closes) and buffers (its
			// flow-control window, 128 KiB, its state and TLS), and a
			// goroutine with a small buffer per waiting stream; plus the
			// race-enabled runtime's own slack.
			const perConnGoroutines, perConnBytes, perStreamBytes = 4, 2 << 20, 64 << 10
			goroutines, rss := e2e.Metric(t, "go_goroutines"), d.RSS()
			goroutineBound := goroutines0 + perSource*perConnGoroutines + pendingCap + 30
			rssBound := rss0 + perSource*perConnBytes + pendingCap*perStreamBytes + 32<<20
			t.Logf("daemon: %v goroutines (before the floods %v, bound %v), RSS %d MiB (before %d MiB, bound %d MiB)",
				goroutines, goroutines0, goroutineBound, rss>>20, rss0>>20, rssBound>>20)
			if goroutines > goroutineBound {
				t.Errorf("%v goroutines under the flood, more than the %v its caps allow", goroutines, goroutineBound)
			}
			if rss > rssBound {
				t.Errorf("RSS %d MiB under the flood, more than the %d MiB its caps allow", rss>>20, rssBound>>20)
			}

			// A real user gets through during the flood: at the global
			// cap, the stream that waited longest makes room.
			start := time.Now()
			sshBanner(t)
			t.Logf("the user's tunnel during the flood: %s", time.Since(start).Round(time.Millisecond))

			// The waiting streams are closed at the handshake timeout.
			late := e2e.StreamEnds(waiting, handshake+10*time.Second)
			if n := strings.Count(strings.Join(late, " "), "open"); n != 0 {
				t.Errorf("%d of %d streams that never sent a request are still open after the handshake timeout", n, len(waiting))
			}
			for end := time.Now().Add(5 * time.Second); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
				if e2e.Metric(t, "bastiond_quic_pending_tunnel_requests") == 0 {
					break
				}
			}
			if n := e2e.Metric(t, "bastiond_quic_pending_tunnel_requests"); n != 0 {
				t.Errorf("bastiond_quic_pending_tunnel_requests %v after the handshake timeout, want 0", n)
			}
		})
	}
}
