package netpolicy

import (
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netns"
)

// bigInput is the lab input with n targets, each with an IPv4 and an
// IPv6 address and SSH, RDP and one tunnel port.
func bigInput(n int) Input {
	in := labInput(nil)
	in.Targets = nil
	for i := range n {
		in.Targets = append(in.Targets, Target{
			Name: fmt.Sprintf("t%05d", i),
			Addresses: []netip.Addr{
				netip.AddrFrom4([4]byte{198, 18, byte(1 + i/250), byte(1 + i%250)}),
				netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 0, 0xb5, 0, 1, 14: byte(i >> 8), 15: byte(i)}),
			},
			Ports: []Port{{Number: 22, TCP: true}, {Number: 3389, TCP: true, UDP: true}, {Number: 5985, TCP: true}},
		})
	}
	return in
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
	in := bigInput(10_000)
	var rs Ruleset
	for b.Loop() {
		var err error
		if rs, err = Compile(in); err != nil {
			b.Fatal(err)
		}
	}
	rules, elements := countRules(rs)
	b.ReportMetric(float64(rules), "rules")
	b.ReportMetric(float64(elements), "set-elements")
}

// benchNetns makes a fresh network namespace for a benchmark, removed when
// it ends, and returns its name and a Kernel in it.
func benchNetns(b *testing.B) (string, *Kernel) {
	b.Helper()
	if os.Geteuid() != 0 {
		b.Skip("needs root: applies to a fresh network namespace")
	}
	name := fmt.Sprintf("bastiond-npbench-%d-%d", os.Getpid(), nsSeq.Add(1))
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		b.Fatalf("%v: %s", err, out)
	}
	b.Cleanup(func() { exec.Command("ip", "netns", "del", name).Run() })
	h, err := netns.GetFromName(name)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { h.Close() })
	k, err := OpenNetNS(int(h))
	if err != nil {
		b.Fatal(err)
	}
	return name, k
}

// BenchmarkApply10kTargets applies the 10,000-target ruleset (atomic replace,
// one netlink transaction) in a fresh network namespace.
func BenchmarkApply10kTargets(b *testing.B) {
	_, k := benchNetns(b)
	rs, err := Compile(bigInput(10_000))
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

// appliedBig is a namespace with the 10,000-target ruleset in force.
func appliedBig(b *testing.B) (string, *Kernel) {
	ns, k := benchNetns(b)
	rs, err := Compile(bigInput(10_000))
	if err != nil {
		b.Fatal(err)
	}
	if err := k.Apply(rs); err != nil {
		b.Fatal(err)
	}
	return ns, k
}

// BenchmarkVerify10kTargets is the reconciler's periodic check when no
// nftables transaction happened since the last one: the ruleset generation
// has not moved, one round trip.
func BenchmarkVerify10kTargets(b *testing.B) {
	_, k := appliedBig(b)
	for b.Loop() {
		if d, err := k.Verify(); err != nil || len(d) > 0 {
			b.Fatal(d, err)
		}
	}
}

// BenchmarkVerifyFull10kTargets is the check after any transaction (anyone's,
// on any table): every table, chain, rule and set element read back and
// compared.
func BenchmarkVerifyFull10kTargets(b *testing.B) {
	_, k := appliedBig(b)
	for b.Loop() {
		k.mu.Lock()
		k.matchedOK = false
		k.mu.Unlock()
		if d, err := k.Verify(); err != nil || len(d) > 0 {
			b.Fatal(d, err)
		}
	}
}

// BenchmarkNftList10kTargets is Verify's peer: nft reading the same tables
// back (`nft list ruleset`, one process per read).
func BenchmarkNftList10kTargets(b *testing.B) {
	if _, err := exec.LookPath("nft"); err != nil {
		b.Skip("nft not installed")
	}
	ns, _ := appliedBig(b)
	for b.Loop() {
		if out, err := exec.Command("ip", "netns", "exec", ns, "nft", "list", "ruleset").CombinedOutput(); err != nil {
			b.Fatalf("%v: %s", err, out)
		}
	}
}

// BenchmarkCounters10kTargets is one metrics scrape (or `policy show
// --counters`): every counting set's elements read and summed per target.
// Besides the time, it reports the CPU time of a scrape (user and system:
// the kernel builds the dump in the reader's system time), which the
// machine's other load disturbs less.
func BenchmarkCounters10kTargets(b *testing.B) {
	_, k := appliedBig(b)
	cpu0 := cpuTime()
	for b.Loop() {
		if c, err := k.Counters(); err != nil || len(c) != 10_000 {
			b.Fatal(len(c), err)
		}
	}
	b.ReportMetric(float64((cpuTime()-cpu0).Microseconds())/1000/float64(b.N), "cpu-ms/op")
}

// cpuTime is the CPU time this process has used, user and system.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
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
	rs, _ := Compile(bigInput(10_000))
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

// bigNetworksInput is bigInput(targets) with cidrs network prefixes, half
// IPv4 /24s and half IPv6 /64s, in networks of ten prefixes each offering
// SSH and RDP.
func bigNetworksInput(targets, cidrs int) Input {
	in := bigInput(targets)
	for i := range cidrs {
		if i%10 == 0 {
			in.Networks = append(in.Networks, Network{Name: fmt.Sprintf("n%04d", i/10),
				Ports: []Port{{Number: 22, TCP: true}, {Number: 3389, TCP: true, UDP: true}}})
		}
		n := &in.Networks[len(in.Networks)-1]
		j := i / 2
		if i%2 == 0 {
			n.Prefixes = append(n.Prefixes, netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(j >> 8), byte(j), 0}), 24))
		} else {
			n.Prefixes = append(n.Prefixes, netip.PrefixFrom(netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 1, 0, byte(j >> 8), byte(j)}), 64))
		}
	}
	return in
}

func BenchmarkCompile10kTargets1kCIDRs(b *testing.B) {
	in := bigNetworksInput(10_000, 1_000)
	var rs Ruleset
	for b.Loop() {
		var err error
		if rs, err = Compile(in); err != nil {
			b.Fatal(err)
		}
	}
	rules, elements := countRules(rs)
	b.ReportMetric(float64(rules), "rules")
	b.ReportMetric(float64(elements), "set-elements")
}

// BenchmarkApply10kTargets1kCIDRs is BenchmarkApply10kTargets with 1,000
// network prefixes in the interval sets besides.
func BenchmarkApply10kTargets1kCIDRs(b *testing.B) {
	_, k := benchNetns(b)
	rs, err := Compile(bigNetworksInput(10_000, 1_000))
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if err := Apply(k.conn, rs); err != nil {
			b.Fatal(err)
		}
	}
	rules, elements := countRules(rs)
	b.ReportMetric(float64(rules), "rules")
	b.ReportMetric(float64(elements), "set-elements")
}

// BenchmarkVerifyFull10kTargets1kCIDRs is BenchmarkVerifyFull10kTargets
// with the networks' interval sets to read back too.
func BenchmarkVerifyFull10kTargets1kCIDRs(b *testing.B) {
	_, k := benchNetns(b)
	rs, err := Compile(bigNetworksInput(10_000, 1_000))
	if err != nil {
		b.Fatal(err)
	}
	if err := k.Apply(rs); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		k.mu.Lock()
		k.matchedOK = false
		k.mu.Unlock()
		if d, err := k.Verify(); err != nil || len(d) > 0 {
			b.Fatal(d, err)
		}
	}
}
