package adminapi

import (
	"net/netip"
	"testing"
)

func TestParseSource(t *testing.T) {
	for _, tc := range []struct {
		name, in, want string // want "" for an error
	}{
		{"IPv4 address", "203.0.113.7", "203.0.113.7/32"},
		{"IPv4 prefix", "203.0.113.0/24", "203.0.113.0/24"},
		{"IPv6 address", "2001:db8:cafe::21", "2001:db8:cafe::21/128"},
		{"IPv6 prefix", "2001:db8:cafe::/64", "2001:db8:cafe::/64"},
		{"IPv6 prefix with host bits", "2001:db8:cafe::21/64", "2001:db8:cafe::21/64"},
		{"IPv6 zone", "fe80::1%eth0", ""},
		{"name", "client.example", ""},
		{"empty", "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseSource(tc.in)
			if tc.want == "" {
				if err == nil {
					t.Errorf("ParseSource(%q) = %v, want an error", tc.in, got)
				}
				return
			}
			if err != nil || got != netip.MustParsePrefix(tc.want) {
				t.Errorf("ParseSource(%q) = %v, %v; want %s", tc.in, got, err, tc.want)
			}
		})
	}
}
