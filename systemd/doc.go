// Package systemd holds bastiond's systemd integration files: the service and
// socket units, the sysusers.d and tmpfiles.d entries, and the commented
// example configuration. `make install` installs them; the tests beside them
// check that the units keep their hardening (systemd-analyze security) and
// the directives the daemon depends on.
package systemd

import "embed"

// Files are the unit files and the example configuration, as shipped.
//
//go:embed bastiond.service bastiond.socket bastiond.example.yaml sysusers.d tmpfiles.d
var Files embed.FS
