package daemon

import (
	"errors"
	"fmt"
	"sync"

	"go.uber.org/zap"

	"github.com/bastiond/bastiond/daemon/adminapi"
	"github.com/bastiond/bastiond/daemon/config"
	"github.com/bastiond/bastiond/proxy"
	"github.com/bastiond/bastiond/proxy/broker"
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
		Check:   func(target, protocol string) error { return linkTarget(cfg, target, protocol) },
		Revoked: func(id string) int { return d.revoke("link " + id + " revoked") }}
}

// linkRevoked returns the check, for endRevoked, of a live session of a
// link: it has lost its right when links were turned off, the link was
// revoked or removed, or its target or protocol left the inventory. A
// link that cannot be read (a cluster's database away) keeps its
// sessions, as an account that cannot be read does not: the link's
// session was vouched for by its use, not by a sign-in to re-check.
func (d *daemon) linkRevoked() func(id string, s broker.Info) bool {
	cfg := d.config()
	store := link.NewStore(d.state)
	var mu sync.Mutex // this and the previous process's sessions are checked at once
	seen := map[string]bool{}
	return func(id string, s broker.Info) bool {
		if !cfg.Links.Enabled {
			return true
		}
		mu.Lock()
		gone, ok := seen[id]
		mu.Unlock()
		if !ok {
			l, err := store.Get(id)
			switch {
			case errors.Is(err, link.ErrNoLink):
				gone = true
			case err != nil:
				d.log.Warn("cannot read a link to re-check its sessions: they go on", zap.String("link", id), zap.Error(err))
			default:
				gone = !l.Revoked.IsZero() || linkTarget(cfg, l.Target, l.Protocol) != nil
			}
			mu.Lock()
			seen[id] = gone
			mu.Unlock()
		}
		return gone
	}
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
