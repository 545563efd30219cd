// Package handover holds every piece of a binary upgrade that is not the
// state it carries: the old process hands its sockets to the new one, and
// both go on serving, the old one its live sessions, the new one everything
// else, without a connection dropped.
//
// Processes (process.go): the old process starts the new binary with its
// descriptors and one end of a control socket, and both then exchange JSON
// messages on it. This part knows nothing of what the messages say (package
// daemon does); it spawns, hands over files by name, and frames messages.
// It is written for bastiond rather than taken from
// github.com/cloudflare/tableflip, which refuses a second upgrade until the
// first old process has exited: here an old process serves its sessions for
// up to an hour after an upgrade, and an admin must be able to ship a fix
// meanwhile.
//
// QUIC (lineage.go, link.go): TCP needs nothing more than its listening
// socket, since an accepted connection is the process's that accepted it.
// A UDP socket, though, delivers every datagram to whichever process reads
// it, so the successor alone reads, and hands on over a Link the datagrams
// of the connections its predecessor holds. It tells them by their
// Destination Connection ID: every process of a Lineage issues IDs
// (ConnIDs) that say which generation issued them.
//
// The server's side (pausing, retiring, exporting web sessions) is
// proxy.Server's; the front door's gates (package proxy/gate) route the
// datagrams.
package handover
