package security

import (
	"bufio"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/bastiond/bastiond/api/tunnelwire"
	"github.com/bastiond/bastiond/internal/testcert"
	"github.com/bastiond/bastiond/proxy/rdcleanpath"
	"github.com/bastiond/bastiond/proxy/ticket"
	"github.com/bastiond/bastiond/test/e2e"
	"github.com/bastiond/bastiond/tunnel"
)

// Invariant 5: the daemon dials only inventory targets on their configured
// ports (and addresses inside a network a role grants, on its ports);
// loopback, link-local and its own addresses never, not even inside a
// network.
func TestInvariant05OnlyInventoryTargetsAreDialled(t *testing.T) {
	e2e.NeedLab(t)
	t.Run("the configuration refuses targets that are never dialled", func(t *testing.T) {
		for addr, why := range map[string]string{
			"127.0.0.1":                      "a loopback address",
			"127.0.0.53":                     "a loopback address",
			"::1":                            "a loopback address",
			"169.254.169.254":                "link-local",
			"fe80::1":                        "link-local",
			"224.0.0.1":                      "link-local",
			"ff02::1":                        "link-local",
			"239.1.2.3":                      "multicast",
			"ff05::1:3":                      "multicast",
			"255.255.255.255":                "broadcast",
			"0.0.0.0":                        "the unspecified address",
			"::":                             "the unspecified address",
			e2e.LabValue(t, "BASTION_VNET4"): "inside the dedicated bastion subnet",
			e2e.LabValue(t, "BASTION_VNET6"): "inside the dedicated bastion subnet",
		} {
			cfg := e2e.LabConfigTargets(t.TempDir(), "    - name: bad\n      addresses: [\""+addr+"\"]\n      ports: {ssh: 22}\n", "")
			if out, err := checkConfig(t, cfg); err == nil || !strings.Contains(out, why) || !strings.Contains(out, "inventory.targets[2]") {
				t.Errorf("a target at %s: %v\n%s\nwant it refused as %s", addr, err, out, why)
			}
		}
		for cidr, why := range map[string]string{
			"127.0.0.0/8":      "overlaps loopback",
			"::1/128":          "overlaps loopback",
			"169.254.0.0/16":   "overlaps link-local",
			"fe80::/64":        "overlaps link-local",
			"224.0.0.0/8":      "overlaps multicast",
			"ff05::/64":        "overlaps multicast",
			"198.18.0.0/16":    "overlaps the dedicated bastion subnet",
			"2001:db8:b5::/48": "overlaps the dedicated bastion subnet",
		} {
			cfg := e2e.LabConfigTargets(t.TempDir(), "  networks:\n    - name: bad\n      cidrs: [\""+cidr+"\"]\n      ports: {ssh: 22}\n", "")
			if out, err := checkConfig(t, cfg); err == nil || !strings.Contains(out, why) || !strings.Contains(out, "inventory.networks[0].cidrs[0]") {
				t.Errorf("a network %s: %v\n%s\nwant it refused as %s", cidr, err, out, why)
			}
		}
	})

	// "self4" and "self6" are the bastion's own public addresses, put in
	// the inventory by mistake: only the dial guard stands in the way.
	//
	// Two networks besides: "granted" holds vm1's addresses and, by the
	// same mistake, the bastion's public ones (the configuration cannot
	// know them), SSH and 9001 only; alice's roles grant it. "ungranted"
	// holds the rogue host's addresses; no role grants it.
	pub4, pub6 := e2e.LabValue(t, "BASTION_PUB4"), e2e.LabValue(t, "BASTION_PUB6")
	rogue4, rogue6 := e2e.LabValue(t, "ROGUE4"), e2e.LabValue(t, "ROGUE6")
	vm14, vm16 := e2e.LabValue(t, "VM1_4"), e2e.LabValue(t, "VM1_6")
	networks := "  networks:\n" +
		"    - name: granted\n      cidrs: [" + vm14 + "/32, \"" + vm16 + "/128\", " + pub4 + "/32, \"" + pub6 + "/128\"]\n      ports: {ssh: 22, tunnel: [9001]}\n" +
		"    - name: ungranted\n      cidrs: [" + rogue4 + "/32, \"" + rogue6 + "/128\"]\n      ports: {ssh: 22, tunnel: [9000]}\n"
	d := e2e.StartDaemonWith(t, e2e.ViaFDs, func(dir string) string {
		cfg := e2e.TunnelConfig(dir, e2e.TunnelAccess(""))
		cfg = strings.Replace(cfg, "    - name: self\n", "    - name: self6\n      addresses: [\""+pub6+
			"\"]\n      ports: {tunnel: [9000]}\n    - name: self\n", 1)
		cfg = strings.Replace(cfg, "logging:", networks+"logging:", 1)
		return strings.Replace(cfg, "  roles:\n", "  roles:\n    - name: by-address\n      subjects: [user:alice]\n      targets: [network:granted]\n      protocols: [tunnel]\n", 1)
	})
	removeFirewallAtEnd(t)
	e2e.AddLabUsers(t, d, "alice")
	alice := e2e.TunnelClient(t, e2e.LoginAs(t, "alice", pub4), pub4, "quic")
	// Whatever is dialled by mistake is counted: the rogue host's SSH and
	// tunnel ports, and every address of the bastion itself, loopback
	// included, on 9000 and 22.
	var sinks []*e2e.Sink
	for _, s := range []struct{ ns, addr string }{{"NS_ROGUE", "[::]:22"}, {"NS_ROGUE", "[::]:9000"},
		{"NS_BASTION", "[::]:9000"}, {"NS_BASTION", "[::]:22"}, {"NS_BASTION", "[::]:9001"}} {
		sinks = append(sinks, e2e.StartSink(t, e2e.LabValue(t, s.ns), s.addr, e2e.SinkClose))
	}

	t.Run("an inventory target on its port is dialled", func(t *testing.T) {
		c, err := e2e.Dial(t, alice, "vm1", 22)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if banner, err := bufio.NewReader(c).ReadString('\n'); err != nil || !strings.HasPrefix(banner, "SSH-2.0-") {
			t.Errorf("vm1:22 through the tunnel: %q %v", banner, err)
		}
	})
	// An address outside every network is no machine (alice's "*" covers
	// every target, so she is told so).
	t.Run("names and addresses outside the inventory are refused", func(t *testing.T) {
		for _, name := range []string{"rogue", "198.18.1.67", "2001:db8:b5:1::67", "localhost", "127.0.0.1", "::1", "169.254.169.254",
			"vm1.", "vm1.lab.example", "vm11", "self4"} {
			_, err := e2e.Dial(t, alice, name, 22)
			e2e.WantRefusal(t, err, tunnelwire.StatusUnknownTarget, "no machine called")
		}
	})
	t.Run("a port the target does not offer is refused", func(t *testing.T) {
		for _, port := range []uint16{2222, 3389, 9002, 65535} {
			_, err := e2e.Dial(t, alice, "vm1", port)
			e2e.WantRefusal(t, err, tunnelwire.StatusUnknownTarget, "does not offer port")
		}
	})
	t.Run("the bastion's own addresses are never dialled", func(t *testing.T) {
		for _, name := range []string{"self", "self6"} {
			_, err := e2e.Dial(t, alice, name, 9000)
			e2e.WantRefusal(t, err, tunnelwire.StatusUnreachable, "dial guard")
		}
	})
	t.Run("an address in a granted network, on its port, is dialled", func(t *testing.T) {
		for _, addr := range []string{vm14, vm16} {
			c, err := e2e.Dial(t, alice, addr, 22)
			if err != nil {
				t.Fatalf("%s:22 through a network: %v", addr, err)
			}
			c.SetReadDeadline(time.Now().Add(10 * time.Second))
			if banner, err := bufio.NewReader(c).ReadString('\n'); err != nil || !strings.HasPrefix(banner, "SSH-2.0-") {
				t.Errorf("%s:22 through a network: %q %v", addr, banner, err)
			}
			c.Close()
		}
	})
	t.Run("an address in a network no role grants is refused", func(t *testing.T) {
		for _, addr := range []string{rogue4, rogue6} {
			for _, port := range []uint16{22, 9000} {
				_, err := e2e.Dial(t, alice, addr, port)
				e2e.WantRefusal(t, err, tunnelwire.StatusDenied, "may not open tunnels to "+addr)
			}
		}
	})
	t.Run("a port the network does not list is refused", func(t *testing.T) {
		for _, addr := range []string{pub4, pub6} {
			_, err := e2e.Dial(t, alice, addr, 9000)
			e2e.WantRefusal(t, err, tunnelwire.StatusUnknownTarget, "does not offer port 9000")
		}
	})
	t.Run("the bastion's own addresses inside a granted network are never dialled", func(t *testing.T) {
		for _, addr := range []string{pub4, pub6} {
			for _, port := range []uint16{22, 9001} {
				_, err := e2e.Dial(t, alice, addr, port)
				e2e.WantRefusal(t, err, tunnelwire.StatusUnreachable, "is one of the bastion's own addresses")
			}
		}
	})
	time.Sleep(200 * time.Millisecond) // a connection on its way would have arrived
	for i, s := range sinks {
		if n := s.Accepted.Load(); n != 0 {
			t.Errorf("sink %d saw %d connections; nothing outside the inventory may be dialled", i, n)
		}
	}
}

// Invariant 6: every session needs an authenticated user whose role allows
// that protocol on that target; tickets are single use, expire within a
// minute, and are bound to the web session.
func TestInvariant06EverySessionIsAuthorized(t *testing.T) {
	e2e.NeedLab(t)
	d := e2e.StartDaemonWith(t, e2e.ViaFDs, func(dir string) string { return e2e.WebSSHConfig(dir, "", "") })
	removeFirewallAtEnd(t)
	e2e.AddLabUsers(t, d, "alice", "bob", "carol")
	pub4, pub6 := e2e.LabValue(t, "BASTION_PUB4"), e2e.LabValue(t, "BASTION_PUB6")
	alice := e2e.SignedIn(t, pub4, "alice")
	// This one waits out its minute while the rest runs.
	stale, issued := alice.ConnectTicket("vm1", "ssh"), time.Now()

	t.Run("no user", func(t *testing.T) {
		stranger := e2e.NewWebUser(t, pub6)
		if _, err := stranger.Ticket("vm1", "ssh"); err == nil {
			t.Error("a browser that never signed in got a ticket")
		}
		for _, tk := range []string{"", "made-up"} {
			wantTicketRefused(t, stranger, tk)
		}
		forged, err := tunnel.NewClient(tunnel.ClientConfig{Server: e2e.ServerName, Address: net.JoinHostPort(pub4, "443"),
			TLS: &tls.Config{InsecureSkipVerify: true}, Token: "bst_0123456789abcdef_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", Transport: "quic"})
		if err != nil {
			t.Fatal(err)
		}
		defer forged.Close()
		_, err = e2e.Dial(t, forged, "vm1", 22)
		e2e.WantRefusal(t, err, tunnelwire.StatusUnauthorized, "bastionctl login")
	})

	t.Run("a role that does not allow it", func(t *testing.T) {
		// carol audits: she has no role to open anything.
		carol := e2e.SignedIn(t, pub6, "carol")
		for _, c := range []struct {
			u                *e2e.WebUser
			target, protocol string
		}{{carol, "vm1", "ssh"}, {alice, "vm2", "rdp"}, {alice, "vm2", "ssh"}, {alice, "vm1", "rdp"}} {
			if tk, err := c.u.Ticket(c.target, c.protocol); err == nil || !strings.Contains(err.Error(), "403") {
				t.Errorf("%s on %s: ticket %q, %v; want 403", c.protocol, c.target, tk, err)
			}
		}
		// Nobody holds a tunnel role.
		tun := e2e.TunnelClient(t, e2e.LoginAs(t, "alice", pub4), pub4, "quic")
		_, err := e2e.Dial(t, tun, "vm1", 22)
		e2e.WantRefusal(t, err, tunnelwire.StatusDenied, "may not open tunnels to vm1")
	})

	t.Run("a ticket is used once", func(t *testing.T) {
		tk := alice.ConnectTicket("vm1", "ssh")
		ws, _, err := alice.DialTicket("ssh", tk)
		if err != nil {
			t.Fatalf("first use: %v", err)
		}
		ws.CloseNow()
		wantTicketRefused(t, alice, tk)
	})

	t.Run("a ticket works only in its own web session", func(t *testing.T) {
		// Another user, and the same user in another browser.
		for _, other := range []*e2e.WebUser{e2e.SignedIn(t, pub4, "bob"), e2e.SignedIn(t, pub6, "alice")} {
			tk := alice.ConnectTicket("vm1", "ssh")
			wantTicketRefused(t, other, tk)
			// A ticket shown by another session is taken as stolen and burnt.
			wantTicketRefused(t, alice, tk)
		}
	})

	t.Run("a ticket expires within a minute", func(t *testing.T) {
		if ticket.TTL > time.Minute {
			t.Errorf("tickets live %s", ticket.TTL)
		}
		time.Sleep(time.Until(issued.Add(time.Minute + time.Second)))
		wantTicketRefused(t, alice, stale)
	})
}

// wantTicketRefused dials the terminal's WebSocket of u with tk and wants
// the bastion's refusal of the ticket.
func wantTicketRefused(t testing.TB, u *e2e.WebUser, tk string) {
	t.Helper()
	ws, resp, err := u.DialTicket("ssh", tk)
	if err == nil {
		ws.CloseNow()
		t.Errorf("ticket %q was accepted", tk)
		return
	}
	if resp == nil || resp.StatusCode != http.StatusForbidden {
		t.Errorf("ticket %q: %v, want HTTP 403", tk, err)
	}
}

// Invariant 7: SSH host keys and RDP server certificates are pinned; a
// change refuses the session with a clear message.
func TestInvariant07HostKeysArePinned(t *testing.T) {
	e2e.NeedLab(t)
	d := e2e.StartDaemonWith(t, e2e.ViaFDs, func(dir string) string { return e2e.WebSSHConfig(dir, "", "") })
	removeFirewallAtEnd(t)
	e2e.AddLabUsers(t, d, "alice")
	pub4, pw := e2e.LabValue(t, "BASTION_PUB4"), e2e.LabValue(t, "LAB_PASSWORD")
	lastEnd := func(target string) string {
		recs := e2e.EndedRecords(d, target)
		if len(recs) == 0 {
			t.Fatalf("no end record for %s", target)
		}
		r, _ := recs[len(recs)-1]["reason"].(string)
		return r
	}
	forget := func(target string) {
		if out, err := d.Ctl(nil, "hostkeys", "forget", target); err != nil {
			t.Fatalf("forget %s: %v\n%s", target, err, out)
		}
	}

	t.Run("SSH: a key nobody pinned", func(t *testing.T) {
		tc := e2e.SignedIn(t, pub4, "alice").OpenTerminal("vm1")
		tc.Send(e2e.WSMsg{Type: "auth", Login: e2e.LabValue(t, "LAB_USER"), Password: pw, Cols: 80, Rows: 24})
		if end := tc.Ended(); end.Reason != "host_key_unknown" || !strings.Contains(end.Message, "administrator") {
			t.Errorf("end: %+v", end)
		}
		if r := lastEnd("vm1"); !strings.HasPrefix(r, "host key not pinned") {
			t.Errorf("end record's reason %q", r)
		}
	})
	t.Run("SSH: the pinned key", func(t *testing.T) {
		e2e.PinVM1(t, d)
		tc := e2e.SignedIn(t, pub4, "alice").OpenTerminal("vm1")
		tc.Shell(pw)
		tc.TypeText("exit\r")
		tc.Ended()
	})
	t.Run("SSH: a changed key", func(t *testing.T) {
		pub, _, _ := ed25519.GenerateKey(rand.Reader)
		impostor, _ := ssh.NewPublicKey(pub)
		forget("vm1")
		if out, err := d.CtlStdin(string(ssh.MarshalAuthorizedKey(impostor)), "hostkeys", "pin", "vm1", "--key-file", "-"); err != nil {
			t.Fatalf("pin another key: %v\n%s", err, out)
		}
		tc := e2e.SignedIn(t, pub4, "alice").OpenTerminal("vm1")
		tc.Send(e2e.WSMsg{Type: "auth", Login: e2e.LabValue(t, "LAB_USER"), Password: pw, Cols: 80, Rows: 24})
		if end := tc.Ended(); end.Reason != "host_key_mismatch" || end.Reconnect || end.Message == "" {
			t.Errorf("end: %+v", end)
		}
		if r := lastEnd("vm1"); !strings.HasPrefix(r, "host key mismatch") {
			t.Errorf("end record's reason %q", r)
		}
	})

	reload(t, d, e2e.WebRDPConfig(d.Dir, false, ""))
	desktop := func(t *testing.T) (*e2e.WebUser, string, *rdcleanpath.PDU) {
		u := e2e.SignedIn(t, pub4, "alice")
		tk := u.ConnectTicket("vm2", "rdp")
		return u, tk, u.OpenDesktop().Request(tk, e2e.AnyTLS)
	}
	t.Run("RDP: a certificate nobody pinned", func(t *testing.T) {
		u, tk, resp := desktop(t)
		if resp.Error == nil || resp.ServerCertChain != nil {
			t.Fatalf("answer: %+v", resp)
		}
		if code, o := u.Outcome(tk); code != 200 || o.Reason != "certificate" || !strings.Contains(o.Message, "no pinned certificate for vm2") {
			t.Errorf("outcome: %d %+v", code, o)
		}
	})
	t.Run("RDP: the pinned certificate", func(t *testing.T) {
		if out, err := d.Ctl(nil, "hostkeys", "scan", "vm2", "--pin"); err != nil {
			t.Fatalf("hostkeys scan vm2 --pin: %v\n%s", err, out)
		}
		if _, _, resp := desktop(t); resp.Error != nil || len(resp.ServerCertChain) == 0 {
			t.Fatalf("answer: %+v", resp)
		}
	})
	t.Run("RDP: a changed certificate", func(t *testing.T) {
		forget("vm2")
		certFile := filepath.Join(t.TempDir(), "impostor.pem")
		os.WriteFile(certFile, testcert.PEM(testcert.New(t, testcert.Options{})), 0o600)
		if out, err := d.Ctl(nil, "hostkeys", "pin", "vm2", "--cert-file", certFile); err != nil {
			t.Fatalf("pin another certificate: %v\n%s", err, out)
		}
		u, tk, resp := desktop(t)
		if resp.Error == nil || resp.ServerCertChain != nil {
			t.Fatalf("answer: %+v", resp)
		}
		if code, o := u.Outcome(tk); code != 200 || o.Reason != "certificate" || o.Message == "" {
			t.Errorf("outcome: %d %+v", code, o)
		}
		if r := lastEnd("vm2"); !strings.HasPrefix(r, "host key mismatch") {
			t.Errorf("end record's reason %q", r)
		}
	})
}
