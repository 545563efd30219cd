// Package addrport normalizes IP address and port pairs the way every
// per-client record of the bastion keeps them: an IPv4 client reaching a
// dual-stack socket shows as an IPv4-mapped IPv6 address (::ffff:192.0.2.1),
// and is recorded, compared and logged as the IPv4 address it is.
package addrport

import "net/netip"

// Unmap returns ap with its address unmapped (netip.Addr.Unmap) and the
// same port. The zero AddrPort stays zero.
func Unmap(ap netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

// Parse parses s, an "address:port" such as http.Request.RemoteAddr or a
// net.Addr's String, and returns it unmapped; the zero AddrPort if s is
// not an IP address and port.
func Parse(s string) netip.AddrPort {
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		return netip.AddrPort{}
	}
	return Unmap(ap)
}
