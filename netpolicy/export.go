package netpolicy

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
)

// Export is the rule for a machine's own firewall where the bastion only sits
// in the VNet (attached mode): the guarded ports of that machine accept
// connections from the bastion and from nobody else. It is a table of its
// own (inet bastiond_guard) that only drops, so it composes with whatever
// firewall the machine already has. target names one of targets; bastion
// are where the bastion's connections come from: a single host's VNet
// addresses (as /32 and /128 prefixes; link-local ones are left out), or,
// for a cluster, the bastion subnets, so that every instance, those added
// later included, reaches the machine.
func Export(targets []Target, target string, bastion []netip.Prefix) (Ruleset, error) {
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
	interval := false
	for _, p := range bastion {
		a := p.Addr()
		if a.IsLinkLocalUnicast() {
			continue
		}
		if err := checkAddr(a); err != nil || !p.IsValid() {
			return Ruleset{}, fmt.Errorf("netpolicy: bastion address: %w", cmp.Or(err, fmt.Errorf("%s is not a prefix", p)))
		}
		p = netip.PrefixFrom(a.Unmap(), p.Bits()-(a.BitLen()-a.Unmap().BitLen())).Masked()
		interval = interval || !p.IsSingleIP()
		if p.Addr().Is4() {
			b4 = append(b4, Element{Prefix: p})
		} else {
			b6 = append(b6, Element{Prefix: p})
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
			{Name: "bastion4", Type: TypeIPv4, Interval: interval, Elements: b4},
			{Name: "bastion6", Type: TypeIPv6, Interval: interval, Elements: b6},
		},
		// Before the machine's own filter chains, so that an accept there
		// cannot let a stranger in first.
		Chains: []Chain{{Name: "input", Hook: "input", Priority: -5, Policy: "accept", Rules: rules}},
	}}}, nil
}
