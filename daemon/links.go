package daemon

import (
	"fmt"

	"github.com/bastiond/bastiond/daemon/adminapi"
	"github.com/bastiond/bastiond/daemon/config"
	"github.com/bastiond/bastiond/proxy"
	"github.com/bastiond/bastiond/proxy/link"
)

// linksConfig is what the portal needs of the shareable links in cfg:
// the links are kept in the state store, shared by a cluster's instances.
func (d *daemon) linksConfig(cfg *config.Config) proxy.LinksConfig {
	return proxy.LinksConfig{Store: link.NewStore(d.state), Enabled: cfg.Links.Enabled, Record: cfg.Links.Recorded()}
}

// linkSettings are the shareable links as the admin socket offers them,
// under the configuration in force.
func (d *daemon) linkSettings() adminapi.LinkSettings {
	cfg := d.config()
	return adminapi.LinkSettings{Store: link.NewStore(d.state), Enabled: cfg.Links.Enabled, MaxValid: cfg.Links.MaxValid,
		MaxUses: cfg.Links.MaxUses, ServerName: cfg.Listen.ServerName,
		Check: func(target, protocol string) error { return linkTarget(cfg, target, protocol) }}
}

// linkTarget says why protocol on target cannot be a link's, or nil.
func linkTarget(cfg *config.Config, target, protocol string) error {
	for _, t := range cfg.Inventory.Targets {
		if t.Name != target {
			continue
		}
		if (protocol == "ssh" && t.Ports.SSH == 0) || (protocol == "rdp" && t.Ports.RDP == 0) {
			return fmt.Errorf("target %s offers no %s (inventory ports)", target, protocol)
		}
		return nil
	}
	return fmt.Errorf("no target %q in the inventory (bastionctl targets)", target)
}
