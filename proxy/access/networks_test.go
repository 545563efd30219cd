package access

import (
	"net/netip"
	"reflect"
	"slices"
	"testing"
)

func networkPolicy() *Policy {
	p := testPolicy()
	roles := append(slices.Clone(p.roles),
		Role{Name: "lab-ssh", Subjects: []string{"user:gina"}, Targets: []string{"network:lab"}, Protocols: []string{SSH, "tunnel:8080"}, Logins: []string{"ops"}},
		Role{Name: "lab-by-tag", Subjects: []string{"user:hank"}, Targets: []string{"tag:desks"}, Protocols: []string{RDP}},
	)
	q := New("bastion.example", []Target{
		{Name: "web1", Tags: []string{"linux", "prod"}, SSH: 22, Tunnel: []uint16{5432}},
		{Name: "web2", Tags: []string{"linux"}, SSH: 2222},
		{Name: "win1", Tags: []string{"windows"}, RDP: 3389, Tunnel: []uint16{5985}},
	}, map[string][]string{"ops": {"alice", "bob"}, "dba": {"dave"}}, roles)
	return q.WithNetworks([]Network{
		{Name: "lab", Prefixes: []netip.Prefix{netip.MustParsePrefix("10.20.0.0/16"), netip.MustParsePrefix("2001:db8:20::/48")},
			SSH: 22, Tunnel: []uint16{8080}, TargetName: "{network}-{dashed}"},
		{Name: "desks", Prefixes: []netip.Prefix{netip.MustParsePrefix("10.30.0.0/24"), netip.MustParsePrefix("2001:db8:30::/64")},
			RDP: 3389, Tags: []string{"desks"}},
	})
}

func TestTargetByAddress(t *testing.T) {
	p := networkPolicy()
	for _, tc := range []struct {
		typed, name, network, display string
	}{
		{"10.20.1.5", "10.20.1.5", "lab", "lab-10-20-1-5"},
		{"::ffff:10.20.1.5", "10.20.1.5", "lab", "lab-10-20-1-5"},
		{"2001:db8:20::5", "2001:db8:20::5", "lab", "lab-2001-db8-20--5"},
		{"[2001:db8:20::5]", "2001:db8:20::5", "lab", "lab-2001-db8-20--5"},
		{"2001:DB8:20:0::5", "2001:db8:20::5", "lab", "lab-2001-db8-20--5"},
		{"10.30.0.9", "10.30.0.9", "desks", "10.30.0.9"},
		{"2001:db8:30::9", "2001:db8:30::9", "desks", "2001:db8:30::9"},
	} {
		t.Run(tc.typed, func(t *testing.T) {
			tg, ok := p.Target(tc.typed)
			if !ok || tg.Name != tc.name || tg.Network != tc.network || tg.Shown() != tc.display || tg.Address.String() != tc.name {
				t.Fatalf("Target(%q) = %+v, %v", tc.typed, tg, ok)
			}
		})
	}
	for _, typed := range []string{"10.21.0.1", "2001:db8:21::1", "fe80::1%eth0", "10.20.1.5:22", "web1.example", ""} {
		t.Run("outside/"+typed, func(t *testing.T) {
			if tg, ok := p.Target(typed); ok {
				t.Fatalf("Target(%q) = %+v, want none", typed, tg)
			}
		})
	}
	if tg, ok := p.Target("web1"); !ok || tg.Network != "" || tg.Shown() != "web1" {
		t.Fatalf("a named target: %+v %v", tg, ok)
	}
	if _, ok := testPolicy().Target("10.20.1.5"); ok {
		t.Fatal("a policy without networks resolved an address")
	}
}

func TestCheckByAddress(t *testing.T) {
	p := networkPolicy()
	for _, tc := range []struct {
		name  string
		req   Request
		allow bool
		roles []string
	}{
		{"network grant, ssh, IPv4", Request{User: "gina", Target: "10.20.1.5", Protocol: SSH, Login: "ops"}, true, []string{"lab-ssh"}},
		{"network grant, ssh, IPv6", Request{User: "gina", Target: "2001:db8:20::5", Protocol: SSH}, true, []string{"lab-ssh"}},
		{"network grant, another login", Request{User: "gina", Target: "10.20.1.5", Protocol: SSH, Login: "root"}, false, nil},
		{"network grant, the tunnel port", Request{User: "gina", Target: "2001:db8:20::5", Protocol: Tunnel, Port: 8080}, true, []string{"lab-ssh"}},
		{"network grant, a port the network does not list", Request{User: "gina", Target: "10.20.1.5", Protocol: Tunnel, Port: 3306}, false, nil},
		{"network grant, rdp the network does not offer", Request{User: "gina", Target: "10.20.1.5", Protocol: RDP}, false, nil},
		{"network grant, an address of another network", Request{User: "gina", Target: "10.30.0.9", Protocol: SSH}, false, nil},
		{"network grant, outside every network", Request{User: "gina", Target: "10.21.0.1", Protocol: SSH}, false, nil},
		{"tag grant, IPv4", Request{User: "hank", Target: "10.30.0.9", Protocol: RDP}, true, []string{"lab-by-tag"}},
		{"tag grant, IPv6", Request{User: "hank", Target: "2001:db8:30::9", Protocol: RDP}, true, []string{"lab-by-tag"}},
		{"tag grant, the untagged network", Request{User: "hank", Target: "10.20.1.5", Protocol: SSH}, false, nil},
		{"\"*\" grants no network", Request{User: "frank", Target: "10.20.1.5", Protocol: Tunnel, Port: 22}, false, nil},
		{"a named target still by name", Request{User: "alice", Target: "web1", Protocol: SSH}, true, []string{"ops-linux"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := p.Check(tc.req)
			if d.Allowed != tc.allow || !reflect.DeepEqual(d.Roles, tc.roles) {
				t.Fatalf("%+v: got %+v", tc.req, d)
			}
			if !d.Allowed && d.Reason == "" {
				t.Error("a refusal without a reason")
			}
			if c := p.Covers(tc.req); tc.allow && !c {
				t.Error("allowed but not covered")
			}
		})
	}
}

func TestReachableNetworks(t *testing.T) {
	p := networkPolicy()
	got := p.ReachableNetworks(Principal{User: "gina"})
	want := []Reachable{{Name: "lab", Network: true, CIDRs: []string{"10.20.0.0/16", "2001:db8:20::/48"}, Protocols: []string{SSH, Tunnel},
		TunnelPorts: []uint16{8080}, Logins: []string{"ops"}}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("gina: %+v, want %+v", got, want)
	}
	if got := p.ReachableNetworks(Principal{User: "frank"}); got != nil {
		t.Fatalf("frank (\"*\" only): %+v, want none", got)
	}
	if got := p.Reachable(Principal{User: "gina"}); got != nil {
		t.Fatalf("gina's named targets: %+v, want none", got)
	}
}
