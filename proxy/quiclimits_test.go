package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/bastiond/bastiond/api/tunnelwire"
	"github.com/bastiond/bastiond/proxy/auth"
	"github.com/bastiond/bastiond/proxy/gate"
	"github.com/bastiond/bastiond/proxy/gate/gatetest"
	"github.com/bastiond/bastiond/tunnel"
)

// dialQUIC makes a tunnel connection to addr from a socket of its own (a
// source port of its own, the same address).
func dialQUIC(t *testing.T, network string, addr *net.UDPAddr) (*quic.Conn, error) {
	t.Helper()
	tr := &quic.Transport{Conn: gatetest.LoopbackUDP(t, network)}
	t.Cleanup(func() { tr.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, err := tr.Dial(ctx, addr, gatetest.TunnelTLS(testName), &quic.Config{Versions: []quic.Version{quic.Version1}})
	if err == nil {
		t.Cleanup(func() { conn.CloseWithError(0, "") })
	}
	return conn, err
}

// stalledStream opens a stream on conn that sends the first bytes of a
// request and never the rest, as a flood would.
func stalledStream(t *testing.T, conn *quic.Conn) *quic.Stream {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	str, err := conn.OpenStreamSync(ctx)
	if err != nil {
		t.Fatalf("open stream: %v", err)
	}
	if _, err := str.Write([]byte("BTU")); err != nil {
		t.Fatalf("write: %v", err)
	}
	return str
}

// streamEnd reads str until it ends, for at most limit, and says how:
// "busy" (reset with tunnel.ErrCodeBusy), "closed" (any other end) or
// "open" (still open after limit).
func streamEnd(str *quic.Stream, limit time.Duration) string {
	str.SetReadDeadline(time.Now().Add(limit))
	_, err := io.Copy(io.Discard, str)
	var se *quic.StreamError
	var ne net.Error
	switch {
	case errors.As(err, &se) && se.Remote && se.ErrorCode == tunnel.ErrCodeBusy:
		return "busy"
	case errors.As(err, &ne) && ne.Timeout():
		return "open"
	}
	return "closed"
}

// TestQUICLimits: the QUIC connections of one source are capped, refused
// before their handshake; the streams waiting for their request are capped
// per connection and in all, those past the caps reset at once, and those
// within them closed at the handshake timeout; a connection that sends bad
// tokens again and again is closed.
func TestQUICLimits(t *testing.T) {
	for _, network := range []string{"udp4", "udp6"} {
		t.Run(network, func(t *testing.T) {
			t.Run("connections per source", func(t *testing.T) {
				s, addr := startQUIC(t, network, Config{MaxConnsPerSource: 3})
				var open []*quic.Conn
				refused := 0
				for range 5 {
					conn, err := dialQUIC(t, network, addr)
					var te *quic.TransportError
					switch {
					case err == nil:
						open = append(open, conn)
					case errors.As(err, &te) && te.ErrorCode == quic.ConnectionRefused:
						refused++
					default:
						t.Fatalf("dial: %v", err)
					}
				}
				if len(open) != 3 || refused != 2 {
					t.Fatalf("%d connections open and %d refused, want 3 and 2", len(open), refused)
				}
				// (Each Initial a refused client sends again is refused
				// again.)
				if n := quicRefused(t, s, "connection_per_source"); n < 2 {
					t.Errorf("%d refusals counted, want 2 or more", n)
				}
				// A place given back is a place for another connection.
				open[0].CloseWithError(0, "")
				var err error
				for range 100 { // the server learns of the close within a round trip
					if _, err = dialQUIC(t, network, addr); err == nil {
						break
					}
					time.Sleep(100 * time.Millisecond)
				}
				if err != nil {
					t.Errorf("a new connection after one closed: %v", err)
				}
			})

			// streams opens n streams on conn that never send their
			// request and says how many were refused at once ("busy")
			// and which wait ("open").
			streams := func(t *testing.T, conn *quic.Conn, n int) (map[string]int, []*quic.Stream) {
				strs := make([]*quic.Stream, n)
				for i := range strs {
					strs[i] = stalledStream(t, conn)
				}
				// A refusal comes at once; give it a moment, well below
				// the handshake timeout.
				ends := make([]string, n)
				var wg sync.WaitGroup
				for i, str := range strs {
					wg.Go(func() { ends[i] = streamEnd(str, 300*time.Millisecond) })
				}
				wg.Wait()
				got, open := map[string]int{}, []*quic.Stream(nil)
				for i, end := range ends {
					got[end]++
					if end == "open" {
						open = append(open, strs[i])
					}
				}
				return got, open
			}

			t.Run("pending streams per connection and per source", func(t *testing.T) {
				s, addr := startTunedQUIC(t, network, Config{HandshakeTimeout: 2 * time.Second}, tuning{quicPendingPerSource: 10})
				first, err := dialQUIC(t, network, addr)
				if err != nil {
					t.Fatal(err)
				}
				got, waiting := streams(t, first, 12)
				if got["busy"] != 12-gate.PendingPerConn || got["open"] != gate.PendingPerConn {
					t.Errorf("one connection, 12 streams: %v, want %d open and the rest busy", got, gate.PendingPerConn)
				}
				second, err := dialQUIC(t, network, addr)
				if err != nil {
					t.Fatal(err)
				}
				got, more := streams(t, second, 6)
				waiting = append(waiting, more...)
				if got["busy"] != 4 || got["open"] != 2 {
					t.Errorf("second connection of the source, 6 streams with 8 of its 10 places taken: %v, want 2 open and 4 busy", got)
				}
				if n := s.door.PendingLen(); n != 10 {
					t.Errorf("%d pending, want 10", n)
				}
				if a, b := quicRefused(t, s, "stream_per_connection"), quicRefused(t, s, "stream_per_source"); a != 4 || b != 4 {
					t.Errorf("refusals counted: %d per connection, %d per source; want 4 and 4", a, b)
				}
				// A client is told, in a sentence, to try again.
				cl, err := tunnel.NewClient(tunnel.ClientConfig{Server: testName, Address: addr.String(), TLS: &tls.Config{InsecureSkipVerify: true},
					Token: "bst_0000000000000000_notvalid", Transport: "quic"})
				if err != nil {
					t.Fatal(err)
				}
				defer cl.Close()
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				_, err = cl.Dial(ctx, "vm1", 22)
				cancel()
				var te *tunnelwire.Error
				if !errors.As(err, &te) || te.Status != tunnelwire.StatusCapacity || !strings.Contains(err.Error(), "try again") {
					t.Errorf("a tunnel while the source is full: %v, want capacity, try again", err)
				}
				// The waiting streams are closed at the handshake timeout,
				// and their places given back.
				for _, str := range waiting {
					if end := streamEnd(str, 10*time.Second); end != "closed" {
						t.Errorf("a stream that never sent its request: %s after the handshake timeout, want closed", end)
					}
				}
				for range 100 {
					if s.door.PendingLen() == 0 {
						break
					}
					time.Sleep(20 * time.Millisecond)
				}
				if n := s.door.PendingLen(); n != 0 {
					t.Errorf("%d pending after the handshake timeout, want 0", n)
				}
				if got, _ := streams(t, first, 1); got["open"] != 1 {
					t.Errorf("a stream once the others are gone: %v, want it waiting for its request", got)
				}
			})

			t.Run("the global cap evicts the oldest", func(t *testing.T) {
				s, addr := startQUIC(t, network, Config{MaxPendingTunnels: 10})
				first, err := dialQUIC(t, network, addr)
				if err != nil {
					t.Fatal(err)
				}
				_, old := streams(t, first, gate.PendingPerConn)
				second, err := dialQUIC(t, network, addr)
				if err != nil {
					t.Fatal(err)
				}
				if got, _ := streams(t, second, 6); got["open"] != 6 {
					t.Errorf("6 new streams with 8 of 10 places taken: %v, want all 6 waiting", got)
				}
				got := map[string]int{}
				for _, str := range old {
					got[streamEnd(str, 300*time.Millisecond)]++
				}
				if got["busy"] != 4 || got["open"] != 4 {
					t.Errorf("the 8 older streams: %v, want the 4 oldest reset busy", got)
				}
				if n, e := s.door.PendingLen(), quicRefused(t, s, "stream_evicted"); n != 10 || e != 4 {
					t.Errorf("%d pending and %d evicted, want 10 and 4", n, e)
				}
			})

			t.Run("connections without a valid token", func(t *testing.T) {
				s, addr := startTunedQUIC(t, network, Config{}, tuning{quicMaxUnauth: 2})
				secret, _, err := s.auth.Store().IssueToken("carol", []string{auth.ScopeTunnel}, time.Hour, "test", "")
				if err != nil {
					t.Fatal(err)
				}
				unauth := func(want int) {
					t.Helper()
					for range 100 {
						n := int(metric(t, s.QUICMetrics(), "bastiond_quic_unauthenticated_connections", "", ""))
						if n == want {
							return
						}
						time.Sleep(20 * time.Millisecond)
					}
					t.Fatalf("never %d connections without a valid token", want)
				}
				dial := func(want int) *quic.Conn {
					t.Helper()
					conn, err := dialQUIC(t, network, addr)
					if err != nil {
						t.Fatal(err)
					}
					unauth(want)
					return conn
				}
				// A user's connection shows a valid token (carol may not
				// tunnel to vm1, but her token is good).
				user := dial(1)
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				str, err := user.OpenStreamSync(ctx)
				if err != nil {
					t.Fatal(err)
				}
				req, _ := tunnelwire.Request{Token: secret, Target: "vm1", Port: 22}.Marshal()
				str.Write(req)
				str.SetReadDeadline(time.Now().Add(5 * time.Second))
				if resp, err := tunnelwire.ReadResponse(str); err != nil || resp.Status != tunnelwire.StatusDenied {
					t.Fatalf("carol's request: %v %v, want denied", resp, err)
				}
				unauth(0)
				oldest, newer := dial(1), dial(2)
				dial(2) // one more: the oldest without a token makes room
				select {
				case <-oldest.Context().Done():
				case <-ctx.Done():
					t.Fatal("the oldest connection without a valid token is still open")
				}
				var ae *quic.ApplicationError
				if err := context.Cause(oldest.Context()); !errors.As(err, &ae) || ae.ErrorCode != tunnel.ErrCodeUnauthenticated {
					t.Errorf("the oldest ended with %v, want application error %d", err, tunnel.ErrCodeUnauthenticated)
				}
				if user.Context().Err() != nil || newer.Context().Err() != nil {
					t.Errorf("the user's connection (%v) or the newer one (%v) was closed", context.Cause(user.Context()), context.Cause(newer.Context()))
				}
				if n := quicRefused(t, s, "connection_evicted"); n != 1 {
					t.Errorf("%d evictions counted, want 1", n)
				}
			})

			t.Run("bad tokens", func(t *testing.T) {
				s, addr := startQUIC(t, network, Config{})
				conn, err := dialQUIC(t, network, addr)
				if err != nil {
					t.Fatal(err)
				}
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				for i := range gate.BadTokensPerConn - 1 {
					if err := askBadToken(ctx, conn); err != nil {
						t.Fatalf("bad token %d: %v", i+1, err)
					}
				}
				askBadToken(ctx, conn) // the last: the answer may be lost with the connection
				select {
				case <-conn.Context().Done():
				case <-ctx.Done():
					t.Fatalf("the connection is still open after %d bad tokens", gate.BadTokensPerConn)
				}
				var ae *quic.ApplicationError
				if err := context.Cause(conn.Context()); !errors.As(err, &ae) || ae.ErrorCode != tunnel.ErrCodeBadTokens {
					t.Errorf("the connection ended with %v, want application error %d", err, tunnel.ErrCodeBadTokens)
				}
				if n := quicRefused(t, s, "bad_tokens"); n != 1 {
					t.Errorf("%d closes counted, want 1", n)
				}
			})
		})
	}
}

// quicRefused is bastiond_quic_refused_total{reason}.
func quicRefused(t *testing.T, s *Server, reason string) int64 {
	return int64(metric(t, s.QUICMetrics(), "bastiond_quic_refused_total", "reason", reason))
}
