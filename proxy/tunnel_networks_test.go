package proxy

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/bastiond/bastiond/api/tunnelwire"
	"github.com/bastiond/bastiond/proxy/access"
)

// TestTunnelToAddress: a tunnel to an address inside a network goes to the
// broker for a user whose roles grant the network (whose dial guard then
// refuses loopback, as it would any machine it must not reach), and is
// refused for a user whose roles do not, IPv4 and IPv6.
func TestTunnelToAddress(t *testing.T) {
	p := testPolicy(access.Role{Name: "lab", Subjects: []string{"user:alice"}, Targets: []string{"network:lab"}, Protocols: []string{access.Tunnel}}).
		WithNetworks([]access.Network{{Name: "lab", Prefixes: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}, SSH: 22}})
	for _, network := range []string{"4", "6"} {
		e := newTunnelEnvPolicy(t, network, nil, p)
		for _, transport := range []string{"quic", "tcp"} {
			t.Run("ipv"+network+"/"+transport, func(t *testing.T) {
				for _, c := range []struct {
					name, user, target string
					port               uint16
					status             tunnelwire.Status
					msg                string
				}{
					{"granted, IPv4: the broker's guard", "alice", "127.0.0.1", 22, tunnelwire.StatusUnreachable, "refused by the dial guard: 127.0.0.1:22 is a loopback address"},
					{"granted, IPv6: the broker's guard", "alice", "::1", 22, tunnelwire.StatusUnreachable, "refused by the dial guard: [::1]:22 is a loopback address"},
					{"granted, a port the network does not list", "alice", "127.0.0.1", 2222, tunnelwire.StatusUnknownTarget, "127.0.0.1 does not offer port 2222"},
					{"granted, outside the network", "alice", "10.9.9.9", 22, tunnelwire.StatusDenied, "alice may not open tunnels to 10.9.9.9 port 22"},
					{"not granted, IPv4", "carol", "127.0.0.1", 22, tunnelwire.StatusDenied, "carol may not open tunnels to 127.0.0.1 port 22"},
					{"not granted, IPv6", "carol", "::1", 22, tunnelwire.StatusDenied, "carol may not open tunnels to ::1 port 22"},
				} {
					cl := e.client(t, e.tokens[c.user], transport)
					ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
					_, err := cl.Dial(ctx, c.target, c.port)
					cancel()
					var te *tunnelwire.Error
					if !errors.As(err, &te) || te.Status != c.status || !strings.Contains(err.Error(), c.msg) {
						t.Errorf("%s: got %v, want %v mentioning %q", c.name, err, c.status, c.msg)
					}
				}
			})
		}
	}
}
