// Package broker is the only way a session reaches a machine. The proxy
// authenticates the user and checks the role; the broker then admits the
// session against the instance's capacity (weighted units per protocol) and
// the user's cap, dials the target's inventory address under a dial guard
// that refuses anything else (loopback, link-local, multicast, the host's own
// addresses, any address or port the inventory does not list), registers the
// session, writes its start record, relays bytes with exact counts, ends it
// on kill, revocation, idle or maximum time, and writes its end record,
// synced, before forgetting it.
//
// Each broker keeps a live journal of its own (Options.LiveDir), locked for
// its whole life, with an entry per open session, so that two processes can
// run at once during an upgrade, each with its sessions. The sessions in the
// journal of a process that is gone (its lock is free) are recorded as
// "abandoned" by the next broker to start, or by a running one's sweeper
// within 30 seconds.
//
// While the audit file cannot be written (disk full, read-only), new
// sessions are refused (ErrAuditUnavailable), live ones go on, and their end
// records wait in memory, in order, until a write succeeds.
package broker
