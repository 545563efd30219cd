// Package proxy is everything on port 443: the TLS listener (HTTP/1.1 and
// HTTP/2) and the QUIC listener, the HTTP routes of the portal, and, in its
// sub-packages, the pieces that authenticate users and carry their sessions.
//
// The daemon package hands it listeners that are already bound (inherited
// from systemd or bound by the daemon) and a Config; proxy never binds a
// public socket itself and never touches the firewall.
package proxy
