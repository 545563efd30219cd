// Package access decides who may reach what: role-based authorization over
// the inventory. A session needs a role that is bound to the user (directly,
// through a group, or by a grant in the account store), whose targets cover
// the machine (by name, tag or "*"), whose protocols cover the one asked for
// (ssh, rdp, tunnel or tunnel:PORT), whose logins cover the account name on
// the machine, and whose bastions cover this bastion, as in Azure, where a
// connection needs rights on the machine and on the bastion itself.
//
// A Policy is immutable; a reload builds a new one. Deny is the default:
// no role, no access.
package access

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
)

// Protocols.
const (
	SSH    = "ssh"
	RDP    = "rdp"
	Tunnel = "tunnel"
)

// Target is what the policy needs to know of an inventory machine.
type Target struct {
	Name        string
	Description string
	Tags        []string
	SSH, RDP    uint16   // 0: not offered
	Tunnel      []uint16 // further ports for native tunnels
	// SSHCertificates: browser SSH logs in with a certificate from the
	// bastion's CA instead of what the user types.
	SSHCertificates bool
	// Network is set on an address inside an inventory network (see
	// Policy.Target): Name is then the address as netip writes it, which
	// is what tickets, sessions and pinned host keys carry, and Display is
	// the network's target_name for it.
	Network string
	Address netip.Addr
	Display string
}

// Shown is how t shows in the portal, records and events: its name, or
// for an address its network's pattern.
func (t Target) Shown() string {
	if t.Display != "" {
		return t.Display
	}
	return t.Name
}

// ports are every port a tunnel may reach on t.
func (t Target) ports() []uint16 {
	var ps []uint16
	for _, p := range append([]uint16{t.SSH, t.RDP}, t.Tunnel...) {
		if p != 0 && !slices.Contains(ps, p) {
			ps = append(ps, p)
		}
	}
	return ps
}

// Role grants protocols on targets.
type Role struct {
	Name string
	// Subjects are "user:NAME", "group:NAME" and
	// "oidc-group:PROVIDER/GROUP".
	Subjects []string
	// Targets are names, "tag:TAG" or "*".
	Targets []string
	// Protocols are ssh, rdp, tunnel (any offered port) or tunnel:PORT.
	Protocols []string
	// Logins are account names allowed on the machine; empty or "*": any.
	Logins []string
	// Bastions are the server names of the bastions the role applies on;
	// empty: every bastion that loads this configuration.
	Bastions            []string
	DisableClipboard    bool
	DisableFileTransfer bool
	Record              bool
	// Auditor lets members list and play back session recordings.
	Auditor bool
}

// Policy is one configuration's access rules.
type Policy struct {
	bastion  string
	targets  map[string]Target
	order    []string            // target names in inventory order
	groups   map[string][]string // user -> groups
	roles    []Role
	networks []Network
}

// New builds a Policy for the bastion called bastion (its server name).
// groups maps a group to its members.
func New(bastion string, targets []Target, groups map[string][]string, roles []Role) *Policy {
	p := &Policy{
		bastion: strings.ToLower(strings.TrimSuffix(bastion, ".")),
		targets: make(map[string]Target, len(targets)),
		groups:  map[string][]string{},
		roles:   slices.Clone(roles),
	}
	for _, t := range targets {
		p.targets[t.Name] = t
		p.order = append(p.order, t.Name)
	}
	for g, members := range groups {
		for _, u := range members {
			p.groups[u] = append(p.groups[u], g)
		}
	}
	return p
}

// BrowserRoles returns the names of the roles that apply on this bastion
// and need the browser client: those granting ssh or rdp, which are
// sessions in the page, and auditors, who play recordings back there. A
// policy without any serves tunnels only.
func (p *Policy) BrowserRoles() []string {
	var names []string
	for _, role := range p.roles {
		if p.onThisBastion(role) && (role.Auditor || slices.Contains(role.Protocols, SSH) || slices.Contains(role.Protocols, RDP)) {
			names = append(names, role.Name)
		}
	}
	return names
}

// Request is one access question.
type Request struct {
	User string
	// Granted are the roles the account store grants the user.
	Granted []string
	// Groups are the groups a single sign-on provider says the user is in,
	// as PROVIDER/GROUP, which roles bind as oidc-group:PROVIDER/GROUP.
	Groups   []string
	Target   string
	Protocol string
	// Port is the target port for a tunnel; 0 for ssh and rdp.
	Port uint16
	// Login is the account name on the target; "" when not yet known
	// (the check is then whether some login is allowed).
	Login string
}

// Decision is the answer.
type Decision struct {
	Allowed bool
	// Roles are the roles that allow the request.
	Roles []string
	// Reason says why not, for the log; users see only "not allowed".
	Reason string
	// Record is true if any allowing role records sessions; for a tunnel
	// to a target's SSH or RDP port, also if a role of the user records
	// that protocol on that target: the tunnel would carry the very
	// session that role says must be recorded.
	Record bool
	// RecordedBy are the roles that make Record true.
	RecordedBy []string
	// DisableClipboard is true if any allowing role disables the
	// clipboard: the stricter setting wins.
	DisableClipboard bool
	// DisableFileTransfer is true if any allowing role disables file
	// transfer: the stricter setting wins. For a tunnel to the SSH or RDP
	// port, also if a role of the user disables file transfer for that
	// protocol on that target (FilesDisabledBy): scp through the tunnel
	// would carry what the role keeps out of the browser.
	DisableFileTransfer bool
	FilesDisabledBy     []string
}

// Target returns the inventory target called name or, when name is an
// address inside an inventory network, that address as a target of the
// network (its Name is then the address as netip writes it, which callers
// carry on: 2001:db8::5 for [2001:db8::5], 10.0.0.1 for ::ffff:10.0.0.1).
func (p *Policy) Target(name string) (Target, bool) {
	if t, ok := p.targets[name]; ok {
		return t, true
	}
	return p.addressTarget(name)
}

// Check answers r.
func (p *Policy) Check(r Request) Decision {
	t, ok := p.Target(r.Target)
	if !ok {
		return Decision{Reason: fmt.Sprintf("no target %q in the inventory", r.Target)}
	}
	port, err := resolvePort(t, r.Protocol, r.Port)
	if err != nil {
		return Decision{Reason: err.Error()}
	}
	d := Decision{Reason: fmt.Sprintf("no role gives %s %s on %s on this bastion", r.User, describe(r.Protocol, port), t.Name)}
	for _, role := range p.roles {
		if !p.bound(role, Principal{User: r.User, Granted: r.Granted, Groups: r.Groups}) || !p.onThisBastion(role) || !covers(role.Targets, t) ||
			!allowsProtocol(role.Protocols, r.Protocol, port) || !allowsLogin(role.Logins, r.Login) {
			continue
		}
		d.Allowed = true
		d.Reason = ""
		d.Roles = append(d.Roles, role.Name)
		d.Record = d.Record || role.Record
		if role.Record {
			d.RecordedBy = append(d.RecordedBy, role.Name)
		}
		d.DisableClipboard = d.DisableClipboard || role.DisableClipboard
		d.DisableFileTransfer = d.DisableFileTransfer || role.DisableFileTransfer
	}
	if d.Allowed && r.Protocol == Tunnel {
		// A tunnel to the SSH or RDP port carries that protocol: if a role
		// records the user's sessions of it on this target, the tunnel
		// cannot give them unrecorded.
		var carried string
		switch {
		case t.SSH != 0 && port == t.SSH:
			carried = SSH
		case t.RDP != 0 && port == t.RDP:
			carried = RDP
		}
		for _, role := range p.roles {
			if carried == "" || !p.bound(role, Principal{User: r.User, Granted: r.Granted, Groups: r.Groups}) ||
				!p.onThisBastion(role) || !covers(role.Targets, t) || !allowsProtocol(role.Protocols, carried, 0) {
				continue
			}
			if role.Record && !slices.Contains(d.RecordedBy, role.Name) {
				d.Record = true
				d.RecordedBy = append(d.RecordedBy, role.Name)
			}
			if role.DisableFileTransfer {
				d.DisableFileTransfer = true
				d.FilesDisabledBy = append(d.FilesDisabledBy, role.Name)
			}
		}
	}
	return d
}

// Covers reports whether a role bound to r.User on this bastion names
// r.Target (by name, tag or "*") with r.Protocol (on r.Port, for a tunnel)
// and r.Login, whether or not the inventory has that target or it offers
// that port. It is what a user may learn about the inventory: someone
// whose roles do not cover a request is told "not allowed", never whether
// the machine or the port exists (see Check for the answer itself). A
// target outside the inventory has no tags, so only a role naming it, or
// "*", covers it.
func (p *Policy) Covers(r Request) bool {
	t, ok := p.Target(r.Target)
	if !ok {
		t = Target{Name: r.Target}
	}
	for _, role := range p.roles {
		if p.bound(role, Principal{User: r.User, Granted: r.Granted, Groups: r.Groups}) && p.onThisBastion(role) && covers(role.Targets, t) &&
			allowsProtocol(role.Protocols, r.Protocol, r.Port) && allowsLogin(role.Logins, r.Login) {
			return true
		}
	}
	return false
}

// resolvePort checks that t offers protocol (on port, for a tunnel) and
// returns the port.
func resolvePort(t Target, protocol string, port uint16) (uint16, error) {
	switch protocol {
	case SSH:
		if t.SSH == 0 {
			return 0, fmt.Errorf("%s offers no SSH", t.Name)
		}
		return t.SSH, nil
	case RDP:
		if t.RDP == 0 {
			return 0, fmt.Errorf("%s offers no RDP", t.Name)
		}
		return t.RDP, nil
	case Tunnel:
		if !slices.Contains(t.ports(), port) {
			return 0, fmt.Errorf("%s offers no tunnel to port %d", t.Name, port)
		}
		return port, nil
	}
	return 0, fmt.Errorf("%q is not a protocol", protocol)
}

func describe(protocol string, port uint16) string {
	if protocol == Tunnel {
		return "a tunnel to port " + strconv.Itoa(int(port))
	}
	return protocol
}

// Principal is who a role may be bound to.
type Principal struct {
	User string
	// Granted are the roles the account store grants the user.
	Granted []string
	// Groups are the user's groups at a single sign-on provider, as
	// PROVIDER/GROUP.
	Groups []string
}

func (p *Policy) bound(role Role, who Principal) bool {
	if slices.Contains(who.Granted, role.Name) {
		return true
	}
	for _, s := range role.Subjects {
		kind, name, _ := strings.Cut(s, ":")
		switch kind {
		case "user":
			if name == who.User {
				return true
			}
		case "group":
			if slices.Contains(p.groups[who.User], name) {
				return true
			}
		case "oidc-group":
			if slices.Contains(who.Groups, name) {
				return true
			}
		}
	}
	return false
}

func (p *Policy) onThisBastion(role Role) bool {
	if len(role.Bastions) == 0 {
		return true
	}
	return slices.ContainsFunc(role.Bastions, func(b string) bool {
		return b == "*" || strings.EqualFold(strings.TrimSuffix(b, "."), p.bastion)
	})
}

func covers(selectors []string, t Target) bool {
	for _, s := range selectors {
		if t.Network != "" {
			// An address is granted by its network's name or tags only:
			// "*" means the named targets, and no role names an address.
			if s == "network:"+t.Network {
				return true
			}
		} else if s == "*" || s == t.Name {
			return true
		}
		if tag, ok := strings.CutPrefix(s, "tag:"); ok && slices.Contains(t.Tags, tag) {
			return true
		}
	}
	return false
}

func allowsProtocol(protocols []string, protocol string, port uint16) bool {
	for _, p := range protocols {
		if p == protocol {
			return true
		}
		if rest, ok := strings.CutPrefix(p, Tunnel+":"); ok && protocol == Tunnel && rest == strconv.Itoa(int(port)) {
			return true
		}
	}
	return false
}

func allowsLogin(logins []string, login string) bool {
	return login == "" || len(logins) == 0 || slices.Contains(logins, "*") || slices.Contains(logins, login)
}

// Reachable is one target as a user sees it in the portal.
type Reachable struct {
	Name        string   `json:"name"`
	Description string   `json:"description,omitempty"`
	Tags        []string `json:"tags,omitempty"`
	// Protocols are those the user may open: ssh, rdp, and tunnel when
	// some tunnel port is allowed.
	Protocols []string `json:"protocols"`
	// TunnelPorts are the ports the user may tunnel to.
	TunnelPorts []uint16 `json:"tunnel_ports,omitempty"`
	// Logins are the account names allowed, nil for any.
	Logins []string `json:"logins,omitempty"`
	// Network is true for an inventory network: Name is the network's,
	// and the user connects to an address inside CIDRs.
	Network bool     `json:"network,omitempty"`
	CIDRs   []string `json:"cidrs,omitempty"`
}

// Reachable lists, in inventory order, the targets user may open something on.
func (p *Policy) Reachable(who Principal) []Reachable {
	var out []Reachable
	for _, name := range p.order {
		if r, ok := p.reachable(p.targets[name], who); ok {
			out = append(out, r)
		}
	}
	return out
}

// reachable is what user may open on t, and whether that is anything.
func (p *Policy) reachable(t Target, who Principal) (Reachable, bool) {
	r := Reachable{Name: t.Name, Description: t.Description, Tags: t.Tags}
	anyLogin := false
	var logins []string
	note := func(d Decision) {
		for _, rn := range d.Roles {
			i := slices.IndexFunc(p.roles, func(r Role) bool { return r.Name == rn })
			ls := p.roles[i].Logins
			if len(ls) == 0 || slices.Contains(ls, "*") {
				anyLogin = true
			}
			logins = append(logins, ls...)
		}
	}
	for _, proto := range []string{SSH, RDP} {
		if d := p.Check(Request{User: who.User, Granted: who.Granted, Groups: who.Groups, Target: t.Name, Protocol: proto}); d.Allowed {
			r.Protocols = append(r.Protocols, proto)
			note(d)
		}
	}
	for _, port := range t.ports() {
		if d := p.Check(Request{User: who.User, Granted: who.Granted, Groups: who.Groups, Target: t.Name, Protocol: Tunnel, Port: port}); d.Allowed {
			r.TunnelPorts = append(r.TunnelPorts, port)
			note(d)
		}
	}
	if len(r.TunnelPorts) > 0 {
		r.Protocols = append(r.Protocols, Tunnel)
	}
	if len(r.Protocols) == 0 {
		return Reachable{}, false
	}
	if !anyLogin {
		slices.Sort(logins)
		r.Logins = slices.Compact(logins)
	}
	return r, true
}

// RoleNames lists the roles the policy defines.
func (p *Policy) RoleNames() []string {
	names := make([]string, len(p.roles))
	for i, r := range p.roles {
		names[i] = r.Name
	}
	return names
}

// RolesOf lists the roles bound to user, through the configuration or
// granted, that the policy defines.
func (p *Policy) RolesOf(who Principal) []string {
	var out []string
	for _, r := range p.roles {
		if p.bound(r, who) {
			out = append(out, r.Name)
		}
	}
	return out
}

// Auditor reports whether a role bound to user, through the configuration
// or granted, lets it list and play back session recordings on this bastion.
func (p *Policy) Auditor(who Principal) bool {
	return slices.ContainsFunc(p.roles, func(r Role) bool {
		return r.Auditor && p.bound(r, who) && p.onThisBastion(r)
	})
}
