// Package webrdp is the gateway of the remote desktop in the browser: the
// server side of RDCleanPath, which the IronRDP web client speaks over a
// WebSocket.
//
// The page cannot open TCP connections or check certificates, so the
// gateway does both on its behalf. It reads one RDCleanPath request from
// the WebSocket (treated as a byte stream), takes the target from the
// connect ticket in its proxyAuth, never from its destination, opens a
// broker session to that target, forwards the client's X.224 Connection
// Request and reads the server's Confirm, does the TLS handshake with the
// server, refusing any certificate but the one pinned for the target
// (invariant 7), and answers with the Confirm and the server's certificate
// chain, which the client needs for NLA. From then on it relays bytes both
// ways between the WebSocket and the TLS connection. The credentials the
// user types travel in that stream: with NLA, CredSSP encrypts them for the
// server; with TLS alone they are in the RDP stream the gateway relays, and
// the client sends the password in its Client Info PDU after NLA too. They
// are never logged. A desktop whose role records it (Params.Record) is
// recorded by a tap on the relay (recording.RDPTap): the CredSSP messages
// are left out and the Client Info's password and auto-reconnect cookie are
// zeroed in the copy recorded (invariant 10); a recording that cannot start
// refuses the desktop, and one that fails ends it (invariant 11).
//
// Replay plays such a recording back to the same web client, the gateway
// then being a player: see replay.go.
//
// Every failure is answered with an RDCleanPath error the client can show
// (an HTTP-like status, a Windows socket error code or a TLS alert), and
// described in an Outcome for the page, which asks the portal for it once
// the WebSocket is closed: an RDP client's own view of a gateway's refusal
// is a number.
package webrdp
