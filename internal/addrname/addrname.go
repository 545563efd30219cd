// Package addrname turns an address typed by a user into the name it shows
// as in the portal, by the small pattern language of an inventory network's
// target_name (records and audit events name the address itself):
//
//	{addr}     the address as Go's netip writes it: 10.20.1.5, 2001:db8:20::5
//	{dashed}   the same with '.' and ':' as '-': 10-20-1-5, 2001-db8-20--5
//	{network}  the network's name
//
// Anything else in a pattern is written as it is. A pattern names one
// address, so it holds {addr} or {dashed}; the default is "{addr}". Both the
// configuration (to check a pattern) and the access policy (to expand it)
// use this package, so that they agree on what a pattern means.
package addrname

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
)

// Default is the pattern of a network that gives none.
const Default = "{addr}"

// placeholders are the words a pattern may hold in braces.
var placeholders = []string{"addr", "dashed", "network"}

// Check says what is wrong with pattern, or nil.
func Check(pattern string) error {
	if len(pattern) > 128 {
		return errors.New("longer than 128 characters")
	}
	hasAddr := false
	for rest := pattern; rest != ""; {
		open := strings.IndexAny(rest, "{}")
		if open < 0 {
			break
		}
		if rest[open] == '}' {
			return errors.New("a '}' without its '{'")
		}
		end := strings.IndexByte(rest[open:], '}')
		if end < 0 {
			return errors.New("a '{' without its '}'")
		}
		word := rest[open+1 : open+end]
		switch word {
		case "addr", "dashed":
			hasAddr = true
		case "network":
		default:
			return fmt.Errorf("{%s} is not a placeholder; use {%s}", word, strings.Join(placeholders, "}, {"))
		}
		rest = rest[open+end+1:]
	}
	if strings.ContainsFunc(pattern, func(r rune) bool { return r < ' ' || r == 0x7f }) {
		return errors.New("holds a control character")
	}
	if !hasAddr {
		return errors.New("names no address: it needs {addr} or {dashed}, or every address would show under one name")
	}
	return nil
}

// Expand is the name of address a in network under pattern, which Check
// accepted. a is unmapped first: an IPv4 address typed as ::ffff:10.0.0.1
// names 10.0.0.1.
func Expand(pattern, network string, a netip.Addr) string {
	if pattern == "" {
		pattern = Default
	}
	addr := a.Unmap().String()
	return strings.NewReplacer(
		"{addr}", addr,
		"{dashed}", strings.NewReplacer(".", "-", ":", "-").Replace(addr),
		"{network}", network,
	).Replace(pattern)
}
