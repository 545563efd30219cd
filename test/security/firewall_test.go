package security

import (
	"context"
	"crypto/tls"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/bastiond/bastiond/test/e2e"
)

// scanned is how many TCP ports e2e.NmapScan covers.
const scanned = 1024 + 4

// udpPorts are UDP services a scanner tries first, and 443.
var udpPorts = []string{"53", "67", "123", "161", "443", "500", "1194", "3389", "4500", "5353", "51820"}

// Invariant 1: from the public side only 443/tcp and 443/udp answer; every
// other port is dropped silently (nmap: filtered).
func TestInvariant01OnlyPort443Answers(t *testing.T) {
	e2e.NeedLab(t)
	e2e.StartDaemon(t, e2e.ViaFDs, allowClient(t)) // an allowlisted scanner sees every port's real state
	removeFirewallAtEnd(t)
	ns := e2e.LabValue(t, "NS_CLIENT")
	for _, key := range []string{"BASTION_PUB4", "BASTION_PUB6"} {
		addr := e2e.LabValue(t, key)
		t.Run("TCP over "+key, func(t *testing.T) {
			open, filtered := e2e.NmapScan(t, ns, addr)
			if !slices.Equal(open, []string{"443"}) || filtered != scanned-1 {
				t.Errorf("open %v, filtered %d; want only 443 open and the other %d filtered", open, filtered, scanned-1)
			}
		})
		t.Run("UDP over "+key, func(t *testing.T) {
			// A closed UDP port answers with an ICMP port unreachable
			// (nmap: closed); a dropped one answers nothing.
			states := nmapUDP(t, ns, addr, udpPorts)
			for _, port := range udpPorts {
				if state := states[port]; state != "open|filtered" && !(port == "443" && state == "open") {
					t.Errorf("udp port %s is %q, want silence (open|filtered)", port, state)
				}
			}
			if err := quicHandshake(t, addr, e2e.ServerName); err != nil {
				t.Errorf("QUIC on udp 443 does not answer: %v", err)
			}
		})
	}
}

// nmapUDP UDP-scans ports of addr from namespace ns and returns each port's
// state as nmap names it.
func nmapUDP(t testing.TB, ns, addr string, ports []string) map[string]string {
	t.Helper()
	args := []string{"netns", "exec", ns, "nmap", "-Pn", "-sU", "-n", "-p", strings.Join(ports, ","), "--max-retries", "1",
		"--host-timeout", "120s", "-oG", "-"}
	if strings.Contains(addr, ":") {
		args = append(args, "-6")
	}
	out, err := exec.Command("ip", append(args, addr)...).CombinedOutput()
	if err != nil {
		t.Fatalf("nmap: %v\n%s", err, out)
	}
	states := map[string]string{}
	for _, line := range strings.Split(string(out), "\n") {
		_, ports, ok := strings.Cut(line, "Ports: ")
		if !ok {
			continue
		}
		ports, _, _ = strings.Cut(ports, "\t")
		for _, p := range strings.Split(ports, ", ") {
			if f := strings.Split(p, "/"); len(f) > 1 {
				states[f[0]] = f[1]
			}
		}
	}
	t.Logf("nmap -sU %s from %s: %v", addr, ns, states)
	return states
}

// quicHandshake completes a QUIC handshake with the bastion at addr from
// the client, asking for the tunnel's ALPN under serverName.
func quicHandshake(t testing.TB, addr, serverName string) error {
	_, err := quicHello(t, addr, serverName, 5*time.Second)
	return err
}

// Invariant 3: a source that probes closed ports is put in a timed
// nftables blocklist and then dropped everywhere, 443 included.
func TestInvariant03ProbersAreBlocklisted(t *testing.T) {
	e2e.NeedLab(t)
	d := e2e.StartDaemon(t, e2e.ViaFDs, "")
	removeFirewallAtEnd(t)
	ns := e2e.LabValue(t, "NS_CLIENT")
	client4, client6 := e2e.LabValue(t, "CLIENT4"), e2e.LabValue(t, "CLIENT6")
	pub4, pub6 := e2e.LabValue(t, "BASTION_PUB4"), e2e.LabValue(t, "BASTION_PUB6")

	t.Run("one probe of a closed port, and 443 goes silent", func(t *testing.T) {
		e2e.ExpectProbe(t, ns, pub4, 80, "filtered")
		e2e.ExpectProbe(t, ns, pub4, 443, "open") // typing http:// locks nobody out
		e2e.ExpectProbe(t, ns, pub4, 22, "filtered")
		e2e.ExpectProbe(t, ns, pub4, 443, "filtered")
		if err := quicHandshake(t, pub4, e2e.ServerName); err == nil {
			t.Error("a blocklisted source completed a QUIC handshake on udp 443")
		}
		e2e.ExpectProbe(t, ns, pub6, 443, "open") // another source address
		e2e.ExpectProbe(t, ns, pub6, 3389, "filtered")
		e2e.ExpectProbe(t, ns, pub6, 443, "filtered")
	})

	t.Run("the blocklist is timed", func(t *testing.T) {
		// An IPv6 source is its /64 (TestInvariant17ASlash64IsOneSource).
		net6 := netip.PrefixFrom(netip.MustParseAddr(client6), 64).Masked()
		for set, key := range map[string]string{"blocklist4": client4, "blocklist6": net6.Addr().String()} {
			out, err := e2e.InBastion(t, "nft", "list", "set", "inet", "bastiond", set)
			if err != nil || !strings.Contains(out, key+" expires ") || !strings.Contains(out, "\ttimeout ") {
				t.Errorf("%s does not hold %s with a timeout: %v\n%s", set, key, err, out)
			}
		}
		out, err := d.Ctl(nil, "policy", "blocklist")
		if err != nil || !strings.Contains(out, client4+"/32") || !strings.Contains(out, net6.String()) {
			t.Errorf("bastionctl policy blocklist: %v\n%s", err, out)
		}
		// Clearing one entry lets that address back in, and only it.
		if out, err := d.Ctl(nil, "policy", "blocklist", "clear", client4); err != nil || !strings.Contains(out, "removed 1 ") {
			t.Fatalf("clear: %v: %s", err, out)
		}
		e2e.ExpectProbe(t, ns, pub4, 443, "open")
		e2e.ExpectProbe(t, ns, pub6, 443, "filtered")
		if out, err := d.Ctl(nil, "policy", "blocklist", "clear", "--all"); err != nil {
			t.Fatalf("clear --all: %v: %s", err, out)
		}
	})

	for _, key := range []string{"BASTION_PUB4", "BASTION_PUB6"} {
		t.Run("a stranger's nmap scan finds no open port over "+key, func(t *testing.T) {
			// -r: ports in order, so a closed port is probed before 443.
			open, filtered := e2e.NmapScan(t, ns, e2e.LabValue(t, key), "-r", "--min-rate", "1000")
			if len(open) != 0 || filtered != scanned {
				t.Errorf("open %v, filtered %d; want nothing open", open, filtered)
			}
		})
	}
}

// Invariant 4: the machines accept 22 and 3389 only from the bastion; a
// rogue host in the VNet cannot reach them where the bastion enforces.
func TestInvariant04OnlyTheBastionReachesTheMachines(t *testing.T) {
	e2e.NeedLab(t)
	e2e.StartDaemon(t, e2e.ViaFDs, "")
	removeFirewallAtEnd(t)
	rogue, bastion := e2e.LabValue(t, "NS_ROGUE"), e2e.LabValue(t, "NS_BASTION")
	for _, tg := range []struct {
		key  string
		port int
	}{{"VM1_4", 22}, {"VM1_6", 22}, {"VM2_4", 3389}, {"VM2_6", 3389}} {
		addr := e2e.LabValue(t, tg.key)
		e2e.ExpectProbe(t, rogue, addr, tg.port, "filtered")
		e2e.ExpectProbe(t, bastion, addr, tg.port, "open")
	}

	// RDP's UDP transport: a datagram to vm2:3389 arrives from the
	// bastion and never from the rogue, over IPv4 and IPv6.
	t.Run("UDP 3389", func(t *testing.T) {
		udp := startUDPCounter(t, e2e.LabValue(t, "NS_VM2"), "[::]:3389")
		for _, key := range []string{"VM2_4", "VM2_6"} {
			vm2 := e2e.LabValue(t, key)
			rogueFrom := sendUDP(t, rogue, vm2, 3389, 5)
			bastionFrom := sendUDP(t, bastion, vm2, 3389, 5)
			udp.waitFor(t, bastionFrom, 5)
			if n := udp.from(rogueFrom); n != 0 {
				t.Errorf("%d datagrams from the rogue (%s) reached %s:3389/udp", n, rogueFrom, vm2)
			}
		}
	})

	t.Run("a rogue that takes the bastion's address", func(t *testing.T) {
		for _, a := range []struct{ key, prefix, target string }{{"BASTION_VNET4", "/32", "VM1_4"}, {"BASTION_VNET6", "/128", "VM1_6"}} {
			own := e2e.LabValue(t, a.key)
			if out, err := exec.Command("ip", "-n", rogue, "addr", "add", own+a.prefix, "dev", "eth0", "nodad").CombinedOutput(); err != nil {
				t.Fatalf("%v: %s", err, out)
			}
			defer exec.Command("ip", "-n", rogue, "addr", "del", own+a.prefix, "dev", "eth0").Run()
			if got := e2e.Probe(t, rogue, e2e.LabValue(t, a.target), 22, own); got != "filtered" {
				t.Errorf("a rogue with the bastion's address %s reached %s:22 (%s)", own, a.target, got)
			}
			e2e.ExpectProbe(t, bastion, e2e.LabValue(t, a.target), 22, "open")
		}
	})
}

// Invariant 9: the firewall stays closed when the daemon dies; only an
// explicit cleanup removes the daemon's tables.
func TestInvariant09FirewallOutlivesTheDaemon(t *testing.T) {
	e2e.NeedLab(t)
	removeFirewallAtEnd(t)
	client, rogue := e2e.LabValue(t, "NS_CLIENT"), e2e.LabValue(t, "NS_ROGUE")
	pub4, vm1 := e2e.LabValue(t, "BASTION_PUB4"), e2e.LabValue(t, "VM1_4")
	closed := func(t *testing.T) {
		t.Helper()
		if out, err := e2e.InBastion(t, "nft", "list", "table", "inet", "bastiond"); err != nil || !strings.Contains(out, "policy drop") {
			t.Fatalf("the host table is gone: %v\n%s", err, out)
		}
		if out, err := e2e.InBastion(t, "nft", "list", "table", "bridge", "bastiond_vnet"); err != nil {
			t.Fatalf("the VNet table is gone: %v\n%s", err, out)
		}
		e2e.ExpectProbe(t, client, pub4, 22, "filtered")
		e2e.ExpectProbe(t, rogue, vm1, 22, "filtered")
	}

	d := e2e.StartDaemon(t, e2e.ViaFDs, allowClient(t))
	export, err := d.Ctl(nil, "policy", "export", "--target", "vm1")
	if err != nil || !strings.Contains(export, "table inet bastiond_guard {") {
		t.Fatalf("policy export: %v\n%s", err, export)
	}
	t.Run("a clean stop", func(t *testing.T) {
		d.Stop()
		closed(t)
	})
	t.Run("kill -9", func(t *testing.T) {
		d := e2e.StartDaemon(t, e2e.ViaFDs, allowClient(t))
		d.Cmd.Process.Kill()
		d.Wait(10 * time.Second)
		closed(t)
	})
	t.Run("only -cleanup opens it", func(t *testing.T) {
		if out, err := e2e.InBastion(t, e2e.BinPath("bastiond"), "-cleanup"); err != nil {
			t.Fatalf("-cleanup: %v: %s", err, out)
		}
		if out, _ := e2e.InBastion(t, "nft", "list", "tables"); strings.Contains(out, "bastiond") {
			t.Errorf("tables left after -cleanup:\n%s", out)
		}
		e2e.ExpectProbe(t, rogue, vm1, 22, "open")
	})
	t.Run("where the bastion only sits in the VNet, the exported guard on the machine", func(t *testing.T) {
		script := filepath.Join(t.TempDir(), "guard.nft")
		if err := os.WriteFile(script, []byte(export), 0o600); err != nil {
			t.Fatal(err)
		}
		ns := e2e.LabValue(t, "NS_VM1")
		if out, err := exec.Command("ip", "netns", "exec", ns, "nft", "-f", script).CombinedOutput(); err != nil {
			t.Fatalf("loading the export on vm1: %v\n%s", err, out)
		}
		defer exec.Command("ip", "netns", "exec", ns, "nft", "delete", "table", "inet", "bastiond_guard").Run()
		udp := startUDPCounter(t, ns, "[::]:3389")
		for _, key := range []string{"VM1_4", "VM1_6"} {
			e2e.ExpectProbe(t, rogue, e2e.LabValue(t, key), 22, "filtered")
			e2e.ExpectProbe(t, e2e.LabValue(t, "NS_BASTION"), e2e.LabValue(t, key), 22, "open")
			rogueFrom := sendUDP(t, rogue, e2e.LabValue(t, key), 3389, 5)
			udp.waitFor(t, sendUDP(t, e2e.LabValue(t, "NS_BASTION"), e2e.LabValue(t, key), 3389, 5), 5)
			if n := udp.from(rogueFrom); n != 0 {
				t.Errorf("the exported guard let %d datagrams from the rogue reach %s:3389/udp", n, e2e.LabValue(t, key))
			}
		}
	})
}

// udpCounter counts the datagrams a UDP socket in a lab namespace
// receives, by source address.
type udpCounter struct {
	mu sync.Mutex
	by map[netip.Addr]int
}

// startUDPCounter listens on addr in namespace ns until the test ends.
func startUDPCounter(t *testing.T, ns, addr string) *udpCounter {
	t.Helper()
	var pc net.PacketConn
	if err := e2e.InNetns(ns, func() (err error) {
		pc, err = net.ListenPacket("udp", addr)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	c := &udpCounter{by: map[netip.Addr]int{}}
	go func() {
		buf := make([]byte, 2048)
		for {
			_, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			c.mu.Lock()
			c.by[from.(*net.UDPAddr).AddrPort().Addr().Unmap()]++
			c.mu.Unlock()
		}
	}()
	return c
}

func (c *udpCounter) from(a netip.Addr) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.by[a.Unmap()]
}

// waitFor waits until n datagrams came from a; the counter's other
// sources had the same time to arrive.
func (c *udpCounter) waitFor(t *testing.T, a netip.Addr, n int) {
	t.Helper()
	for deadline := time.Now().Add(3 * time.Second); c.from(a) < n; {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d datagrams from %s arrived", c.from(a), n, a)
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond) // datagrams sent before are in by now
}

// sendUDP sends n datagrams from namespace ns to addr:port and returns the
// source address they left from. A send the firewall refuses locally
// (EPERM) counts as sent: the datagram did not arrive.
func sendUDP(t *testing.T, ns, addr string, port, n int) netip.Addr {
	t.Helper()
	var from netip.Addr
	if err := e2e.InNetns(ns, func() error {
		c, err := net.Dial("udp", net.JoinHostPort(addr, strconv.Itoa(port)))
		if err != nil {
			return err
		}
		defer c.Close()
		from = c.LocalAddr().(*net.UDPAddr).AddrPort().Addr().Unmap()
		for range n {
			c.Write([]byte("datagram"))
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return from
}

// countingPacketConn counts the bytes the bastion sent back.
type countingPacketConn struct {
	net.PacketConn
	n atomic.Int64
}

// SetReadBuffer and SetWriteBuffer let quic-go size the socket's buffers.
func (c *countingPacketConn) SetReadBuffer(n int) error {
	return c.PacketConn.(*net.UDPConn).SetReadBuffer(n)
}

func (c *countingPacketConn) SetWriteBuffer(n int) error {
	return c.PacketConn.(*net.UDPConn).SetWriteBuffer(n)
}

func (c *countingPacketConn) ReadFrom(p []byte) (int, net.Addr, error) {
	n, addr, err := c.PacketConn.ReadFrom(p)
	c.n.Add(int64(n))
	return n, addr, err
}

// quicHello starts a QUIC handshake with the bastion at addr:443 from the
// client under serverName ("": no SNI) and returns how many bytes
// came back and how the handshake ended.
func quicHello(t testing.TB, addr, serverName string, limit time.Duration) (int, error) {
	t.Helper()
	pc := e2e.ClientUDP(t)
	counted := &countingPacketConn{PacketConn: pc}
	tr := &quic.Transport{Conn: counted}
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	raddr := &net.UDPAddr{IP: net.ParseIP(addr), Port: 443}
	conn, err := tr.Dial(ctx, raddr, &tls.Config{ServerName: serverName, InsecureSkipVerify: true,
		NextProtos: []string{"bastion-tunnel/1"}}, &quic.Config{HandshakeIdleTimeout: limit})
	if err == nil {
		conn.CloseWithError(0, "")
	}
	tr.Close()
	pc.Close()
	return int(counted.n.Load()), err
}
