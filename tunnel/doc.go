// Package tunnel is the native tunnel of bastiond: the
// net.Conn adapters both ends use (a QUIC stream, a WebSocket), and the
// client that `bastionctl tunnel` and `bastionctl ssh-proxy` use. The
// server side (authorization, the broker, the relay) is package proxy's;
// this package sits outside proxy, imported by both, so that bastionctl
// links no server code.
//
// # Transports
//
// A tunnel carries one TCP connection between a user's machine and a
// target behind the bastion. It rides on one of:
//
//   - QUIC version 1 on UDP 443, ALPN "bastion-tunnel/1" (tunnelwire.ALPN): one QUIC
//     connection per client process, one bidirectional stream, opened by
//     the client, per tunnel. A direction ends with the stream's FIN.
//   - When UDP is blocked, a WebSocket over TLS on TCP 443: GET /tunnel
//     (tunnelwire.WebSocketPath), HTTP/1.1 only (the client offers only "http/1.1" in
//     ALPN), subprotocol "bastion-tunnel.v1" (tunnelwire.Subprotocol), no compression
//     and no Origin header (browsers always send one; the server refuses
//     it). One WebSocket per tunnel. Binary messages carry the bytes, at
//     most 1 MiB each (MaxWSMessage); an empty binary message ends one
//     direction, like a FIN: nothing may follow it in that direction.
//     Text messages are not allowed. A WebSocket closed before both
//     directions have ended cuts the tunnel.
//
// The client tries QUIC first and starts the TLS attempt too when QUIC has
// not connected after 300ms (or has failed); after a QUIC failure it uses
// the WebSocket for a minute before it tries QUIC again.
//
// # Protocol
//
// The request and the response that start every tunnel, the statuses and
// their sentences are package api/tunnelwire's, which the server uses too.
package tunnel
