// Package version holds the build's version string, set by the Makefile with
// -ldflags "-X github.com/bastiond/bastiond/internal/version.Version=...".
// It is shown to admins (bastionctl status, bastiond -version) and never to
// anonymous clients on port 443.
package version

// Version is the release or `git describe` of this build.
var Version = "dev"
