package netpolicy

import (
	"fmt"

	"github.com/google/nftables"
)

// Kernel is a connection to the nftables of one network namespace.
type Kernel struct {
	conn *nftables.Conn
}

// Open connects to the nftables of the caller's network namespace.
func Open() (*Kernel, error) {
	c, err := nftables.New()
	if err != nil {
		return nil, fmt.Errorf("netpolicy: netlink: %w", err)
	}
	return &Kernel{conn: c}, nil
}

// OpenNetNS connects to the nftables of the namespace whose descriptor is fd.
func OpenNetNS(fd int) (*Kernel, error) {
	c, err := nftables.New(nftables.WithNetNSFd(fd))
	if err != nil {
		return nil, fmt.Errorf("netpolicy: netlink: %w", err)
	}
	return &Kernel{conn: c}, nil
}

// Apply puts rs in force atomically; see the package function Apply.
func (k *Kernel) Apply(rs Ruleset) error { return Apply(k.conn, rs) }

// Cleanup removes every table bastiond may own, and nothing else. It is the
// explicit opt-out of the fail-closed default (`bastiond -cleanup`).
func (k *Kernel) Cleanup() error {
	return Remove(k.conn, []Table{{Family: FamilyInet, Name: HostTable}, {Family: FamilyBridge, Name: VNetTable}})
}
