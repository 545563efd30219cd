// Package tunnelwire is the native tunnel's protocol on the wire: the
// request a client sends first on each tunnel, the server's response, and
// the statuses with the sentences a client shows. It imports only the
// standard library, like the rest of package api: bastiond's proxy and
// bastionctl's tunnel client (package tunnel) both use it, so the messages
// have one definition.
//
// # The messages
//
// The bytes below are the same on a QUIC stream and in the byte stream the
// WebSocket's messages carry. Integers are big-endian. The client speaks
// first, with a request:
//
//	magic    4 bytes  "BTUN"
//	version  1 byte   1 (Version)
//	length   2 bytes  L, the length of the rest of the request, 6..1024
//	token    1 byte n, 1..200, then n bytes: the API token, printable
//	         ASCII (0x21..0x7e)
//	target   1 byte n, 1..253, then n bytes: the target's inventory name,
//	         lower-case letters, digits, '-' and '.'; never an address
//	port     2 bytes  1..65535
//
// The fields must fill L exactly: version 1 has no optional fields, and a
// new field is a new version. The client may send relayed bytes right
// after the request, but the server reads nothing past it until it has
// answered. The server answers:
//
//	magic    4 bytes  "BTUN"
//	version  1 byte   the request's version, or, for status 9, the
//	                  server's own version
//	status   1 byte   see below
//	length   2 bytes  M, 0..1024
//	message  M bytes of UTF-8: for status 0 the session's ID, otherwise a
//	         sentence for the person at the client
//
// After status 0 the tunnelled connection's bytes follow at once, both
// ways, until each side ends its direction (half-close). After any other
// status the server ends its direction and closes.
//
// The statuses: 0 ok, 1 bad request (malformed), 2 unauthorized (the token
// is not valid, has expired, was revoked or lacks the "tunnel" scope), 3
// denied (no role allows this target and port: the answer to anything the
// user's roles do not cover, whether the target exists or not), 4 unknown
// target (or a port it does not offer; told only to a user whose roles
// cover that target and port), 5 capacity (the bastion carries all the
// sessions it may), 6 user limit, 7 unreachable (the bastion could not
// connect to the target), 8 unavailable (shutting down, or failed), 9
// unsupported version. A client shows an unknown status by its number and
// message.
//
// The server reads the magic and the version before anything else: a
// request that does not start with the magic is answered 1, one of a
// version the server does not speak is answered 9 with the server's
// version in the header, so that the client can say which side to
// upgrade. The answer's layout is the same in every version. A server
// reads at most 7+1024 bytes of a request, bounded by a deadline, before
// it answers.
package tunnelwire
