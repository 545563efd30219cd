package netpolicy

import (
	"net/netip"
	"strings"
	"testing"
)

// The rule count does not grow with networks or their prefixes: they live
// in interval sets, one element per prefix, protocol and port.
func TestRuleCountIndependentOfNetworks(t *testing.T) {
	for _, mode := range []Mode{ModeBridged, ModeRouted, ModeAttached} {
		t.Run(string(mode), func(t *testing.T) {
			one := bigNetworksInput(2, 2)
			many := bigNetworksInput(2, 1_000)
			one.Mode, many.Mode = mode, mode
			a, err := Compile(one)
			if err != nil {
				t.Fatal(err)
			}
			b, err := Compile(many)
			if err != nil {
				t.Fatal(err)
			}
			ra, ea := countRules(a)
			rb, eb := countRules(b)
			if ra != rb {
				t.Errorf("%d rules with one network, %d with 100", ra, rb)
			}
			if eb <= ea {
				t.Errorf("%d set elements with 1,000 prefixes, %d with 2: the prefixes are not in the sets", eb, ea)
			}
		})
	}
}

func TestNetworkInputRefused(t *testing.T) {
	for _, tc := range []struct {
		name string
		n    Network
		want string
	}{
		{"no name", Network{Prefixes: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}, Ports: []Port{{Number: 22, TCP: true}}}, "network 0 has no name"},
		{"no prefix", Network{Name: "lab", Ports: []Port{{Number: 22, TCP: true}}}, `network "lab" has no prefix`},
		{"mapped", Network{Name: "lab", Prefixes: []netip.Prefix{netip.MustParsePrefix("::ffff:10.0.0.0/104")}, Ports: []Port{{Number: 22, TCP: true}}},
			"is IPv4-mapped"},
		{"port 0", Network{Name: "lab", Prefixes: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}, Ports: []Port{{TCP: true}}}, "0 is not a port"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Compile(labInput(func(in *Input) { in.Networks = []Network{tc.n} }))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Compile = %v, want an error with %q", err, tc.want)
			}
		})
	}
}
