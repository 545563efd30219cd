package config

import (
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Minimum sizes of the dedicated bastion subnet, as prefix lengths.
// Azure requires /26 today and required /27 before; the IPv6 /64 is the
// smallest subnet IPv6 hosts are built for.
const (
	MaxSubnetBits4 = 27
	MaxSubnetBits6 = 64
)

type validator struct {
	lines    map[string]int
	problems []Problem
}

// errorf records a problem about path, placed on the line of path or of its
// nearest written ancestor (a missing key is reported where its section is).
func (v *validator) errorf(path, format string, args ...any) {
	v.problems = append(v.problems, Problem{Line: v.line(path), Path: path, Msg: fmt.Sprintf(format, args...)})
}

func (v *validator) line(path string) int {
	for p := path; p != ""; {
		if l, ok := v.lines[p]; ok {
			return l
		}
		i := strings.LastIndexAny(p, ".[")
		if i < 0 {
			break
		}
		p = p[:i]
	}
	return 0
}

func sortProblems(ps []Problem) {
	sort.SliceStable(ps, func(i, j int) bool {
		// Problems with a line come first, in line order; then the rest.
		li, lj := ps[i].Line, ps[j].Line
		if (li == 0) != (lj == 0) {
			return li != 0
		}
		return li < lj
	})
}

var (
	targetName = regexp.MustCompile(`^[a-z0-9]([a-z0-9.-]{0,62}[a-z0-9])?$`)
	// instanceName is a cluster instance's name (cluster.instance).
	instanceName = regexp.MustCompile(`^[a-z0-9-]{1,63}$`)
	plainName    = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.@-]{0,63}$`)
)

func (c *Config) validate(v *validator) {
	c.validateListen(v)
	c.validateBastion(v)
	c.validateFirewall(v)
	targets := c.validateInventory(v)
	networks := c.validateNetworks(v, targets)
	c.validateAccess(v, targets, networks)
	c.validateAuth(v)
	c.validateLimits(v)
	c.validateLogging(v)
	if !instanceName.MatchString(c.Cluster.Instance) {
		what := fmt.Sprintf("%q", c.Cluster.Instance)
		if c.Cluster.Instance == DefaultInstance() {
			what += " (the host name, the default)"
		}
		v.errorf("cluster.instance", "%s is not an instance name: 1 to 63 of a-z, 0-9 and '-'", what)
	}
	if !filepath.IsAbs(c.StateDir) {
		v.errorf("state_dir", "must be an absolute path, not %q", c.StateDir)
	}
	if !filepath.IsAbs(c.RecordingsDir) {
		v.errorf("recordings_dir", "must be an absolute path, not %q", c.RecordingsDir)
	}
	c.validateStore(v)
	c.validateLinks(v)
}

// credentialName is what systemd accepts as a credential's name.
var credentialName = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,255}$`)

func (c *Config) validateStore(v *validator) {
	s := c.Store
	switch s.Backend {
	case StoreBBolt:
		if s.Postgres != nil {
			v.errorf("store.postgres", "is for backend: postgres; the backend is bbolt")
		}
		return
	case StorePostgres:
	default:
		v.errorf("store.backend", "%q is not a backend; use bbolt (one host, the default) or postgres (a cluster)", s.Backend)
		return
	}
	const p = "store.postgres"
	pg := s.Postgres
	if pg == nil {
		v.errorf(p, "required with backend: postgres: dsn_file (or credential) and ca_file")
		return
	}
	switch {
	case pg.DSNFile == "" && pg.Credential == "":
		v.errorf(p, "dsn_file or credential is required: the file holding the connection string (never in this file: it holds the password)")
	case pg.DSNFile != "" && pg.Credential != "":
		v.errorf(p, "dsn_file and credential are two ways to give the connection string; keep one")
	case pg.DSNFile != "" && !filepath.IsAbs(pg.DSNFile):
		v.errorf(p+".dsn_file", "must be an absolute path, not %q", pg.DSNFile)
	case pg.Credential != "" && (!credentialName.MatchString(pg.Credential) || pg.Credential == "." || pg.Credential == ".."):
		v.errorf(p+".credential", "%q is not a systemd credential's name (letters, digits, _ . -)", pg.Credential)
	}
	if pg.CAFile != "" && !filepath.IsAbs(pg.CAFile) {
		v.errorf(p+".ca_file", "must be an absolute path, not %q", pg.CAFile)
	}
	switch name, cred := strings.CutPrefix(pg.SealKey, "credential:"); {
	case pg.SealKey == "":
		v.errorf(p+".seal_key", "required: the file (or credential:NAME) with the 32-byte key that seals the SSH CA's key in the database, "+
			"the same on every instance (make one: head -c 32 /dev/urandom | base64 > /etc/bastiond/seal.key; chmod 600)")
	case cred && (!credentialName.MatchString(name) || name == "." || name == ".."):
		v.errorf(p+".seal_key", "%q is not a systemd credential's name (letters, digits, _ . -)", name)
	case !cred && !filepath.IsAbs(pg.SealKey):
		v.errorf(p+".seal_key", "must be an absolute path or credential:NAME, not %q", pg.SealKey)
	}
	if pg.MaxConns < 1 || pg.MaxConns > 1000 {
		v.errorf(p+".max_conns", "must be from 1 to 1000, not %d", pg.MaxConns)
	}
	for _, d := range []struct {
		key string
		val time.Duration
	}{{"statement_timeout", pg.StatementTimeout}, {"connect_timeout", pg.ConnectTimeout}} {
		if d.val < 100*time.Millisecond || d.val > 5*time.Minute {
			v.errorf(p+"."+d.key, "must be from 100ms to 5m, not %s", d.val)
		}
	}
	if pg.AuditKeep < 24*time.Hour || pg.AuditKeep > 100*365*24*time.Hour {
		v.errorf(p+".audit_keep", "must be from 1d to 36500d (how long the database keeps its copy of the audit lines), not %s", pg.AuditKeep)
	}
}

func (c *Config) validateListen(v *validator) {
	l := c.Listen
	if l.ServerName == "" {
		v.errorf("listen.server_name", "required: the DNS name users connect to (TLS and QUIC answer only to it)")
	} else if !isDNSName(l.ServerName) {
		v.errorf("listen.server_name", "%q is not a DNS name", l.ServerName)
	}
	for i, a := range l.Addresses {
		if a.Port() == 0 {
			v.errorf(fmt.Sprintf("listen.addresses[%d]", i), "port 0 is not a port to listen on")
		}
	}
	if !l.Metrics.Addr().IsLoopback() {
		v.errorf("listen.metrics", "must be a loopback address (127.0.0.1 or ::1), not %s: metrics are never exposed", l.Metrics.Addr())
	}
	if !filepath.IsAbs(l.AdminSocket) {
		v.errorf("listen.admin_socket", "must be an absolute path, not %q", l.AdminSocket)
	}
	t := l.TLS
	files := t.Certificate != "" || t.Key != ""
	switch {
	case files && t.SelfSigned:
		v.errorf("listen.tls", "give either certificate and key, or self_signed: true, not both")
	case files && (t.Certificate == "" || t.Key == ""):
		v.errorf("listen.tls", "certificate and key go together; one of them is missing")
	case !files && !t.SelfSigned:
		v.errorf("listen.tls", "required: certificate and key files, or self_signed: true")
	}
	if t.MinVersion != "1.2" && t.MinVersion != "1.3" {
		v.errorf("listen.tls.min_version", "%q is not a TLS version this daemon offers (1.2 or 1.3)", t.MinVersion)
	}
	c.validateProxyProtocol(v)
}

func (c *Config) validateProxyProtocol(v *validator) {
	pp := c.Listen.ProxyProtocol
	seen := map[netip.Prefix]bool{}
	for i, p := range pp.From {
		path := fmt.Sprintf("listen.proxy_protocol.from[%d]", i)
		switch a := p.Addr(); {
		case p.Bits() == 0:
			v.errorf(path, "%s is every address: any source could then claim to be any client; list the balancers' own addresses", p)
		case a.Is4In6():
			v.errorf(path, "%s is IPv4-mapped: write the IPv4 prefix %s", p, netip.PrefixFrom(a.Unmap(), max(p.Bits()-96, 0)))
		case a.IsMulticast() || a.Zone() != "":
			v.errorf(path, "%s cannot be a balancer's address", p)
		case seen[p]:
			v.errorf(path, "%s is listed twice", p)
		}
		seen[p] = true
	}
	switch d := pp.DrainDelay; {
	case d < 0:
		v.errorf("listen.proxy_protocol.drain_delay", "must not be negative, not %s", d)
	case d > 0 && len(pp.From) == 0:
		v.errorf("listen.proxy_protocol.drain_delay", "tells balancers the daemon drains: it needs listen.proxy_protocol.from")
	case d > 0 && d >= c.Limits.DrainGrace:
		v.errorf("listen.proxy_protocol.drain_delay", "%s leaves no time to drain within limits.drain_grace (%s)", d, c.Limits.DrainGrace)
	}
}

func (c *Config) validateBastion(v *validator) {
	b := c.Bastion
	if b.PublicInterface == "" {
		v.errorf("bastion.public_interface", "required: the interface that faces users")
	}
	if b.VNetInterface == "" {
		v.errorf("bastion.vnet_interface", "required: the interface that faces the machines")
	}
	if b.PublicInterface != "" && b.PublicInterface == b.VNetInterface {
		v.errorf("bastion.vnet_interface", "must differ from public_interface: the bastion needs a public and a private side")
	}
	if len(b.Subnets) == 0 {
		v.errorf("bastion.subnets", "required: the dedicated bastion subnet (an IPv4 /%d or larger, and/or an IPv6 /%d or larger)", MaxSubnetBits4, MaxSubnetBits6)
	}
	var seen4, seen6 bool
	for i, p := range b.Subnets {
		path := fmt.Sprintf("bastion.subnets[%d]", i)
		if p.Addr().Is4() {
			if seen4 {
				v.errorf(path, "only one IPv4 bastion subnet is allowed")
			}
			seen4 = true
			if p.Bits() > MaxSubnetBits4 {
				v.errorf(path, "%s is smaller than /%d: the dedicated bastion subnet must be /%d or larger", p, MaxSubnetBits4, MaxSubnetBits4)
			}
		} else {
			if seen6 {
				v.errorf(path, "only one IPv6 bastion subnet is allowed")
			}
			seen6 = true
			if p.Bits() > MaxSubnetBits6 {
				v.errorf(path, "%s is smaller than /%d: the dedicated bastion subnet must be /%d or larger", p, MaxSubnetBits6, MaxSubnetBits6)
			}
		}
	}
	if !slices.Contains([]string{ModeBridged, ModeRouted, ModeAttached}, b.Mode) {
		v.errorf("bastion.mode", "%q is not a mode; use %s, %s or %s", b.Mode, ModeBridged, ModeRouted, ModeAttached)
	}
}

func (c *Config) validateFirewall(v *validator) {
	f := c.Firewall
	if f.TrapThreshold < 1 || f.TrapThreshold > 1000 {
		v.errorf("firewall.trap_threshold", "must be from 1 to 1000, not %d", f.TrapThreshold)
	}
	if f.BlockFor < time.Second || f.BlockFor > 7*24*time.Hour {
		v.errorf("firewall.block_for", "must be from 1s to 168h, not %s", f.BlockFor)
	}
	if f.ConnRate < 1 {
		v.errorf("firewall.conn_rate", "must be positive, not %d", f.ConnRate)
	}
	for i, p := range f.ExemptPorts {
		if p == 0 || p == 443 {
			v.errorf(fmt.Sprintf("firewall.exempt_ports[%d]", i), "%d cannot be exempt (443 is always open; 0 is not a port)", p)
		}
	}
	switch f.RestrictEgress {
	case EgressUser, EgressAll, EgressOff:
	default:
		v.errorf("firewall.restrict_egress", "%q is not user, all or off", f.RestrictEgress)
	}
	if !plainName.MatchString(f.EgressUser) {
		v.errorf("firewall.egress_user", "%q is not a user name", f.EgressUser)
	}
	for i, a := range f.EgressDNS {
		if a.Zone() != "" || a.IsUnspecified() || a.IsMulticast() {
			v.errorf(fmt.Sprintf("firewall.egress_dns[%d]", i), "%s cannot be a resolver", a)
		}
	}
	for i, e := range f.EgressAllow {
		if e.Addr.Zone() != "" || e.Addr.IsUnspecified() || e.Addr.IsMulticast() {
			v.errorf(fmt.Sprintf("firewall.egress_allow[%d]", i), "%s cannot be a destination", e.Addr)
		}
	}
}

// validateInventory checks the targets and returns the set of their names.
func (c *Config) validateInventory(v *validator) map[string]bool {
	names := make(map[string]bool, len(c.Inventory.Targets))
	// An address is one machine's: two targets with one address would make
	// the firewall's per-target counters and the audit trail ambiguous.
	owner := make(map[netip.Addr]string)
	for i, t := range c.Inventory.Targets {
		path := fmt.Sprintf("inventory.targets[%d]", i)
		switch {
		case t.Name == "":
			v.errorf(path+".name", "required")
		case !targetName.MatchString(t.Name):
			v.errorf(path+".name", "%q is not a target name (lower-case letters, digits, '-' and '.')", t.Name)
		case names[t.Name]:
			v.errorf(path+".name", "target %q is listed twice", t.Name)
		}
		names[t.Name] = true
		if len(t.Addresses) == 0 {
			v.errorf(path+".addresses", "required: the machine's private address(es)")
		}
		for j, a := range t.Addresses {
			ap := fmt.Sprintf("%s.addresses[%d]", path, j)
			c.validateTargetAddr(v, ap, a)
			switch prev, ok := owner[a.Unmap()]; {
			case !ok:
				owner[a.Unmap()] = t.Name
			case prev == t.Name:
				v.errorf(ap, "%s is listed twice", a)
			default:
				v.errorf(ap, "%s is already target %q's address: an address belongs to one target", a, prev)
			}
		}
		if t.Ports.SSH == 0 && t.Ports.RDP == 0 && len(t.Ports.Tunnel) == 0 {
			v.errorf(path+".ports", "required: at least one of ssh, rdp or tunnel")
		}
		if t.SSHCertificates && t.Ports.SSH == 0 {
			v.errorf(path+".ssh_certificates", "needs ports.ssh: certificates are for SSH logins")
		}
		for j, p := range t.Ports.Tunnel {
			if p.Number == 0 {
				v.errorf(fmt.Sprintf("%s.ports.tunnel[%d]", path, j), "0 is not a port")
			}
		}
		for j, tag := range t.Tags {
			if !plainName.MatchString(tag) {
				v.errorf(fmt.Sprintf("%s.tags[%d]", path, j), "%q is not a tag (letters, digits, '_', '.', '-', '@')", tag)
			}
		}
	}
	return names
}

// validateTargetAddr keeps invariant 5 from the start: the daemon is never
// configured to dial loopback, link-local, multicast or its own subnet.
func (c *Config) validateTargetAddr(v *validator, path string, a netip.Addr) {
	var why string
	switch {
	case a.IsUnspecified():
		why = "the unspecified address"
	case a.IsLoopback():
		why = "a loopback address"
	case a.IsLinkLocalUnicast() || a.IsLinkLocalMulticast():
		why = "link-local"
	case a.IsMulticast() || a == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
		why = "multicast or broadcast"
	case a.Zone() != "":
		why = "an address with a zone"
	}
	for _, p := range c.Bastion.Subnets {
		if p.Contains(a.Unmap()) {
			why = "inside the dedicated bastion subnet " + p.String() + ", where no machine may live"
		}
	}
	if why != "" {
		v.errorf(path, "%s is %s: targets must be machines on the VNet", a, why)
	}
}

func (c *Config) validateAccess(v *validator, targets, networks map[string]bool) {
	for g, members := range c.Access.Groups {
		if !plainName.MatchString(g) {
			v.errorf("access.groups."+g, "%q is not a group name", g)
		}
		for i, u := range members {
			if !plainName.MatchString(u) {
				v.errorf(fmt.Sprintf("access.groups.%s[%d]", g, i), "%q is not a user name", u)
			}
		}
	}
	if c.Access.SessionIdle < 0 || c.Access.SessionLifetime < 0 {
		v.errorf("access", "session_idle and session_lifetime must be positive")
	} else if c.Access.SessionIdle > c.Access.SessionLifetime {
		v.errorf("access.session_idle", "%s is longer than session_lifetime (%s)", c.Access.SessionIdle, c.Access.SessionLifetime)
	}
	if m := c.Access.MFA; m != "totp" && m != "webauthn" && m != "any" {
		v.errorf("access.mfa", "%q is not one of totp, webauthn, any", m)
	}
	roles := map[string]bool{}
	for i, r := range c.Access.Roles {
		path := fmt.Sprintf("access.roles[%d]", i)
		switch {
		case r.Name == "":
			v.errorf(path+".name", "required")
		case roles[r.Name]:
			v.errorf(path+".name", "role %q is defined twice", r.Name)
		}
		roles[r.Name] = true
		for j, s := range r.Subjects {
			kind, name, _ := strings.Cut(s, ":")
			p := fmt.Sprintf("%s.subjects[%d]", path, j)
			switch {
			case kind == "user" && plainName.MatchString(name):
			case kind == "group" && c.Access.Groups[name] != nil:
			case kind == "group":
				v.errorf(p, "group %q is not defined in access.groups", name)
			case kind == "oidc-group":
				prov, group, _ := strings.Cut(name, "/")
				if _, ok := c.Auth.OIDCProvider(prov); !ok || group == "" {
					v.errorf(p, "%q: write oidc-group:PROVIDER/GROUP with a provider of auth.oidc", s)
				}
			default:
				v.errorf(p, "%q is not a subject; write user:NAME, group:NAME or oidc-group:PROVIDER/GROUP", s)
			}
		}
		// A role that only audits reaches no machine; any other role
		// needs both targets and protocols.
		auditOnly := r.Auditor && len(r.Targets) == 0 && len(r.Protocols) == 0
		if len(r.Targets) == 0 && !auditOnly {
			v.errorf(path+".targets", `required: target names, "tag:TAG", "network:NAME" or "*" (a role with auditor: true may have neither targets nor protocols)`)
		}
		for j, t := range r.Targets {
			p := fmt.Sprintf("%s.targets[%d]", path, j)
			if tag, ok := strings.CutPrefix(t, "tag:"); ok {
				if !plainName.MatchString(tag) {
					v.errorf(p, "%q is not a tag", tag)
				}
			} else if nw, ok := strings.CutPrefix(t, "network:"); ok {
				if !networks[nw] {
					v.errorf(p, "network %q is not in inventory.networks", nw)
				}
			} else if t != "*" && !targets[t] {
				v.errorf(p, "target %q is not in the inventory", t)
			}
		}
		if len(r.Protocols) == 0 && !auditOnly {
			v.errorf(path+".protocols", "required: one or more of ssh, rdp, tunnel")
		}
		for j, p := range r.Protocols {
			if r.Record && (p == ProtoTunnel || strings.HasPrefix(p, ProtoTunnel+":")) {
				v.errorf(fmt.Sprintf("%s.protocols[%d]", path, j), "%q cannot go with record: true: a native tunnel carries an "+
					"end-to-end encrypted protocol the bastion cannot see into, so its sessions cannot be recorded (and would be "+
					"refused); give tunnel rights in a role without record", p)
				continue
			}
			if p == ProtoSSH || p == ProtoRDP || p == ProtoTunnel {
				continue
			}
			if port, ok := strings.CutPrefix(p, ProtoTunnel+":"); ok {
				if n, err := strconv.ParseUint(port, 10, 16); err == nil && n > 0 {
					continue
				}
			}
			v.errorf(fmt.Sprintf("%s.protocols[%d]", path, j), "%q is not a protocol; use ssh, rdp, tunnel or tunnel:PORT", p)
		}
		for j, b := range r.Bastions {
			if b != "*" && !isDNSName(strings.TrimSuffix(b, ".")) {
				v.errorf(fmt.Sprintf("%s.bastions[%d]", path, j), "%q is not a server name", b)
			}
		}
	}
}

func (c *Config) validateLimits(v *validator) {
	l := c.Limits
	positive := []struct {
		path string
		n    int
	}{
		{"limits.capacity", l.Capacity},
		{"limits.weights.ssh", l.Weights.SSH},
		{"limits.weights.rdp", l.Weights.RDP},
		{"limits.weights.tunnel", l.Weights.Tunnel},
		{"limits.sessions_per_user", l.SessionsPerUser},
		{"limits.connections_per_source", l.ConnectionsPerSource},
		{"limits.signin_throttle_entries", l.SigninThrottleEntries},
		{"limits.pending_tunnel_requests", l.PendingTunnelRequests},
	}
	for _, p := range positive {
		if p.n < 0 {
			v.errorf(p.path, "must be positive, not %d", p.n)
		}
	}
	if l.TargetTimeout > 0 && l.TargetTimeout < time.Second {
		v.errorf("limits.target_timeout", "must be at least 1s, not %s", l.TargetTimeout)
	}
	for _, w := range []int{l.Weights.SSH, l.Weights.RDP, l.Weights.Tunnel} {
		if w > l.Capacity {
			v.errorf("limits.weights", "a session weight (%d) above the capacity (%d) could never be admitted", w, l.Capacity)
			break
		}
	}
}

func (c *Config) validateLogging(v *validator) {
	if !slices.Contains([]string{"debug", "info", "warn", "error"}, c.Logging.Level) {
		v.errorf("logging.level", "%q is not a level; use debug, info, warn or error", c.Logging.Level)
	}
	if !slices.Contains([]string{"auto", "json", "console"}, c.Logging.Format) {
		v.errorf("logging.format", "%q is not a format; use auto, json or console", c.Logging.Format)
	}
	if !filepath.IsAbs(c.Logging.AuditFile) {
		v.errorf("logging.audit_file", "must be an absolute path, not %q", c.Logging.AuditFile)
	}
	if !slices.Contains([]string{"auto", "on", "off"}, c.Logging.Journald) {
		v.errorf("logging.journald", "%q is not a choice; use auto, on or off", c.Logging.Journald)
	}
	if c.Logging.Syslog != nil {
		c.validateSyslog(v, c.Logging.Syslog)
	}
}

// appName is what RFC 5424 allows in APP-NAME: 1 to 48 printable ASCII
// characters, no space.
var appName = regexp.MustCompile(`^[!-~]{1,48}$`)

func (c *Config) validateSyslog(v *validator, s *Syslog) {
	const p = "logging.syslog"
	host, port, err := net.SplitHostPort(s.Address)
	switch {
	case s.Address == "":
		v.errorf(p+".address", "required: the collector's host:port, such as logs.example.net:6514")
	case err != nil:
		v.errorf(p+".address", "%q is not host:port (an IPv6 address goes in brackets: [2001:db8::1]:6514)", s.Address)
	default:
		if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 {
			v.errorf(p+".address", "%q is not a port from 1 to 65535", port)
		}
		if _, err := netip.ParseAddr(host); err != nil && !isDNSName(strings.TrimSuffix(host, ".")) {
			v.errorf(p+".address", "%q is neither an IP address nor a DNS name", host)
		}
	}
	tlsOnly := []struct{ key, val string }{{"ca_file", s.CAFile}, {"cert_file", s.CertFile}, {"key_file", s.KeyFile}}
	for _, f := range tlsOnly {
		switch {
		case f.val == "":
		case !s.TLS:
			v.errorf(p+"."+f.key, "needs tls: true (a plain TCP collector has no certificates)")
		case !filepath.IsAbs(f.val):
			v.errorf(p+"."+f.key, "must be an absolute path, not %q", f.val)
		}
	}
	if (s.CertFile == "") != (s.KeyFile == "") {
		v.errorf(p, "cert_file and key_file go together; one of them is missing")
	}
	if s.Queue < 1 || s.Queue > 10_000_000 {
		v.errorf(p+".queue", "must be from 1 to 10000000 lines, not %d", s.Queue)
	}
	if _, ok := Facilities[s.Facility]; !ok {
		v.errorf(p+".facility", "%q is not a syslog facility; use kern, user, mail, daemon, auth, syslog, lpr, news, uucp, cron, authpriv, ftp or local0 to local7", s.Facility)
	}
	if !appName.MatchString(s.AppName) {
		v.errorf(p+".app_name", "%q is not an APP-NAME: 1 to 48 printable ASCII characters, no space", s.AppName)
	}
}

func isDNSName(s string) bool {
	if len(s) > 253 || s == "" {
		return false
	}
	for label := range strings.SplitSeq(s, ".") {
		if !targetName.MatchString(strings.ToLower(label)) || strings.Contains(label, ".") {
			return false
		}
	}
	return true
}

func reflectValue(c *Config) reflect.Value { return reflect.ValueOf(c).Elem() }

var (
	oidcName = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,31}$`)
	// claimName is a JWT claim's name as a config names it.
	claimName = regexp.MustCompile(`^[A-Za-z0-9_.:/-]{1,128}$`)
	domain    = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)+$`)
)

func (c *Config) validateAuth(v *validator) {
	names := map[string]bool{}
	for i, p := range c.Auth.OIDC {
		path := fmt.Sprintf("auth.oidc[%d]", i)
		switch {
		case !oidcName.MatchString(p.Name):
			v.errorf(path+".name", "%q: lowercase letters, digits and '-', up to 32 (it is in URLs and in oidc-group subjects)", p.Name)
		case names[p.Name]:
			v.errorf(path+".name", "provider %q is defined twice", p.Name)
		case p.Name == "callback":
			v.errorf(path+".name", `"callback" is the name of the providers' way back (/sso/callback): choose another`)
		}
		names[p.Name] = true
		if u, err := url.Parse(p.Issuer); err != nil || u.Scheme != "https" || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
			v.errorf(path+".issuer", "%q is not an https URL (the provider's issuer, e.g. https://login.example.com/realms/corp)", p.Issuer)
		}
		if p.ClientID == "" {
			v.errorf(path+".client_id", "required: the client ID the provider gave the bastion")
		}
		if p.ClientSecretFile == "" {
			v.errorf(path+".client_secret_file", "required: a file holding the client secret (mode 600), or credential:NAME")
		}
		for j, s := range p.Scopes {
			if s == "" || strings.ContainsAny(s, " \t\"\\") {
				v.errorf(fmt.Sprintf("%s.scopes[%d]", path, j), "%q is not a scope", s)
			}
		}
		for _, f := range []struct{ key, val string }{{"user_claim", p.UserClaim}, {"groups_claim", p.GroupsClaim}} {
			if f.val != "" && !claimName.MatchString(f.val) {
				v.errorf(path+"."+f.key, "%q is not a claim name", f.val)
			}
		}
		for j, d := range p.EmailDomains {
			if !domain.MatchString(d) {
				v.errorf(fmt.Sprintf("%s.email_domains[%d]", path, j), "%q is not a domain name (lowercase, e.g. example.com)", d)
			}
		}
	}
}
