// Package api holds the types that cross a process boundary between
// bastiond and its clients, and nothing else: it imports only the standard
// library, so that a client links no server code. The server packages use
// these types too (as aliases or by converting), so there is one definition
// of each message.
//
// This package is the JSON of the HTTP API on port 443 that bastionctl
// uses (POST /api/tokens: `bastionctl login`). Its sub-packages are:
//
//   - api/admin: the JSON of the admin socket (/run/bastiond/admin.sock),
//     what `bastionctl status`, `users`, `sessions`, `hostkeys`, `policy`
//     and `recordings` send and receive.
//   - api/adminclient: the admin socket's client, HTTP over the unix
//     socket. The server half is daemon/adminapi.
//   - api/tunnelwire: the native tunnel's binary request and response, and
//     its statuses. The tunnel client (package tunnel) and the server
//     (package proxy) both speak it.
package api
