package access

import (
	"net/netip"
	"slices"
	"strings"

	"github.com/bastiond/bastiond/internal/addrname"
)

// Network is an inventory network: every address inside its prefixes is a
// target with its ports and tags, granted by roles that name
// "network:NAME" or one of its tags.
type Network struct {
	Name        string
	Description string
	Prefixes    []netip.Prefix
	Tags        []string
	SSH, RDP    uint16   // 0: not offered
	Tunnel      []uint16 // further ports for native tunnels
	// TargetName is the pattern an address shows as (internal/addrname).
	TargetName      string
	SSHCertificates bool
}

// WithNetworks returns a copy of p that also resolves addresses inside
// networks (see Target). The configuration keeps the networks apart from
// each other and from the named targets.
func (p *Policy) WithNetworks(networks []Network) *Policy {
	q := *p
	q.networks = make([]Network, len(networks))
	for i, n := range networks {
		n.Prefixes, n.Tags, n.Tunnel = slices.Clone(n.Prefixes), slices.Clone(n.Tags), slices.Clone(n.Tunnel)
		q.networks[i] = n
	}
	return &q
}

// ParseAddress reads an address as a user types it: 10.1.2.3,
// 2001:db8::5 or [2001:db8::5], unmapped (::ffff:10.1.2.3 is 10.1.2.3). No
// zone: a zone names an interface of the client's host, which means
// nothing on the bastion.
func ParseAddress(s string) (netip.Addr, bool) {
	if strings.HasPrefix(s, "[") && strings.HasSuffix(s, "]") {
		s = s[1 : len(s)-1]
	}
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" {
		return netip.Addr{}, false
	}
	return a.Unmap(), true
}

// addressTarget is the address s as a target of the network it lies in.
func (p *Policy) addressTarget(s string) (Target, bool) {
	if len(p.networks) == 0 {
		return Target{}, false
	}
	a, ok := ParseAddress(s)
	if !ok {
		return Target{}, false
	}
	for _, n := range p.networks {
		if slices.ContainsFunc(n.Prefixes, func(pf netip.Prefix) bool { return pf.Contains(a) }) {
			return Target{Name: a.String(), Description: n.Description, Tags: n.Tags, SSH: n.SSH, RDP: n.RDP, Tunnel: n.Tunnel,
				SSHCertificates: n.SSHCertificates, Network: n.Name, Address: a, Display: addrname.Expand(n.TargetName, n.Name, a)}, true
		}
	}
	return Target{}, false
}

// ReachableNetworks lists, in inventory order, the networks whose
// addresses user may open something on, as Reachable with Network set. The answer is the same for every
// address of a network: roles grant a network whole.
func (p *Policy) ReachableNetworks(who Principal) []Reachable {
	var out []Reachable
	for _, n := range p.networks {
		if len(n.Prefixes) == 0 {
			continue
		}
		// Any address of the network stands for all of them.
		t, ok := p.addressTarget(n.Prefixes[0].Addr().String())
		if !ok {
			continue
		}
		r, ok := p.reachable(t, who)
		if !ok {
			continue
		}
		r.Name, r.Network = n.Name, true
		for _, pf := range n.Prefixes {
			r.CIDRs = append(r.CIDRs, pf.String())
		}
		out = append(out, r)
	}
	return out
}
