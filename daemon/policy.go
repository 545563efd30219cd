package daemon

import (
	"fmt"
	"net/netip"
	"slices"

	"github.com/bastiond/bastiond/daemon/adminapi"
	"github.com/bastiond/bastiond/daemon/config"
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
	if !slices.ContainsFunc(cfg.Inventory.Targets, func(t config.Target) bool { return t.Name == target }) {
		return "", fmt.Errorf("target %q: %w", target, adminapi.ErrUnknownTarget)
	}
	addrs, err := vnetAddrs(cfg)
	if err != nil {
		return "", err
	}
	rs, err := netpolicy.Export(cfg, target, addrs)
	if err != nil {
		return "", err
	}
	header := fmt.Sprintf("#!/usr/sbin/nft -f\n# bastiond guard for %s: its SSH and RDP ports answer the bastion (%v) and nobody else.\n"+
		"# Load with `nft -f FILE`; it replaces only the table inet %s.\ntable inet %s\ndelete table inet %s\n\n",
		target, addrs, netpolicy.GuardName, netpolicy.GuardName, netpolicy.GuardName)
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
