// Package tunnel is the native tunnel's wire protocol, its connection
// adapters and its client (what `bastionctl tunnel` and `bastionctl
// ssh-proxy` use).
//
// A tunnel carries one TCP connection between a user's machine and a
// target behind the bastion. It rides on QUIC (UDP 443, ALPN
// "bastion-tunnel/1", one bidirectional stream per tunnelled connection) or,
// when UDP is blocked, on a WebSocket over TLS on TCP 443 (GET /tunnel,
// HTTP/1.1, subprotocol "bastion-tunnel.v1", one WebSocket per tunnelled
// connection, no Origin header). The bytes below are the same on both.
//
// The client speaks first, with a request (integers big-endian):
//
//	"BTUN"     4 bytes, magic
//	version    1 byte, 1
//	length     2 bytes, the length L of the rest of the request, at most 1024
//	token      1 byte n (1..200) + n bytes: the API token, printable ASCII
//	target     1 byte n (1..253) + n bytes: the target's inventory name
//	           (lower-case letters, digits, '-' and '.'), never an address
//	port       2 bytes, 1..65535
//
// with no bytes left over inside L. The server answers:
//
//	"BTUN"     4 bytes, magic
//	version    1 byte: the server's version
//	status     1 byte: 0 ok, 1 bad request, 2 unauthorized, 3 denied,
//	           4 unknown target, 5 capacity, 6 user limit, 7 unreachable,
//	           8 unavailable, 9 unsupported version
//	length     2 bytes, at most 1024
//	message    that many bytes of UTF-8: on ok, the session's ID; otherwise
//	           a sentence for the user
//
// After ok, the tunnelled connection's bytes follow at once, both ways;
// otherwise the server closes. The magic and the version come first and
// the answer's layout never changes, so a server can tell a client of
// another version so, in words it can show.
//
// Over a WebSocket, binary messages carry the bytes, and an empty binary
// message ends one direction (a TCP half-close); a QUIC stream half-closes
// with its FIN.
package tunnel
