// Package auditship copies the audit trail to where security teams collect
// logs: journald, with structured fields, and syslog collectors (RFC 5424
// over TCP or TLS, octet-counted framing as RFC 6587 and RFC 5425 describe),
// and, in a cluster, the table of the shared PostgreSQL database where
// `bastionctl audit events` reads every instance's lines (Database).
//
// The audit file stays the source of truth. The broker's writer hands
// Shipper.Ship every line it made durable, in order, and Ship returns at
// once: each destination has its own bounded queue and goroutine, so that a
// slow or absent collector never holds up a session or the writer. When a
// queue is full the oldest lines are dropped and counted. Delivery to a
// syslog collector is at least once: lines that may have been in flight when
// a connection broke are sent again after the next connect, and each
// message carries its line's SHA-256 (the "prev" of the line after it) so
// that a collector can drop the duplicates; the database keys its rows by
// that hash, and a batch sent again adds nothing twice. Failures are
// metrics and audit events (audit_shipping_failed once per outage,
// audit_shipping_resumed when the backlog has gone out), never silent.
package auditship
