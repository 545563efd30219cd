package discover

import (
	"net/netip"
	"reflect"
	"testing"
)

func TestUnknown(t *testing.T) {
	a := netip.MustParseAddr
	const (
		vm1   = "02:00:00:00:00:11"
		rogue = "02:00:00:00:00:66"
		twin  = "02:00:00:00:00:12"
		quiet = "02:00:00:00:00:99"
	)
	seen := []Seen{
		{MAC: vm1, Addr: a("198.18.1.11"), State: "reachable"},
		{MAC: vm1, Addr: a("2001:db8:b5:1::11"), State: "stale"},
		{MAC: vm1, Addr: a("fe80::11"), State: "stale"}, // link-local: never counts
		{MAC: vm1, State: "learnt"},
		{MAC: rogue, Addr: a("2001:db8:b5:1::66"), State: "stale"},
		{MAC: rogue, Addr: a("198.18.1.66"), State: "reachable"},
		{MAC: rogue, Addr: a("198.18.1.66"), State: "stale"}, // seen twice
		{MAC: twin, Addr: a("198.18.1.12"), State: "stale"},
		{MAC: twin, Addr: a("198.18.1.99"), State: "delay"}, // vm2's MAC, an unlisted address
		{MAC: quiet, State: "learnt"},                       // frames on the bridge, no address
		{MAC: "02:00:00:00:00:04", Addr: a("198.18.0.4"), State: "permanent"},
		{MAC: "02:00:00:00:00:77", Addr: a("fe80::77"), State: "stale"},
	}
	targets := map[netip.Addr]string{
		a("198.18.1.11"): "vm1", a("2001:db8:b5:1::11"): "vm1",
		a("198.18.1.12"): "vm2", a("2001:db8:b5:1::12"): "vm2",
	}
	got := Unknown(seen, targets, []netip.Addr{a("198.18.0.4")})
	want := []Host{
		{MAC: twin, Addrs: []netip.Addr{a("198.18.1.99")}, Targets: []string{"vm2"}, State: "delay"},
		{MAC: rogue, Addrs: []netip.Addr{a("198.18.1.66"), a("2001:db8:b5:1::66")}, State: "reachable"},
		{MAC: "02:00:00:00:00:77", Addrs: []netip.Addr{a("fe80::77")}, State: "stale"},
		{MAC: quiet, State: "learnt", BridgeOnly: true},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Unknown =\n%+v\nwant\n%+v", got, want)
	}
}
