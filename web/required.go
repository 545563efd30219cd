//go:build !nowebclient

package web

// Optional is false in a normal build: a bastiond whose configuration
// grants sessions in the browser refuses to start without the client (see
// Built). Build with -tags nowebclient to let it run without.
const Optional = false
