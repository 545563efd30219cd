package netpolicy

import (
	"fmt"
	"net/netip"
	"sort"
	"time"

	"github.com/google/nftables"

	"github.com/bastiond/bastiond/internal/source"
)

// BlockEntry is one blocklisted source: an IPv4 address (a /32) or an IPv6
// /64 (SourceBits6), the unit the scan trap blocks.
type BlockEntry struct {
	Prefix  netip.Prefix  `json:"prefix"`
	Expires time.Duration `json:"expires"` // time left
}

var blocklists = []string{"blocklist4", "blocklist6"}

// blockKey is one element of a blocklist set as the kernel holds it.
type blockKey struct {
	set     string
	key     []byte
	source  netip.Prefix
	expires time.Duration
}

// Blocklist lists the blocklisted sources, soonest to expire first.
func (k *Kernel) Blocklist() ([]BlockEntry, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	keys, err := k.blockKeys()
	if err != nil {
		return nil, err
	}
	// One entry per source: entries from before the sets held /64s may
	// still hold whole addresses; the longest time left stands for all.
	left := map[netip.Prefix]time.Duration{}
	for _, bk := range keys {
		if cur, ok := left[bk.source]; !ok || bk.expires > cur {
			left[bk.source] = bk.expires
		}
	}
	out := make([]BlockEntry, 0, len(left))
	for p, d := range left {
		out = append(out, BlockEntry{Prefix: p, Expires: d})
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Expires != out[j].Expires {
			return out[i].Expires < out[j].Expires
		}
		return out[i].Prefix.String() < out[j].Prefix.String()
	})
	return out, nil
}

// blockKeys reads every element of both blocklists.
func (k *Kernel) blockKeys() ([]blockKey, error) {
	var out []blockKey
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
				out = append(out, blockKey{set: name, key: e.Key, source: source.Of(a), expires: e.Expires})
			}
		}
	}
	return out, nil
}

// Unblock removes from the blocklist every source that overlaps one of
// sources: an address or a prefix given for an IPv6 address clears the whole
// /64 it lies in, a prefix shorter than that every /64 inside it. With no
// sources it removes every entry. It returns how many sources it removed.
func (k *Kernel) Unblock(sources []netip.Prefix) (int, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	keys, err := k.blockKeys()
	if err != nil {
		return 0, err
	}
	want := make([]netip.Prefix, len(sources))
	for i, p := range sources {
		if p.Addr().Is4In6() && p.Bits() >= 96 {
			p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
		}
		want[i] = p.Masked()
	}
	removed := map[netip.Prefix]bool{}
	for _, name := range blocklists {
		var del []nftables.SetElement
		for _, bk := range keys {
			if bk.set != name || !overlapsAny(bk.source, want) {
				continue
			}
			del = append(del, nftables.SetElement{Key: bk.key})
			removed[bk.source] = true
		}
		if len(del) == 0 {
			continue
		}
		s, err := k.blocklistSet(name)
		if err != nil {
			return 0, err
		}
		if err := k.conn.SetDeleteElements(s, del); err != nil {
			return 0, fmt.Errorf("netpolicy: unblock: %w", err)
		}
	}
	if err := k.conn.Flush(); err != nil {
		return 0, fmt.Errorf("netpolicy: unblock: %w", err)
	}
	return len(removed), nil
}

// overlapsAny says whether p overlaps one of ps; every prefix does when ps
// is empty.
func overlapsAny(p netip.Prefix, ps []netip.Prefix) bool {
	if len(ps) == 0 {
		return true
	}
	for _, q := range ps {
		if q.IsValid() && p.Overlaps(q) {
			return true
		}
	}
	return false
}

func (k *Kernel) blocklistSet(name string) (*nftables.Set, error) {
	s, err := k.conn.GetSetByName(&nftables.Table{Family: nftables.TableFamilyINet, Name: HostTable}, name)
	if err != nil {
		return nil, fmt.Errorf("netpolicy: set %s: %w (is the firewall applied?)", name, err)
	}
	return s, nil
}
