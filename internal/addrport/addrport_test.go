package addrport

import (
	"net/netip"
	"testing"
)

func TestParse(t *testing.T) {
	for _, c := range []struct {
		in, want string
	}{
		{"192.0.2.1:443", "192.0.2.1:443"},
		{"[::ffff:192.0.2.1]:443", "192.0.2.1:443"},
		{"[2001:db8::1]:22", "[2001:db8::1]:22"},
		{"[fe80::1%eth0]:22", "[fe80::1%eth0]:22"},
		{"[::1]:0", "[::1]:0"},
		{"[::ffff:127.0.0.1]:65535", "127.0.0.1:65535"},
		{"", "invalid AddrPort"},
		{"192.0.2.1", "invalid AddrPort"},
		{"host.example:22", "invalid AddrPort"},
		{"@", "invalid AddrPort"},
	} {
		t.Run(c.in, func(t *testing.T) {
			if got := Parse(c.in).String(); got != c.want {
				t.Errorf("Parse(%q) = %s, want %s", c.in, got, c.want)
			}
		})
	}
}

func TestUnmap(t *testing.T) {
	mapped := netip.MustParseAddrPort("[::ffff:198.51.100.7]:3389")
	if got, want := Unmap(mapped), netip.MustParseAddrPort("198.51.100.7:3389"); got != want {
		t.Errorf("Unmap(%s) = %s, want %s", mapped, got, want)
	}
	v6 := netip.MustParseAddrPort("[2001:db8::7]:3389")
	if got := Unmap(v6); got != v6 {
		t.Errorf("Unmap(%s) = %s, want it unchanged", v6, got)
	}
	if got := Unmap(netip.AddrPort{}); got != (netip.AddrPort{}) {
		t.Errorf("Unmap(zero) = %s, want zero", got)
	}
}
