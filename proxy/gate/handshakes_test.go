package gate

import (
	"context"
	"errors"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
)

// TestHandshakesPerSource: ConnContext lets HandshakesPerSource handshakes
// of one source (an IPv4 address, an IPv6 /64, whatever the ports) be under
// way, refuses the next, lets another source in, and gives a place back
// when a connection's context ends.
func TestHandshakesPerSource(t *testing.T) {
	for _, c := range []struct {
		name  string
		from  func(i int) net.Addr
		other net.Addr
	}{
		{"IPv4", func(i int) net.Addr { return &net.UDPAddr{IP: net.IPv4(192, 0, 2, 7), Port: 1024 + i} },
			&net.UDPAddr{IP: net.IPv4(192, 0, 2, 8), Port: 1024}},
		{"IPv6 /64", func(i int) net.Addr {
			return &net.UDPAddr{IP: net.ParseIP(fmt.Sprintf("2001:db8:cafe:0:%x::1", i)), Port: 1024 + i}
		}, &net.UDPAddr{IP: net.ParseIP("2001:db8:cafe:1::1"), Port: 1024}},
	} {
		t.Run(c.name, func(t *testing.T) {
			d := testDoor(t, Settings{})
			var cancels []context.CancelFunc
			for i := range HandshakesPerSource {
				ctx, cancel := context.WithCancel(context.Background())
				cancels = append(cancels, cancel)
				if _, err := d.ConnContext(ctx, &quic.ClientInfo{RemoteAddr: c.from(i)}); err != nil {
					t.Fatalf("handshake %d: %v", i, err)
				}
			}
			_, err := d.ConnContext(context.Background(), &quic.ClientInfo{RemoteAddr: c.from(HandshakesPerSource)})
			if !errors.Is(err, errQUICHandshakesFull) {
				t.Fatalf("past the cap: %v", err)
			}
			if n := d.limits.refused[refusedHandshakeSource].Load(); n != 1 {
				t.Errorf("%d refusals counted", n)
			}
			if _, err := d.ConnContext(context.Background(), &quic.ClientInfo{RemoteAddr: c.other}); err != nil {
				t.Errorf("another source: %v", err)
			}
			cancels[0]() // quic-go ends the context when the connection ends
			var ctx context.Context
			for range 500 { // context.AfterFunc runs in a goroutine of its own
				if ctx, err = d.ConnContext(context.Background(), &quic.ClientInfo{RemoteAddr: c.from(0)}); err == nil {
					break
				}
				time.Sleep(10 * time.Millisecond)
			}
			if err != nil || ctx.Value(handshakeKey{}) == nil {
				t.Errorf("after a connection ended: %v", err)
			}
			for _, cancel := range cancels {
				cancel()
			}
		})
	}
}
