// Package broker is the only way a session reaches a machine. The proxy
// authenticates the user and checks the role; the broker then admits the
// session against the instance's capacity (weighted units per protocol) and
// the user's cap, dials the target's inventory address under a dial guard
// that refuses anything else (loopback, link-local, multicast, the host's own
// addresses, any address or port the inventory does not list), registers the
// session, writes its start record, relays bytes with exact counts, ends it
// on kill, revocation, idle or maximum time, and writes its end record,
// synced, before forgetting it. Records of sessions a crash interrupted are
// completed as "abandoned" at the next start.
package broker
