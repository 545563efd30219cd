package discover

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Seen is one entry of the kernel's tables for an interface: a neighbour
// (ARP or IPv6 neighbour discovery: an address and its MAC), or on a bridge
// a MAC the bridge learnt from a frame (no address).
type Seen struct {
	MAC   string
	Addr  netip.Addr // invalid for a bridge forwarding entry
	State string     // reachable, stale, delay, probe, permanent, learnt
}

// SeenOn lists what the kernel knows of the hosts on interface name: its IPv4
// and IPv6 neighbours with a MAC (entries still resolving, failed or without
// ARP are left out), and when it is a bridge, the MACs its ports learnt.
// Only hosts that sent something or were sent something show: this reads the
// kernel's tables, it does not probe the network.
func SeenOn(name string) ([]Seen, error) {
	link, err := netlink.LinkByName(name)
	if err != nil {
		return nil, fmt.Errorf("discover: interface %q: %w", name, err)
	}
	idx := link.Attrs().Index
	neighs, err := netlink.NeighList(idx, netlink.FAMILY_ALL)
	if err != nil {
		return nil, fmt.Errorf("discover: neighbours of %q: %w", name, err)
	}
	var out []Seen
	for _, n := range neighs {
		state := neighState(n.State)
		addr, ok := netip.AddrFromSlice(n.IP)
		if state == "" || !ok || len(n.HardwareAddr) == 0 {
			continue
		}
		out = append(out, Seen{MAC: n.HardwareAddr.String(), Addr: addr.Unmap(), State: state})
	}
	if link.Type() != "bridge" {
		return out, nil
	}
	fdb, err := netlink.NeighList(0, unix.AF_BRIDGE)
	if err != nil {
		return nil, fmt.Errorf("discover: forwarding table of bridge %q: %w", name, err)
	}
	for _, n := range fdb {
		// The ports' own MACs are permanent entries; learnt ones age.
		if n.MasterIndex != idx || n.State&netlink.NUD_PERMANENT != 0 || n.State&netlink.NUD_NOARP != 0 || len(n.HardwareAddr) == 0 {
			continue
		}
		if n.HardwareAddr[0]&1 != 0 { // multicast
			continue
		}
		out = append(out, Seen{MAC: n.HardwareAddr.String(), State: "learnt"})
	}
	return out, nil
}

func neighState(s int) string {
	switch {
	case s&netlink.NUD_PERMANENT != 0:
		return "permanent"
	case s&netlink.NUD_REACHABLE != 0:
		return "reachable"
	case s&netlink.NUD_DELAY != 0:
		return "delay"
	case s&netlink.NUD_PROBE != 0:
		return "probe"
	case s&netlink.NUD_STALE != 0:
		return "stale"
	}
	return "" // incomplete, failed, noarp, none: no host confirmed there
}

// Host is one MAC on the VNet that the inventory does not account for.
type Host struct {
	MAC string `json:"mac"`
	// Addrs are its addresses that are neither in the inventory nor the
	// bastion's own (link-local ones too when nothing accounts for the MAC);
	// empty when only the bridge saw its frames.
	Addrs []netip.Addr `json:"addrs"`
	// Targets names the inventory targets whose addresses this MAC also
	// answers for: one machine with an address nobody listed, or a host
	// that claims a target's address.
	Targets []string `json:"targets,omitempty"`
	// State is the freshest kernel state seen for it.
	State string `json:"state"`
	// BridgeOnly is set when no address is known, only frames on the bridge
	// (a quiet host, or a target the bastion has not talked to yet).
	BridgeOnly bool `json:"bridge_only,omitempty"`
}

// Unknown groups seen by MAC and returns the hosts that are not accounted
// for: a MAC is accounted for when every address it has is a target's or the
// bastion's own (link-local IPv6 addresses never count against it: every
// host has one). targets maps each inventory address to its target's name.
// The result is sorted by MAC.
func Unknown(seen []Seen, targets map[netip.Addr]string, own []netip.Addr) []Host {
	type acc struct {
		addrs, known, linkLocal []netip.Addr
		targets                 []string
		state                   string
	}
	byMAC := map[string]*acc{}
	for _, s := range seen {
		a, ok := byMAC[s.MAC]
		if !ok {
			a = &acc{}
			byMAC[s.MAC] = a
		}
		a.state = fresher(a.state, s.State)
		if !s.Addr.IsValid() {
			continue
		}
		switch name, isTarget := targets[s.Addr]; {
		case isTarget:
			if !slices.Contains(a.targets, name) {
				a.targets = append(a.targets, name)
			}
			a.known = append(a.known, s.Addr)
		case slices.Contains(own, s.Addr):
			a.known = append(a.known, s.Addr)
		case s.Addr.IsLinkLocalUnicast():
			if !slices.Contains(a.linkLocal, s.Addr) {
				a.linkLocal = append(a.linkLocal, s.Addr)
			}
		default:
			if !slices.Contains(a.addrs, s.Addr) {
				a.addrs = append(a.addrs, s.Addr)
			}
		}
	}
	var out []Host
	for mac, a := range byMAC {
		if len(a.known) > 0 && len(a.addrs) == 0 {
			continue // accounted for
		}
		if len(a.known) == 0 {
			// Nothing accounts for it: its link-local addresses help find it.
			a.addrs = append(a.addrs, a.linkLocal...)
		}
		bridgeOnly := len(a.addrs) == 0
		slices.SortFunc(a.addrs, netip.Addr.Compare)
		slices.Sort(a.targets)
		out = append(out, Host{MAC: mac, Addrs: a.addrs, Targets: a.targets, State: a.state, BridgeOnly: bridgeOnly})
	}
	slices.SortFunc(out, func(x, y Host) int { return strings.Compare(x.MAC, y.MAC) })
	return out
}

// fresher returns the state that says more recently that a host is there.
func fresher(a, b string) string {
	rank := map[string]int{"": 0, "learnt": 1, "stale": 2, "probe": 3, "delay": 4, "reachable": 5, "permanent": 6}
	if rank[b] > rank[a] {
		return b
	}
	return a
}
