// Package pgstore is the PostgreSQL backend of internal/store, which every
// instance of a bastiond cluster shares.
//
// The buckets are one table, kv (see migrations/0001_kv.sql): bucket, key
// and value, keys ordered bytewise as bbolt orders them. Update runs fn in
// a SERIALIZABLE transaction and runs it again, a bounded number of times
// with a jittered back-off, when PostgreSQL aborts it for a serialization
// failure (40001) or a deadlock (40P01): that is the interface's contract
// (fn may run more than once), and what makes a ticket redeemed by two
// instances at once go to one of them. View runs fn in a REPEATABLE READ
// READ ONLY transaction: one snapshot, which is all a reader needs, never
// aborted for a conflict and never waiting. (SERIALIZABLE READ ONLY
// DEFERRABLE would also be free of the read-only anomaly, but it may wait
// for a safe snapshot under writes; the stores decide what to write inside
// Update, which is serializable, so they need no more from View.) Update
// does not ask for READ WRITE: a database an operator has made read-only
// (default_transaction_read_only) stays so, and a write fails.
//
// Every failure to reach the server (connecting, TLS, authentication, a
// connection lost, a statement without an answer within the statement
// timeout, a read-only database, a server shutting down) wraps
// store.ErrUnavailable, and the transaction it happened in is rolled back:
// nothing of it was written. The one exception PostgreSQL shares with
// every database is a connection lost while COMMIT was under way, whose
// outcome the client cannot know; Update then returns ErrUnavailable too.
//
// Connections: the connection string (libpq's keyword=value form or a
// postgres:// URL, password included) is read from a file or a systemd
// credential, never from bastiond's YAML. TLS is required and verified
// (sslmode=verify-full: the server's certificate chains to the configured
// CA, or to the DSN's sslrootcert, or to the system's trust store, and
// names the host the DSN connects to); a DSN that asks for less (no
// sslmode, disable, allow, prefer, require, verify-ca) is refused with an
// error that says so. A unix socket (host=/run/postgresql) is the one
// exception: there is no network to protect, and TLS does not apply.
//
// Besides the store, the database holds the cluster's copy of every
// instance's audit lines (audit_events, migrations/0002_audit.sql; see
// audit.go): AddAudit, AuditEvents, PruneAudit, LastAudit.
//
// The schema is versioned: numbered SQL files in migrations/, embedded in
// the binary, applied at Open in one transaction under a PostgreSQL
// advisory lock (of two instances starting at once, one migrates, the
// other waits and then finds nothing to do), and recorded in
// schema_migrations. A database whose schema is newer than the binary is
// refused, and left untouched.
package pgstore
