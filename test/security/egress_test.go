package security

import (
	"bufio"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/bastiond/bastiond/test/e2e"
)

// Invariant 13: the daemon's own egress is limited in nftables too, not
// only by the dial guard in code. The lab's daemon runs as root, so the
// test names root as firewall.egress_user: then the daemon's real sessions
// cross the chain, and so does anything this test does as root in the
// bastion's namespace. Another user (nobody) is not restricted until
// restrict_egress: all.
func TestInvariant13TheDaemonsEgressIsPinned(t *testing.T) {
	e2e.NeedLab(t)
	if _, err := exec.LookPath("socat"); err != nil {
		t.Skip("socat not installed (test/deps.sh installs it)")
	}
	const egress = "firewall: {egress_user: root}\n"
	rogues := []string{e2e.LabValue(t, "ROGUE4"), e2e.LabValue(t, "ROGUE6")}
	// A network holding the rogue's addresses, offering only 4445: its
	// interval sets open that port there to the daemon's user, and no
	// other.
	network := "  networks:\n    - name: roguenet\n      cidrs: [" + rogues[0] + "/32, \"" + rogues[1] + "/128\"]\n      ports: {tunnel: [4445]}\n"
	d := e2e.StartDaemonWith(t, e2e.ViaFDs, func(dir string) string { return e2e.LabConfigTargets(dir, network, e2e.TunnelAccess("")+egress) })
	removeFirewallAtEnd(t)
	bastion, rogue, vm1 := e2e.LabValue(t, "NS_BASTION"), e2e.LabValue(t, "NS_ROGUE"), e2e.LabValue(t, "NS_VM1")
	vm1s := []string{e2e.LabValue(t, "VM1_4"), e2e.LabValue(t, "VM1_6")}

	show, err := d.Ctl(nil, "policy", "show")
	if err != nil || !strings.Contains(show, "# egress: processes of user root (uid 0") || !strings.Contains(show, "meta skuid 0 drop") {
		t.Fatalf("policy show does not show the egress chain: %v\n%s", err, show)
	}
	for _, want := range []string{"set net_egress4", rogues[0] + " . tcp . 4445", "set net_egress6", rogues[1] + " . tcp . 4445", "@net_egress4 accept"} {
		if !strings.Contains(show, want) {
			t.Errorf("policy show lacks the network's %q:\n%s", want, show)
		}
	}

	rogueTCP := e2e.StartSink(t, rogue, "[::]:4444", e2e.SinkClose)
	rogueListed := e2e.StartSink(t, rogue, "[::]:4445", e2e.SinkClose)
	rogueUDP := startUDPCounter(t, rogue, "[::]:4444")
	unlisted := e2e.StartSink(t, vm1, "[::]:2222", e2e.SinkClose)

	// dial connects from the bastion's namespace as root, the daemon's user.
	dial := func(network, addr, port string) (net.Conn, error) {
		var c net.Conn
		err := e2e.InNetns(bastion, func() (err error) {
			c, err = net.DialTimeout(network, net.JoinHostPort(addr, port), 800*time.Millisecond)
			return err
		})
		return c, err
	}
	refused := func(addr, port string) {
		t.Helper()
		if c, err := dial("tcp", addr, port); err == nil {
			c.Close()
			t.Errorf("the daemon's user reached %s port %s", addr, port)
		}
	}

	t.Run("the daemon's user", func(t *testing.T) {
		var fromBastion, fromVM1 []netip.Addr
		for _, a := range rogues {
			refused(a, "4444")
			fromBastion = append(fromBastion, sendUDP(t, bastion, a, 4444, 3))
			fromVM1 = append(fromVM1, sendUDP(t, vm1, a, 4444, 1)) // arrives: the listener works
		}
		for _, a := range vm1s {
			refused(a, "2222")
		}
		for _, a := range []string{"127.0.0.1", "::1"} {
			refused(a, "9443") // the metrics listener
			refused(a, "443")
		}
		for _, a := range vm1s {
			c, err := dial("tcp", a, "22")
			if err != nil {
				t.Errorf("the daemon's user cannot reach %s:22: %v", a, err)
				continue
			}
			c.SetDeadline(time.Now().Add(5 * time.Second))
			if banner, _ := bufio.NewReader(c).ReadString('\n'); !strings.HasPrefix(banner, "SSH-2.0-") {
				t.Errorf("%s:22 sent %q, not an SSH banner", a, banner)
			}
			c.Close()
		}
		time.Sleep(300 * time.Millisecond)
		if n := rogueTCP.Accepted.Load(); n != 0 {
			t.Errorf("the rogue accepted %d connections from the bastion", n)
		}
		for i, a := range fromBastion {
			rogueUDP.waitFor(t, fromVM1[i], 1) // the listener works, over this family
			if n := rogueUDP.from(a); n != 0 {
				t.Errorf("the rogue got %d datagrams from the bastion's %s", n, a)
			}
		}
		if n := unlisted.Accepted.Load(); n != 0 {
			t.Errorf("vm1:2222 accepted %d connections from the bastion", n)
		}
	})

	t.Run("the daemon's user, a network", func(t *testing.T) {
		// The network's port on its addresses is open; its other ports
		// stay closed (4444 above).
		for _, a := range rogues {
			c, err := dial("tcp", a, "4445")
			if err != nil {
				t.Errorf("the daemon's user cannot reach %s:4445, a port of the network it is in: %v", a, err)
				continue
			}
			c.Close()
		}
		for deadline := time.Now().Add(2 * time.Second); rogueListed.Accepted.Load() < 2 && time.Now().Before(deadline); {
			time.Sleep(20 * time.Millisecond)
		}
		if n := rogueListed.Accepted.Load(); n != 2 {
			t.Errorf("the rogue's 4445 accepted %d of 2 connections through the network's interval sets", n)
		}
	})

	t.Run("the daemon's sessions", func(t *testing.T) {
		e2e.AddLabUsers(t, d, "alice")
		pub4 := e2e.LabValue(t, "BASTION_PUB4")
		cl := e2e.TunnelClient(t, e2e.LoginAs(t, "alice", pub4), pub4, "tcp")
		c, err := e2e.Dial(t, cl, "vm1", 22)
		if err != nil {
			t.Fatalf("a tunnel to vm1:22 with the chain in force: %v", err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		if banner, _ := bufio.NewReader(c).ReadString('\n'); !strings.HasPrefix(banner, "SSH-2.0-") {
			t.Errorf("the tunnel to vm1:22 carried %q, not an SSH banner", banner)
		}
	})

	// asNobody runs socat as nobody in the bastion's namespace.
	asNobody := func(target string) error {
		return exec.Command("ip", "netns", "exec", bastion, "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--",
			"socat", "-u", "OPEN:/dev/null", target+",connect-timeout=2").Run()
	}
	targets := []string{"TCP4:" + rogues[0] + ":4444", "TCP6:[" + rogues[1] + "]:4444"}

	t.Run("another user is not restricted", func(t *testing.T) {
		before := rogueTCP.Accepted.Load()
		for _, target := range targets {
			if err := asNobody(target); err != nil {
				t.Errorf("nobody cannot reach %s: %v", target, err)
			}
		}
		time.Sleep(200 * time.Millisecond)
		if got := rogueTCP.Accepted.Load() - before; got != 2 {
			t.Errorf("the rogue accepted %d of nobody's 2 connections", got)
		}
	})

	t.Run("restrict_egress: all", func(t *testing.T) {
		reload(t, d, e2e.LabConfig(d.Dir, e2e.TunnelAccess("")+"firewall: {restrict_egress: all}\n"))
		if show, err := d.Ctl(nil, "policy", "show"); err != nil || !strings.Contains(show, "meta skuid != 4294967295 drop") {
			t.Fatalf("policy show after the reload: %v\n%s", err, show)
		}
		before := rogueTCP.Accepted.Load()
		for _, target := range targets {
			if err := asNobody(target); err == nil {
				t.Errorf("nobody reached %s with restrict_egress: all", target)
			}
		}
		if err := asNobody("TCP4:" + vm1s[0] + ":22"); err != nil {
			t.Errorf("nobody cannot reach vm1:22, which the inventory lists: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
		if got := rogueTCP.Accepted.Load() - before; got != 0 {
			t.Errorf("the rogue accepted %d connections with restrict_egress: all", got)
		}
	})
}
