package source

import (
	"net/netip"
	"testing"
)

func TestOf(t *testing.T) {
	for _, tc := range []struct {
		name, addr, want string
	}{
		{"ipv4", "203.0.113.10", "203.0.113.10/32"},
		{"ipv4 mapped", "::ffff:203.0.113.10", "203.0.113.10/32"},
		{"ipv6", "2001:db8:cafe::10", "2001:db8:cafe::/64"},
		{"ipv6 same /64", "2001:db8:cafe:0:ffff:ffff:ffff:ffff", "2001:db8:cafe::/64"},
		{"ipv6 next /64", "2001:db8:cafe:1::10", "2001:db8:cafe:1::/64"},
		{"ipv6 zone", "fe80::1%eth0", "fe80::/64"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Of(netip.MustParseAddr(tc.addr)); got.String() != tc.want {
				t.Errorf("Of(%s) = %s, want %s", tc.addr, got, tc.want)
			}
		})
	}
	if got := Of(netip.Addr{}); got.IsValid() {
		t.Errorf("Of(zero) = %s, want the zero Prefix", got)
	}
}
