package e2e

import (
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// Helpers for tests that speak from more than one address of the client:
// several addresses of one IPv6 /64, or of other /64s routed to it.

// ClientAddr gives the client's eth0 the address prefix (an address and its
// prefix length, "2001:db8:cafe::21/64") until the test ends. IPv6 addresses
// skip duplicate address detection, so they are usable at once.
func ClientAddr(t testing.TB, prefix string) netip.Addr {
	t.Helper()
	p := netip.MustParsePrefix(prefix)
	ns := LabValue(t, "NS_CLIENT")
	args := []string{"-n", ns, "addr", "add", prefix, "dev", "eth0"}
	if p.Addr().Is6() {
		args = append(args, "nodad")
	}
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		t.Fatalf("ip %v: %v: %s", args, err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "-n", ns, "addr", "del", prefix, "dev", "eth0").Run() })
	return p.Addr()
}

// RouteToClient routes prefix, in the bastion's namespace, to the client
// until the test ends: how the bastion reaches client addresses outside its
// public subnet. The next hop is the client's link-local address, as a
// router's would be, so that blocklisting the client's public /64 (which
// drops its neighbour advertisements too) leaves the route usable.
func RouteToClient(t testing.TB, prefix string) {
	t.Helper()
	out, err := exec.Command("ip", "-n", LabValue(t, "NS_CLIENT"), "-6", "-o", "addr", "show", "dev", "eth0", "scope", "link").Output()
	if err != nil {
		t.Fatalf("the client's link-local address: %v", err)
	}
	f := strings.Fields(string(out)) // 2: eth0 inet6 fe80::.../64 scope link ...
	if len(f) < 4 || f[2] != "inet6" {
		t.Fatalf("the client has no link-local address: %q", out)
	}
	via, _, _ := strings.Cut(f[3], "/")
	ns, dev := LabValue(t, "NS_BASTION"), LabValue(t, "PUB_IFACE")
	args := []string{"-n", ns, "route", "add", prefix, "via", via, "dev", dev}
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		t.Fatalf("ip %v: %v: %s", args, err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "-n", ns, "route", "del", prefix, "via", via, "dev", dev).Run() })
}

// ExpectProbeFrom fails t unless a probe from the address from in namespace
// ns meets want at addr:port.
func ExpectProbeFrom(t testing.TB, ns, from, addr string, port int, want string) {
	t.Helper()
	if got := Probe(t, ns, addr, port, from); got != want {
		t.Errorf("from %s, %s port %d is %s, want %s", from, addr, port, got, want)
	}
}

// ClientUDPFrom is a UDP socket in the client's namespace bound to its
// address from, closed when the test ends.
func ClientUDPFrom(t testing.TB, from string) *net.UDPConn {
	t.Helper()
	var pc *net.UDPConn
	if err := InNetns(LabValue(t, "NS_CLIENT"), func() (err error) {
		pc, err = net.ListenUDP("udp", &net.UDPAddr{IP: net.ParseIP(from)})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	return pc
}

// DialFrom opens a TCP connection from the client's address from to
// addr:port, closed when the test ends at the latest.
func DialFrom(t testing.TB, from, addr string, port int) (net.Conn, error) {
	t.Helper()
	var c net.Conn
	err := InNetns(LabValue(t, "NS_CLIENT"), func() (err error) {
		d := net.Dialer{Timeout: 2 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
		c, err = d.Dial("tcp", net.JoinHostPort(addr, fmt.Sprint(port)))
		return err
	})
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { c.Close() })
	return c, nil
}
