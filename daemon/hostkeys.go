package daemon

import (
	"context"
	"fmt"
	"net"
	"slices"

	"go.etcd.io/bbolt"

	"github.com/bastiond/bastiond/daemon/adminapi"
	"github.com/bastiond/bastiond/daemon/config"
	"github.com/bastiond/bastiond/proxy/hostkeys"
	"github.com/bastiond/bastiond/proxy/sshca"
)

// openSSHTrust opens what the bastion's SSH connections rely on: the
// targets' pinned host keys, in the state store db, and the SSH CA that
// signs user certificates, in the state directory (made on first start).
func openSSHTrust(cfg *config.Config, db *bbolt.DB) (*hostkeys.Store, *sshca.CA, error) {
	store, err := hostkeys.New(hostkeys.Config{DB: db, ScanTimeout: cfg.Limits.HandshakeTimeout})
	if err != nil {
		return nil, nil, err
	}
	ca, err := sshca.Open(sshca.Config{Dir: cfg.StateDir, ServerName: cfg.Listen.ServerName})
	if err != nil {
		return nil, nil, err
	}
	return store, ca, nil
}

// hostKeysAPI is the host key store for the admin API. Scans and pins
// must name an inventory target that offers SSH, so that a typo does not
// pin a key no session will ever check; listing and forgetting also reach
// the keys of targets since removed.
type hostKeysAPI struct {
	*hostkeys.Store
	d *daemon
}

var _ adminapi.HostKeys = hostKeysAPI{}

// offersSSH checks that target is in the running inventory with an SSH port.
func (h hostKeysAPI) offersSSH(target string) error {
	inv := h.d.config().Inventory.Targets
	i := slices.IndexFunc(inv, func(t config.Target) bool { return t.Name == target })
	switch {
	case i < 0:
		return fmt.Errorf("target %q: %w", target, adminapi.ErrUnknownTarget)
	case inv[i].Ports.SSH == 0:
		return fmt.Errorf("target %q offers no SSH (inventory ports.ssh): it has no host key to pin", target)
	}
	return nil
}

func (h hostKeysAPI) Scan(ctx context.Context, target string, dial func(context.Context) (net.Conn, error)) ([]hostkeys.Key, error) {
	if err := h.offersSSH(target); err != nil {
		return nil, err
	}
	return h.Store.Scan(ctx, target, dial)
}

func (h hostKeysAPI) Pin(target string, fingerprints []string, by string) ([]hostkeys.Key, error) {
	if err := h.offersSSH(target); err != nil {
		return nil, err
	}
	return h.Store.Pin(target, fingerprints, by)
}

func (h hostKeysAPI) PinKey(target, line, by string) (hostkeys.Key, error) {
	if err := h.offersSSH(target); err != nil {
		return hostkeys.Key{}, err
	}
	return h.Store.PinKey(target, line, by)
}
