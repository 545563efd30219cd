package netpolicy

import (
	"net/netip"
)

// Network is a range of machines reached by address (an inventory network):
// every address inside Prefixes offers Ports through the bastion. Its
// machines are guarded, and reached by the restricted processes, as a
// target's are, through interval sets keyed by prefix . protocol . port:
// the number of rules stays the same however many networks and prefixes
// there are.
type Network struct {
	// Name names the network in set element comments. Required.
	Name string
	// Prefixes are IPv4 and IPv6 prefixes, not IPv4-mapped.
	// The daemon's configuration keeps them apart from each other and
	// from the bastion's own subnets. At least one.
	Prefixes []netip.Prefix
	// Ports are the services the bastion offers on every address, as a
	// target's Ports.
	Ports []Port
}

// Names of the networks' sets, present only with networks.
const (
	NetProtected4 = "net_protected4" // VNet guard: address ranges . guarded port
	NetProtected6 = "net_protected6"
	NetEgress4    = "net_egress4" // egress: address ranges . offered port
	NetEgress6    = "net_egress6"
)

// networkElements lists prefix . protocol . port for every network and
// every port that ports returns for it, per family, each named after its
// network.
func networkElements(networks []Network, ports func(Network) []Port) (v4, v6 []Element) {
	for _, n := range networks {
		for _, pp := range protoPorts(ports(n)) {
			for _, p := range n.Prefixes {
				e := Element{Prefix: p.Masked(), Proto: pp.proto, Port: pp.port, Comment: n.Name}
				if p.Addr().Is4() {
					v4 = append(v4, e)
				} else {
					v6 = append(v6, e)
				}
			}
		}
	}
	return v4, v6
}

// networkProtected adds to t the networks' guard sets and the rules that
// drop what crosses the forward hook to a guarded port of their addresses,
// as protectRules do for the targets. Nothing without networks.
func networkProtected(networks []Network, t *Table, rules []Rule) []Rule {
	if len(networks) == 0 {
		return rules
	}
	v4, v6 := networkElements(networks, func(n Network) []Port { return append(append([]Port(nil), alwaysProtected...), n.Ports...) })
	t.Sets = append(t.Sets,
		Set{Name: NetProtected4, Type: TypeIPv4ProtoPort, Interval: true, Counter: true, Elements: v4},
		Set{Name: NetProtected6, Type: TypeIPv6ProtoPort, Interval: true, Counter: true, Elements: v6},
	)
	return append(rules,
		Rule{Match: []Match{AddrProtoPortIn{Set: NetProtected4}}, Stmts: []Stmt{Counter{}}, Verdict: "drop", Comment: "only the bastion reaches the networks' SSH/RDP"},
		Rule{Match: []Match{AddrProtoPortIn{V6: true, Set: NetProtected6}}, Stmts: []Stmt{Counter{}}, Verdict: "drop"},
	)
}

// networkEgressSets are the sets of the networks' offered ports that the
// restricted processes may reach, and the rules that accept them (own
// matches the restricted processes). Nothing without networks.
func networkEgress(networks []Network, own Match) ([]Set, []Rule) {
	if len(networks) == 0 {
		return nil, nil
	}
	v4, v6 := networkElements(networks, func(n Network) []Port { return n.Ports })
	return []Set{
			{Name: NetEgress4, Type: TypeIPv4ProtoPort, Interval: true, Elements: v4},
			{Name: NetEgress6, Type: TypeIPv6ProtoPort, Interval: true, Elements: v6},
		}, []Rule{
			{Match: []Match{own, AddrProtoPortIn{Set: NetEgress4}}, Verdict: "accept", Comment: "the inventory's networks, on their ports"},
			{Match: []Match{own, AddrProtoPortIn{V6: true, Set: NetEgress6}}, Verdict: "accept"},
		}
}
