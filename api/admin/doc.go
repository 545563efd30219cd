// Package admin holds the JSON that crosses the admin socket of bastiond
// (/run/bastiond/admin.sock): the requests bastionctl's admin commands send
// and the answers they decode. It imports only the standard library and
// package api. The server is daemon/adminapi, the client api/adminclient;
// the server packages whose values appear here (proxy/broker's sessions,
// proxy/hostkeys' keys, proxy/recording's files) alias these types.
package admin
