package daemon

import (
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/bastiond/bastiond/daemon/config"
	"github.com/bastiond/bastiond/netpolicy"
)

// labPolicyConfig is daemon/config/testdata/lab.yaml with edit applied.
func labPolicyConfig(t *testing.T, edit func(string) string) *config.Config {
	t.Helper()
	data, err := os.ReadFile("config/testdata/lab.yaml")
	if err != nil {
		t.Fatal(err)
	}
	s := string(data)
	if edit != nil {
		s = edit(s)
	}
	cfg, err := config.Parse("lab.yaml", []byte(s))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

var (
	labPolicyVNet = []netip.Addr{netip.MustParseAddr("198.18.0.4"), netip.MustParseAddr("2001:db8:b5::4")}
	// labPolicyFacts is a host where the daemon's user is uid 998 and
	// resolv.conf names one resolver per family.
	labPolicyFacts = egressFacts{UID: 998, UserFound: true,
		Resolvers: []netip.Addr{netip.MustParseAddr("192.0.2.53"), netip.MustParseAddr("2001:db8:53::53")}}
)

// TestPolicyInputGolden holds the translation of the configuration into
// netpolicy's input: each configuration compiles to the ruleset that
// netpolicy's golden file of the same name holds, which netpolicy's own
// tests build from an Input written in Go.
func TestPolicyInputGolden(t *testing.T) {
	for _, tt := range []struct {
		name  string
		edit  func(string) string
		facts egressFacts
	}{
		{"bridged", nil, labPolicyFacts},
		{"routed", func(s string) string { return strings.Replace(s, "mode: bridged", "mode: routed", 1) }, labPolicyFacts},
		{"attached", func(s string) string { return strings.Replace(s, "mode: bridged", "mode: attached", 1) }, labPolicyFacts},
		{"trap-threshold-admins", func(s string) string {
			return s + "firewall:\n  trap_threshold: 3\n  admin_cidrs: [192.0.2.0/24, \"2001:db8:ad::/48\"]\n  exempt_ports: [80, 8080]\n  block_for: 1h30m\n"
		}, labPolicyFacts},
		// egress_dns replaces the host's resolvers; the syslog collector is
		// an address, so no lookup result is used.
		{"egress-all", func(s string) string {
			s = strings.Replace(s, "tunnel: [3390]", `tunnel: [3390, "5353/udp", "4000/tcp+udp"]`, 1)
			return s + "firewall:\n  restrict_egress: all\n  egress_dns: [198.18.0.53]\n" +
				"  egress_allow: [\"192.0.2.7:5432\", \"[2001:db8::7]:88/tcp+udp\", \"192.0.2.8:514/udp\"]\n" +
				"logging:\n  syslog:\n    address: \"[2001:db8::9]:6514\"\n    tls: true\n"
		}, egressFacts{UID: 998, UserFound: true, Resolvers: labPolicyFacts.Resolvers,
			SyslogAddrs: []netip.Addr{netip.MustParseAddr("192.0.2.99")}}},
		{"networks-bridged", func(s string) string {
			return strings.Replace(s, "inventory:\n", "inventory:\n  networks:\n"+
				"    - {name: lab, cidrs: [198.18.2.0/24, \"2001:db8:b5:2::/64\"], ports: {ssh: 22, tunnel: [8080]}}\n"+
				"    - {name: desks, cidrs: [10.30.0.0/16, 10.31.0.128/25, \"2001:db8:30::/48\"], ports: {rdp: 3389}}\n", 1)
		}, labPolicyFacts},
	} {
		t.Run(tt.name, func(t *testing.T) {
			rs, err := netpolicy.Compile(policyInput(labPolicyConfig(t, tt.edit), labPolicyVNet, tt.facts))
			if err != nil {
				t.Fatal(err)
			}
			golden := filepath.Join("..", "netpolicy", "testdata", tt.name+".nft")
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatal(err)
			}
			if got := rs.Render(); got != string(want) {
				t.Errorf("the configuration compiles to another ruleset than %s:\n%s", golden, got)
			}
		})
	}
}

// The egress settings that depend on the host: the resolvers when the file
// names none (and none when it names []), a syslog collector's looked-up
// addresses when it is given by name, IPv4 and IPv6.
func TestPolicyInputEgress(t *testing.T) {
	resolvers := labPolicyFacts.Resolvers
	looked := []netip.Addr{netip.MustParseAddr("192.0.2.99"), netip.MustParseAddr("2001:db8::99")}
	for _, tt := range []struct {
		name   string
		yaml   string
		dns    []netip.Addr
		syslog []netip.AddrPort
	}{
		{"host resolvers", "", resolvers, nil},
		{"no resolver", "firewall: {egress_dns: []}\n", nil, nil},
		{"named resolver", "firewall: {egress_dns: [\"2001:db8::53\"]}\n", []netip.Addr{netip.MustParseAddr("2001:db8::53")}, nil},
		{"collector by name", "logging: {syslog: {address: \"logs.example.net:6514\", tls: true}}\n", resolvers,
			[]netip.AddrPort{netip.MustParseAddrPort("192.0.2.99:6514"), netip.MustParseAddrPort("[2001:db8::99]:6514")}},
		{"collector by address", "logging: {syslog: {address: \"192.0.2.9:514\"}}\n", resolvers,
			[]netip.AddrPort{netip.MustParseAddrPort("192.0.2.9:514")}},
	} {
		t.Run(strings.ReplaceAll(tt.name, " ", "_"), func(t *testing.T) {
			facts := labPolicyFacts
			facts.SyslogAddrs = looked
			in := policyInput(labPolicyConfig(t, func(s string) string { return s + tt.yaml }), labPolicyVNet, facts)
			if got := in.Egress.DNS; !slices.Equal(got, tt.dns) {
				t.Errorf("resolvers %v, want %v", got, tt.dns)
			}
			if got := in.Egress.Syslog; !slices.Equal(got, tt.syslog) {
				t.Errorf("syslog %v, want %v", got, tt.syslog)
			}
			if _, err := netpolicy.Compile(in); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestPolicyExportGolden: the export of a target from the configuration is
// netpolicy's golden export.
func TestPolicyExportGolden(t *testing.T) {
	var from []netip.Prefix
	for _, a := range labPolicyVNet {
		from = append(from, netip.PrefixFrom(a, a.BitLen()))
	}
	rs, err := netpolicy.Export(policyTargets(labPolicyConfig(t, nil)), "vm2", from)
	if err != nil {
		t.Fatal(err)
	}
	golden := filepath.Join("..", "netpolicy", "testdata", "export-vm2.nft")
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if got := rs.Render(); got != string(want) {
		t.Errorf("export differs from %s:\n%s", golden, got)
	}
}
