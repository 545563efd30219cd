// Package daemon runs bastiond: it loads the configuration, checks the host,
// takes the listening sockets (from systemd or by binding them), wires the
// front door (proxy), the firewall (netpolicy) and the admin API together,
// talks to systemd (READY, STATUS, WATCHDOG, RELOADING, STOPPING), reloads on
// SIGHUP and drains on SIGTERM.
//
// It is the only package that imports both proxy and netpolicy; only the
// bastiond command imports it.
package daemon
