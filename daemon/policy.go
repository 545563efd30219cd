package daemon

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/bastiond/bastiond/daemon/adminapi"
	"github.com/bastiond/bastiond/daemon/config"
	"github.com/bastiond/bastiond/internal/store"
	"github.com/bastiond/bastiond/netpolicy"
	"github.com/bastiond/bastiond/netpolicy/discover"
)

// vnetAddrs are the bastion's own global addresses on the VNet interface.
func vnetAddrs(cfg *config.Config) ([]netip.Addr, error) {
	vnet, err := discover.Lookup(cfg.Bastion.VNetInterface)
	if err != nil {
		return nil, err
	}
	var addrs []netip.Addr
	for _, p := range vnet.Addrs {
		if !p.Addr().IsLinkLocalUnicast() {
			addrs = append(addrs, p.Addr())
		}
	}
	return addrs, nil
}

// policyInput is what netpolicy compiles for cfg: the configuration's
// settings, the bastion's VNet addresses and the facts about this host
// that the egress chain needs.
func policyInput(cfg *config.Config, vnet []netip.Addr, facts egressFacts) netpolicy.Input {
	fw := cfg.Firewall
	in := netpolicy.Input{
		Mode:            netpolicy.Mode(cfg.Bastion.Mode),
		PublicInterface: cfg.Bastion.PublicInterface,
		VNetAddrs:       vnet,
		Targets:         policyTargets(cfg),
		Networks:        policyNetworks(cfg),
		Firewall: netpolicy.Firewall{
			AdminCIDRs:    fw.AdminCIDRs,
			TrapThreshold: fw.TrapThreshold,
			BlockFor:      fw.BlockFor,
			ExemptPorts:   fw.ExemptPorts,
			ConnRate:      fw.ConnRate,
			Balancers:     cfg.Listen.ProxyProtocol.From,
		},
		Egress: netpolicy.Egress{
			Restrict:  netpolicy.EgressMode(fw.RestrictEgress),
			User:      fw.EgressUser,
			UID:       facts.UID,
			UserFound: facts.UserFound,
			// Absent from the file: the host's resolvers; [] allows none.
			DNS: fw.EgressDNS,
		},
	}
	if in.Egress.DNS == nil {
		in.Egress.DNS = facts.Resolvers
	}
	if s := cfg.Logging.Syslog; s != nil {
		host, port, _ := net.SplitHostPort(s.Address)
		if n, err := strconv.ParseUint(port, 10, 16); err == nil && n != 0 {
			addrs := facts.SyslogAddrs
			if a, err := netip.ParseAddr(host); err == nil {
				addrs = []netip.Addr{a}
			}
			for _, a := range addrs {
				in.Egress.Syslog = append(in.Egress.Syslog, netip.AddrPortFrom(a, uint16(n)))
			}
		}
	}
	in.Egress.Database = facts.Database
	in.Egress.IdentityProviders = facts.IdentityProviders
	for _, e := range fw.EgressAllow {
		in.Egress.Allow = append(in.Egress.Allow, netpolicy.Endpoint{Addr: e.Addr, Port: netpolicy.Port(e.Port)})
	}
	return in
}

// policyTargets are the inventory's machines as netpolicy guards them:
// each with every port it offers and that port's protocols.
func policyTargets(cfg *config.Config) []netpolicy.Target {
	targets := make([]netpolicy.Target, len(cfg.Inventory.Targets))
	for i, t := range cfg.Inventory.Targets {
		var ports []netpolicy.Port
		for _, p := range t.Ports.Services() {
			ports = append(ports, netpolicy.Port(p))
		}
		targets[i] = netpolicy.Target{Name: t.Name, Addresses: t.Addresses, Ports: ports}
	}
	return targets
}

// policyNetworks are the inventory's networks as netpolicy guards them,
// each port with its protocols; nil without networks.
func policyNetworks(cfg *config.Config) []netpolicy.Network {
	var out []netpolicy.Network
	for _, n := range cfg.Inventory.Networks {
		var ports []netpolicy.Port
		for _, p := range n.Ports.Services() {
			ports = append(ports, netpolicy.Port(p))
		}
		out = append(out, netpolicy.Network{Name: n.Name, Prefixes: n.CIDRs, Ports: ports})
	}
	return out
}

// exportTargets are what `policy export NAME` may name: the targets, and
// the networks, whose machines each take the same guard (a machine's own
// rules need its ports, not its address).
func exportTargets(cfg *config.Config) []netpolicy.Target {
	targets := policyTargets(cfg)
	for _, n := range policyNetworks(cfg) {
		targets = append(targets, netpolicy.Target{Name: n.Name, Ports: n.Ports})
	}
	return targets
}

// policyAPI is the firewall as the admin API shows it.
type policyAPI struct{ d *daemon }

var _ adminapi.Policy = policyAPI{}

func (p policyAPI) Show() (adminapi.PolicyView, error) {
	rs, ok := p.d.kernel.Applied()
	if !ok {
		return adminapi.PolicyView{}, fmt.Errorf("no policy applied")
	}
	diffs, err := p.d.kernel.Verify()
	if err != nil {
		return adminapi.PolicyView{}, err
	}
	return adminapi.PolicyView{Text: rs.Render(), Differences: diffs}, nil
}

func (p policyAPI) Export(target string) (string, error) {
	cfg := p.d.config()
	targets := exportTargets(cfg)
	if !slices.ContainsFunc(targets, func(t netpolicy.Target) bool { return t.Name == target }) {
		return "", fmt.Errorf("target %q: %w", target, adminapi.ErrUnknownTarget)
	}
	from, err := guardSources(cfg, p.d.state)
	if err != nil {
		return "", err
	}
	rs, err := netpolicy.Export(targets, target, from)
	if err != nil {
		return "", err
	}
	header := fmt.Sprintf("#!/usr/sbin/nft -f\n# bastiond guard for %s: its SSH and RDP ports answer the bastion (%v) and nobody else.\n"+
		"# Load with `nft -f FILE`; it replaces only the table inet %s.\ntable inet %s\ndelete table inet %s\n\n",
		target, strings.Join(prefixStrings(from), ", "), netpolicy.GuardName, netpolicy.GuardName, netpolicy.GuardName)
	return header + rs.Render(), nil
}

func (p policyAPI) Blocklist() ([]adminapi.BlockEntry, error) {
	list, err := p.d.kernel.Blocklist()
	if err != nil {
		return nil, err
	}
	out := make([]adminapi.BlockEntry, len(list))
	for i, e := range list {
		out[i] = adminapi.BlockEntry{Prefix: e.Prefix, Expires: e.Expires}
	}
	return out, nil
}

// Unblock tells which sources it removed by listing the blocklist before
// and after (for the audit trail); a source whose block happened to expire
// in between is counted with them.
func (p policyAPI) Unblock(sources []netip.Prefix) ([]netip.Prefix, error) {
	before, err := p.d.kernel.Blocklist()
	if err != nil {
		return nil, err
	}
	if _, err := p.d.kernel.Unblock(sources); err != nil {
		return nil, err
	}
	after, err := p.d.kernel.Blocklist()
	if err != nil {
		return nil, err
	}
	var removed []netip.Prefix
	for _, e := range before {
		if !slices.ContainsFunc(after, func(a netpolicy.BlockEntry) bool { return a.Prefix == e.Prefix }) {
			removed = append(removed, e.Prefix)
		}
	}
	return removed, nil
}

// config returns the configuration in force.
func (d *daemon) config() *config.Config {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.cfg
}

func (p policyAPI) Counters() (adminapi.CountersView, error) {
	list, err := p.d.kernel.Counters()
	if err != nil {
		return adminapi.CountersView{}, err
	}
	v := adminapi.CountersView{Since: p.d.kernel.CountingSince(), Targets: make([]adminapi.TargetCounters, len(list))}
	for i, c := range list {
		v.Targets[i] = adminapi.TargetCounters{
			Target:   c.Target,
			Sent:     adminapi.Traffic(c.Sent),
			Received: adminapi.Traffic(c.Received),
			Blocked:  adminapi.Traffic(c.Blocked),
		}
	}
	return v, nil
}

// guardSources are where the machines' exported guard lets connections
// come from: this host's VNet addresses, or, in a cluster, the bastion
// subnets, where every instance lives (those added later too).
func guardSources(cfg *config.Config, db store.DB) ([]netip.Prefix, error) {
	if clustered(db) {
		return cfg.Bastion.Subnets, nil
	}
	addrs, err := vnetAddrs(cfg)
	if err != nil {
		return nil, err
	}
	from := make([]netip.Prefix, 0, len(addrs))
	for _, a := range addrs {
		from = append(from, netip.PrefixFrom(a, a.BitLen()))
	}
	return from, nil
}

// prefixStrings writes a single address without its length.
func prefixStrings(ps []netip.Prefix) []string {
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = p.String()
		if p.IsSingleIP() {
			out[i] = p.Addr().String()
		}
	}
	return out
}
