// Package discover reads the bastion host's interfaces and addresses over
// netlink and checks them against the configuration: the public and VNet
// interfaces exist, and the VNet side lives in the dedicated bastion subnet.
package discover

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"github.com/vishvananda/netlink"
)

// Interface is one link and its addresses.
type Interface struct {
	Name  string
	Index int
	Up    bool
	// Addrs are the interface's addresses with their prefix lengths.
	Addrs []netip.Prefix
}

// Lookup reads the link called name and its addresses.
func Lookup(name string) (Interface, error) {
	link, err := netlink.LinkByName(name)
	if err != nil {
		return Interface{}, fmt.Errorf("discover: interface %q: %w", name, err)
	}
	addrs, err := netlink.AddrList(link, netlink.FAMILY_ALL)
	if err != nil {
		return Interface{}, fmt.Errorf("discover: addresses of %q: %w", name, err)
	}
	attrs := link.Attrs()
	ifc := Interface{Name: name, Index: attrs.Index, Up: attrs.OperState == netlink.OperUp || attrs.Flags&1 != 0}
	for _, a := range addrs {
		ip, ok := netip.AddrFromSlice(a.IP)
		if !ok {
			continue
		}
		ones, _ := a.Mask.Size()
		ifc.Addrs = append(ifc.Addrs, netip.PrefixFrom(ip.Unmap(), ones))
	}
	return ifc, nil
}

// CheckDedicatedSubnet enforces the dedicated-subnet rule on the VNet side:
// every global address of vnet lies inside one of subnets, and there is at
// least one. Link-local addresses are not counted: every IPv6 interface has
// one and they never carry sessions.
func CheckDedicatedSubnet(vnet Interface, subnets []netip.Prefix) error {
	var problems []string
	inside := 0
	for _, p := range vnet.Addrs {
		a := p.Addr()
		if a.IsLinkLocalUnicast() {
			continue
		}
		ok := false
		for _, s := range subnets {
			ok = ok || s.Contains(a)
		}
		if !ok {
			problems = append(problems, fmt.Sprintf("address %s of %s is outside the dedicated bastion subnet (%s)", a, vnet.Name, joinPrefixes(subnets)))
			continue
		}
		inside++
	}
	if inside == 0 && len(problems) == 0 {
		problems = append(problems, fmt.Sprintf("%s has no address inside the dedicated bastion subnet (%s)", vnet.Name, joinPrefixes(subnets)))
	}
	if len(problems) > 0 {
		return errors.New("discover: " + strings.Join(problems, "; "))
	}
	return nil
}

func joinPrefixes(ps []netip.Prefix) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.String()
	}
	return strings.Join(s, ", ")
}
