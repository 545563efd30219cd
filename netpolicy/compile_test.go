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

	"github.com/bastiond/bastiond/daemon/config"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

func labConfig(t testing.TB, edit func(string) string) *config.Config {
	t.Helper()
	data, err := os.ReadFile("../daemon/config/testdata/lab.yaml")
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

var labVNet = []netip.Addr{netip.MustParseAddr("198.18.0.4"), netip.MustParseAddr("2001:db8:b5::4")}

// labEgress is a host where the daemon's user is uid 998 and resolv.conf
// names one resolver per family.
var labEgress = EgressFacts{UID: 998, UserFound: true,
	Resolvers: []netip.Addr{netip.MustParseAddr("192.0.2.53"), netip.MustParseAddr("2001:db8:53::53")}}

// goldenCases are the configurations behind testdata/NAME.nft, and
// testdata/NAME.netlink for the netlink message tests.
var goldenCases = []struct {
	name string
	edit func(string) string
}{
	{"bridged", nil},
	{"routed", func(s string) string { return strings.Replace(s, "mode: bridged", "mode: routed", 1) }},
	{"attached", func(s string) string { return strings.Replace(s, "mode: bridged", "mode: attached", 1) }},
	{"trap-threshold-admins", func(s string) string {
		return s + "firewall:\n  trap_threshold: 3\n  admin_cidrs: [192.0.2.0/24, \"2001:db8:ad::/48\"]\n  exempt_ports: [80, 8080]\n  block_for: 1h30m\n"
	}},
	// Every process restricted; tunnel ports with their protocols; what
	// the configuration names besides the inventory.
	{"egress-all", func(s string) string {
		s = strings.Replace(s, "tunnel: [3390]", `tunnel: [3390, "5353/udp", "4000/tcp+udp"]`, 1)
		return s + "firewall:\n  restrict_egress: all\n  egress_dns: [198.18.0.53]\n" +
			"  egress_allow: [\"192.0.2.7:5432\", \"[2001:db8::7]:88/tcp+udp\", \"192.0.2.8:514/udp\"]\n" +
			"logging:\n  syslog:\n    address: \"[2001:db8::9]:6514\"\n    tls: true\n"
	}},
}

// TestCompileGolden renders the compiled ruleset for each mode and compares
// it with testdata/*.nft (go test -update rewrites them).
func TestCompileGolden(t *testing.T) {
	for _, tt := range goldenCases {
		t.Run(tt.name, func(t *testing.T) {
			rs, err := Compile(Input{Config: labConfig(t, tt.edit), VNetAddrs: labVNet, Egress: labEgress})
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
	cfg := labConfig(t, nil)
	a, _ := Compile(Input{Config: cfg, VNetAddrs: labVNet, Egress: labEgress})
	b, _ := Compile(Input{Config: cfg, VNetAddrs: labVNet, Egress: labEgress})
	if a.Render() != b.Render() {
		t.Error("two compilations of the same input differ")
	}
}

// The rule count must not grow with the inventory: targets live in sets.
func TestRuleCountIndependentOfInventory(t *testing.T) {
	small := labConfig(t, nil)
	big := labConfig(t, nil)
	for i := range 1000 {
		big.Inventory.Targets = append(big.Inventory.Targets, config.Target{
			Name:      "t" + string(rune('a'+i%26)),
			Addresses: []netip.Addr{netip.AddrFrom4([4]byte{198, 18, byte(2 + i/250), byte(1 + i%250)})},
			Ports:     config.Ports{SSH: 22, RDP: 3389},
		})
	}
	count := func(cfg *config.Config) (rules, elements int) {
		rs, err := Compile(Input{Config: cfg, VNetAddrs: labVNet, Egress: labEgress})
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
	cfg := labConfig(t, nil)
	sets := protectedSets(cfg)
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
	cfg := labConfig(t, func(s string) string { return strings.Replace(s, "mode: bridged", "mode: attached", 1) })
	rs, err := Export(cfg, "vm2", labVNet)
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
	if _, err := Export(cfg, "vm9", labVNet); err == nil || !strings.Contains(err.Error(), `"vm9" is not in the inventory`) {
		t.Errorf("unknown target: %v", err)
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
			rs, err := Compile(Input{Config: labConfig(t, tt.edit), VNetAddrs: labVNet, Egress: labEgress})
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
	cfg := labConfig(t, func(s string) string {
		return strings.Replace(s, "tunnel: [3390]", `tunnel: [3390, "5353/udp"]`, 1)
	})
	got := map[string]bool{}
	for _, s := range protectedSets(cfg) {
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
		name  string
		yaml  string
		facts EgressFacts
		owner string // the match every egress rule starts with; "" for none
		note  string
	}{
		{"the daemon's user", "", labEgress, "meta skuid 998 ", "processes of user bastiond (uid 998"},
		{"every process", "firewall: {restrict_egress: all}\n", EgressFacts{}, "meta skuid != 4294967295 ", "every process of this host"},
		{"no such user", "", EgressFacts{}, "", `NOT restricted: user "bastiond" (firewall.egress_user) does not exist`},
		{"off", "firewall: {restrict_egress: \"off\"}\n", labEgress, "", "not restricted (firewall.restrict_egress: off)"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			rs, err := Compile(Input{Config: labConfig(t, func(s string) string { return s + tt.yaml }), VNetAddrs: labVNet, Egress: tt.facts})
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
