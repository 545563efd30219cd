// Package source says who a client is, for every per-source limit of the
// bastion (the firewall's blocklist and rate meter, the front door's caps
// and sign-in throttle): an IPv4 address, or the IPv6 /64 an address lies
// in. One
// subscriber's link gets a whole /64 (RFC 6177 and common practice), so a
// client rotating addresses inside it is still one source: counting each
// IPv6 address alone would let it step around every per-source limit.
package source

import "net/netip"

// IPv6Bits is the length of the IPv6 prefix that counts as one source.
const IPv6Bits = 64

// Of returns the source a is part of: a's /32 for IPv4 (an IPv4-mapped IPv6
// address counts as the IPv4 address), its /64 for IPv6. The zero Addr
// gives the zero Prefix.
func Of(a netip.Addr) netip.Prefix {
	if !a.IsValid() {
		return netip.Prefix{}
	}
	a = a.Unmap()
	bits := 32
	if a.Is6() {
		bits = IPv6Bits
	}
	p, _ := a.Prefix(bits)
	return p
}
