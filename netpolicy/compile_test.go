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
}

// TestCompileGolden renders the compiled ruleset for each mode and compares
// it with testdata/*.nft (go test -update rewrites them).
func TestCompileGolden(t *testing.T) {
	for _, tt := range goldenCases {
		t.Run(tt.name, func(t *testing.T) {
			rs, err := Compile(Input{Config: labConfig(t, tt.edit), VNetAddrs: labVNet})
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
	a, _ := Compile(Input{Config: cfg, VNetAddrs: labVNet})
	b, _ := Compile(Input{Config: cfg, VNetAddrs: labVNet})
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
		rs, err := Compile(Input{Config: cfg, VNetAddrs: labVNet})
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
			rs, err := Compile(Input{Config: labConfig(t, tt.edit), VNetAddrs: labVNet})
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
