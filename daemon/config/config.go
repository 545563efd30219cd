// Package config reads and checks bastiond's one configuration file.
//
// The file is YAML and strict: an unknown key, a value of the wrong type or a
// rule broken between sections is an error that names the file and the line,
// and every such problem in the file is reported at once, so that an admin
// fixes a config in one pass. A zero value in the Go types below means "use
// the default"; the defaults are filled in by Parse and documented on each
// field. systemd/bastiond.example.yaml is the commented reference.
package config

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// DefaultFile is where the daemon looks for its configuration.
const DefaultFile = "/etc/bastiond/bastiond.yaml"

// Config is the whole configuration file.
type Config struct {
	Listen    Listen    `yaml:"listen"`
	Bastion   Bastion   `yaml:"bastion"`
	Inventory Inventory `yaml:"inventory"`
	Firewall  Firewall  `yaml:"firewall"`
	Access    Access    `yaml:"access"`
	Auth      Auth      `yaml:"auth"`
	Limits    Limits    `yaml:"limits"`
	Logging   Logging   `yaml:"logging"`
	Cluster   Cluster   `yaml:"cluster"`
	Links     Links     `yaml:"links"`
	// StateDir holds users, pinned host keys, recordings and the self-signed
	// certificate. Default /var/lib/bastiond.
	StateDir string `yaml:"state_dir"`
	// RecordingsDir receives the recordings of the sessions of recorded
	// roles. Default state_dir/recordings. In a cluster, a directory every
	// instance mounts (NFS, CephFS...), so that an auditor plays any
	// instance's recording from any instance: it must exist and be writable
	// at start (a missing mount is refused, never created), and the
	// filesystem must keep flock(2) locks between hosts (README, "Running
	// more than one bastion").
	RecordingsDir string `yaml:"recordings_dir"`
	// Store is where accounts, tokens and pinned host keys live.
	Store Store `yaml:"store"`

	// File is the path the configuration was read from.
	File string `yaml:"-"`
	// Digest is the SHA-256 of the file's bytes, in hex: what `bastionctl
	// status` shows so that an admin can tell which version is loaded.
	Digest string `yaml:"-"`
}

// Cluster is what makes this bastiond one instance among several.
type Cluster struct {
	// Instance names this bastiond in the cluster: in every audit event it
	// writes, in the live-session registry, in `bastionctl sessions`. 1 to
	// 63 of a-z, 0-9 and '-'. Default: the host name's first label, in lower
	// case. Two instances must not share a name; the processes of one
	// binary upgrade are one instance.
	Instance string `yaml:"instance"`
}

// Listen is the public front door and the local control endpoints.
type Listen struct {
	// Addresses are bound for TLS (TCP) and QUIC (UDP) when the daemon is not
	// socket-activated. Default [::]:443, which is dual-stack.
	Addresses []netip.AddrPort `yaml:"addresses"`
	// ServerName is the DNS name users connect to; TLS and QUIC handshakes for
	// any other name get nothing back. Required.
	ServerName string `yaml:"server_name"`
	TLS        TLS    `yaml:"tls"`
	// Metrics is the Prometheus listener; it must be a loopback address.
	// Default 127.0.0.1:9443.
	Metrics netip.AddrPort `yaml:"metrics"`
	// AdminSocket is the admin API's unix socket. Default /run/bastiond/admin.sock.
	AdminSocket string `yaml:"admin_socket"`
	// AdminGroup is the group whose members may use the admin socket besides
	// root. Default bastion-admin.
	AdminGroup string `yaml:"admin_group"`
	// ProxyProtocol puts the daemon behind TCP load balancers.
	ProxyProtocol ProxyProtocol `yaml:"proxy_protocol"`
}

// ProxyProtocol lists the TCP load balancers in front of 443/tcp.
type ProxyProtocol struct {
	// From are the balancers' addresses, IPv4 or IPv6 prefixes. Each of
	// their connections must start with a PROXY protocol v2 header (v1 is
	// refused), whose client is the source of everything downstream
	// (throttles, per-source caps, records, audit); only they may ask the
	// readiness path. The firewall neither rate-limits nor blocklists
	// them. Empty (default): no balancer, no header read from anyone.
	From []netip.Prefix `yaml:"from"`
	// DrainDelay is how long, on stop, the daemon tells the balancers it
	// is not ready (503 "draining") while it still takes connections,
	// before it stops accepting and drains: set it to the balancers'
	// check interval times their fall count, so that they stop sending
	// users first. It counts in limits.drain_grace. Default 0: stop at once.
	DrainDelay time.Duration `yaml:"drain_delay"`
}

// TLS selects the certificate for port 443.
type TLS struct {
	// Certificate and Key are PEM files, re-read on reload. Both or neither.
	Certificate string `yaml:"certificate"`
	Key         string `yaml:"key"`
	// SelfSigned makes the daemon generate a certificate for ServerName and
	// keep it in the state directory. For demos and first installs only.
	SelfSigned bool `yaml:"self_signed"`
	// MinVersion is "1.3" (default) or "1.2".
	MinVersion string `yaml:"min_version"`
}

// VNet modes: how the bastion host stands in the protected network.
const (
	ModeBridged  = "bridged"  // the VNet is a bridge on this host; rules in the bridge family
	ModeRouted   = "routed"   // this host routes the VNet; rules in the forward hook
	ModeAttached = "attached" // this host only sits in the VNet; VMs apply exported rules
)

// Bastion describes the host's two sides.
type Bastion struct {
	// PublicInterface faces the users. Required.
	PublicInterface string `yaml:"public_interface"`
	// VNetInterface faces the machines. Required.
	VNetInterface string `yaml:"vnet_interface"`
	// Subnets is the dedicated bastion subnet, at most one prefix per address
	// family: an IPv4 prefix of /27 or larger, an IPv6 prefix of /64 or larger.
	// Every global address on VNetInterface must lie inside it. Required.
	Subnets []netip.Prefix `yaml:"subnets"`
	// Mode is bridged, routed or attached (default).
	Mode string `yaml:"mode"`
}

// Firewall tunes the nftables policy on the public side. A source, for the
// blocklist and the rate meters, is an IPv4 address or an IPv6 /64.
type Firewall struct {
	// AdminCIDRs are sources that are never put in the blocklist (the
	// admins' own networks), IPv4 or IPv6.
	AdminCIDRs []netip.Prefix `yaml:"admin_cidrs"`
	// TrapThreshold is the closed-port probe that blocklists a source: 1
	// (default) blocks at the first probe.
	TrapThreshold int `yaml:"trap_threshold"`
	// BlockFor is how long a blocklisted source is dropped. Default 10m.
	BlockFor time.Duration `yaml:"block_for"`
	// ExemptPorts are dropped silently but never trap, so that a user who
	// types http:// is not locked out. Absent: [80]; [] exempts nothing.
	ExemptPorts []uint16 `yaml:"exempt_ports"`
	// ConnRate is the new connections per second one source may open to
	// port 443 (bursts of twice that). Default 20.
	ConnRate int `yaml:"conn_rate"`

	// RestrictEgress pins outbound traffic in nftables (invariant 13):
	// "user" (default) lets the processes of EgressUser open connections
	// only to the inventory's address . protocol . port pairs and to what
	// EgressDNS, logging.syslog and EgressAllow name, and logs and drops
	// the rest, loopback included; "all" does the same to every process of
	// the host; "off" adds no egress rules. Replies to connections made to
	// the host (443, metrics) are never cut.
	RestrictEgress string `yaml:"restrict_egress"`
	// EgressUser is the user whose traffic "user" restricts: the one the
	// daemon's unit runs as (User=). Default bastiond. Resolved to a uid
	// when the policy is compiled; a user that does not exist restricts
	// nothing, which the log and `bastionctl policy show` say.
	EgressUser string `yaml:"egress_user"`
	// EgressDNS are the resolvers the daemon may ask, on UDP and TCP 53.
	// Absent: the nameservers of /etc/resolv.conf when the policy is
	// compiled; [] allows no resolver.
	EgressDNS []netip.Addr `yaml:"egress_dns"`
	// EgressAllow are further destinations the daemon may reach (an
	// identity provider, a database): "address:port" for TCP,
	// "address:port/udp" or "address:port/tcp+udp" otherwise; IPv6 as
	// "[2001:db8::5]:636". Addresses, not names: nftables matches addresses.
	EgressAllow []Endpoint `yaml:"egress_allow"`
}

// Egress restriction modes (firewall.restrict_egress).
const (
	EgressUser = "user"
	EgressAll  = "all"
	EgressOff  = "off"
)

// Port is a port number and the transport protocols it is served on.
// In YAML: 8080 or "8080/tcp" (TCP), "5353/udp", "4000/tcp+udp".
type Port struct {
	Number   uint16
	TCP, UDP bool
}

// String is the port as the configuration writes it.
func (p Port) String() string {
	n := strconv.Itoa(int(p.Number))
	switch {
	case p.TCP && p.UDP:
		return n + "/tcp+udp"
	case p.UDP:
		return n + "/udp"
	}
	return n + "/tcp"
}

// ParsePort reads 8080, "8080/tcp", "5353/udp" or "4000/tcp+udp"; without
// a protocol the port is TCP.
func ParsePort(s string) (Port, error) {
	num, protos, hasProtos := strings.Cut(s, "/")
	n, err := strconv.ParseUint(num, 10, 16)
	if err != nil || n == 0 {
		return Port{}, fmt.Errorf("%q is not a port from 1 to 65535", num)
	}
	p := Port{Number: uint16(n), TCP: !hasProtos}
	if hasProtos {
		for _, proto := range strings.Split(protos, "+") {
			switch proto {
			case "tcp":
				p.TCP = true
			case "udp":
				p.UDP = true
			default:
				return Port{}, fmt.Errorf("%q is not a protocol (write tcp, udp or tcp+udp after the slash)", proto)
			}
		}
	}
	return p, nil
}

// Endpoint is an address and a port with its protocols:
// "192.0.2.7:5432", "[2001:db8::7]:53/udp", "192.0.2.8:88/tcp+udp".
type Endpoint struct {
	Addr netip.Addr
	Port Port
}

// String is the endpoint as the configuration writes it.
func (e Endpoint) String() string {
	ap := netip.AddrPortFrom(e.Addr, e.Port.Number).String()
	_, protos, _ := strings.Cut(e.Port.String(), "/")
	return ap + "/" + protos
}

// ParseEndpoint reads "address:port" with an optional "/udp" or
// "/tcp+udp" (TCP without one).
func ParseEndpoint(s string) (Endpoint, error) {
	hostPort, protos, hasProtos := strings.Cut(s, "/")
	ap, err := netip.ParseAddrPort(hostPort)
	if err != nil {
		return Endpoint{}, fmt.Errorf("%q is not address:port (an IP address, IPv6 in brackets; names cannot be matched by nftables)", hostPort)
	}
	spec := strconv.Itoa(int(ap.Port()))
	if hasProtos {
		spec += "/" + protos
	}
	p, err := ParsePort(spec)
	if err != nil {
		return Endpoint{}, err
	}
	return Endpoint{Addr: ap.Addr(), Port: p}, nil
}

// Inventory lists the machines behind the bastion. The daemon dials nothing else.
type Inventory struct {
	Targets []Target `yaml:"targets"`
	// Networks are ranges of addresses a user may connect to by typing an
	// address inside one (README, "Connect by address"); a role grants
	// one as network:NAME.
	Networks []Network `yaml:"networks"`
}

// Network is a range of machines reached by address rather than by name.
// Every address inside its CIDRs is a target with the network's ports,
// tags and settings, named by TargetName.
type Network struct {
	// Name is what roles grant (network:NAME): 1 to 63 of a-z, 0-9 and
	// '-'. It must not be a target's name.
	Name string `yaml:"name"`
	// CIDRs are the network's prefixes, IPv4 and IPv6, no wider than an
	// IPv4 /8 or an IPv6 /48 (MaxNetworkBits4, MaxNetworkBits6). They may
	// not overlap loopback, link-local, multicast, the bastion's subnets
	// or another network's CIDRs.
	CIDRs []netip.Prefix `yaml:"cidrs"`
	Ports Ports          `yaml:"ports"`
	// Tags select the network in roles ("tag:lab"), as a target's do.
	Tags        []string `yaml:"tags"`
	Description string   `yaml:"description"`
	// TargetName is how an address shows in the portal (its connect
	// page's title): a pattern of {addr} (the address), {dashed} (the
	// address with '-' for '.' and ':') and {network} (this network's
	// name). Default "{addr}". Records and audit events name the address
	// itself (target, address) and the network (network), whatever the
	// pattern, so that they stay unambiguous.
	TargetName string `yaml:"target_name"`
	// SSHCertificates is a target's ssh_certificates, for every address.
	SSHCertificates bool `yaml:"ssh_certificates"`
}

// Target is one machine.
type Target struct {
	// Name is what users see and click; lower-case letters, digits, '-' and '.'.
	Name string `yaml:"name"`
	// Addresses are the machine's private addresses, dialled in this order.
	Addresses []netip.Addr `yaml:"addresses"`
	Ports     Ports        `yaml:"ports"`
	// Tags select targets in roles ("tag:linux").
	Tags        []string `yaml:"tags"`
	Description string   `yaml:"description"`
	// SSHCertificates makes browser SSH log in with a short-lived
	// certificate signed by the bastion's CA (`bastionctl ca show`), which
	// the machine trusts through sshd's TrustedUserCAKeys: users type no
	// password or key. Needs ports.ssh.
	SSHCertificates bool `yaml:"ssh_certificates"`
}

// Ports are the services a target offers through the bastion. Zero means not offered.
type Ports struct {
	SSH uint16 `yaml:"ssh"`
	RDP uint16 `yaml:"rdp"`
	// Tunnel lists further ports that native tunnels may reach; the SSH and
	// RDP ports are always reachable by tunnel for roles that allow it.
	// A port is TCP unless it says otherwise: [8080, "5353/udp",
	// "4000/tcp+udp"]. Tunnels carry TCP; a UDP port is guarded by the
	// firewall (only the bastion reaches it) and open to the bastion's own
	// egress.
	Tunnel []Port `yaml:"tunnel"`
}

// TunnelPorts are the tunnel ports served on TCP: those a tunnel can reach.
func (p Ports) TunnelPorts() []uint16 {
	var out []uint16
	for _, t := range p.Tunnel {
		if t.TCP {
			out = append(out, t.Number)
		}
	}
	return out
}

// Services are every port the target offers with its protocols: SSH on
// TCP, RDP on TCP and UDP (RDP's UDP transport), the tunnel ports as listed.
func (p Ports) Services() []Port {
	var out []Port
	if p.SSH != 0 {
		out = append(out, Port{Number: p.SSH, TCP: true})
	}
	if p.RDP != 0 {
		out = append(out, Port{Number: p.RDP, TCP: true, UDP: true})
	}
	return append(out, p.Tunnel...)
}

// Protocols a role can allow.
const (
	ProtoSSH    = "ssh"
	ProtoRDP    = "rdp"
	ProtoTunnel = "tunnel"
)

// Access says who may reach what.
type Access struct {
	// Groups maps a group name to its member user names.
	Groups map[string][]string `yaml:"groups"`
	Roles  []Role              `yaml:"roles"`
	// SessionIdle signs a browser out after this long without a request.
	// Default 30m.
	SessionIdle time.Duration `yaml:"session_idle"`
	// SessionLifetime signs a browser out this long after sign-in, active
	// or not. Default 12h.
	SessionLifetime time.Duration `yaml:"session_lifetime"`
	// MFA is the second factor local users give after their password:
	// totp (a code, for users enrolled in TOTP), webauthn (a passkey) or
	// any (either). A passkey alone always signs in. Default totp.
	MFA string `yaml:"mfa"`
}

// Auth says how users sign in besides local accounts.
type Auth struct {
	// OIDC are the single sign-on providers; the portal shows a button
	// for each.
	OIDC []OIDCProvider `yaml:"oidc"`
}

// OIDCProvider is one OpenID Connect provider. Register the bastion at the
// provider as a web application whose redirect URI is
// https://SERVER_NAME/sso/callback.
type OIDCProvider struct {
	// Name is the provider's short name ([a-z0-9-], up to 32): in its URL
	// (/sso/NAME) and in role subjects (oidc-group:NAME/GROUP). Required.
	Name string `yaml:"name"`
	// Title is the button's text: "Sign in with TITLE". Default: Name.
	Title string `yaml:"title"`
	// Issuer is the provider's issuer URL (https). Required.
	Issuer   string `yaml:"issuer"`
	ClientID string `yaml:"client_id"`
	// ClientSecretFile holds the client secret (readable by its owner
	// only), or is credential:NAME, a systemd credential. Required.
	ClientSecretFile string `yaml:"client_secret_file"`
	// CAFile is a PEM file of the CAs of the provider's TLS certificate.
	// Default: the system's roots.
	CAFile string `yaml:"ca_file"`
	// Scopes asked for. Default [openid, email, profile]; openid is
	// always asked.
	Scopes []string `yaml:"scopes"`
	// UserClaim is the ID token's claim that names the user (their
	// account here). Default email.
	UserClaim string `yaml:"user_claim"`
	// GroupsClaim is the claim that lists the user's groups. Default
	// groups.
	GroupsClaim string `yaml:"groups_claim"`
	// EmailDomains, if set, are the only email domains that may sign in
	// (and an email the provider says is unverified may not).
	EmailDomains []string `yaml:"email_domains"`
}

// OIDCProvider returns the provider called name.
func (a Auth) OIDCProvider(name string) (OIDCProvider, bool) {
	for _, p := range a.OIDC {
		if p.Name == name {
			return p, true
		}
	}
	return OIDCProvider{}, false
}

// Role grants protocols on targets to subjects.
type Role struct {
	Name string `yaml:"name"`
	// Subjects are "user:NAME", "group:NAME" (a group of access.groups)
	// or "oidc-group:PROVIDER/GROUP" (a group a single sign-on provider
	// of auth.oidc says the user is in, at their last sign-in). Empty:
	// only users granted the role with `bastionctl users grant` have it.
	Subjects []string `yaml:"subjects"`
	// Targets are target names, "tag:TAG" (the targets and networks with
	// the tag), "network:NAME" (every address of an inventory network) or
	// "*" for all targets. "*" grants no network: adding a network to the
	// inventory gives nobody its addresses until a role names it.
	Targets []string `yaml:"targets"`
	// Protocols are ssh, rdp, tunnel (any port the target offers) and
	// tunnel:PORT (that port only).
	Protocols []string `yaml:"protocols"`
	// Logins are the account names allowed on the target; "*" allows any.
	// Empty allows any.
	Logins []string `yaml:"logins"`
	// Bastions are the server names of the bastions this role applies on.
	// Empty: every bastion that loads this file.
	Bastions []string `yaml:"bastions"`
	// DisableClipboard turns off copy and paste in browser sessions.
	DisableClipboard bool `yaml:"disable_clipboard"`
	// DisableFileTransfer stops files both ways in browser sessions: the
	// SSH terminal's file panel, and files copied through an RDP
	// desktop's clipboard (the gateway drops format lists that carry
	// files). Text copy and paste is disable_clipboard's.
	DisableFileTransfer bool `yaml:"disable_file_transfer"`
	// Record makes browser sessions of this role be recorded.
	Record bool `yaml:"record"`
	// Auditor lets the role's members list and play back session
	// recordings in the portal. A role that only audits has no targets
	// and no protocols.
	Auditor bool `yaml:"auditor"`
}

// Limits bound resources and time.
type Limits struct {
	// Capacity is the instance's size in weighted units. Default 100
	// (like an Azure Bastion instance: 100 light or 50 medium sessions).
	// In a cluster each instance admits into its own.
	Capacity int     `yaml:"capacity"`
	Weights  Weights `yaml:"weights"`
	// SessionsPerUser caps one user's concurrent sessions. Default 10.
	// In a cluster it counts the user's sessions on every instance.
	SessionsPerUser int `yaml:"sessions_per_user"`
	// ConnectionsPerSource caps the TCP connections one source may hold
	// open on port 443; past it, new ones are closed unanswered. A source
	// is an IPv4 address or an IPv6 /64: addresses rotated inside one /64
	// count together. Generous by default (256): many users may share one
	// address behind a NAT.
	ConnectionsPerSource int `yaml:"connections_per_source"`
	// SigninThrottleEntries bounds each table of the sign-in throttle (per
	// source, per account, per account and source); a full table forgets
	// the entry that mattered least recently to make room (never one in
	// backoff while others are not), so that a flood can neither grow it
	// nor push out a guesser's record. Read at start.
	// Default 65536 (some 15 MiB per table when full).
	SigninThrottleEntries int `yaml:"signin_throttle_entries"`
	// PendingTunnelRequests caps the QUIC streams, over all connections,
	// that have not sent their tunnel request yet (each has
	// handshake_timeout to send it; one connection may have 8 and one
	// source 64); at the cap, the one that waited longest is reset to
	// make room. Default 1024. The QUIC connections of one source are
	// capped by connections_per_source, counted apart from its TCP
	// connections.
	PendingTunnelRequests int `yaml:"pending_tunnel_requests"`
	// DrainGrace is how long SIGTERM waits for sessions to end. Default 30s.
	DrainGrace time.Duration `yaml:"drain_grace"`
	// UpgradeGrace is how long the old process of a binary upgrade keeps
	// serving its live sessions before it ends them. Default 1h.
	UpgradeGrace time.Duration `yaml:"upgrade_grace"`
	// HandshakeTimeout bounds TLS, QUIC and SSH handshakes, and reading an
	// HTTP request's headers and body. Default 10s.
	HandshakeTimeout time.Duration `yaml:"handshake_timeout"`
	// DialTimeout bounds connecting to a target. Default 10s.
	DialTimeout time.Duration `yaml:"dial_timeout"`
	// IdleTimeout ends a session with no traffic either way. Default 20m.
	IdleTimeout time.Duration `yaml:"idle_timeout"`
	// MaxSessionDuration ends any session after this long. Default 12h.
	MaxSessionDuration time.Duration `yaml:"max_session_duration"`
	// TargetTimeout ends a session whose machine stops acknowledging data
	// or answering TCP keepalives for about this long (a VM that went
	// down). Default 30s.
	TargetTimeout time.Duration `yaml:"target_timeout"`
	// ClientTimeout ends a user's connection that stops answering (TCP
	// keepalive and TCP_USER_TIMEOUT, QUIC idle timeout): a user who
	// vanishes is reaped, and their sessions recorded, after about this
	// long. Default 30s.
	ClientTimeout time.Duration `yaml:"client_timeout"`
	// RecordingsKeep is how long a session recording is kept after it
	// ended ("90d"); older ones are removed. Default 0: kept until
	// recordings_max_bytes, if set, needs the room.
	RecordingsKeep time.Duration `yaml:"recordings_keep"`
	// RecordingsMaxBytes caps the recordings directory ("50GiB"); past it
	// the oldest recordings are removed first. Default 0: no cap (a full
	// disk then refuses recorded sessions).
	RecordingsMaxBytes ByteSize `yaml:"recordings_max_bytes"`
	// SSH, RDP and Tunnel override idle_timeout and max_session_duration
	// for one protocol's sessions.
	SSH    ProtocolLimits `yaml:"ssh"`
	RDP    ProtocolLimits `yaml:"rdp"`
	Tunnel ProtocolLimits `yaml:"tunnel"`
}

// ByteSize is a number of bytes, written as a whole number or with a unit:
// 500MiB, 20GB (KiB, MiB, GiB, TiB are powers of 1024; KB, MB, GB, TB of
// 1000).
type ByteSize int64

// ProtocolLimits bound the sessions of one protocol. Zero takes the value
// of the same key in limits.
type ProtocolLimits struct {
	IdleTimeout        time.Duration `yaml:"idle_timeout"`
	MaxSessionDuration time.Duration `yaml:"max_session_duration"`
}

// Weights are the capacity units one session of each kind takes.
type Weights struct {
	SSH    int `yaml:"ssh"`    // default 1
	RDP    int `yaml:"rdp"`    // default 2
	Tunnel int `yaml:"tunnel"` // default 1
}

// Logging configures the operational and audit logs.
type Logging struct {
	// Level is debug, info (default), warn or error.
	Level string `yaml:"level"`
	// Format is auto (default: JSON under systemd or when not on a
	// terminal, console text on a terminal), json or console.
	Format string `yaml:"format"`
	// AuditFile receives one JSON line per session event.
	// Default /var/log/bastiond/audit.jsonl.
	AuditFile string `yaml:"audit_file"`
	// Journald copies every audit line to journald with structured fields:
	// auto (default: when running under systemd, that is when
	// $JOURNAL_STREAM is set or journald's socket exists), on or off.
	Journald string `yaml:"journald"`
	// Syslog ships every audit line to a collector as RFC 5424 syslog over
	// TCP or TLS. Absent: no syslog shipping.
	Syslog *Syslog `yaml:"syslog"`
}

// Syslog is a collector that receives the audit trail (RFC 5424 messages,
// octet-counted framing as RFC 6587 and RFC 5425 describe).
type Syslog struct {
	// Address is the collector's host:port (a DNS name or an IP address).
	// Required.
	Address string `yaml:"address"`
	// TLS sends over TLS (RFC 5425), verifying the collector's certificate;
	// false sends plain TCP.
	TLS bool `yaml:"tls"`
	// CAFile is a PEM file of the CAs that sign the collector's
	// certificate. Absent: the system's roots. Needs tls: true.
	CAFile string `yaml:"ca_file"`
	// ServerName is the name the collector's certificate must carry.
	// Default: the host part of Address.
	ServerName string `yaml:"server_name"`
	// CertFile and KeyFile are a client certificate, for collectors that
	// authenticate their senders. Both or neither; need tls: true.
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// Queue is how many lines wait in memory while the collector is slow
	// or away; beyond it the oldest are dropped, counted. Default 100000.
	Queue int `yaml:"queue"`
	// Facility is the syslog facility of the messages: kern, user, mail,
	// daemon, auth (default), syslog, lpr, news, uucp, cron, authpriv,
	// ftp, local0 to local7.
	Facility string `yaml:"facility"`
	// AppName is the messages' APP-NAME. Default bastiond.
	AppName string `yaml:"app_name"`
}

// Store backends.
const (
	// StoreBBolt is one file in state_dir, for one host: the default.
	StoreBBolt = "bbolt"
	// StorePostgres is a PostgreSQL database that every instance of a
	// cluster shares.
	StorePostgres = "postgres"
)

// Store chooses the state store's backend.
type Store struct {
	// Backend is bbolt (default: state_dir/state.db, nothing else to run)
	// or postgres (Postgres says where).
	Backend string `yaml:"backend"`
	// Postgres is the database of backend: postgres.
	Postgres *Postgres `yaml:"postgres"`
}

// Postgres is how to reach the state store's PostgreSQL database. The
// connection string, which holds the password, is never in this file.
type Postgres struct {
	// DSNFile is a file holding the connection string (libpq's
	// keyword=value form or a postgres:// URL) with sslmode=verify-full;
	// not readable by every user. DSNFile or Credential, not both.
	DSNFile string `yaml:"dsn_file"`
	// Credential is the name of a systemd credential holding the
	// connection string (LoadCredential=NAME:/path in a drop-in of
	// bastiond.service).
	Credential string `yaml:"credential"`
	// CAFile is a PEM file of the CAs that sign the server's certificate.
	// Absent: the DSN's sslrootcert, or else the system's roots.
	CAFile string `yaml:"ca_file"`
	// SealKey is the file (or "credential:NAME", a systemd credential)
	// holding the 32-byte key, base64 or hex, that seals the secrets the
	// cluster keeps in the database (the SSH CA's private key): the same
	// on every instance, never in the database. Required.
	SealKey string `yaml:"seal_key"`
	// MaxConns is the most connections this instance opens. Default 10.
	MaxConns int `yaml:"max_conns"`
	// StatementTimeout bounds each statement. Default 5s.
	StatementTimeout time.Duration `yaml:"statement_timeout"`
	// ConnectTimeout bounds connecting and waiting for a free connection.
	// Default 5s.
	ConnectTimeout time.Duration `yaml:"connect_timeout"`
	// AuditKeep is how long the database keeps its copy of the audit
	// lines (`bastionctl audit events`); older ones are deleted every
	// hour. The files are not touched. Default 400d.
	AuditKeep time.Duration `yaml:"audit_keep"`
}

// Facilities are the syslog facilities by name, with their codes (RFC 5424).
var Facilities = map[string]int{
	"kern": 0, "user": 1, "mail": 2, "daemon": 3, "auth": 4, "syslog": 5, "lpr": 6, "news": 7, "uucp": 8, "cron": 9,
	"authpriv": 10, "ftp": 11, "local0": 16, "local1": 17, "local2": 18, "local3": 19, "local4": 20, "local5": 21,
	"local6": 22, "local7": 23,
}

// Problem is one thing wrong with a configuration file.
type Problem struct {
	File string
	Line int    // 0 when the problem is about something missing from the file
	Path string // the key, e.g. "inventory.targets[1].addresses"
	Msg  string
}

func (p Problem) String() string {
	var b strings.Builder
	b.WriteString(p.File)
	if p.Line > 0 {
		b.WriteString(":" + strconv.Itoa(p.Line))
	}
	b.WriteString(": ")
	if p.Path != "" {
		b.WriteString(p.Path + ": ")
	}
	b.WriteString(p.Msg)
	return b.String()
}

// Error lists every problem found in a file, in line order.
type Error struct {
	Problems []Problem
}

func (e *Error) Error() string {
	lines := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		lines[i] = p.String()
	}
	return strings.Join(lines, "\n")
}

// Load reads and checks the file at path.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return Parse(path, data)
}

var yamlLine = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// Parse checks data, which was read from file (used in messages), and
// returns the configuration with defaults filled in. Any problem is
// reported as an *Error.
func Parse(file string, data []byte) (*Config, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		p := Problem{File: file, Msg: strings.TrimPrefix(err.Error(), "yaml: ")}
		if m := yamlLine.FindStringSubmatch(err.Error()); m != nil {
			p.Line, _ = strconv.Atoi(m[1])
			p.Msg = m[2]
		}
		return nil, &Error{Problems: []Problem{p}}
	}
	if len(doc.Content) == 0 {
		return nil, &Error{Problems: []Problem{{File: file, Msg: "the file is empty"}}}
	}

	d := &decoder{lines: map[string]int{}}
	cfg := &Config{File: file}
	d.decode(doc.Content[0], "", reflectValue(cfg))
	v := &validator{lines: d.lines, problems: d.problems}
	if len(v.problems) == 0 {
		// Semantic checks on a half-decoded file would only add noise.
		cfg.setDefaults()
		cfg.validate(v)
	}
	if len(v.problems) > 0 {
		for i := range v.problems {
			v.problems[i].File = file
		}
		sortProblems(v.problems)
		return nil, &Error{Problems: v.problems}
	}
	sum := sha256.Sum256(data)
	cfg.Digest = hex.EncodeToString(sum[:])
	return cfg, nil
}

// AsError returns err's *Error, if it is one.
func AsError(err error) (*Error, bool) {
	var e *Error
	ok := errors.As(err, &e)
	return e, ok
}

func (c *Config) setDefaults() {
	l := &c.Listen
	if len(l.Addresses) == 0 {
		l.Addresses = []netip.AddrPort{netip.MustParseAddrPort("[::]:443")}
	}
	if !l.Metrics.IsValid() {
		l.Metrics = netip.MustParseAddrPort("127.0.0.1:9443")
	}
	l.AdminSocket = orDefault(l.AdminSocket, "/run/bastiond/admin.sock")
	l.AdminGroup = orDefault(l.AdminGroup, "bastion-admin")
	l.TLS.MinVersion = orDefault(l.TLS.MinVersion, "1.3")
	c.Bastion.Mode = orDefault(c.Bastion.Mode, ModeAttached)

	fw := &c.Firewall
	fw.TrapThreshold = orDefault(fw.TrapThreshold, 1)
	fw.BlockFor = orDefault(fw.BlockFor, 10*time.Minute)
	if fw.ExemptPorts == nil {
		fw.ExemptPorts = []uint16{80}
	}
	fw.ConnRate = orDefault(fw.ConnRate, 20)
	fw.RestrictEgress = orDefault(fw.RestrictEgress, EgressUser)
	fw.EgressUser = orDefault(fw.EgressUser, "bastiond")

	c.Access.SessionIdle = orDefault(c.Access.SessionIdle, 30*time.Minute)
	c.Access.SessionLifetime = orDefault(c.Access.SessionLifetime, 12*time.Hour)
	c.Access.MFA = orDefault(c.Access.MFA, "totp")

	lim := &c.Limits
	lim.Capacity = orDefault(lim.Capacity, 100)
	lim.Weights.SSH = orDefault(lim.Weights.SSH, 1)
	lim.Weights.RDP = orDefault(lim.Weights.RDP, 2)
	lim.Weights.Tunnel = orDefault(lim.Weights.Tunnel, 1)
	lim.SessionsPerUser = orDefault(lim.SessionsPerUser, 10)
	lim.ConnectionsPerSource = orDefault(lim.ConnectionsPerSource, 256)
	lim.SigninThrottleEntries = orDefault(lim.SigninThrottleEntries, 1<<16)
	lim.PendingTunnelRequests = orDefault(lim.PendingTunnelRequests, 1024)
	lim.DrainGrace = orDefault(lim.DrainGrace, 30*time.Second)
	lim.UpgradeGrace = orDefault(lim.UpgradeGrace, time.Hour)
	lim.HandshakeTimeout = orDefault(lim.HandshakeTimeout, 10*time.Second)
	lim.DialTimeout = orDefault(lim.DialTimeout, 10*time.Second)
	lim.IdleTimeout = orDefault(lim.IdleTimeout, 20*time.Minute)
	lim.MaxSessionDuration = orDefault(lim.MaxSessionDuration, 12*time.Hour)
	lim.TargetTimeout = orDefault(lim.TargetTimeout, 30*time.Second)
	lim.ClientTimeout = orDefault(lim.ClientTimeout, 30*time.Second)
	for _, p := range []*ProtocolLimits{&lim.SSH, &lim.RDP, &lim.Tunnel} {
		p.IdleTimeout = orDefault(p.IdleTimeout, lim.IdleTimeout)
		p.MaxSessionDuration = orDefault(p.MaxSessionDuration, lim.MaxSessionDuration)
	}

	c.Logging.Level = orDefault(c.Logging.Level, "info")
	c.Logging.Format = orDefault(c.Logging.Format, "auto")
	c.Logging.AuditFile = orDefault(c.Logging.AuditFile, "/var/log/bastiond/audit.jsonl")
	c.Logging.Journald = orDefault(c.Logging.Journald, "auto")
	if s := c.Logging.Syslog; s != nil {
		s.Queue = orDefault(s.Queue, 100000)
		s.Facility = orDefault(s.Facility, "auth")
		s.AppName = orDefault(s.AppName, "bastiond")
		if host, _, err := net.SplitHostPort(s.Address); err == nil && s.ServerName == "" {
			s.ServerName = host
		}
	}
	c.StateDir = orDefault(c.StateDir, "/var/lib/bastiond")
	c.RecordingsDir = orDefault(c.RecordingsDir, filepath.Join(c.StateDir, "recordings"))
	c.Store.Backend = orDefault(c.Store.Backend, StoreBBolt)
	if p := c.Store.Postgres; p != nil {
		p.MaxConns = orDefault(p.MaxConns, 10)
		p.StatementTimeout = orDefault(p.StatementTimeout, 5*time.Second)
		p.ConnectTimeout = orDefault(p.ConnectTimeout, 5*time.Second)
		p.AuditKeep = orDefault(p.AuditKeep, 400*24*time.Hour)
	}
	if c.Cluster.Instance == "" {
		c.Cluster.Instance = DefaultInstance()
	}
	c.Links.setDefaults()
}

// DefaultInstance is the instance name of a bastiond whose configuration
// names none: the host name's first label, in lower case ("" if the host
// name cannot be read).
func DefaultInstance() string {
	h, err := os.Hostname()
	if err != nil {
		return ""
	}
	h, _, _ = strings.Cut(h, ".")
	return strings.ToLower(h)
}

func orDefault[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}
