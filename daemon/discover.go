package daemon

import (
	"net/netip"

	"github.com/bastiond/bastiond/daemon/adminapi"
	"github.com/bastiond/bastiond/netpolicy/discover"
)

// targetsAPI is the inventory as the admin API shows it.
type targetsAPI struct{ d *daemon }

var _ adminapi.Targets = targetsAPI{}

func (t targetsAPI) Discover() (adminapi.Discovery, error) {
	cfg := t.d.config()
	seen, err := discover.SeenOn(cfg.Bastion.VNetInterface)
	if err != nil {
		return adminapi.Discovery{}, err
	}
	own, err := vnetAddrs(cfg)
	if err != nil {
		return adminapi.Discovery{}, err
	}
	targets := make(map[netip.Addr]string)
	for _, tg := range cfg.Inventory.Targets {
		for _, a := range tg.Addresses {
			targets[a.Unmap()] = tg.Name
		}
	}
	v := adminapi.Discovery{Interface: cfg.Bastion.VNetInterface, Seen: len(seen), Unknown: []adminapi.UnknownHost{}}
	for _, h := range discover.Unknown(seen, targets, own) {
		v.Unknown = append(v.Unknown, adminapi.UnknownHost(h))
	}
	return v, nil
}
