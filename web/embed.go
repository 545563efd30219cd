// Package web is bastiond's browser client: the SSH terminal page, the
// remote desktop page and the recording player, written in TypeScript under src/ and bundled by esbuild
// into dist/ (make web). The bundles are embedded here for the server to
// serve under /static/app/.
//
// dist/ is build output; a fresh clone holds only its placeholder, so that
// the daemon builds without node. Built says which of the two is embedded.
// A daemon built with the placeholder refuses to start when its
// configuration grants sessions in the browser, unless built with -tags
// nowebclient (Optional).
package web

import (
	"embed"
	"io/fs"
)

//go:embed dist
var dist embed.FS

// Assets is the contents of dist/: connect.js, connect.css, desktop.js,
// desktop.css, player.js and player.css once built.
func Assets() fs.FS {
	sub, err := fs.Sub(dist, "dist")
	if err != nil {
		panic(err) // "dist" is a valid path, embedded at build time
	}
	return sub
}

// Built reports whether the embedded dist/ holds the client rather than only
// the placeholder.
func Built() bool {
	_, err := fs.Stat(dist, "dist/connect.js")
	return err == nil
}
