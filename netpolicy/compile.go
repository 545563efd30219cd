package netpolicy

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/bastiond/bastiond/internal/source"
)

// Names of the tables bastiond owns. It never touches any other table.
const (
	HostTable = "bastiond"       // family inet: the host filter (and forward in routed mode)
	VNetTable = "bastiond_vnet"  // family bridge: the VNet guard in bridged mode
	GuardName = "bastiond_guard" // family inet on a VM: what `policy export` prints
)

// SourceBits6 is the length of the IPv6 prefix that counts as one source
// in every per-source set: the blocklist, the probe meter and the connection
// rate meter hold /64s. One subscriber's link gets a whole /64, so an
// attacker rotating addresses inside it is still one source (the front
// door's limits count the same way: internal/source). An IPv4 source
// is one address.
const SourceBits6 = source.IPv6Bits

// alwaysProtected are guarded on every target whatever its configuration:
// nothing but the bastion may reach a machine's SSH or RDP, RDP's UDP
// transport included.
var alwaysProtected = []Port{{Number: 22, TCP: true}, {Number: 3389, TCP: true, UDP: true}}

// Names of the egress sets: address . protocol . port the restricted
// processes may open connections to.
const (
	Egress4 = "egress4"
	Egress6 = "egress6"
	// EgressLogPrefix starts every kernel log line of a refused packet.
	EgressLogPrefix = "bastiond egress refused: "
)

// anyUID is no user's id ((uid_t)-1): "meta skuid != anyUID" matches every
// packet that leaves from a process's socket.
const anyUID = 1<<32 - 1

// Compile turns the input into the ruleset bastiond keeps in force.
// It is pure and deterministic: the same input gives the same ruleset, and
// the number of rules does not grow with the inventory (targets live in sets).
// An input it cannot compile is an error that names every field at fault.
func Compile(in Input) (Ruleset, error) {
	if err := in.check(); err != nil {
		return Ruleset{}, err
	}
	host := hostTable(in)
	rs := Ruleset{}
	rs.Notes = egress(in, &host)
	switch in.Mode {
	case ModeBridged:
		rs.Tables = append(rs.Tables, host, vnetBridgeTable(in))
	case ModeRouted:
		host.Sets = append(append(host.Sets, protectedSets(in.Targets)...), blockedSets(in.Targets)...)
		rules := networkProtected(in.Networks, &host, protectRules())
		host.Chains = append(host.Chains, Chain{Name: "forward", Hook: "forward", Policy: "accept", Rules: rules})
		rs.Tables = append(rs.Tables, host)
	case ModeAttached:
		rs.Tables = append(rs.Tables, host)
	}
	return rs, nil
}

// hostTable is the bastion host's own filter: only 443 answers on the
// public side, probes of anything else blocklist the source.
func hostTable(in Input) Table {
	fw := in.Firewall
	pub := IIF{Name: in.PublicInterface}
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
			{Name: "blocklist6", Type: TypeIPv6, Dynamic: true, Timeout: fw.BlockFor, Size: maxDynamicSet, Keep: true, SourceBits: SourceBits6},
			{Name: "admin4", Type: TypeIPv4, Interval: true, Elements: admin4},
			{Name: "admin6", Type: TypeIPv6, Interval: true, Elements: admin6},
			{Name: "conn4", Type: TypeIPv4, Dynamic: true, Timeout: connTimeout, Size: maxDynamicSet},
			{Name: "conn6", Type: TypeIPv6, Dynamic: true, Timeout: connTimeout, Size: maxDynamicSet, SourceBits: SourceBits6},
		},
	}
	rules := []Rule{
		{Match: []Match{IIFLoopback{}}, Verdict: "accept", Comment: "admin socket peers, metrics: loopback only"},
	}
	balancers := balancerRules(pub, fw, &t)
	rules = append(rules, balancers...)
	rules = append(rules, []Rule{
		{Match: []Match{SAddrIn{Set: "blocklist4"}}, Verdict: "drop", Comment: "blocklisted: dropped everywhere"},
		{Match: []Match{SAddrIn{V6: true, Set: "blocklist6", Bits: SourceBits6}}, Verdict: "drop"},
		{Match: []Match{CtState{States: []string{"invalid"}}}, Verdict: "drop"},
		sessionCountRules(true)[0], sessionCountRules(true)[1],
		{Match: []Match{CtState{States: []string{"established", "related"}}}, Verdict: "accept"},
		{Match: []Match{ICMPType{Types: []string{"destination-unreachable", "time-exceeded", "parameter-problem"}}}, Verdict: "accept", Comment: "errors the network needs"},
		{Match: []Match{ICMPType{V6: true, Types: []string{"destination-unreachable", "packet-too-big", "time-exceeded", "parameter-problem",
			"nd-router-advert", "nd-neighbor-solicit", "nd-neighbor-advert"}}}, Verdict: "accept", Comment: "errors, PMTU and neighbour discovery"},
		{Match: []Match{ICMPType{Types: []string{"echo-request"}}}, Stmts: []Stmt{Limit{PerSecond: 5, Burst: 10}}, Verdict: "accept"},
		{Match: []Match{ICMPType{V6: true, Types: []string{"echo-request"}}}, Stmts: []Stmt{Limit{PerSecond: 5, Burst: 10}}, Verdict: "accept"},
		{Match: []Match{pub, DPort{Proto: "tcp", Ports: []uint16{443}}, CtState{States: []string{"new"}},
			SourceOver{Set: "conn4", PerSecond: fw.ConnRate, BurstPacket: 2 * fw.ConnRate}}, Verdict: "drop", Comment: "per-source connection rate"},
		{Match: []Match{pub, DPort{Proto: "tcp", Ports: []uint16{443}}, CtState{States: []string{"new"}},
			SourceOver{V6: true, Set: "conn6", PerSecond: fw.ConnRate, BurstPacket: 2 * fw.ConnRate, Bits: SourceBits6}}, Verdict: "drop"},
		{Match: []Match{pub, DPort{Proto: "tcp", Ports: []uint16{443}}}, Verdict: "accept", Comment: "TLS"},
		{Match: []Match{pub, DPort{Proto: "udp", Ports: []uint16{443}}}, Verdict: "accept", Comment: "QUIC"},
	}...)
	if ports := sortedPorts(fw.ExemptPorts); len(ports) > 0 {
		rules = append(rules, Rule{Match: []Match{pub, L4Proto{Protos: []string{"tcp", "udp"}}, DPort{Proto: "th", Ports: ports}}, Verdict: "drop", Comment: "exempt from the trap"})
	}
	rules = append(rules,
		Rule{Match: []Match{pub, SAddrIn{Set: "admin4"}}, Verdict: "drop", Comment: "admins are never blocklisted"},
		Rule{Match: []Match{pub, SAddrIn{V6: true, Set: "admin6"}}, Verdict: "drop"},
	)
	if len(balancers) > 0 {
		rules = append(rules,
			Rule{Match: []Match{pub, SAddrIn{Set: "balancers4"}}, Verdict: "drop", Comment: "balancers are never blocklisted"},
			Rule{Match: []Match{pub, SAddrIn{V6: true, Set: "balancers6"}}, Verdict: "drop"},
		)
	}
	rules = append(rules, trapRules(pub, fw, &t)...)
	t.Sets = append(t.Sets, sessionSets(in.Targets)...)
	t.Chains = []Chain{
		{Name: "input", Hook: "input", Policy: "drop", Rules: rules},
		{Name: "output", Hook: "output", Policy: "accept", Rules: sessionCountRules(false)},
	}
	return t
}

// balancerRules let the balancers' connections to 443/tcp through before
// the blocklist and the per-source connection-rate meter: every user comes
// from their addresses, so metering them would throttle everyone, and a
// blocklisted /64 that holds one would cut everyone off. Their sets are
// added to t. Without balancers, there are neither sets nor rules, and
// the ruleset is what it was before balancers existed.
func balancerRules(pub IIF, fw Firewall, t *Table) []Rule {
	if len(fw.Balancers) == 0 {
		return nil
	}
	var b4, b6 []Element
	for _, p := range fw.Balancers {
		if p.Addr().Is4() {
			b4 = append(b4, Element{Prefix: p})
		} else {
			b6 = append(b6, Element{Prefix: p})
		}
	}
	t.Sets = append(t.Sets,
		Set{Name: "balancers4", Type: TypeIPv4, Interval: true, Elements: b4},
		Set{Name: "balancers6", Type: TypeIPv6, Interval: true, Elements: b6})
	tracked := CtState{States: []string{"new", "established", "related"}} // not invalid
	return []Rule{
		{Match: []Match{pub, SAddrIn{Set: "balancers4"}, DPort{Proto: "tcp", Ports: []uint16{443}}, tracked}, Verdict: "accept",
			Comment: "TLS from the load balancers (listen.proxy_protocol): never metered nor blocklisted"},
		{Match: []Match{pub, SAddrIn{V6: true, Set: "balancers6"}, DPort{Proto: "tcp", Ports: []uint16{443}}, tracked}, Verdict: "accept"},
	}
}

// trapRules blocklist a source that probes a closed TCP or UDP port on the
// public side: at once when the threshold is 1, at the threshold-th probe
// within a short time otherwise (a meter whose burst absorbs the first ones).
func trapRules(pub IIF, fw Firewall, t *Table) []Rule {
	var rules []Rule
	for _, v6 := range []bool{false, true} {
		fam, blocklist, probes, bits := "4", "blocklist4", "probes4", 0
		if v6 {
			fam, blocklist, probes, bits = "6", "blocklist6", "probes6", SourceBits6
		}
		match := []Match{pub, NFProto{V6: v6}, L4Proto{Protos: []string{"tcp", "udp"}}}
		if fw.TrapThreshold > 1 {
			typ := TypeIPv4
			if v6 {
				typ = TypeIPv6
			}
			t.Sets = append(t.Sets, Set{Name: probes, Type: typ, Dynamic: true, Timeout: fw.BlockFor, Size: maxDynamicSet, SourceBits: bits})
			match = append(match, SourceOver{V6: v6, Set: probes, PerSecond: 1, PerMinute: true, BurstPacket: fw.TrapThreshold - 1, Bits: bits})
		}
		rules = append(rules, Rule{Match: match, Stmts: []Stmt{AddSource{V6: v6, Set: blocklist, Bits: bits}}, Verdict: "drop",
			Comment: "scan trap: closed port probed (IPv" + fam + ")"})
	}
	return rules
}

// Names of the sets that carry per-target counters. Their elements are
// address . port, commented with the target's name.
const (
	ToTargets4   = "to_targets4" // host table: what the bastion sent each target (by address)
	ToTargets6   = "to_targets6"
	FromTargets4 = "from_targets4" // host table: what each target sent the bastion
	FromTargets6 = "from_targets6"
	BlockedTo4   = "blocked_to4" // VNet guard: what was dropped on its way to each target (by address)
	BlockedTo6   = "blocked_to6"
)

// Names of the VNet guard's sets of address . protocol . port, commented
// with the target's name. They carry no counters: counting per guarded
// port made a scrape dump four times as many elements as targets have
// addresses, so what the guard drops is counted in the blocked_to sets,
// per address.
const (
	ProtectedSet4 = "protected4"
	ProtectedSet6 = "protected6"
)

// protoPort is one transport protocol and port.
type protoPort struct {
	proto string
	port  uint16
}

// protoPorts lists every protocol and port of ports once, sorted by port
// and then protocol.
func protoPorts(ports []Port) []protoPort {
	var out []protoPort
	for _, p := range ports {
		if p.Number == 0 {
			continue
		}
		if p.TCP {
			out = append(out, protoPort{"tcp", p.Number})
		}
		if p.UDP {
			out = append(out, protoPort{"udp", p.Number})
		}
	}
	slices.SortFunc(out, func(a, b protoPort) int {
		return cmp.Or(cmp.Compare(a.port, b.port), cmp.Compare(a.proto, b.proto))
	})
	return slices.Compact(out)
}

// targetElements lists address . protocol . port for every target and
// every port that ports returns for it, per family, each named after its
// target. An address belongs to one target (the daemon's configuration
// refuses anything else); should one appear twice, the first target keeps it.
func targetElements(targets []Target, ports func(Target) []Port) (v4, v6 []Element) {
	type key struct {
		addr netip.Addr
		pp   protoPort
	}
	seen := make(map[key]bool)
	for _, t := range targets {
		for _, pp := range protoPorts(ports(t)) {
			for _, a := range t.Addresses {
				a = a.Unmap()
				if seen[key{a, pp}] {
					continue
				}
				seen[key{a, pp}] = true
				e := Element{Prefix: netip.PrefixFrom(a, a.BitLen()), Proto: pp.proto, Port: pp.port, Comment: t.Name}
				if a.Is4() {
					v4 = append(v4, e)
				} else {
					v6 = append(v6, e)
				}
			}
		}
	}
	return v4, v6
}

// guardedPorts are the ports nobody but the bastion may reach on t, with
// their protocols: SSH and RDP wherever they listen, and every port the
// bastion offers.
func guardedPorts(t Target) []Port {
	return append(slices.Clone(alwaysProtected), t.Ports...)
}

// sessionSets hold every target address, with a counter per element: all
// the IP traffic between the bastion and each target, one pair of sets per
// direction. Keyed by address alone (not address . port) to keep the sets
// small: the bastion talks to a target for its sessions and little else.
func sessionSets(targets []Target) []Set {
	v4, v6 := addressElements(targets)
	return []Set{
		{Name: ToTargets4, Type: TypeIPv4, Counter: true, Elements: v4},
		{Name: ToTargets6, Type: TypeIPv6, Counter: true, Elements: v6},
		{Name: FromTargets4, Type: TypeIPv4, Counter: true, Elements: v4},
		{Name: FromTargets6, Type: TypeIPv6, Counter: true, Elements: v6},
	}
}

// addressElements lists every target address once, per family, each named
// after its target.
func addressElements(targets []Target) (v4, v6 []Element) {
	seen := make(map[netip.Addr]bool)
	for _, t := range targets {
		for _, a := range t.Addresses {
			a = a.Unmap()
			if seen[a] {
				continue
			}
			seen[a] = true
			e := Element{Prefix: netip.PrefixFrom(a, a.BitLen()), Comment: t.Name}
			if a.Is4() {
				v4 = append(v4, e)
			} else {
				v6 = append(v6, e)
			}
		}
	}
	return v4, v6
}

// protectedSets hold every target address . guarded port, one set per
// family.
func protectedSets(targets []Target) []Set {
	v4, v6 := targetElements(targets, guardedPorts)
	return []Set{
		{Name: ProtectedSet4, Type: TypeIPv4ProtoPort, Elements: v4},
		{Name: ProtectedSet6, Type: TypeIPv6ProtoPort, Elements: v6},
	}
}

// blockedSets hold every target address, one set per family, with a
// counter per element: what the guard dropped on its way to the address.
func blockedSets(targets []Target) []Set {
	v4, v6 := addressElements(targets)
	return []Set{
		{Name: BlockedTo4, Type: TypeIPv4, Counter: true, Elements: v4},
		{Name: BlockedTo6, Type: TypeIPv6, Counter: true, Elements: v6},
	}
}

// sessionCountRules count, in the sets' element counters, what the bastion
// sends to a target (output) or receives from it (input). They have no
// verdict: the chain goes on as if they were not there.
func sessionCountRules(inbound bool) []Rule {
	if inbound {
		return []Rule{
			{Match: []Match{SAddrIn{Set: FromTargets4}}, Comment: "per-target counters: received from targets"},
			{Match: []Match{SAddrIn{V6: true, Set: FromTargets6}}},
		}
	}
	return []Rule{
		{Match: []Match{DAddrIn{Set: ToTargets4}}, Comment: "per-target counters: sent to targets"},
		{Match: []Match{DAddrIn{V6: true, Set: ToTargets6}}},
	}
}

// protectRules drop every packet to a guarded address, protocol and port that crosses
// the forward hook. The bastion's own connections to the machines never do
// (they leave through the bridge's own device, or through output when it
// routes), so whatever is seen here comes from someone else, including a
// rogue host that spoofs the bastion's address.
func protectRules() []Rule {
	return []Rule{
		{Match: []Match{AddrProtoPortIn{Set: ProtectedSet4}, DAddrIn{Set: BlockedTo4}}, Stmts: []Stmt{Counter{}}, Verdict: "drop", Comment: "only the bastion reaches SSH/RDP (TCP and UDP)"},
		{Match: []Match{AddrProtoPortIn{V6: true, Set: ProtectedSet6}, DAddrIn{V6: true, Set: BlockedTo6}}, Stmts: []Stmt{Counter{}}, Verdict: "drop"},
	}
}

// vnetBridgeTable guards a VNet bridged on this host.
func vnetBridgeTable(in Input) Table {
	t := Table{Family: FamilyBridge, Name: VNetTable, Sets: append(protectedSets(in.Targets), blockedSets(in.Targets)...)}
	rules := networkProtected(in.Networks, &t, protectRules())
	// Nobody on the VNet may claim the bastion's addresses.
	for _, a := range in.VNetAddrs {
		switch {
		case a.Is4():
			rules = append(rules, Rule{Match: []Match{ARPSAddr{Addr: a}}, Verdict: "drop", Comment: "ARP spoofing of the bastion"})
		case !a.IsLinkLocalUnicast():
			rules = append(rules, Rule{Match: []Match{NDTarget{Addr: a}}, Verdict: "drop", Comment: "ND spoofing of the bastion (" + a.String() + ")"})
		}
	}
	t.Chains = []Chain{{Name: "forward", Hook: "forward", Policy: "accept", Rules: rules}}
	return t
}

// egress adds to the host table the sets and output rules that pin what
// the restricted processes may reach (invariant 13), and returns the notes
// that tell an auditor whose traffic they restrict. The rules come after
// the counting rules, which have no verdict.
func egress(in Input, host *Table) []string {
	eg := in.Egress
	var own Match
	var notes []string
	where := fmt.Sprintf("refused packets are logged to the kernel log (journalctl -k), prefix %q, at most 10 a minute", EgressLogPrefix)
	switch {
	case eg.Restrict == EgressOff:
		return []string{"egress: not restricted (firewall.restrict_egress: off); only the daemon's dial guard limits what it reaches"}
	case eg.Restrict == EgressAll:
		own = SKUID{UID: anyUID, Negate: true}
		notes = append(notes, "egress: every process of this host (firewall.restrict_egress: all) may open connections only to @egress4 and @egress6; "+
			"established connections and replies are kept; "+where)
	case !eg.UserFound:
		return []string{fmt.Sprintf("egress: NOT restricted: user %q (firewall.egress_user) does not exist on this host; "+
			"create it and run the daemon as it (User= in the unit), or set restrict_egress: all", eg.User)}
	default:
		own = SKUID{UID: eg.UID}
		notes = append(notes, fmt.Sprintf("egress: processes of user %s (uid %d, firewall.egress_user) may open connections only to @egress4 and @egress6; "+
			"other users are not restricted; %s", eg.User, eg.UID, where))
	}
	v4, v6 := egressElements(in)
	host.Sets = append(host.Sets,
		Set{Name: Egress4, Type: TypeIPv4ProtoPort, Elements: v4},
		Set{Name: Egress6, Type: TypeIPv6ProtoPort, Elements: v6},
	)
	netSets, netRules := networkEgress(in.Networks, own)
	host.Sets = append(host.Sets, netSets...)
	for i := range host.Chains {
		if host.Chains[i].Name != "output" {
			continue
		}
		host.Chains[i].Rules = append(host.Chains[i].Rules,
			Rule{Match: []Match{own, CtState{States: []string{"established", "related"}}}, Verdict: "accept",
				Comment: "egress pinned (invariant 13): connections already made, replies to the host's listeners"},
			// A connection systemd queued on 443 before the first ruleset
			// existed has no conntrack entry: its replies look new. They
			// come from 443/tcp and carry no SYN; a connection opened from
			// port 443 (by a process that may bind it) starts with one, and
			// is dropped below.
			Rule{Match: []Match{own, SPort{Proto: "tcp", Ports: []uint16{443}}, TCPNoSYN{}}, Verdict: "accept",
				Comment: "replies on the TLS listener's connections, also those accepted before the first ruleset"},
			Rule{Match: []Match{own, AddrProtoPortIn{Set: Egress4}}, Verdict: "accept", Comment: "the inventory and the services the config names"},
			Rule{Match: []Match{own, AddrProtoPortIn{V6: true, Set: Egress6}}, Verdict: "accept"},
		)
		host.Chains[i].Rules = append(host.Chains[i].Rules, netRules...)
		host.Chains[i].Rules = append(host.Chains[i].Rules,
			Rule{Match: []Match{own}, Stmts: []Stmt{LimitPerMinute{Rate: 10, Burst: 5}, Log{Prefix: EgressLogPrefix}}},
			Rule{Match: []Match{own}, Verdict: "drop", Comment: "anything else, loopback included"},
		)
	}
	return notes
}

// egressElements are what the restricted processes may reach: every
// target's offered ports with their protocols, the DNS resolvers, the
// syslog collector and the further destinations allowed.
func egressElements(in Input) (v4, v6 []Element) {
	v4, v6 = targetElements(in.Targets, func(t Target) []Port { return t.Ports })
	type key struct {
		addr netip.Addr
		pp   protoPort
	}
	seen := map[key]bool{}
	for _, e := range append(slices.Clone(v4), v6...) {
		seen[key{e.Prefix.Addr(), protoPort{e.Proto, e.Port}}] = true
	}
	add := func(a netip.Addr, p Port, comment string) {
		a = a.Unmap().WithZone("")
		for _, pp := range protoPorts([]Port{p}) {
			if seen[key{a, pp}] {
				continue
			}
			seen[key{a, pp}] = true
			e := Element{Prefix: netip.PrefixFrom(a, a.BitLen()), Proto: pp.proto, Port: pp.port, Comment: comment}
			if a.Is4() {
				v4 = append(v4, e)
			} else {
				v6 = append(v6, e)
			}
		}
	}
	for _, a := range in.Egress.DNS {
		add(a, Port{Number: 53, TCP: true, UDP: true}, "dns")
	}
	for _, ap := range in.Egress.Syslog {
		add(ap.Addr(), Port{Number: ap.Port(), TCP: true}, "syslog")
	}
	for _, ap := range in.Egress.Database {
		add(ap.Addr(), Port{Number: ap.Port(), TCP: true}, "database")
	}
	for _, ap := range in.Egress.IdentityProviders {
		add(ap.Addr(), Port{Number: ap.Port(), TCP: true}, "sso")
	}
	for _, e := range in.Egress.Allow {
		add(e.Addr, e.Port, "egress_allow")
	}
	return v4, v6
}
