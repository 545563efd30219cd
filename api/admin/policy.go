package admin

import (
	"fmt"
	"net/netip"
	"time"
)

// CountersView is the answer to GET /v1/policy/counters: the nftables
// counters of every target, summed over its addresses and ports.
type CountersView struct {
	// Since is when counting started (the daemon's first apply); counts
	// carry over reloads and drift repairs.
	Since   time.Time        `json:"since"`
	Targets []TargetCounters `json:"targets"`
}

// TargetCounters are one target's counters.
type TargetCounters struct {
	Target string `json:"target"`
	// Sent and Received are the bastion's traffic with the target's offered
	// ports; Blocked is what the VNet guard dropped on its way to the
	// target's guarded ports (zero in attached mode).
	Sent     Traffic `json:"sent"`
	Received Traffic `json:"received"`
	Blocked  Traffic `json:"blocked"`
}

// Traffic is what one counter saw.
type Traffic struct {
	Packets uint64 `json:"packets"`
	Bytes   uint64 `json:"bytes"`
}

// PolicyView is the answer to GET /v1/policy.
type PolicyView struct {
	Text        string   `json:"text"`
	Differences []string `json:"differences"`
}

// BlockEntry is one blocklisted source: an IPv4 address, as a /32, or an
// IPv6 /64 (the firewall counts a /64 as one source).
type BlockEntry struct {
	Prefix  netip.Prefix  `json:"prefix"`
	Expires time.Duration `json:"expires_ns"`
}

// ParseSource reads an address or a prefix as a blocklist source to clear:
// an address is the /32 or /128 of itself (the daemon clears the /64 it
// lies in).
func ParseSource(s string) (netip.Prefix, error) {
	if p, err := netip.ParsePrefix(s); err == nil {
		return p, nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" {
		return netip.Prefix{}, fmt.Errorf("parse source %q: not an IP address or prefix", s)
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// Discovery is the answer to GET /v1/targets/discover.
type Discovery struct {
	// Interface is the VNet interface whose tables were read.
	Interface string `json:"interface"`
	// Seen is how many neighbour and bridge entries were read.
	Seen    int           `json:"seen"`
	Unknown []UnknownHost `json:"unknown"`
}

// UnknownHost is one MAC on the VNet the inventory does not account for.
type UnknownHost struct {
	MAC string `json:"mac"`
	// Addrs are its addresses outside the inventory.
	Addrs []netip.Addr `json:"addrs"`
	// Targets are inventory targets whose addresses this MAC also holds.
	Targets []string `json:"targets,omitempty"`
	State   string   `json:"state"`
	// BridgeOnly: no address known, only its frames on the VNet bridge.
	BridgeOnly bool `json:"bridge_only,omitempty"`
}
