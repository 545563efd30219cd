// Package systemd holds bastiond's systemd integration: the service and
// socket units (bastiond.service, bastiond.socket), the sysusers.d and
// tmpfiles.d entries that create the bastiond user, the bastion-admin group
// and the state, log and configuration directories, and the commented
// example configuration. `make install` installs them, and Units embeds them
// so that the CLI can print them as shipped. The tests beside them rate the
// service's hardening with `systemd-analyze security` (2.0 or lower), run
// `systemd-analyze verify`, and check the directives the daemon depends on.
package systemd

import "embed"

// Units holds the files as shipped, by their path in this directory:
// bastiond.service, bastiond.socket, sysusers.d/bastiond.conf and
// tmpfiles.d/bastiond.conf.
//
//go:embed bastiond.service bastiond.socket sysusers.d/bastiond.conf tmpfiles.d/bastiond.conf
var Units embed.FS
