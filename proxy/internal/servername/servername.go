// Package servername compares the names a client gives for the bastion (a
// TLS server name, a Host header, an Origin) with the configured one.
package servername

import "strings"

// Same compares a server name a client sent with the configured one: DNS
// names are case-insensitive, and a trailing dot names the same host.
func Same(got, want string) bool {
	return got != "" && strings.EqualFold(strings.TrimSuffix(got, "."), strings.TrimSuffix(want, "."))
}
