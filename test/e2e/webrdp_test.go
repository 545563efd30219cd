package e2e

import (
	"crypto/x509"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/bastiond/bastiond/proxy/hostkeys"
	"github.com/bastiond/bastiond/proxy/rdcleanpath"
)

// TestWebRDPGateway drives the RDCleanPath gateway against vm2's real
// FreeRDP shadow servers: the certificate check, both security protocols,
// IPv4 and IPv6 on both sides, and each refusal's answer and outcome.
func TestWebRDPGateway(t *testing.T) {
	d := StartDaemonWith(t, ViaFDs, func(dir string) string { return WebRDPConfig(dir, false, "") })
	reload := func(cfg string) {
		t.Helper()
		d.WriteConfig(cfg)
		d.Signal(syscall.SIGHUP)
		d.WaitNotify("READY=1", 10*time.Second)
	}
	AddLabUsers(t, d, "alice", "bob")
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("the daemon's log ends:\n%s", tail(d.Log.String(), 6000))
		}
	})
	alice := SignedIn(t, lab["BASTION_PUB4"], "alice")

	t.Run("a certificate nobody approved", func(t *testing.T) {
		tk := alice.ConnectTicket("vm2", "rdp")
		resp := alice.OpenDesktop().Request(tk, AnyTLS)
		if resp.Error == nil || resp.Error.TLSAlert != 42 || resp.ServerCertChain != nil {
			t.Fatalf("answer: %+v", resp)
		}
		if code, o := alice.Outcome(tk); code != 200 || o.Reason != "certificate" || !strings.Contains(o.Message, "no pinned certificate for vm2") {
			t.Errorf("outcome: %d %+v", code, o)
		}
		out, err := d.Ctl(nil, "hostkeys", "list", "vm2")
		if err != nil || !strings.Contains(out, "rdp-cert") || !strings.Contains(out, "pending") {
			t.Errorf("the certificate seen should wait for approval: %v\n%s", err, out)
		}
		recs := EndedRecords(d, "vm2")
		if len(recs) != 1 || !strings.HasPrefix(recs[0]["reason"].(string), "host key not pinned: ") {
			t.Errorf("end records: %v", recs)
		}
	})

	// What an admin does: scan, compare, pin. Both shadow servers present
	// the certificate they share.
	out, err := d.Ctl(nil, "hostkeys", "scan", "vm2", "--pin", "--json")
	if err != nil {
		t.Fatalf("hostkeys scan vm2 --pin: %v\n%s", err, out)
	}
	var keys []hostkeys.Key
	if err := json.Unmarshal([]byte(out), &keys); err != nil || len(keys) != 1 || keys[0].Kind != hostkeys.KindRDP ||
		keys[0].State != hostkeys.StatePinned {
		t.Fatalf("scan vm2: %v %s", err, out)
	}
	pinned := keys[0].Fingerprint

	for _, c := range []struct {
		name, bastion       string
		tlsV6               bool
		protocols, selected uint32
		address             string
	}{
		{"NLA over IPv4", "BASTION_PUB4", false, AnyTLS, rdcleanpath.ProtocolHybrid, lab["VM2_4"]},
		{"NLA from an IPv6 client", "BASTION_PUB6", false, AnyTLS, rdcleanpath.ProtocolHybrid, lab["VM2_4"]},
		{"TLS to an IPv6 target", "BASTION_PUB4", true, TLSOnly, rdcleanpath.ProtocolSSL, lab["VM2_6"]},
	} {
		t.Run(c.name, func(t *testing.T) {
			reload(WebRDPConfig(d.Dir, c.tlsV6, ""))
			u := SignedIn(t, lab[c.bastion], "alice")
			tk := u.ConnectTicket("vm2", "rdp")
			rc := u.OpenDesktop()
			resp := rc.Request(tk, c.protocols)
			if resp.Error != nil || len(resp.ServerCertChain) == 0 {
				t.Fatalf("answer: %+v", resp)
			}
			cc, err := rdcleanpath.ParseConnectionConfirm(resp.X224ConnectionPDU)
			if err != nil || cc.Protocol != c.selected {
				t.Errorf("confirm: %+v %v, want protocol %d", cc, err, c.selected)
			}
			if host, _, _ := net.SplitHostPort(resp.ServerAddr); host != c.address {
				t.Errorf("server address %q, want %s", resp.ServerAddr, c.address)
			}
			leaf, err := x509.ParseCertificate(resp.ServerCertChain[0])
			if err != nil || hostkeys.Fingerprint(leaf.Raw) != pinned {
				t.Errorf("the chain's leaf is not the pinned certificate: %v", err)
			}
			// The user leaves: the session ends as closed by the client.
			rc.ws.Close(websocket.StatusNormalClosure, "")
			if code, o := u.Outcome(tk); code != 200 || o.Reason != "client_closed" || o.Session == "" {
				t.Errorf("outcome: %d %+v", code, o)
			}
			recs := EndedRecords(d, "vm2")
			last := recs[len(recs)-1]
			if last["reason"] != "client closed" || last["protocol"] != "rdp" || last["via"] != "browser" || last["user"] != "alice" {
				t.Errorf("end record: %v", last)
			}
		})
	}

	t.Run("the server requires NLA", func(t *testing.T) {
		reload(WebRDPConfig(d.Dir, false, ""))
		tk := alice.ConnectTicket("vm2", "rdp")
		resp := alice.OpenDesktop().Request(tk, TLSOnly)
		if resp.Error == nil || resp.Error.Code != rdcleanpath.ErrorNegotiation || resp.X224ConnectionPDU == nil {
			t.Fatalf("answer: %+v", resp)
		}
		cc, err := rdcleanpath.ParseConnectionConfirm(resp.X224ConnectionPDU)
		if err != nil || cc.Negotiation != rdcleanpath.RDPNegFailure || cc.FailureCode != 5 {
			t.Errorf("the server's confirm: %+v %v", cc, err)
		}
		if code, o := alice.Outcome(tk); code != 200 || o.Reason != "negotiation" || !strings.Contains(o.Message, "NLA") {
			t.Errorf("outcome: %d %+v", code, o)
		}
	})

	t.Run("RDP weighs more than the capacity left", func(t *testing.T) {
		reload(WebRDPConfig(d.Dir, false, "  capacity: 3\n")) // an RDP session takes 2 units
		defer reload(WebRDPConfig(d.Dir, false, ""))
		first := alice.OpenDesktop()
		if resp := first.Request(alice.ConnectTicket("vm2", "rdp"), AnyTLS); resp.Error != nil {
			t.Fatalf("the first desktop: %+v", resp.Error)
		}
		defer first.ws.Close(websocket.StatusNormalClosure, "")
		tk := alice.ConnectTicket("vm2", "rdp")
		resp := alice.OpenDesktop().Request(tk, AnyTLS)
		if resp.Error == nil || resp.Error.HTTPStatus != 503 {
			t.Errorf("answer: %+v", resp)
		}
		if code, o := alice.Outcome(tk); code != 200 || o.Reason != "at_capacity" || !strings.Contains(o.Message, "capacity") {
			t.Errorf("outcome: %d %+v", code, o)
		}
	})

	t.Run("a reload that withdraws the right ends the desktop", func(t *testing.T) {
		u := SignedIn(t, lab["BASTION_PUB4"], "alice")
		tk := u.ConnectTicket("vm2", "rdp")
		rc := u.OpenDesktop()
		if resp := rc.Request(tk, AnyTLS); resp.Error != nil {
			t.Fatalf("answer: %+v", resp.Error)
		}
		reload(strings.Replace(WebRDPConfig(d.Dir, false, ""), "ops: [alice]", "ops: []", 1))
		defer reload(WebRDPConfig(d.Dir, false, ""))
		rc.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.Copy(io.Discard, rc.conn); errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatal("the desktop is still open after its right was withdrawn")
		}
		if code, o := u.Outcome(tk); code != 200 || o.Reason != "denied" || !strings.Contains(o.Message, "withdrawn") {
			t.Errorf("outcome: %d %+v", code, o)
		}
		if recs := EndedRecords(d, "vm2"); recs[len(recs)-1]["reason"] != "access revoked" {
			t.Errorf("end record: %v", recs[len(recs)-1])
		}
	})

	t.Run("a used ticket", func(t *testing.T) {
		tk := alice.ConnectTicket("vm2", "rdp")
		rc := alice.OpenDesktop()
		if resp := rc.Request(tk, AnyTLS); resp.Error != nil {
			t.Fatalf("first use: %+v", resp.Error)
		}
		resp := alice.OpenDesktop().Request(tk, AnyTLS)
		if resp.Error == nil || resp.Error.HTTPStatus != 401 {
			t.Errorf("replayed ticket: %+v", resp)
		}
		rc.ws.Close(websocket.StatusNormalClosure, "")
	})

	t.Run("an SSH ticket", func(t *testing.T) {
		reload(strings.Replace(WebRDPConfig(d.Dir, false, ""), "protocols: [rdp]\n    - name: no-clipboard",
			"protocols: [rdp]\n    - name: shell\n      subjects: [group:ops]\n      targets: [vm1]\n      protocols: [ssh]\n    - name: no-clipboard", 1))
		tk := alice.ConnectTicket("vm1", "ssh")
		resp := alice.OpenDesktop().Request(tk, AnyTLS)
		if resp.Error == nil || resp.Error.HTTPStatus != 401 {
			t.Errorf("an SSH ticket on the desktop: %+v", resp)
		}
		if code, o := alice.Outcome(tk); code != 200 || o.Reason != "expired" {
			t.Errorf("outcome: %d %+v", code, o)
		}
	})

	t.Run("another user cannot read the outcome", func(t *testing.T) {
		tk := alice.ConnectTicket("vm2", "rdp")
		alice.OpenDesktop().Request(tk, TLSOnly)
		bob := SignedIn(t, lab["BASTION_PUB4"], "bob")
		if resp, err := bob.c.Get(bob.base + "/api/rdp/outcome?ticket=" + tk); err != nil || resp.StatusCode != http.StatusNotFound {
			t.Errorf("bob read alice's outcome: %v %v", resp.StatusCode, err)
		}
	})
}

// TestXfreerdpThroughGateway: FreeRDP's own client completes a TLS-secured
// connection to vm2's shadow server through the gateway (by way of
// rdpBridge), and the session's record counts exactly the bytes relayed.
func TestXfreerdpThroughGateway(t *testing.T) {
	d := StartDaemonWith(t, ViaFDs, func(dir string) string { return WebRDPConfig(dir, true, "") })
	AddLabUsers(t, d, "alice")
	if out, err := d.Ctl(nil, "hostkeys", "scan", "vm2", "--pin"); err != nil {
		t.Fatalf("hostkeys scan vm2 --pin: %v\n%s", err, out)
	}
	AddLabUsers(t, d, "bob")
	t.Run("the clipboard refused at the gateway", func(t *testing.T) {
		// bob's role disables the clipboard; xfreerdp asks for it anyway.
		b := newRDPBridge(t, SignedIn(t, lab["BASTION_PUB4"], "bob"), "vm2")
		c := b.xfreerdp("+clipboard", "/size:800x600")
		c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(6 * time.Second)
		syscall.Kill(-c.Process.Pid, syscall.SIGTERM)
		c.Wait()
		b.waitEnded(t)
		if !strings.Contains(d.Log.String(), `"msg":"rdp clipboard channel removed: the role disables the clipboard","user":"bob"`) ||
			!strings.Contains(d.Log.String(), `"channels":1`) {
			t.Errorf("no removal of xfreerdp's clipboard channel in the log")
		}
		recs := EndedRecords(d, "vm2")
		if last := recs[len(recs)-1]; last["user"] != "bob" || last["bytes_down"].(float64) < 10000 {
			t.Errorf("the desktop did not run without its clipboard: %v (bridge: %v)", last, b.errors())
		}
	})
	for _, bastion := range []string{"BASTION_PUB4", "BASTION_PUB6"} {
		t.Run(bastion, func(t *testing.T) {
			b := newRDPBridge(t, SignedIn(t, lab[bastion], "alice"), "vm2")
			if out, err := b.xfreerdp("+auth-only").CombinedOutput(); err != nil {
				t.Fatalf("xfreerdp +auth-only through the gateway: %v\n%s\nbridge: %v", err, out, b.errors())
			}
			b.waitEnded(t)
			if errs := b.errors(); len(errs) > 0 {
				t.Fatalf("bridge: %v", errs)
			}
			recs := EndedRecords(d, "vm2")
			last := recs[len(recs)-1]
			if len(b.sessions) != 1 || last["session"] != b.sessions[0] {
				t.Fatalf("the bridge's session %v is not the last record %v", b.sessions, last)
			}
			if up, down := last["bytes_up"].(float64), last["bytes_down"].(float64); int64(up) != b.up.Load() || int64(down) != b.down.Load() || down == 0 {
				t.Errorf("record counts %v up %v down; the bridge relayed %d up %d down", up, down, b.up.Load(), b.down.Load())
			}
		})
	}
}
