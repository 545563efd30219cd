package config

import (
	"fmt"
	"net/netip"
	"regexp"

	"github.com/bastiond/bastiond/internal/addrname"
)

// The widest network prefixes, as prefix lengths. A network is a grant: a
// role that names it reaches every address inside, so a prefix much wider
// than any real site is more likely a typo (::/0 for ::/64) than intent.
// IPv4's /8 is its widest private block (10.0.0.0/8); IPv6's /48 is what
// a site is allocated (RFC 6177), and wider than every LAN it holds. The
// firewall's interval sets cost the same for any width: the bound is
// about what a grant reaches, not about rules.
const (
	MaxNetworkBits4 = 8
	MaxNetworkBits6 = 48
)

var networkName = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

// never are the prefixes no network may overlap, whatever the bastion's
// place: the daemon never dials them (invariant 5).
var never = []struct {
	prefix netip.Prefix
	what   string
}{
	{netip.MustParsePrefix("0.0.0.0/8"), "0.0.0.0/8 (this host on this network)"},
	{netip.MustParsePrefix("127.0.0.0/8"), "loopback (127.0.0.0/8)"},
	{netip.MustParsePrefix("169.254.0.0/16"), "link-local (169.254.0.0/16)"},
	{netip.MustParsePrefix("224.0.0.0/4"), "multicast (224.0.0.0/4)"},
	{netip.MustParsePrefix("240.0.0.0/4"), "reserved and broadcast (240.0.0.0/4)"},
	{netip.MustParsePrefix("::/128"), "the unspecified address (::)"},
	{netip.MustParsePrefix("::1/128"), "loopback (::1)"},
	{netip.MustParsePrefix("::ffff:0:0/96"), "IPv4-mapped addresses (::ffff:0:0/96; write the IPv4 prefix)"},
	{netip.MustParsePrefix("fe80::/10"), "link-local (fe80::/10)"},
	{netip.MustParsePrefix("ff00::/8"), "multicast (ff00::/8)"},
}

// validateNetworks checks inventory.networks against each other, the
// targets (names) and the bastion's subnets, and returns their names.
func (c *Config) validateNetworks(v *validator, targets map[string]bool) map[string]bool {
	names := make(map[string]bool, len(c.Inventory.Networks))
	type owned struct {
		prefix netip.Prefix
		name   string
	}
	var seen []owned
	for i, n := range c.Inventory.Networks {
		path := fmt.Sprintf("inventory.networks[%d]", i)
		switch {
		case n.Name == "":
			v.errorf(path+".name", "required: what roles grant as network:NAME")
		case !networkName.MatchString(n.Name):
			v.errorf(path+".name", "%q is not a network name (1 to 63 of a-z, 0-9 and '-')", n.Name)
		case names[n.Name]:
			v.errorf(path+".name", "network %q is listed twice", n.Name)
		case targets[n.Name]:
			v.errorf(path+".name", "%q is already a target's name: a name is a target or a network, not both", n.Name)
		}
		names[n.Name] = true
		if len(n.CIDRs) == 0 {
			v.errorf(path+".cidrs", "required: the network's prefixes, such as 10.20.0.0/16 or 2001:db8:20::/48")
		}
		for j, p := range n.CIDRs {
			cp := fmt.Sprintf("%s.cidrs[%d]", path, j)
			if why := c.networkPrefixProblem(p); why != "" {
				v.errorf(cp, "%s %s", p, why)
				continue
			}
			for _, o := range seen {
				if o.prefix.Overlaps(p) {
					if o.name == n.Name {
						v.errorf(cp, "%s overlaps %s, listed before in this network", p, o.prefix)
					} else {
						v.errorf(cp, "%s overlaps network %q's %s: an address belongs to one network", p, o.name, o.prefix)
					}
				}
			}
			seen = append(seen, owned{p, n.Name})
		}
		if n.Ports.SSH == 0 && n.Ports.RDP == 0 && len(n.Ports.Tunnel) == 0 {
			v.errorf(path+".ports", "required: at least one of ssh, rdp or tunnel")
		}
		if n.SSHCertificates && n.Ports.SSH == 0 {
			v.errorf(path+".ssh_certificates", "needs ports.ssh: certificates are for SSH logins")
		}
		for j, p := range n.Ports.Tunnel {
			if p.Number == 0 {
				v.errorf(fmt.Sprintf("%s.ports.tunnel[%d]", path, j), "0 is not a port")
			}
		}
		for j, tag := range n.Tags {
			if !plainName.MatchString(tag) {
				v.errorf(fmt.Sprintf("%s.tags[%d]", path, j), "%q is not a tag (letters, digits, '_', '.', '-', '@')", tag)
			}
		}
		if n.TargetName != "" {
			if err := addrname.Check(n.TargetName); err != nil {
				v.errorf(path+".target_name", "%q: %v", n.TargetName, err)
			}
		}
	}
	if len(c.Inventory.Networks) > 0 {
		// A target named like an address would be ambiguous with a
		// typed address: which one did the user mean?
		for i, t := range c.Inventory.Targets {
			if a, err := netip.ParseAddr(t.Name); err == nil {
				v.errorf(fmt.Sprintf("inventory.targets[%d].name", i), "%q is an address: with inventory.networks a typed address "+
					"must mean that address, so a target may not be named like one", a)
			}
		}
	}
	return names
}

// networkPrefixProblem says why p cannot be a network's prefix, or "".
func (c *Config) networkPrefixProblem(p netip.Prefix) string {
	a := p.Addr()
	switch {
	case a.Zone() != "":
		return "has a zone: a network is addresses, not an interface"
	case a.Is4() && p.Bits() < MaxNetworkBits4:
		return fmt.Sprintf("is wider than an IPv4 /%d, the widest network allowed", MaxNetworkBits4)
	case a.Is6() && !a.Is4In6() && p.Bits() < MaxNetworkBits6:
		return fmt.Sprintf("is wider than an IPv6 /%d, the widest network allowed (a site's allocation)", MaxNetworkBits6)
	}
	for _, n := range never {
		if n.prefix.Overlaps(p) {
			return "overlaps " + n.what + ": the bastion never connects there"
		}
	}
	for _, s := range c.Bastion.Subnets {
		if s.Overlaps(p) {
			return "overlaps the dedicated bastion subnet " + s.String() + ": the bastion's own addresses are never a destination"
		}
	}
	return ""
}
