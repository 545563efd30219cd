package netpolicy

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/bastiond/bastiond/daemon/config"
)

// Names of the tables bastiond owns. It never touches any other table.
const (
	HostTable = "bastiond"       // family inet: the host filter (and forward in routed mode)
	VNetTable = "bastiond_vnet"  // family bridge: the VNet guard in bridged mode
	GuardName = "bastiond_guard" // family inet on a VM: what `policy export` prints
)

// alwaysProtected are guarded on every target whatever its configuration:
// nothing but the bastion may reach a machine's SSH or RDP.
var alwaysProtected = []uint16{22, 3389}

// Input is what Compile needs: the configuration and the facts about this
// host that discovery found.
type Input struct {
	Config *config.Config
	// VNetAddrs are the bastion's own global addresses on the VNet interface.
	VNetAddrs []netip.Addr
}

// Compile turns the configuration into the ruleset bastiond keeps in force.
// It is pure and deterministic: the same input gives the same ruleset, and
// the number of rules does not grow with the inventory (targets live in sets).
func Compile(in Input) (Ruleset, error) {
	cfg := in.Config
	if cfg == nil {
		return Ruleset{}, errors.New("netpolicy: no configuration")
	}
	if cfg.Bastion.PublicInterface == "" {
		return Ruleset{}, errors.New("netpolicy: no public interface")
	}
	host := hostTable(cfg)
	rs := Ruleset{}
	switch cfg.Bastion.Mode {
	case config.ModeBridged:
		rs.Tables = append(rs.Tables, host, vnetBridgeTable(cfg, in.VNetAddrs))
	case config.ModeRouted:
		host.Sets = append(host.Sets, protectedSets(cfg)...)
		host.Chains = append(host.Chains, Chain{Name: "forward", Hook: "forward", Policy: "accept", Rules: protectRules()})
		rs.Tables = append(rs.Tables, host)
	case config.ModeAttached:
		rs.Tables = append(rs.Tables, host)
	default:
		return Ruleset{}, fmt.Errorf("netpolicy: unknown mode %q", cfg.Bastion.Mode)
	}
	return rs, nil
}

// hostTable is the bastion host's own filter: only 443 answers on the
// public side, probes of anything else blocklist the source.
func hostTable(cfg *config.Config) Table {
	fw := cfg.Firewall
	pub := IIF{Name: cfg.Bastion.PublicInterface}
	var admin4, admin6 []Element
	for _, p := range fw.AdminCIDRs {
		if p.Addr().Is4() {
			admin4 = append(admin4, Element{Prefix: p})
		} else {
			admin6 = append(admin6, Element{Prefix: p})
		}
	}
	connTimeout := time.Minute // meter entries forget idle sources
	t := Table{
		Family: FamilyInet,
		Name:   HostTable,
		Sets: []Set{
			{Name: "blocklist4", Type: TypeIPv4, Dynamic: true, Timeout: fw.BlockFor, Size: maxDynamicSet, Keep: true},
			{Name: "blocklist6", Type: TypeIPv6, Dynamic: true, Timeout: fw.BlockFor, Size: maxDynamicSet, Keep: true},
			{Name: "admin4", Type: TypeIPv4, Interval: true, Elements: admin4},
			{Name: "admin6", Type: TypeIPv6, Interval: true, Elements: admin6},
			{Name: "conn4", Type: TypeIPv4, Dynamic: true, Timeout: connTimeout, Size: maxDynamicSet},
			{Name: "conn6", Type: TypeIPv6, Dynamic: true, Timeout: connTimeout, Size: maxDynamicSet},
		},
	}
	rules := []Rule{
		{Match: []Match{IIFLoopback{}}, Verdict: "accept", Comment: "admin socket peers, metrics: loopback only"},
		{Match: []Match{SAddrIn{Set: "blocklist4"}}, Verdict: "drop", Comment: "blocklisted: dropped everywhere"},
		{Match: []Match{SAddrIn{V6: true, Set: "blocklist6"}}, Verdict: "drop"},
		{Match: []Match{CtState{States: []string{"invalid"}}}, Verdict: "drop"},
		{Match: []Match{CtState{States: []string{"established", "related"}}}, Verdict: "accept"},
		{Match: []Match{ICMPType{Types: []string{"destination-unreachable", "time-exceeded", "parameter-problem"}}}, Verdict: "accept", Comment: "errors the network needs"},
		{Match: []Match{ICMPType{V6: true, Types: []string{"destination-unreachable", "packet-too-big", "time-exceeded", "parameter-problem",
			"nd-router-advert", "nd-neighbor-solicit", "nd-neighbor-advert"}}}, Verdict: "accept", Comment: "errors, PMTU and neighbour discovery"},
		{Match: []Match{ICMPType{Types: []string{"echo-request"}}}, Stmts: []Stmt{Limit{PerSecond: 5, Burst: 10}}, Verdict: "accept"},
		{Match: []Match{ICMPType{V6: true, Types: []string{"echo-request"}}}, Stmts: []Stmt{Limit{PerSecond: 5, Burst: 10}}, Verdict: "accept"},
		{Match: []Match{pub, DPort{Proto: "tcp", Ports: []uint16{443}}, CtState{States: []string{"new"}},
			SourceOver{Set: "conn4", PerSecond: fw.ConnRate, BurstPacket: 2 * fw.ConnRate}}, Verdict: "drop", Comment: "per-source connection rate"},
		{Match: []Match{pub, DPort{Proto: "tcp", Ports: []uint16{443}}, CtState{States: []string{"new"}},
			SourceOver{V6: true, Set: "conn6", PerSecond: fw.ConnRate, BurstPacket: 2 * fw.ConnRate}}, Verdict: "drop"},
		{Match: []Match{pub, DPort{Proto: "tcp", Ports: []uint16{443}}}, Verdict: "accept", Comment: "TLS"},
		{Match: []Match{pub, DPort{Proto: "udp", Ports: []uint16{443}}}, Verdict: "accept", Comment: "QUIC"},
	}
	if ports := sortedPorts(fw.ExemptPorts); len(ports) > 0 {
		rules = append(rules, Rule{Match: []Match{pub, L4Proto{Protos: []string{"tcp", "udp"}}, DPort{Proto: "th", Ports: ports}}, Verdict: "drop", Comment: "exempt from the trap"})
	}
	rules = append(rules,
		Rule{Match: []Match{pub, SAddrIn{Set: "admin4"}}, Verdict: "drop", Comment: "admins are never blocklisted"},
		Rule{Match: []Match{pub, SAddrIn{V6: true, Set: "admin6"}}, Verdict: "drop"},
	)
	rules = append(rules, trapRules(pub, fw, &t)...)
	t.Chains = []Chain{{Name: "input", Hook: "input", Policy: "drop", Rules: rules}}
	return t
}

// trapRules blocklist a source that probes a closed TCP or UDP port on the
// public side: at once when the threshold is 1, at the threshold-th probe
// within a short time otherwise (a meter whose burst absorbs the first ones).
func trapRules(pub IIF, fw config.Firewall, t *Table) []Rule {
	var rules []Rule
	for _, v6 := range []bool{false, true} {
		fam, blocklist, probes := "4", "blocklist4", "probes4"
		if v6 {
			fam, blocklist, probes = "6", "blocklist6", "probes6"
		}
		match := []Match{pub, NFProto{V6: v6}, L4Proto{Protos: []string{"tcp", "udp"}}}
		if fw.TrapThreshold > 1 {
			typ := TypeIPv4
			if v6 {
				typ = TypeIPv6
			}
			t.Sets = append(t.Sets, Set{Name: probes, Type: typ, Dynamic: true, Timeout: fw.BlockFor, Size: maxDynamicSet})
			match = append(match, SourceOver{V6: v6, Set: probes, PerSecond: 1, PerMinute: true, BurstPacket: fw.TrapThreshold - 1})
		}
		rules = append(rules, Rule{Match: match, Stmts: []Stmt{AddSource{V6: v6, Set: blocklist}}, Verdict: "drop",
			Comment: "scan trap: closed port probed (IPv" + fam + ")"})
	}
	return rules
}

// protectedSets hold every target address . guarded port, one set per family.
func protectedSets(cfg *config.Config) []Set {
	var p4, p6 []Element
	for _, t := range cfg.Inventory.Targets {
		ports := append(slices.Clone(alwaysProtected), t.Ports.SSH, t.Ports.RDP)
		ports = append(ports, t.Ports.Tunnel...)
		for _, port := range sortedPorts(ports) {
			if port == 0 {
				continue
			}
			for _, a := range t.Addresses {
				e := Element{Prefix: netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()), Port: port}
				if a.Unmap().Is4() {
					p4 = append(p4, e)
				} else {
					p6 = append(p6, e)
				}
			}
		}
	}
	return []Set{
		{Name: "protected4", Type: TypeIPv4Port, Elements: dedupe(p4)},
		{Name: "protected6", Type: TypeIPv6Port, Elements: dedupe(p6)},
	}
}

// protectRules drop every packet to a guarded address and port that crosses
// the forward hook. The bastion's own connections to the machines never do
// (they leave through the bridge's own device, or through output when it
// routes), so whatever is seen here comes from someone else, including a
// rogue host that spoofs the bastion's address.
func protectRules() []Rule {
	return []Rule{
		{Match: []Match{DAddrPortIn{Set: "protected4"}}, Stmts: []Stmt{Counter{}}, Verdict: "drop", Comment: "only the bastion reaches SSH/RDP"},
		{Match: []Match{DAddrPortIn{V6: true, Set: "protected6"}}, Stmts: []Stmt{Counter{}}, Verdict: "drop"},
	}
}

// vnetBridgeTable guards a VNet bridged on this host.
func vnetBridgeTable(cfg *config.Config, vnetAddrs []netip.Addr) Table {
	rules := protectRules()
	// Nobody on the VNet may claim the bastion's addresses.
	for _, a := range vnetAddrs {
		switch {
		case a.Is4():
			rules = append(rules, Rule{Match: []Match{ARPSAddr{Addr: a}}, Verdict: "drop", Comment: "ARP spoofing of the bastion"})
		case !a.IsLinkLocalUnicast():
			rules = append(rules, Rule{Match: []Match{NDTarget{Addr: a}}, Verdict: "drop", Comment: "ND spoofing of the bastion (" + a.String() + ")"})
		}
	}
	return Table{
		Family: FamilyBridge,
		Name:   VNetTable,
		Sets:   protectedSets(cfg),
		Chains: []Chain{{Name: "forward", Hook: "forward", Policy: "accept", Rules: rules}},
	}
}

func dedupe(els []Element) []Element {
	seen := make(map[Element]bool, len(els))
	out := els[:0]
	for _, e := range els {
		if !seen[e] {
			seen[e] = true
			out = append(out, e)
		}
	}
	return out
}
