package netpolicy

import (
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// labInput is the lab's bastion as the daemon's configuration describes
// it (daemon/config/testdata/lab.yaml, with its defaults): bridged, two
// machines with an IPv4 and an IPv6 address each, the daemon's user uid 998
// and resolv.conf naming one resolver per family. edit, if not nil,
// changes it. daemon's TestPolicyInputGolden holds the translation from
// that file to this value.
func labInput(edit func(*Input)) Input {
	in := Input{
		Mode:            ModeBridged,
		PublicInterface: "pub0",
		VNetAddrs:       labVNet,
		Targets: []Target{
			{Name: "vm1", Addresses: addrs("198.18.1.11", "2001:db8:b5:1::11"), Ports: []Port{{Number: 22, TCP: true}}},
			{Name: "vm2", Addresses: addrs("198.18.1.12", "2001:db8:b5:1::12"),
				Ports: []Port{{Number: 3389, TCP: true, UDP: true}, {Number: 3390, TCP: true}}},
		},
		Firewall: Firewall{TrapThreshold: 1, BlockFor: 10 * time.Minute, ExemptPorts: []uint16{80}, ConnRate: 20},
		Egress: Egress{Restrict: EgressUser, User: "bastiond", UID: 998, UserFound: true,
			DNS: addrs("192.0.2.53", "2001:db8:53::53")},
	}
	if edit != nil {
		edit(&in)
	}
	return in
}

func addrs(s ...string) []netip.Addr {
	out := make([]netip.Addr, len(s))
	for i, a := range s {
		out[i] = netip.MustParseAddr(a)
	}
	return out
}

var labVNet = addrs("198.18.0.4", "2001:db8:b5::4")

func hostPrefixes(as []netip.Addr) []netip.Prefix {
	out := make([]netip.Prefix, len(as))
	for i, a := range as {
		out[i] = netip.PrefixFrom(a, a.BitLen())
	}
	return out
}

// goldenCases are the inputs behind testdata/NAME.nft, and
// testdata/NAME.netlink for the netlink message tests.
var goldenCases = []struct {
	name string
	edit func(*Input)
}{
	{"bridged", nil},
	{"routed", func(in *Input) { in.Mode = ModeRouted }},
	{"attached", func(in *Input) { in.Mode = ModeAttached }},
	{"trap-threshold-admins", func(in *Input) {
		in.Firewall.TrapThreshold = 3
		in.Firewall.AdminCIDRs = []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24"), netip.MustParsePrefix("2001:db8:ad::/48")}
		in.Firewall.ExemptPorts = []uint16{80, 8080}
		in.Firewall.BlockFor = 90 * time.Minute
	}},
	// Load balancers in front of 443/tcp, of both families.
	{"balancers", func(in *Input) {
		in.Firewall.Balancers = []netip.Prefix{netip.MustParsePrefix("203.0.113.5/32"), netip.MustParsePrefix("203.0.113.16/28"),
			netip.MustParsePrefix("2001:db8:1b::5/128")}
	}},
	// Every process restricted; tunnel ports with their protocols; what
	// the configuration names besides the inventory.
	{"egress-all", func(in *Input) {
		in.Targets[1].Ports = append(in.Targets[1].Ports, Port{Number: 5353, UDP: true}, Port{Number: 4000, TCP: true, UDP: true})
		in.Egress.Restrict = EgressAll
		in.Egress.DNS = addrs("198.18.0.53")
		in.Egress.Allow = []Endpoint{
			{Addr: netip.MustParseAddr("192.0.2.7"), Port: Port{Number: 5432, TCP: true}},
			{Addr: netip.MustParseAddr("2001:db8::7"), Port: Port{Number: 88, TCP: true, UDP: true}},
			{Addr: netip.MustParseAddr("192.0.2.8"), Port: Port{Number: 514, UDP: true}},
		}
		in.Egress.Syslog = []netip.AddrPort{netip.MustParseAddrPort("[2001:db8::9]:6514")}
	}},
	// Networks reached by address: interval sets keyed by prefix .
	// protocol . port, in the VNet guard and in the egress chain.
	{"networks-bridged", withNetworks},
	{"networks-routed", func(in *Input) {
		withNetworks(in)
		in.Mode = ModeRouted
	}},
}

// withNetworks adds two networks, each with IPv4 and IPv6 prefixes.
func withNetworks(in *Input) {
	in.Networks = []Network{
		{Name: "lab", Prefixes: []netip.Prefix{netip.MustParsePrefix("198.18.2.0/24"), netip.MustParsePrefix("2001:db8:b5:2::/64")},
			Ports: []Port{{Number: 22, TCP: true}, {Number: 8080, TCP: true}}},
		{Name: "desks", Prefixes: []netip.Prefix{netip.MustParsePrefix("10.30.0.0/16"), netip.MustParsePrefix("10.31.0.128/25"),
			netip.MustParsePrefix("2001:db8:30::/48")}, Ports: []Port{{Number: 3389, TCP: true, UDP: true}}},
	}
}

// TestCompileGolden renders the compiled ruleset for each mode and compares
// it with testdata/*.nft (go test -update rewrites them).
func TestCompileGolden(t *testing.T) {
	for _, tt := range goldenCases {
		t.Run(tt.name, func(t *testing.T) {
			rs, err := Compile(labInput(tt.edit))
			if err != nil {
				t.Fatal(err)
			}
			got := rs.Render()
			golden := filepath.Join("testdata", tt.name+".nft")
			if *update {
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test -update to create it)", err)
			}
			if got != string(want) {
				t.Errorf("rendered ruleset differs from %s (go test -update to accept):\n%s", golden, got)
			}
		})
	}
}

func TestCompileDeterministic(t *testing.T) {
	a, _ := Compile(labInput(nil))
	b, _ := Compile(labInput(nil))
	if a.Render() != b.Render() {
		t.Error("two compilations of the same input differ")
	}
}

// The rule count must not grow with the inventory: targets live in sets.
func TestRuleCountIndependentOfInventory(t *testing.T) {
	small := labInput(nil)
	big := labInput(nil)
	for i := range 1000 {
		big.Targets = append(big.Targets, Target{
			Name:      "t" + string(rune('a'+i%26)),
			Addresses: []netip.Addr{netip.AddrFrom4([4]byte{198, 18, byte(2 + i/250), byte(1 + i%250)})},
			Ports:     []Port{{Number: 22, TCP: true}, {Number: 3389, TCP: true, UDP: true}},
		})
	}
	count := func(in Input) (rules, elements int) {
		rs, err := Compile(in)
		if err != nil {
			t.Fatal(err)
		}
		for _, tb := range rs.Tables {
			for _, c := range tb.Chains {
				rules += len(c.Rules)
			}
			for _, s := range tb.Sets {
				elements += len(s.Elements)
			}
		}
		return
	}
	r1, e1 := count(small)
	r2, e2 := count(big)
	if r1 != r2 {
		t.Errorf("rules grew with the inventory: %d -> %d", r1, r2)
	}
	if e2 <= e1 {
		t.Errorf("set elements did not grow: %d -> %d", e1, e2)
	}
}

// Invariant 4: every address and guarded port of every target is in the
// protected sets, and 22 and 3389 are guarded on every target.
func TestProtectedCoversInventory(t *testing.T) {
	sets := protectedSets(labInput(nil).Targets)
	has := func(a string, port uint16) bool {
		addr := netip.MustParseAddr(a)
		for _, s := range sets {
			for _, e := range s.Elements {
				if e.Prefix.Addr() == addr && e.Port == port {
					return true
				}
			}
		}
		return false
	}
	for _, tc := range []struct {
		addr string
		port uint16
	}{
		{"198.18.1.11", 22}, {"2001:db8:b5:1::11", 22}, {"198.18.1.11", 3389},
		{"198.18.1.12", 3389}, {"2001:db8:b5:1::12", 3390}, {"198.18.1.12", 22},
	} {
		if !has(tc.addr, tc.port) {
			t.Errorf("%s port %d is not protected", tc.addr, tc.port)
		}
	}
}

func TestNFTDuration(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want string
	}{{"10m", "10m"}, {"1h30m", "1h30m"}, {"49h", "2d1h"}, {"90s", "1m30s"}} {
		d, _ := parseDuration(tt.in)
		if got := nftDuration(d); got != tt.want {
			t.Errorf("nftDuration(%s) = %s, want %s", tt.in, got, tt.want)
		}
	}
}

func parseDuration(s string) (d time.Duration, err error) { return time.ParseDuration(s) }

func TestExportGolden(t *testing.T) {
	targets := labInput(nil).Targets
	rs, err := Export(targets, "vm2", hostPrefixes(labVNet))
	if err != nil {
		t.Fatal(err)
	}
	got := rs.Render()
	golden := filepath.Join("testdata", "export-vm2.nft")
	if *update {
		os.WriteFile(golden, []byte(got), 0o644)
	}
	want, err := os.ReadFile(golden)
	if err != nil || got != string(want) {
		t.Errorf("export differs from %s (%v):\n%s", golden, err, got)
	}
	if _, err := Export(targets, "vm9", hostPrefixes(labVNet)); err == nil || !strings.Contains(err.Error(), `"vm9" is not in the inventory`) {
		t.Errorf("unknown target: %v", err)
	}
}

// A cluster's export admits the bastion subnets, where every instance
// lives, and nothing wider: an IPv4-mapped or unmasked prefix is taken as
// the subnet it names.
func TestExportCluster(t *testing.T) {
	targets := labInput(nil).Targets
	subnets := []netip.Prefix{netip.MustParsePrefix("::ffff:198.18.0.0/123"), netip.MustParsePrefix("2001:db8:b5::7/64")}
	rs, err := Export(targets, "vm2", subnets)
	if err != nil {
		t.Fatal(err)
	}
	got := rs.Render()
	// TestRenderedRulesetLoads feeds the golden file to nft.
	golden := filepath.Join("testdata", "export-vm2-cluster.nft")
	if *update {
		os.WriteFile(golden, []byte(got), 0o644)
	}
	if want, err := os.ReadFile(golden); err != nil || got != string(want) {
		t.Errorf("export differs from %s (%v):\n%s", golden, err, got)
	}
	for _, want := range []string{"198.18.0.0/27", "2001:db8:b5::/64", "flags interval"} {
		if !strings.Contains(got, want) {
			t.Errorf("the cluster's export lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "::ffff:") || strings.Contains(got, "::7") {
		t.Errorf("the cluster's export keeps a mapped or unmasked prefix:\n%s", got)
	}
}

func TestRuleDiff(t *testing.T) {
	tests := []struct {
		name      string
		want, cur []string
		edits     []ruleEdit
	}{
		{"same", []string{"a", "b"}, []string{"a", "b"}, nil},
		{"inserted first", []string{"a", "b", "c"}, []string{"x", "a", "b", "c"}, []ruleEdit{{-1, 0}}},
		{"appended", []string{"a", "b"}, []string{"a", "b", "x"}, []ruleEdit{{-1, 2}}},
		{"deleted middle", []string{"a", "b", "c"}, []string{"a", "c"}, []ruleEdit{{1, -1}}},
		{"changed", []string{"a", "b", "c"}, []string{"a", "x", "c"}, []ruleEdit{{1, 1}}},
		{"all gone", []string{"a", "b"}, nil, []ruleEdit{{0, -1}, {1, -1}}},
		{"moved", []string{"a", "b", "c"}, []string{"b", "c", "a"}, []ruleEdit{{0, -1}, {-1, 2}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ruleDiff(tt.want, tt.cur); !slices.Equal(got, tt.edits) {
				t.Errorf("ruleDiff = %v, want %v", got, tt.edits)
			}
		})
	}
}

// TestIPv6SourceIsSlash64 holds every per-source set to its unit: the IPv6
// blocklist and meters are keyed, filled and matched by /64, the IPv4 ones
// by address, and the admin exemption stays a set of whole prefixes.
func TestIPv6SourceIsSlash64(t *testing.T) {
	want := map[string]int{"blocklist4": 0, "probes4": 0, "conn4": 0, "admin4": 0, "admin6": 0,
		"blocklist6": SourceBits6, "probes6": SourceBits6, "conn6": SourceBits6}
	for _, tt := range goldenCases {
		t.Run(tt.name, func(t *testing.T) {
			rs, err := Compile(labInput(tt.edit))
			if err != nil {
				t.Fatal(err)
			}
			host := rs.Tables[0]
			for _, s := range host.Sets {
				if bits, ok := want[s.Name]; ok && s.SourceBits != bits {
					t.Errorf("set %s: keys are /%d, want /%d (0: whole address)", s.Name, s.SourceBits, bits)
				}
			}
			uses := 0
			check := func(rule Rule, set string, bits int) {
				uses++
				if w, ok := want[set]; ok && bits != w {
					t.Errorf("rule %q uses @%s with the source masked to /%d, want /%d (0: whole address)", rule, set, bits, w)
				}
			}
			for _, ch := range host.Chains {
				for _, r := range ch.Rules {
					for _, m := range r.Match {
						switch m := m.(type) {
						case SAddrIn:
							check(r, m.Set, m.Bits)
						case SourceOver:
							check(r, m.Set, m.Bits)
						}
					}
					for _, s := range r.Stmts {
						if s, ok := s.(AddSource); ok {
							check(r, s.Set, s.Bits)
						}
					}
				}
			}
			if uses == 0 {
				t.Fatal("no rule uses a per-source set")
			}
		})
	}
}

// Invariant 4 covers RDP's UDP transport: 3389 is guarded on UDP as well as
// TCP on every target, SSH on TCP only, tunnel ports as listed.
func TestProtectedProtocols(t *testing.T) {
	in := labInput(func(in *Input) { in.Targets[1].Ports = append(in.Targets[1].Ports, Port{Number: 5353, UDP: true}) })
	got := map[string]bool{}
	for _, s := range protectedSets(in.Targets) {
		for _, e := range s.Elements {
			got[e.String(s.Type)] = true
		}
	}
	for _, want := range []string{
		`198.18.1.11 . tcp . 3389 comment "vm1"`, `198.18.1.11 . udp . 3389 comment "vm1"`,
		`2001:db8:b5:1::12 . udp . 3389 comment "vm2"`, `198.18.1.12 . udp . 5353 comment "vm2"`,
		`2001:db8:b5:1::12 . tcp . 3390 comment "vm2"`, `198.18.1.11 . tcp . 22 comment "vm1"`,
	} {
		if !got[want] {
			t.Errorf("not guarded: %s", want)
		}
	}
	for _, never := range []string{`198.18.1.11 . udp . 22 comment "vm1"`, `198.18.1.12 . tcp . 5353 comment "vm2"`, `198.18.1.12 . udp . 3390 comment "vm2"`} {
		if got[never] {
			t.Errorf("guarded although not listed: %s", never)
		}
	}
}

// The egress chain (invariant 13): whose traffic it restricts, and what it
// says when it restricts nothing.
func TestEgressChain(t *testing.T) {
	output := func(rs Ruleset) (rules []string, sets []string) {
		for _, s := range rs.Tables[0].Sets {
			sets = append(sets, s.Name)
		}
		for _, c := range rs.Tables[0].Chains {
			if c.Name == "output" {
				for _, r := range c.Rules {
					rules = append(rules, r.String())
				}
			}
		}
		return rules, sets
	}
	for _, tt := range []struct {
		name   string
		egress Egress
		owner  string // the match every egress rule starts with; "" for none
		note   string
	}{
		{"the daemon's user", labInput(nil).Egress, "meta skuid 998 ", "processes of user bastiond (uid 998"},
		{"every process", Egress{Restrict: EgressAll, User: "bastiond"}, "meta skuid != 4294967295 ", "every process of this host"},
		{"no such user", Egress{Restrict: EgressUser, User: "bastiond"}, "", `NOT restricted: user "bastiond" (firewall.egress_user) does not exist`},
		{"off", Egress{Restrict: EgressOff, User: "bastiond", UID: 998, UserFound: true}, "", "not restricted (firewall.restrict_egress: off)"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			rs, err := Compile(labInput(func(in *Input) { in.Egress = tt.egress }))
			if err != nil {
				t.Fatal(err)
			}
			if len(rs.Notes) != 1 || !strings.Contains(rs.Notes[0], tt.note) || !strings.HasPrefix(rs.Render(), "# egress: ") {
				t.Errorf("notes %q, want one containing %q, printed first", rs.Notes, tt.note)
			}
			rules, sets := output(rs)
			if tt.owner == "" {
				if len(rules) != 2 || slices.Contains(sets, Egress4) {
					t.Errorf("egress rules or sets where nothing is restricted: %q %q", rules, sets)
				}
				return
			}
			want := []string{
				tt.owner + `ct state established,related accept comment "egress pinned (invariant 13): connections already made, replies to the host's listeners"`,
				tt.owner + `tcp sport 443 tcp flags & syn == 0 accept comment "replies on the TLS listener's connections, also those accepted before the first ruleset"`,
				tt.owner + `ip daddr . meta l4proto . th dport @egress4 accept comment "the inventory and the services the config names"`,
				tt.owner + `ip6 daddr . meta l4proto . th dport @egress6 accept`,
				tt.owner + `limit rate 10/minute burst 5 packets log prefix "bastiond egress refused: "`,
				tt.owner + `drop comment "anything else, loopback included"`,
			}
			if !slices.Equal(rules[2:], want) {
				t.Errorf("output chain:\n%s\nwant after the counting rules:\n%s", strings.Join(rules, "\n"), strings.Join(want, "\n"))
			}
			var elems []string
			for _, s := range rs.Tables[0].Sets {
				if s.Name == Egress4 || s.Name == Egress6 {
					for _, e := range s.Elements {
						elems = append(elems, e.key(s.Type))
					}
				}
			}
			for _, w := range []string{"198.18.1.11 . tcp . 22", "2001:db8:b5:1::12 . udp . 3389", "198.18.1.12 . tcp . 3390"} {
				if !slices.Contains(elems, w) {
					t.Errorf("egress sets lack %s: %q", w, elems)
				}
			}
			for _, never := range []string{"198.18.1.11 . tcp . 3389", "198.18.1.12 . tcp . 22", "198.18.1.11 . udp . 22"} {
				if slices.Contains(elems, never) {
					t.Errorf("egress sets hold %s, which the inventory does not offer", never)
				}
			}
		})
	}
}

// An input Compile cannot turn into the ruleset it describes is refused,
// with an error that names what is wrong; the lab input is not.
func TestCompileRefusesBadInput(t *testing.T) {
	for _, tt := range []struct {
		name string
		edit func(*Input)
		want string
	}{
		{"no public interface", func(in *Input) { in.PublicInterface = "" }, "no public interface"},
		{"no mode", func(in *Input) { in.Mode = "" }, `unknown mode ""`},
		{"unknown mode", func(in *Input) { in.Mode = "bridge" }, `unknown mode "bridge"`},
		{"zero trap threshold", func(in *Input) { in.Firewall.TrapThreshold = 0 }, "trap threshold 0"},
		{"block for zero", func(in *Input) { in.Firewall.BlockFor = 0 }, "block time 0s: at least 1s"},
		{"block for half a second", func(in *Input) { in.Firewall.BlockFor = 500 * time.Millisecond }, "block time 500ms"},
		{"zero connection rate", func(in *Input) { in.Firewall.ConnRate = 0 }, "connection rate 0"},
		{"exempt port 0", func(in *Input) { in.Firewall.ExemptPorts = []uint16{80, 0} }, "exempt port 0"},
		{"invalid admin prefix", func(in *Input) { in.Firewall.AdminCIDRs = []netip.Prefix{{}} }, "admin source invalid Prefix"},
		{"target without name", func(in *Input) { in.Targets[1].Name = "" }, "target 1 has no name"},
		{"target without address", func(in *Input) { in.Targets[0].Addresses = nil }, `target "vm1" has no address`},
		{"target with a missing address", func(in *Input) { in.Targets[0].Addresses = append(in.Targets[0].Addresses, netip.Addr{}) },
			`target "vm1": an address is missing`},
		{"IPv6 address with a zone", func(in *Input) {
			in.Targets[1].Addresses = []netip.Addr{netip.MustParseAddr("fd00::12%vnet0")}
		}, `target "vm2": address fd00::12%vnet0 has a zone`},
		{"port 0", func(in *Input) { in.Targets[0].Ports = []Port{{TCP: true}} }, `target "vm1": port 0/tcp: 0 is not a port`},
		{"port without protocol", func(in *Input) { in.Targets[1].Ports[1] = Port{Number: 3390} }, `target "vm2": port 3390 has no protocol`},
		{"no egress mode", func(in *Input) { in.Egress.Restrict = "" }, `unknown restriction ""`},
		{"egress user unnamed", func(in *Input) { in.Egress.User = "" }, "restricted to a user, but no user named"},
		{"missing resolver", func(in *Input) { in.Egress.DNS = []netip.Addr{{}} }, "resolver invalid IP is not an address"},
		{"syslog port 0", func(in *Input) { in.Egress.Syslog = []netip.AddrPort{netip.MustParseAddrPort("[2001:db8::9]:0")} },
			"syslog collector [2001:db8::9]:0"},
		{"database port 0", func(in *Input) { in.Egress.Database = []netip.AddrPort{netip.MustParseAddrPort("192.0.2.5:0")} },
			"database server 192.0.2.5:0"},
		{"allowed destination without protocol", func(in *Input) {
			in.Egress.Allow = []Endpoint{{Addr: netip.MustParseAddr("192.0.2.7"), Port: Port{Number: 5432}}}
		}, "allowed destination 192.0.2.7: port 5432 has no protocol"},
	} {
		t.Run(strings.ReplaceAll(tt.name, " ", "_"), func(t *testing.T) {
			_, err := Compile(labInput(tt.edit))
			if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.HasPrefix(err.Error(), "netpolicy: ") {
				t.Errorf("Compile: %v, want an error containing %q", err, tt.want)
			}
		})
	}
	if _, err := Compile(labInput(nil)); err != nil {
		t.Errorf("the lab input: %v", err)
	}
	// Every problem at once, one line each.
	_, err := Compile(labInput(func(in *Input) { in.PublicInterface, in.Firewall.ConnRate = "", 0 }))
	if err == nil || len(strings.Split(err.Error(), "\n")) != 2 {
		t.Errorf("two problems: %v, want both, one a line", err)
	}
}

// Export refuses a target whose ports it cannot guard, and a bastion
// address that cannot be a set element; link-local ones are left out.
func TestExportRefusesBadInput(t *testing.T) {
	targets := labInput(func(in *Input) { in.Targets[1].Ports = append(in.Targets[1].Ports, Port{Number: 8080}) }).Targets
	if _, err := Export(targets, "vm2", hostPrefixes(labVNet)); err == nil || !strings.Contains(err.Error(), `target "vm2": port 8080 has no protocol`) {
		t.Errorf("port without protocol: %v", err)
	}
	if _, err := Export(targets, "vm1", []netip.Prefix{{}}); err == nil || !strings.Contains(err.Error(), "bastion address: an address is missing") {
		t.Errorf("missing bastion address: %v", err)
	}
	rs, err := Export(targets, "vm1", hostPrefixes(append(addrs("fe80::4"), labVNet...)))
	if err != nil {
		t.Fatal(err)
	}
	if got := rs.Render(); strings.Contains(got, "fe80") || !strings.Contains(got, "2001:db8:b5::4") || !strings.Contains(got, "198.18.0.4") {
		t.Errorf("bastion addresses in the export: want the global IPv4 and IPv6 ones only:\n%s", got)
	}
}

// TestEgressDatabase: the state store's PostgreSQL servers, IPv4 and IPv6,
// are in the egress chain's allowed destinations, on TCP, named for what
// they are.
func TestEgressDatabase(t *testing.T) {
	rs, err := Compile(labInput(func(in *Input) {
		in.Egress.Database = []netip.AddrPort{netip.MustParseAddrPort("192.0.2.5:5432"), netip.MustParseAddrPort("[2001:db8::5]:6432")}
	}))
	if err != nil {
		t.Fatal(err)
	}
	got := rs.Render()
	for _, want := range []string{`192.0.2.5 . tcp . 5432 comment "database"`, `2001:db8::5 . tcp . 6432 comment "database"`} {
		if !strings.Contains(got, want) {
			t.Errorf("the ruleset lacks %s:\n%s", want, got)
		}
	}
	if strings.Contains(got, "udp . 5432") {
		t.Error("the database is allowed on UDP too")
	}
}
