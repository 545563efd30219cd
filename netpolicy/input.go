package netpolicy

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"time"
)

// Input is what Compile needs: the bastion's place in the network, the
// machines behind it, the settings of the public-side filter and what the
// restricted processes may reach. The daemon fills it from its
// configuration and from what it finds on the host (the VNet addresses,
// the egress user's uid, the resolvers), so that Compile stays pure.
type Input struct {
	// Mode is how the bastion host stands in the VNet. Required.
	Mode Mode
	// PublicInterface is the name of the interface that faces the users:
	// only 443 answers on it, and probes of anything else trap. Required.
	PublicInterface string
	// VNetAddrs are the bastion's own global addresses on the VNet
	// interface. In bridged mode nobody else on the VNet may claim them
	// (ARP and neighbour discovery).
	VNetAddrs []netip.Addr
	// Targets are the machines behind the bastion: their service ports
	// answer nobody but the bastion, the bastion's traffic with them is
	// counted per target, and they are what the restricted processes may
	// reach.
	Targets []Target
	// Networks are ranges of machines reached by address, guarded and
	// reached as the targets are.
	Networks []Network
	// Firewall tunes the filter on the public side.
	Firewall Firewall
	// Egress pins what processes of this host may connect to (invariant 13).
	Egress Egress
}

// Mode is how the bastion host stands in the protected network.
type Mode string

// The modes.
const (
	// ModeBridged: the VNet is a bridge on this host; the guard is a table
	// of the bridge family.
	ModeBridged Mode = "bridged"
	// ModeRouted: this host routes the VNet; the guard is in its forward hook.
	ModeRouted Mode = "routed"
	// ModeAttached: this host only sits in the VNet; each machine applies
	// the rules that Export gives for it.
	ModeAttached Mode = "attached"
)

// Target is one machine behind the bastion.
type Target struct {
	// Name names the machine in set element comments and counters. Required.
	Name string
	// Addresses are the machine's addresses, IPv4 or IPv6, without zones.
	// An address belongs to one target; should one be listed under two,
	// the first target keeps it. At least one.
	Addresses []netip.Addr
	// Ports are the services the bastion offers on the machine, each with
	// its protocols (SSH on TCP, RDP on TCP and UDP, tunnel ports as the
	// configuration lists them). They are guarded, as 22/tcp and
	// 3389/tcp+udp always are, and open to the restricted processes.
	Ports []Port
}

// Port is a port number and the transport protocols it is served on: at
// least one of TCP and UDP.
type Port struct {
	Number   uint16
	TCP, UDP bool
}

// String is the port as "22/tcp", "3389/tcp+udp" or "5353/udp".
func (p Port) String() string {
	n := strconv.Itoa(int(p.Number))
	switch {
	case p.TCP && p.UDP:
		return n + "/tcp+udp"
	case p.UDP:
		return n + "/udp"
	case p.TCP:
		return n + "/tcp"
	}
	return n + "/none"
}

// Endpoint is an address and a port with its protocols.
type Endpoint struct {
	Addr netip.Addr
	Port Port
}

// Firewall tunes the public side. A source, for the blocklist and the rate
// meters, is an IPv4 address or an IPv6 /64 (SourceBits6).
type Firewall struct {
	// AdminCIDRs are sources that are never blocklisted: their probes of
	// closed ports are dropped without trapping. IPv4 or IPv6.
	AdminCIDRs []netip.Prefix
	// TrapThreshold is the number of closed-port probes, within about a
	// minute, that blocklists a source: 1 blocks at the first. At least 1.
	TrapThreshold int
	// BlockFor is how long a blocklisted source is dropped, 443 included.
	// At least a second: nftables counts set timeouts in whole seconds and
	// reads zero as "never expires".
	BlockFor time.Duration
	// ExemptPorts are public ports (TCP and UDP) that are dropped without
	// trapping, such as 80 for a user who types http://. None is 0.
	ExemptPorts []uint16
	// ConnRate is the new connections per second one source may open to
	// 443/tcp, in bursts of twice that. At least 1.
	ConnRate int
	// Balancers are the TCP load balancers in front of 443/tcp, IPv4 or
	// IPv6: every user comes through them, so their connections to
	// 443/tcp pass before the blocklist and the connection-rate meter, and
	// their probes of closed ports never trap. None: no such rules.
	Balancers []netip.Prefix
}

// EgressMode says whose outbound connections the egress chain restricts.
type EgressMode string

// The egress modes.
const (
	// EgressUser restricts the processes of Egress.User (the daemon's).
	EgressUser EgressMode = "user"
	// EgressAll restricts every process of the host.
	EgressAll EgressMode = "all"
	// EgressOff adds no egress rules.
	EgressOff EgressMode = "off"
)

// Egress is what the egress chain (invariant 13) restricts and what it
// lets through: the restricted processes may open connections to every
// target's Ports and to the destinations below, and nowhere else, loopback
// included. Connections made to the host (443, metrics) and their replies
// are never cut.
type Egress struct {
	// Restrict says whose traffic is restricted. Required.
	Restrict EgressMode
	// User is the name of the restricted user in EgressUser mode, for the
	// notes that tell an auditor whose traffic the rules restrict.
	// Required in that mode.
	User string
	// UID is User's uid on this host, when UserFound. A user that does not
	// exist restricts nothing, and the ruleset's notes say so.
	UID       uint32
	UserFound bool
	// DNS are the resolvers the restricted processes may ask, on TCP and
	// UDP 53.
	DNS []netip.Addr
	// Syslog are the addresses and TCP port of the audit trail's syslog
	// collector.
	Syslog []netip.AddrPort
	// Database are the addresses and TCP ports of the state store's
	// PostgreSQL servers.
	Database []netip.AddrPort
	// IdentityProviders are the addresses and TCP ports of the single
	// sign-on providers' issuers.
	IdentityProviders []netip.AddrPort
	// Allow are further destinations (an identity provider's endpoints on
	// other hosts than its issuer's, a database).
	Allow []Endpoint
}

// check refuses an Input that Compile cannot turn into the ruleset it
// describes, naming the field at fault.
func (in Input) check() error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf("netpolicy: "+format, a...)) }
	if in.PublicInterface == "" {
		bad("no public interface")
	}
	switch in.Mode {
	case ModeBridged, ModeRouted, ModeAttached:
	default:
		bad("unknown mode %q (bridged, routed or attached)", in.Mode)
	}
	fw := in.Firewall
	if fw.TrapThreshold < 1 {
		bad("firewall: trap threshold %d: at least 1 probe", fw.TrapThreshold)
	}
	if fw.BlockFor < time.Second {
		bad("firewall: block time %s: at least 1s", fw.BlockFor)
	}
	if fw.ConnRate < 1 {
		bad("firewall: connection rate %d: at least 1 a second", fw.ConnRate)
	}
	for _, p := range fw.AdminCIDRs {
		if !p.IsValid() {
			bad("firewall: admin source %s is not a prefix", p)
		}
	}
	for _, p := range fw.Balancers {
		if !p.IsValid() || p.Bits() == 0 {
			bad("firewall: balancer %s is not a prefix of some addresses", p)
		}
	}
	for _, p := range fw.ExemptPorts {
		if p == 0 {
			bad("firewall: exempt port 0 is not a port")
		}
	}
	for i, t := range in.Targets {
		if t.Name == "" {
			bad("target %d has no name", i)
		}
		if len(t.Addresses) == 0 {
			bad("target %q has no address", t.Name)
		}
		for _, a := range t.Addresses {
			if err := checkAddr(a); err != nil {
				bad("target %q: %v", t.Name, err)
			}
		}
		for _, p := range t.Ports {
			if err := checkPort(p); err != nil {
				bad("target %q: %v", t.Name, err)
			}
		}
	}
	for i, n := range in.Networks {
		if n.Name == "" {
			bad("network %d has no name", i)
		}
		if len(n.Prefixes) == 0 {
			bad("network %q has no prefix", n.Name)
		}
		for _, p := range n.Prefixes {
			switch {
			case !p.IsValid():
				bad("network %q: a prefix is missing", n.Name)
			case p.Addr().Is4In6():
				bad("network %q: prefix %s is IPv4-mapped: give the IPv4 prefix", n.Name, p)
			}
		}
		for _, p := range n.Ports {
			if err := checkPort(p); err != nil {
				bad("network %q: %v", n.Name, err)
			}
		}
	}
	eg := in.Egress
	switch eg.Restrict {
	case EgressUser:
		if eg.User == "" {
			bad("egress: restricted to a user, but no user named")
		}
	case EgressAll, EgressOff:
	default:
		bad("egress: unknown restriction %q (user, all or off)", eg.Restrict)
	}
	for _, a := range eg.DNS {
		if !a.IsValid() {
			bad("egress: resolver %s is not an address", a)
		}
	}
	for _, ap := range eg.Syslog {
		if !ap.IsValid() || ap.Port() == 0 {
			bad("egress: syslog collector %s is not an address and port", ap)
		}
	}
	for _, ap := range eg.Database {
		if !ap.IsValid() || ap.Port() == 0 {
			bad("egress: database server %s is not an address and port", ap)
		}
	}
	for _, ap := range eg.IdentityProviders {
		if !ap.IsValid() || ap.Port() == 0 {
			bad("egress: identity provider %s is not an address and port", ap)
		}
	}
	for _, e := range eg.Allow {
		if !e.Addr.IsValid() {
			bad("egress: allowed destination %s is not an address", e.Addr)
		}
		if err := checkPort(e.Port); err != nil {
			bad("egress: allowed destination %s: %v", e.Addr, err)
		}
	}
	return errors.Join(errs...)
}

// checkAddr refuses what cannot be a set element: no address, or one with
// a zone (nftables matches addresses, not interfaces).
func checkAddr(a netip.Addr) error {
	switch {
	case !a.IsValid():
		return errors.New("an address is missing")
	case a.Zone() != "":
		return fmt.Errorf("address %s has a zone", a)
	}
	return nil
}

func checkPort(p Port) error {
	switch {
	case p.Number == 0:
		return fmt.Errorf("port %s: 0 is not a port", p)
	case !p.TCP && !p.UDP:
		return fmt.Errorf("port %d has no protocol (TCP, UDP or both)", p.Number)
	}
	return nil
}
