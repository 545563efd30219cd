package discover

import (
	"net/netip"
	"strings"
	"testing"
)

func TestCheckDedicatedSubnet(t *testing.T) {
	subnets := []netip.Prefix{netip.MustParsePrefix("198.18.0.0/26"), netip.MustParsePrefix("2001:db8:b5::/64")}
	pfx := func(ss ...string) []netip.Prefix {
		var out []netip.Prefix
		for _, s := range ss {
			out = append(out, netip.MustParsePrefix(s))
		}
		return out
	}
	tests := []struct {
		name  string
		addrs []netip.Prefix
		want  string // "" means no error
	}{
		{"both families inside", pfx("198.18.0.4/16", "2001:db8:b5::4/48", "fe80::1/64"), ""},
		{"IPv4 only inside", pfx("198.18.0.4/26"), ""},
		{"IPv4 outside", pfx("198.18.1.4/16"), "address 198.18.1.4 of vnet0 is outside"},
		{"IPv6 outside", pfx("198.18.0.4/16", "2001:db8:b5:1::4/64"), "address 2001:db8:b5:1::4 of vnet0 is outside"},
		{"no address", pfx("fe80::1/64"), "vnet0 has no address inside"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := CheckDedicatedSubnet(Interface{Name: "vnet0", Addrs: tt.addrs}, subnets)
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Fatalf("error = %v, want %q", err, tt.want)
			}
		})
	}
}

func TestLookupLoopback(t *testing.T) {
	ifc, err := Lookup("lo")
	if err != nil {
		t.Skipf("no netlink here: %v", err)
	}
	found := false
	for _, a := range ifc.Addrs {
		found = found || a.Addr().IsLoopback()
	}
	if !found {
		t.Errorf("lo has no loopback address: %v", ifc.Addrs)
	}
	if _, err := Lookup("no-such-if0"); err == nil || !strings.Contains(err.Error(), `"no-such-if0"`) {
		t.Errorf("missing interface: %v", err)
	}
}
