package netpolicy

import (
	"fmt"
	"net/netip"
	"slices"
)

// Export is the rule for a machine's own firewall where the bastion only sits
// in the VNet (attached mode): the guarded ports of that machine accept
// connections from the bastion's VNet addresses and from nobody else. It is
// a table of its own (inet bastiond_guard) that only drops, so it composes
// with whatever firewall the machine already has. target names one of
// targets; bastion are the bastion's VNet addresses (link-local ones are
// left out).
func Export(targets []Target, target string, bastion []netip.Addr) (Ruleset, error) {
	i := slices.IndexFunc(targets, func(t Target) bool { return t.Name == target })
	if i < 0 {
		return Ruleset{}, fmt.Errorf("netpolicy: target %q is not in the inventory", target)
	}
	t := targets[i]
	for _, p := range t.Ports {
		if err := checkPort(p); err != nil {
			return Ruleset{}, fmt.Errorf("netpolicy: target %q: %w", t.Name, err)
		}
	}

	var guarded []Element
	for _, pp := range protoPorts(guardedPorts(t)) {
		guarded = append(guarded, Element{Proto: pp.proto, Port: pp.port})
	}
	var b4, b6 []Element
	for _, a := range bastion {
		if a.IsLinkLocalUnicast() {
			continue
		}
		if err := checkAddr(a); err != nil {
			return Ruleset{}, fmt.Errorf("netpolicy: bastion address: %w", err)
		}
		e := Element{Prefix: netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen())}
		if a.Unmap().Is4() {
			b4 = append(b4, e)
		} else {
			b6 = append(b6, e)
		}
	}
	rules := []Rule{
		{Match: []Match{NFProto{}, ProtoPortIn{Set: "guarded"}, SAddrIn{Set: "bastion4", Negate: true}}, Verdict: "drop",
			Comment: "only the bastion reaches " + t.Name + "'s SSH/RDP (TCP and UDP)"},
		{Match: []Match{NFProto{V6: true}, ProtoPortIn{Set: "guarded"}, SAddrIn{V6: true, Set: "bastion6", Negate: true}}, Verdict: "drop"},
	}
	return Ruleset{Tables: []Table{{
		Family: FamilyInet,
		Name:   GuardName,
		Sets: []Set{
			{Name: "guarded", Type: TypeProtoPort, Elements: guarded},
			{Name: "bastion4", Type: TypeIPv4, Elements: b4},
			{Name: "bastion6", Type: TypeIPv6, Elements: b6},
		},
		// Before the machine's own filter chains, so that an accept there
		// cannot let a stranger in first.
		Chains: []Chain{{Name: "input", Hook: "input", Priority: -5, Policy: "accept", Rules: rules}},
	}}}, nil
}
