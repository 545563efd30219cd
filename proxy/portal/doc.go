// Package portal is the HTTP side of port 443: the routes a browser and
// bastionctl talk to. It signs users in (sign-in page, web sessions), lists
// the machines they may reach, issues connect tickets (the portal's forms
// and the JSON API: targets, connect, tokens), serves the embedded browser
// client, and carries the browser's sessions: the SSH terminal at /ws/ssh
// (relayed by proxy/webssh) and the remote desktop at /ws/rdp (RDCleanPath,
// relayed by proxy/webrdp). Auditors list and play recordings at
// /recordings, and list and watch live browser sessions, read-only, at
// /sessions and /watch/{id} (watch.go).
//
// Every request passes the front door first: the security headers, a body
// read whole under a deadline, and the uniform 404 for another Host. Every
// access request goes through proxy/authz, which records refusals; every
// session is opened by proxy/broker.
//
// A Portal owns its state: the web sessions, the tickets, how desktops
// ended, the players of recordings and the live sessions' watchers; ExportSessions and ImportSessions
// carry the first two across an upgrade. The root package proxy serves its
// Handler on the TLS listeners and hands it the native tunnel's WebSocket
// route (Config.Tunnel).
package portal
