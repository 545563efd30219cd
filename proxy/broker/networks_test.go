package broker

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"go.uber.org/zap"
)

// TestNetworkDial: an address inside an inventory network is dialled on the
// network's ports, and its session names the address and the network.
func TestNetworkDial(t *testing.T) {
	for _, c := range []struct{ name, network, listen string }{
		{"IPv4", "127.0.0.0/8", "127.0.0.1:0"},
		{"IPv6", "::1/128", "[::1]:0"},
	} {
		t.Run(c.name, func(t *testing.T) {
			srv := listen(t, "tcp", c.listen)
			ap := srv.addrPort()
			e := newEnv(t, Config{Networks: []Network{{Name: "lab", Prefixes: []netip.Prefix{netip.MustParsePrefix(c.network)}, Tunnel: []uint16{ap.Port()}}}})
			s, err := e.b.Open(context.Background(), tunnelTo("alice", ap.Addr().String(), ap.Port()))
			if err != nil {
				t.Fatal(err)
			}
			srv.next(t)
			i := s.Info()
			if i.Target != ap.Addr().String() || i.Address != ap || i.Network != "lab" {
				t.Errorf("session target %q address %v network %q, want %s, %v, lab", i.Target, i.Address, i.Network, ap.Addr(), ap)
			}
			s.End(ReasonClientClosed)
			for _, event := range []string{"session_start", "session_end"} {
				r := e.record(i.ID, event)
				if r.Address != ap.String() || r.Network != "lab" || r.Target != ap.Addr().String() {
					t.Errorf("%s record %+v does not name the address and the network", event, r)
				}
			}
		})
	}
}

// TestNetworkRefusals: what a network does not give is never dialled, and
// the guard's classes hold even where a network's prefix covers them (the
// configuration refuses such prefixes; the guard does not rely on it).
func TestNetworkRefusals(t *testing.T) {
	fake := netip.MustParseAddr("192.0.2.77") // what LocalAddrs says is ours
	cases := []struct {
		name    string
		network string // the network's prefix
		target  string // what the request names ("" for the listener's address)
		listen  string // where a listener proves nothing connects ("" for none)
		port    int    // 0: the network's port; -1: another one
		daemon  bool   // the daemon's tuning (loopback not lifted)
		kind    ErrorKind
		why     string
	}{
		{"a port the network does not list, IPv4", "127.0.0.0/8", "", "127.0.0.1:0", -1, false, KindUnknownTarget, "does not offer port"},
		{"a port the network does not list, IPv6", "::1/128", "", "[::1]:0", -1, false, KindUnknownTarget, "does not offer port"},
		{"outside every network, IPv4", "10.20.0.0/16", "", "127.0.0.1:0", 0, false, KindUnknownTarget, "there is no machine called"},
		{"outside every network, IPv6", "2001:db8:20::/48", "", "[::1]:0", 0, false, KindUnknownTarget, "there is no machine called"},
		{"a mapped IPv4 address (not the canonical form)", "127.0.0.0/8", "::ffff:127.0.0.1", "127.0.0.1:0", 0, false, KindUnknownTarget, "there is no machine called"},
		{"a bracketed IPv6 address (not the canonical form)", "::1/128", "[::1]", "[::1]:0", 0, false, KindUnknownTarget, "there is no machine called"},
		{"loopback inside a network, IPv4", "127.0.0.0/8", "", "127.0.0.1:0", 0, true, KindRefused, "is a loopback address"},
		{"loopback inside a network, IPv6", "::1/128", "", "[::1]:0", 0, true, KindRefused, "is a loopback address"},
		{"link-local inside a network, IPv4", "169.254.0.0/16", "169.254.1.1", "", 0, false, KindRefused, "is a link-local address"},
		{"link-local inside a network, IPv6", "fe80::/64", "fe80::1", "", 0, false, KindRefused, "is a link-local address"},
		{"multicast inside a network, IPv4", "224.0.0.0/4", "224.0.0.1", "", 0, false, KindRefused, "is a multicast address"},
		{"multicast inside a network, IPv6", "ff02::/16", "ff02::1", "", 0, false, KindRefused, "is a multicast address"},
		{"unspecified inside a network, IPv6", "::/127", "::", "", 0, false, KindRefused, "is the unspecified address"},
		{"the bastion's own address inside a network, IPv4", "192.0.2.0/24", fake.String(), "", 0, false, KindRefused, "is one of the bastion's own addresses"},
		{"the bastion's subnet inside a network, IPv4", "198.18.0.0/16", "198.18.0.5", "", 0, false, KindRefused, "is in the bastion's own subnet 198.18.0.0/26"},
		{"the bastion's subnet inside a network, IPv6", "2001:db8:b5::/48", "2001:db8:b5::5", "", 0, false, KindRefused, "is in the bastion's own subnet 2001:db8:b5::/64"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var srv *server
			target, port := c.target, uint16(2222)
			if c.listen != "" {
				srv = listen(t, "tcp", c.listen)
				port = srv.addrPort().Port()
				if target == "" {
					target = srv.addrPort().Addr().String()
				}
			}
			cfg := Config{
				Networks:   []Network{{Name: "lab", Prefixes: []netip.Prefix{netip.MustParsePrefix(c.network)}, Tunnel: []uint16{port}}},
				Subnets:    []netip.Prefix{netip.MustParsePrefix("198.18.0.0/26"), netip.MustParsePrefix("2001:db8:b5::/64")},
				LocalAddrs: func() ([]netip.Addr, error) { return []netip.Addr{fake}, nil },
			}
			tn := quick()
			if c.daemon {
				tn = tuning{}
			}
			e := newEnvTuned(t, cfg, tn)
			ask := port
			if c.port < 0 {
				ask = port + 1
			}
			s, err := e.b.Open(context.Background(), tunnelTo("alice", target, ask))
			if err == nil {
				s.End(ReasonClientClosed)
			}
			wantKind(t, err, c.kind, c.why)
			if c.kind == KindRefused && !strings.Contains(err.Error(), "refused by the dial guard") {
				t.Errorf("%v: not the dial guard's refusal", err)
			}
			if srv != nil {
				srv.none(t)
			}
		})
	}
}

func TestNetworkConfig(t *testing.T) {
	for _, p := range []string{"::ffff:10.0.0.0/104"} {
		_, err := Config{Logger: zap.NewNop(), Networks: []Network{{Name: "lab", Prefixes: []netip.Prefix{netip.MustParsePrefix(p)}, SSH: 22}}}.build()
		if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("%s is not an IPv4 or IPv6 prefix", p)) {
			t.Errorf("network %s: %v", p, err)
		}
	}
}
