package config

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
)

// withNetworks adds networks (YAML list items under inventory.networks) and
// a role granting network:lab to the lab's config.
func withNetworks(lab, networks string) string {
	s := strings.Replace(lab, "inventory:\n", "inventory:\n  networks:\n"+networks, 1)
	return strings.Replace(s, "  roles:\n", "  roles:\n    - name: by-address\n      subjects: [user:alice]\n      targets: [network:lab]\n      protocols: [ssh]\n", 1)
}

const labNetwork = `    - name: lab
      cidrs: [198.18.1.0/24, "2001:db8:b5:1::/64"]
      ports: {ssh: 22, tunnel: [8080]}
      tags: [lab]
      target_name: "{network}-{dashed}"
`

func TestParseNetworks(t *testing.T) {
	lab := mustRead(t, "testdata/lab.yaml")
	cfg, err := Parse("lab.yaml", []byte(withNetworks(lab, labNetwork)))
	if err != nil {
		t.Fatal(err)
	}
	n := cfg.Inventory.Networks[0]
	want := []netip.Prefix{netip.MustParsePrefix("198.18.1.0/24"), netip.MustParsePrefix("2001:db8:b5:1::/64")}
	if n.Name != "lab" || !slices.Equal(n.CIDRs, want) || n.Ports.SSH != 22 || n.TargetName != "{network}-{dashed}" {
		t.Errorf("network = %+v", n)
	}
	if got := cfg.Access.Roles[0].Targets; !slices.Equal(got, []string{"network:lab"}) {
		t.Errorf("role targets = %v", got)
	}
}

func TestParseNetworkProblems(t *testing.T) {
	lab := mustRead(t, "testdata/lab.yaml")
	tests := []struct {
		name     string
		networks string
		want     []string // each must appear, in this order
	}{
		{
			name:     "loopback, link-local and multicast, IPv4 and IPv6",
			networks: "    - name: lab\n      cidrs: [127.0.0.0/8, 169.254.0.0/16, 224.0.0.0/24, \"::1/128\", \"fe80::/64\", \"ff02::/64\"]\n      ports: {ssh: 22}\n",
			want: []string{
				"inventory.networks[0].cidrs[0]: 127.0.0.0/8 overlaps loopback",
				"cidrs[1]: 169.254.0.0/16 overlaps link-local",
				"cidrs[2]: 224.0.0.0/24 overlaps multicast",
				"cidrs[3]: ::1/128 overlaps loopback (::1)",
				"cidrs[4]: fe80::/64 overlaps link-local",
				"cidrs[5]: ff02::/64 overlaps multicast",
			},
		},
		{
			name:     "a CIDR covering a loopback or link-local range",
			networks: "    - name: lab\n      cidrs: [96.0.0.0/3, \"fe00::/8\"]\n      ports: {ssh: 22}\n",
			want:     []string{"cidrs[0]: 96.0.0.0/3 is wider than an IPv4 /8", "cidrs[1]: fe00::/8 is wider than an IPv6 /48"},
		},
		{
			name:     "wider than allowed",
			networks: "    - name: lab\n      cidrs: [10.0.0.0/7, \"2001:db8::/47\", 0.0.0.0/0, \"::/0\"]\n      ports: {ssh: 22}\n",
			want: []string{
				"cidrs[0]: 10.0.0.0/7 is wider than an IPv4 /8",
				"cidrs[1]: 2001:db8::/47 is wider than an IPv6 /48",
				"cidrs[2]: 0.0.0.0/0 is wider",
				"cidrs[3]: ::/0 is wider",
			},
		},
		{
			name:     "the bastion's own subnets, IPv4 and IPv6",
			networks: "    - name: lab\n      cidrs: [198.18.0.0/16, \"2001:db8:b5::/48\"]\n      ports: {ssh: 22}\n",
			want: []string{
				"cidrs[0]: 198.18.0.0/16 overlaps the dedicated bastion subnet 198.18.0.0/26",
				"cidrs[1]: 2001:db8:b5::/48 overlaps the dedicated bastion subnet 2001:db8:b5::/64",
			},
		},
		{
			name:     "IPv4-mapped",
			networks: "    - name: lab\n      cidrs: [\"::ffff:10.0.0.0/104\"]\n      ports: {ssh: 22}\n",
			want:     []string{"cidrs[0]: ::ffff:10.0.0.0/104 overlaps IPv4-mapped addresses"},
		},
		{
			name: "overlapping another network, IPv4 and IPv6",
			networks: labNetwork + "    - name: lab2\n      cidrs: [198.18.1.128/25, \"2001:db8:b5:1:1::/80\"]\n      ports: {rdp: 3389}\n" +
				"    - name: lab3\n      cidrs: [10.1.0.0/16, 10.1.2.0/24]\n      ports: {rdp: 3389}\n",
			want: []string{
				`networks[1].cidrs[0]: 198.18.1.128/25 overlaps network "lab"'s 198.18.1.0/24`,
				`networks[1].cidrs[1]: 2001:db8:b5:1:1::/80 overlaps network "lab"'s 2001:db8:b5:1::/64`,
				`networks[2].cidrs[1]: 10.1.2.0/24 overlaps 10.1.0.0/16, listed before in this network`,
			},
		},
		{
			name:     "name clashing with a target, bad name, twice",
			networks: "    - name: vm1\n      cidrs: [10.1.0.0/16]\n      ports: {ssh: 22}\n    - name: Lab_1\n      cidrs: [10.2.0.0/16]\n      ports: {ssh: 22}\n    - name: lab\n      cidrs: [10.3.0.0/16]\n      ports: {ssh: 22}\n    - name: lab\n      cidrs: [10.4.0.0/16]\n      ports: {ssh: 22}\n",
			want: []string{
				`networks[0].name: "vm1" is already a target's name`,
				`networks[1].name: "Lab_1" is not a network name`,
				`networks[3].name: network "lab" is listed twice`,
			},
		},
		{
			name:     "no CIDRs, no ports, a bad pattern, certificates without SSH",
			networks: "    - name: lab\n      target_name: \"{a}-{b}\"\n      ssh_certificates: true\n",
			want: []string{
				"inventory.networks[0].cidrs: required",
				"inventory.networks[0].ports: required",
				"inventory.networks[0].target_name: \"{a}-{b}\": {a} is not a placeholder",
				"inventory.networks[0].ssh_certificates: needs ports.ssh",
			},
		},
		{
			name:     "a role granting a network not in the inventory",
			networks: strings.Replace(labNetwork, "name: lab", "name: other", 1),
			want:     []string{`access.roles[0].targets[0]: network "lab" is not in inventory.networks`},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("lab.yaml", []byte(withNetworks(lab, tt.networks)))
			if err == nil {
				t.Fatal("Parse accepted a broken config")
			}
			msg := err.Error()
			rest := msg
			for _, w := range tt.want {
				i := strings.Index(rest, w)
				if i < 0 {
					t.Fatalf("error lacks %q (in order); got:\n%s", w, msg)
				}
				rest = rest[i+len(w):]
			}
		})
	}
}

func TestParseTargetNamedLikeAnAddress(t *testing.T) {
	lab := mustRead(t, "testdata/lab.yaml")
	for _, name := range []string{"10.9.9.9", "2001:db8::9"} {
		t.Run(name, func(t *testing.T) {
			s := strings.Replace(withNetworks(lab, labNetwork), "- name: vm1\n", "- name: \""+name+"\"\n", 1)
			_, err := Parse("lab.yaml", []byte(s))
			if err == nil || !strings.Contains(err.Error(), "is an address: with inventory.networks") {
				t.Fatalf("err = %v, want the address-like name refused", err)
			}
		})
	}
}
