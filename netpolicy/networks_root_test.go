package netpolicy

import (
	"errors"
	"net"
	"net/netip"
	"os/exec"
	"runtime"
	"strings"
	"syscall"
	"testing"

	"github.com/vishvananda/netns"
)

// networksEgressInput is the lab with the networks of withNetworks, a UDP
// port on lab, and every process of the host restricted: the test's own
// datagrams meet the egress chain.
func networksEgressInput() Input {
	return labInput(func(in *Input) {
		withNetworks(in)
		in.Networks[0].Ports = append(in.Networks[0].Ports, Port{Number: 5353, UDP: true})
		in.Egress.Restrict = EgressAll
	})
}

// TestNetworkIntervalSetsInKernel: the networks' interval sets, loaded by
// Apply into a fresh namespace, let through exactly what they hold: a
// datagram to a port a network offers on an address inside it, of either
// family, and no other address or port (the kernel refuses the send with
// EPERM when the egress chain drops it). Verify sees a changed range, and
// a re-apply repairs it.
func TestNetworkIntervalSetsInKernel(t *testing.T) {
	ns, k := testKernel(t)
	for _, cmd := range [][]string{
		{"link", "add", "veth0", "type", "veth", "peer", "name", "veth1"},
		{"link", "set", "veth1", "up"},
		{"link", "set", "veth0", "up"},
		{"addr", "add", "198.18.2.1/24", "dev", "veth0"},
		{"addr", "add", "10.30.0.1/16", "dev", "veth0"},
		{"addr", "add", "2001:db8:b5:2::1/64", "dev", "veth0", "nodad"},
		{"route", "add", "198.18.0.0/15", "dev", "veth0"},
		{"route", "add", "2001:db8::/32", "dev", "veth0"},
	} {
		if out, err := exec.Command("ip", append([]string{"-n", ns}, cmd...)...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v: %s", strings.Join(cmd, " "), err, out)
		}
	}
	rs, err := Compile(networksEgressInput())
	if err != nil {
		t.Fatal(err)
	}
	if err := k.Apply(rs); err != nil {
		t.Fatal(err)
	}
	if d, err := k.Verify(); err != nil || len(d) > 0 {
		t.Fatalf("right after apply: verify = %v, %v", d, err)
	}
	for _, c := range []struct {
		to   string
		pass bool
	}{
		{"198.18.2.77:5353", true},
		{"198.18.2.0:5353", true},   // the first address of the range
		{"198.18.2.255:5353", true}, // the last one
		{"198.18.3.0:5353", false},  // the next one
		{"198.18.1.255:5353", false},
		{"198.18.2.77:5354", false}, // a port the network does not offer
		{"10.30.0.9:3389", true},    // RDP's UDP transport on desks
		{"10.30.0.9:5353", false},   // lab's port on desks
		{"[2001:db8:b5:2::77]:5353", true},
		{"[2001:db8:b5:2:ffff:ffff:ffff:ffff]:5353", true},
		{"[2001:db8:b5:3::]:5353", false},
		{"[2001:db8:b5:2::77]:5354", false},
		{"[2001:db8:30:ffff::9]:3389", true},
		{"[2001:db8:31::9]:3389", false},
	} {
		t.Run(c.to, func(t *testing.T) {
			err := sendUDPIn(t, ns, netip.MustParseAddrPort(c.to))
			switch {
			case c.pass && err != nil:
				t.Errorf("send to %s: %v, want it let through", c.to, err)
			case !c.pass && !errors.Is(err, syscall.EPERM):
				t.Errorf("send to %s: %v, want EPERM (dropped by the egress chain)", c.to, err)
			}
		})
	}

	t.Run("drift", func(t *testing.T) {
		nft(t, ns, "delete element inet bastiond net_egress4 { 198.18.2.0/24 . udp . 5353 }")
		if err := sendUDPIn(t, ns, netip.MustParseAddrPort("198.18.2.77:5353")); !errors.Is(err, syscall.EPERM) {
			t.Fatalf("with the range deleted: %v, want EPERM", err)
		}
		d, err := k.Verify()
		if err != nil || !strings.Contains(strings.Join(d, "\n"), "set net_egress4 was changed") {
			t.Fatalf("verify = %q, %v; want the changed set named", d, err)
		}
		if err := k.Apply(rs); err != nil {
			t.Fatal(err)
		}
		if d, err := k.Verify(); err != nil || len(d) > 0 {
			t.Fatalf("after re-apply: verify = %v, %v", d, err)
		}
		if err := sendUDPIn(t, ns, netip.MustParseAddrPort("198.18.2.77:5353")); err != nil {
			t.Fatalf("after re-apply: %v", err)
		}
	})
}

// sendUDPIn sends one datagram to ap from a socket made in namespace ns and
// returns the send's error.
func sendUDPIn(t *testing.T, ns string, ap netip.AddrPort) error {
	t.Helper()
	h, err := netns.GetFromName(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	// The socket belongs to the namespace of the thread that makes it.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer orig.Close()
	if err := netns.Set(h); err != nil {
		t.Fatal(err)
	}
	conn, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(ap))
	if serr := netns.Set(orig); serr != nil {
		t.Fatal(serr)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_, err = conn.Write([]byte("x"))
	return err
}
