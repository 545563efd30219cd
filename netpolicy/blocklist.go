package netpolicy

import (
	"fmt"
	"net/netip"
	"sort"
	"time"

	"github.com/google/nftables"
)

// BlockEntry is one blocklisted source.
type BlockEntry struct {
	Addr    netip.Addr    `json:"addr"`
	Expires time.Duration `json:"expires"` // time left
}

var blocklists = []string{"blocklist4", "blocklist6"}

// Blocklist lists the blocklisted sources, soonest to expire first.
func (k *Kernel) Blocklist() ([]BlockEntry, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	var out []BlockEntry
	for _, name := range blocklists {
		s, err := k.blocklistSet(name)
		if err != nil {
			return nil, err
		}
		elems, err := k.conn.GetSetElements(s)
		if err != nil {
			return nil, fmt.Errorf("netpolicy: read %s: %w", name, err)
		}
		for _, e := range elems {
			if a, ok := netip.AddrFromSlice(e.Key); ok {
				out = append(out, BlockEntry{Addr: a, Expires: e.Expires})
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Expires < out[j].Expires })
	return out, nil
}

// Unblock removes addrs from the blocklist, or every entry when addrs is
// empty, and returns how many entries it removed.
func (k *Kernel) Unblock(addrs []netip.Addr) (int, error) {
	cur, err := k.Blocklist()
	if err != nil {
		return 0, err
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	want := map[netip.Addr]bool{}
	for _, a := range addrs {
		want[a.Unmap()] = true
	}
	removed := 0
	for _, name := range blocklists {
		s, err := k.blocklistSet(name)
		if err != nil {
			return 0, err
		}
		var del []nftables.SetElement
		for _, e := range cur {
			if (e.Addr.Is4() == (name == "blocklist4")) && (len(addrs) == 0 || want[e.Addr]) {
				del = append(del, nftables.SetElement{Key: e.Addr.AsSlice()})
			}
		}
		if len(del) == 0 {
			continue
		}
		if err := k.conn.SetDeleteElements(s, del); err != nil {
			return 0, fmt.Errorf("netpolicy: unblock: %w", err)
		}
		removed += len(del)
	}
	if err := k.conn.Flush(); err != nil {
		return 0, fmt.Errorf("netpolicy: unblock: %w", err)
	}
	return removed, nil
}

func (k *Kernel) blocklistSet(name string) (*nftables.Set, error) {
	s, err := k.conn.GetSetByName(&nftables.Table{Family: nftables.TableFamilyINet, Name: HostTable}, name)
	if err != nil {
		return nil, fmt.Errorf("netpolicy: set %s: %w (is the firewall applied?)", name, err)
	}
	return s, nil
}
