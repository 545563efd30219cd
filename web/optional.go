//go:build nowebclient

package web

// Optional is true in a bastiond built with -tags nowebclient, which may run
// without the browser client: the daemon then starts even when its
// configuration grants sessions in the browser, and serves a page saying
// the client was not built. Tests use it to run the daemon without node.
const Optional = true
