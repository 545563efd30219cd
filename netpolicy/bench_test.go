package netpolicy

import (
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vishvananda/netns"

	"github.com/bastiond/bastiond/daemon/config"
)

// bigConfig is the lab configuration with n targets, each with an IPv4 and
// an IPv6 address and SSH, RDP and one tunnel port.
func bigConfig(b *testing.B, n int) *config.Config { return bigConfigT(b, n) }

func bigConfigT(b testing.TB, n int) *config.Config {
	cfg := labConfig(b, nil)
	cfg.Inventory.Targets = nil
	for i := range n {
		cfg.Inventory.Targets = append(cfg.Inventory.Targets, config.Target{
			Name: fmt.Sprintf("t%05d", i),
			Addresses: []netip.Addr{
				netip.AddrFrom4([4]byte{198, 18, byte(1 + i/250), byte(1 + i%250)}),
				netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 0, 0xb5, 0, 1, 14: byte(i >> 8), 15: byte(i)}),
			},
			Ports: config.Ports{SSH: 22, RDP: 3389, Tunnel: []uint16{5985}},
		})
	}
	return cfg
}

func countRules(rs Ruleset) (rules, elements int) {
	for _, t := range rs.Tables {
		for _, c := range t.Chains {
			rules += len(c.Rules)
		}
		for _, s := range t.Sets {
			elements += len(s.Elements)
		}
	}
	return rules, elements
}

func BenchmarkCompile10kTargets(b *testing.B) {
	cfg := bigConfig(b, 10_000)
	var rs Ruleset
	for b.Loop() {
		var err error
		if rs, err = Compile(Input{Config: cfg, VNetAddrs: labVNet}); err != nil {
			b.Fatal(err)
		}
	}
	rules, elements := countRules(rs)
	b.ReportMetric(float64(rules), "rules")
	b.ReportMetric(float64(elements), "set-elements")
}

// BenchmarkApply10kTargets applies the 10,000-target ruleset (atomic replace,
// one netlink transaction) in a fresh network namespace.
func BenchmarkApply10kTargets(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("needs root: applies to a fresh network namespace")
	}
	name := fmt.Sprintf("bastiond-npbench-%d", os.Getpid())
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		b.Fatalf("%v: %s", err, out)
	}
	defer exec.Command("ip", "netns", "del", name).Run()
	h, err := netns.GetFromName(name)
	if err != nil {
		b.Fatal(err)
	}
	defer h.Close()
	k, err := OpenNetNS(int(h))
	if err != nil {
		b.Fatal(err)
	}
	rs, err := Compile(Input{Config: bigConfig(b, 10_000), VNetAddrs: labVNet})
	if err != nil {
		b.Fatal(err)
	}
	// The transaction alone; Kernel.Apply also reads back a snapshot
	// (BenchmarkVerify10kTargets measures that read).
	for b.Loop() {
		if err := Apply(k.conn, rs); err != nil {
			b.Fatal(err)
		}
	}
	rules, elements := countRules(rs)
	b.ReportMetric(float64(rules), "rules")
	b.ReportMetric(float64(elements), "set-elements")
}

// BenchmarkVerify10kTargets is the reconciler's periodic check.
func BenchmarkVerify10kTargets(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("needs root")
	}
	name := fmt.Sprintf("bastiond-npbench-v-%d", os.Getpid())
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		b.Fatalf("%v: %s", err, out)
	}
	defer exec.Command("ip", "netns", "del", name).Run()
	h, _ := netns.GetFromName(name)
	defer h.Close()
	k, err := OpenNetNS(int(h))
	if err != nil {
		b.Fatal(err)
	}
	rs, _ := Compile(Input{Config: bigConfig(b, 10_000), VNetAddrs: labVNet})
	if err := k.Apply(rs); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if d, err := k.Verify(); err != nil || len(d) > 0 {
			b.Fatal(d, err)
		}
	}
}

// BenchmarkNftLoad10kTargets is the peer: nft loading the same ruleset from
// its rendered text (one process per load, as an admin or a script runs it).
func BenchmarkNftLoad10kTargets(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("needs root")
	}
	if _, err := exec.LookPath("nft"); err != nil {
		b.Skip("nft not installed")
	}
	name := fmt.Sprintf("bastiond-npbench-nft-%d", os.Getpid())
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		b.Fatalf("%v: %s", err, out)
	}
	defer exec.Command("ip", "netns", "del", name).Run()
	rs, _ := Compile(Input{Config: bigConfig(b, 10_000), VNetAddrs: labVNet})
	// The same atomic replace Apply does: create, delete, create.
	var script strings.Builder
	for _, t := range rs.Tables {
		fmt.Fprintf(&script, "table %s %s\ndelete table %s %s\n", t.Family, t.Name, t.Family, t.Name)
	}
	script.WriteString(rs.Render())
	file := filepath.Join(b.TempDir(), "ruleset.nft")
	if err := os.WriteFile(file, []byte(script.String()), 0o600); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if out, err := exec.Command("ip", "netns", "exec", name, "nft", "-f", file).CombinedOutput(); err != nil {
			b.Fatalf("%v: %s", err, out)
		}
	}
}
