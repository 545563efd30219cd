package daemon

import (
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/bastiond/bastiond/daemon/adminapi"
	"github.com/bastiond/bastiond/netpolicy"
)

// An address of a network has its keys scanned and pinned under the
// address, as netip writes it and as its sessions check them; an address
// outside every network, or written another way, is no target.
func TestHostKeysOfAddresses(t *testing.T) {
	cfg := labPolicyConfig(t, func(s string) string {
		return strings.Replace(s, "inventory:\n", "inventory:\n  networks:\n"+
			"    - {name: lab, cidrs: [198.18.2.0/24, \"2001:db8:b5:2::/64\"], ports: {ssh: 22}}\n"+
			"    - {name: desks, cidrs: [10.30.0.0/16], ports: {rdp: 3389}}\n", 1)
	})
	h := hostKeysAPI{d: &daemon{cfg: cfg}}
	for _, tc := range []struct {
		target string
		want   []string
	}{
		{"198.18.2.7", []string{"ssh"}},
		{"2001:db8:b5:2::7", []string{"ssh"}},
		{"10.30.0.7", []string{"rdp"}},
		{"vm1", []string{"ssh"}},
	} {
		if got, err := h.offered(tc.target); err != nil || !slices.Equal(got, tc.want) {
			t.Errorf("offered(%s) = %v, %v; want %v", tc.target, got, err, tc.want)
		}
	}
	for _, target := range []string{"198.18.3.7", "2001:db8:b5:3::7", "[2001:db8:b5:2::7]", "::ffff:198.18.2.7", "2001:DB8:B5:2::7"} {
		if _, err := h.offered(target); !errors.Is(err, adminapi.ErrUnknownTarget) {
			t.Errorf("offered(%s) = %v, want ErrUnknownTarget", target, err)
		}
	}
	if _, err := h.offered("10.30.0.7", "ssh"); err == nil || !strings.Contains(err.Error(), "offers no SSH") {
		t.Errorf("ssh keys of an RDP network's address: %v", err)
	}
}

// A network's machines take the guard a target with its ports would:
// `policy export NETWORK` prints it.
func TestPolicyExportNetwork(t *testing.T) {
	cfg := labPolicyConfig(t, func(s string) string {
		return strings.Replace(s, "inventory:\n", "inventory:\n  networks:\n"+
			"    - {name: lab, cidrs: [198.18.2.0/24, \"2001:db8:b5:2::/64\"], ports: {ssh: 22, tunnel: [8080]}}\n", 1)
	})
	from := []netip.Prefix{netip.MustParsePrefix("198.18.0.4/32"), netip.MustParsePrefix("2001:db8:b5::4/128")}
	rs, err := netpolicy.Export(exportTargets(cfg), "lab", from)
	if err != nil {
		t.Fatal(err)
	}
	got := rs.Render()
	for _, want := range []string{"tcp . 22", "tcp . 3389", "udp . 3389", "tcp . 8080", "only the bastion reaches lab's SSH/RDP", "198.18.0.4", "2001:db8:b5::4"} {
		if !strings.Contains(got, want) {
			t.Errorf("the export of network lab lacks %q:\n%s", want, got)
		}
	}
}
