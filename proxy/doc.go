// Package proxy is everything on port 443: the TLS listener (HTTP/1.1 and
// HTTP/2) and the QUIC listener, with the server-name gates in front of
// them, the server side of the native tunnel, and, in its sub-packages, the
// pieces that authenticate users and carry their sessions.
//
// The daemon package hands it listeners that are already bound (inherited
// from systemd or bound by the daemon) and a Config; proxy never binds a
// public socket itself and never touches the firewall. It translates its
// Config into those of its sub-packages.
//
// Where each step of a browser SSH session lives:
//
//   - proxy/gate: the TCP gate reads the ClientHello before TLS and passes
//     only connections that name the bastion (a per-source cap first).
//   - proxy: the TLS listener behind the gate; the HTTP server that serves
//     the portal's handler.
//   - proxy/portal: the routes: sign-in (proxy/auth, proxy/websession), the
//     machine list, POST /connect, and GET /ws/ssh, where the WebSocket is
//     opened.
//   - proxy/authz: whether the user may (at the ticket's issue, at its use,
//     and for the login typed), under the policy of proxy/access; a refusal
//     is logged, audited (connect_refused) and counted.
//   - proxy/ticket: the one-use ticket that ties the page to the request.
//   - proxy/broker: admission, the dial guard, the dial, the session's
//     registry and accounting.
//   - proxy/webssh: SSH to the target (host keys pinned by proxy/hostkeys,
//     certificates by proxy/sshca) and the relay to the terminal.
//   - proxy/recording: the recording, if a role asks for it.
//
// A binary upgrade (proxy/handover, driven by package daemon) hands the
// listeners to a new process while this one carries its live sessions to
// their end.
//
// A browser remote desktop takes the same path with proxy/webrdp (and
// proxy/rdcleanpath) in the place of proxy/webssh. A native tunnel
// (bastionctl tunnel, ssh-proxy, rdp) is served here, in tunnel.go: a QUIC
// stream, or the /tunnel WebSocket that the portal hands over, asks with an
// API token; proxy/authz checks it and proxy/broker carries it.
package proxy
