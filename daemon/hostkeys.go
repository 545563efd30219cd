package daemon

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"

	"go.uber.org/zap"

	"github.com/bastiond/bastiond/daemon/adminapi"
	"github.com/bastiond/bastiond/daemon/config"
	"github.com/bastiond/bastiond/internal/seal"
	"github.com/bastiond/bastiond/internal/store"
	"github.com/bastiond/bastiond/proxy/hostkeys"
	"github.com/bastiond/bastiond/proxy/sshca"
)

// openSSHTrust opens what the bastion's SSH connections rely on: the
// targets' pinned host keys, in the state store db, and the SSH CA that
// signs user certificates: in the state directory (made on first start),
// or, in a cluster, sealed in the shared store, where the first instance
// puts this host's key if it has one.
func openSSHTrust(cfg *config.Config, db store.DB, log *zap.Logger) (*hostkeys.Store, *sshca.CA, error) {
	store, err := hostkeys.New(hostkeys.Config{DB: db, ScanTimeout: cfg.Limits.HandshakeTimeout})
	if err != nil {
		return nil, nil, err
	}
	if !clustered(db) {
		ca, err := sshca.Open(sshca.Config{Dir: cfg.StateDir, ServerName: cfg.Listen.ServerName})
		if err != nil {
			return nil, nil, err
		}
		return store, ca, nil
	}
	key, err := seal.Load(cfg.Store.Postgres.SealKey)
	if err != nil {
		return nil, nil, fmt.Errorf("store.postgres.seal_key: %w", err)
	}
	ca, origin, err := sshca.OpenShared(sshca.SharedConfig{DB: db, Seal: key, ServerName: cfg.Listen.ServerName, ImportDir: cfg.StateDir})
	if err != nil {
		return nil, nil, err
	}
	switch origin {
	case sshca.Imported:
		log.Warn("the cluster's SSH CA is now this host's own CA key, sealed in the database", zap.String("seal_key_id", key.ID()))
	case sshca.Created:
		log.Warn("made the cluster's SSH CA, sealed in the database: machines must trust its public key (bastionctl ca show)",
			zap.String("seal_key_id", key.ID()))
	}
	return store, ca, nil
}

// hostKeysAPI is the host key store for the admin API. Scans and pins
// must name an inventory target that offers the protocol, so that a typo
// does not pin a key no session will ever check; listing and forgetting
// also reach the keys of targets since removed.
type hostKeysAPI struct {
	*hostkeys.Store
	d *daemon
}

var _ adminapi.HostKeys = hostKeysAPI{}

// offered returns the protocols of target whose keys are pinned (ssh,
// rdp), those of want that it offers, with an error for one it does not.
func (h hostKeysAPI) offered(target string, want ...string) ([]string, error) {
	cfg := h.d.config()
	inv := cfg.Inventory.Targets
	var p config.Ports
	if i := slices.IndexFunc(inv, func(t config.Target) bool { return t.Name == target }); i >= 0 {
		p = inv[i].Ports
	} else if n, ok := networkOf(cfg, target); ok {
		// An address of a network has its keys pinned under the address,
		// as netip writes it (what its sessions check).
		p = n.Ports
	} else {
		return nil, fmt.Errorf("target %q: %w", target, adminapi.ErrUnknownTarget)
	}
	ports := map[string]uint16{hostkeys.KindSSH: p.SSH, hostkeys.KindRDP: p.RDP}
	var offered []string
	for _, p := range []string{hostkeys.KindSSH, hostkeys.KindRDP} {
		if ports[p] != 0 {
			offered = append(offered, p)
		}
	}
	if len(want) == 0 {
		want = offered
	}
	for _, p := range want {
		if _, known := ports[p]; !known {
			return nil, fmt.Errorf("no keys are pinned for protocol %q: ssh or rdp", p)
		}
		if ports[p] == 0 {
			return nil, fmt.Errorf("target %q offers no %s (inventory ports.%s): it has no key of that kind to pin", target, strings.ToUpper(p), p)
		}
	}
	if len(want) == 0 {
		return nil, fmt.Errorf("target %q offers neither SSH nor RDP: it has no key to pin", target)
	}
	return want, nil
}

func (h hostKeysAPI) Scan(ctx context.Context, target string, protocols []string,
	dial func(context.Context, string) (net.Conn, error)) ([]hostkeys.Key, error) {
	protocols, err := h.offered(target, protocols...)
	if err != nil {
		return nil, err
	}
	return h.Store.Scan(ctx, target, protocols, dial)
}

func (h hostKeysAPI) Pin(target string, fingerprints []string, by string) ([]hostkeys.Key, error) {
	if _, err := h.offered(target); err != nil {
		return nil, err
	}
	return h.Store.Pin(target, fingerprints, by)
}

func (h hostKeysAPI) PinKey(target, line, by string) (hostkeys.Key, error) {
	if _, err := h.offered(target, hostkeys.KindSSH); err != nil {
		return hostkeys.Key{}, err
	}
	return h.Store.PinKey(target, line, by)
}

func (h hostKeysAPI) PinCertificate(target string, data []byte, by string) (hostkeys.Key, error) {
	if _, err := h.offered(target, hostkeys.KindRDP); err != nil {
		return hostkeys.Key{}, err
	}
	return h.Store.PinCertificate(target, data, by)
}

// networkOf is the inventory network that address, written as netip
// writes it, lies in.
func networkOf(cfg *config.Config, address string) (config.Network, bool) {
	a, err := netip.ParseAddr(address)
	if err != nil || a.Zone() != "" || a.Unmap().String() != address {
		return config.Network{}, false
	}
	for _, n := range cfg.Inventory.Networks {
		if slices.ContainsFunc(n.CIDRs, func(p netip.Prefix) bool { return p.Contains(a) }) {
			return n, true
		}
	}
	return config.Network{}, false
}
