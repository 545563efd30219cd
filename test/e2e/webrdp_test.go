package e2e

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
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

// webRDPConfig is the lab's configuration for the desktop in the browser:
// alice may open vm2, bob may open vm2 without the clipboard. vm2's RDP
// port is its shadow server with NLA; tlsV6 makes it the one with TLS
// alone, on vm2's IPv6 address only.
func webRDPConfig(dir string, tlsV6 bool, limits string) string {
	access := `access:
  groups:
    ops: [alice]
  roles:
    - name: desktops
      subjects: [group:ops]
      targets: [vm2]
      protocols: [rdp]
    - name: no-clipboard
      subjects: [user:bob]
      targets: [vm2]
      protocols: [rdp]
      disable_clipboard: true
limits:
  target_timeout: 2s
` + limits
	cfg := labConfig(dir, access)
	if tlsV6 {
		vm2 := "addresses: [" + lab["VM2_4"] + `, "` + lab["VM2_6"] + `"]` + "\n      ports: {rdp: " + lab["VM2_RDP_NLA_PORT"]
		cfg = strings.Replace(cfg, vm2, `addresses: ["`+lab["VM2_6"]+`"]`+"\n      ports: {rdp: "+lab["VM2_RDP_TLS_PORT"], 1)
	}
	return cfg
}

// rdpClient speaks RDCleanPath as the IronRDP web client does, from the
// client namespace with the cookies of a signed-in webUser.
type rdpClient struct {
	t    testing.TB
	ws   *websocket.Conn
	conn net.Conn
}

// openDesktop opens the desktop WebSocket of u; the ticket goes in the
// request, not the URL.
func (u *webUser) openDesktop() *rdpClient {
	u.t.Helper()
	rc, err := u.dialDesktop()
	if err != nil {
		u.t.Fatal(err)
	}
	u.t.Cleanup(func() { rc.ws.CloseNow() })
	return rc
}

// dialDesktop is openDesktop for any goroutine: it returns its failure,
// and the caller closes the WebSocket.
func (u *webUser) dialDesktop() (*rdpClient, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ws, resp, err := websocket.Dial(ctx, "wss://"+serverName+"/ws/rdp",
		&websocket.DialOptions{HTTPClient: u.c, HTTPHeader: http.Header{"Origin": {u.base}}})
	if err != nil {
		code := 0
		if resp != nil {
			code = resp.StatusCode
		}
		return nil, fmt.Errorf("open the desktop WebSocket: %w (HTTP %d)", err, code)
	}
	ws.SetReadLimit(1 << 20)
	return &rdpClient{t: u.t, ws: ws, conn: websocket.NetConn(context.Background(), ws, websocket.MessageBinary)}, nil
}

// request sends an RDCleanPath request with ticket and an X.224 request
// for protocols, and reads the gateway's answer.
func (c *rdpClient) request(ticket string, protocols uint32) *rdcleanpath.PDU {
	c.t.Helper()
	req := &rdcleanpath.PDU{Version: rdcleanpath.Version, Destination: "somewhere-else:3389", ProxyAuth: ticket,
		X224ConnectionPDU: rdcleanpath.ConnectionRequestPDU(lab["LAB_USER"], protocols)}
	b, err := req.Marshal()
	if err != nil {
		c.t.Fatal(err)
	}
	if _, err := c.conn.Write(b); err != nil {
		c.t.Fatal(err)
	}
	c.conn.SetReadDeadline(time.Now().Add(20 * time.Second))
	resp, err := rdcleanpath.Read(c.conn, 1<<20)
	if err != nil {
		c.t.Fatalf("read the gateway's answer: %v", err)
	}
	return resp
}

// outcome is GET /api/rdp/outcome for ticket.
func (u *webUser) outcome(ticket string) (code int, o rdpOutcome) {
	u.t.Helper()
	code, o, err := u.outcomeOf(ticket)
	if err != nil {
		u.t.Error(err)
	}
	return code, o
}

type rdpOutcome struct{ Reason, Message, Session string }

// outcomeOf is outcome for any goroutine. The outcome is kept a moment
// after the WebSocket closes: a 404 is asked again for up to 2 s.
func (u *webUser) outcomeOf(ticket string) (code int, o rdpOutcome, err error) {
	for range 20 {
		resp, err := u.c.Get(u.base + "/api/rdp/outcome?ticket=" + ticket)
		if err != nil {
			return 0, o, err
		}
		json.NewDecoder(resp.Body).Decode(&o)
		resp.Body.Close()
		if code = resp.StatusCode; code != http.StatusNotFound {
			return code, o, nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return code, o, nil
}

const (
	tlsOnly = rdcleanpath.ProtocolSSL
	anyTLS  = rdcleanpath.ProtocolSSL | rdcleanpath.ProtocolHybrid | rdcleanpath.ProtocolHybridEx
)

// TestWebRDPGateway drives the RDCleanPath gateway against vm2's real
// FreeRDP shadow servers: the certificate check, both security protocols,
// IPv4 and IPv6 on both sides, and each refusal's answer and outcome.
func TestWebRDPGateway(t *testing.T) {
	d := startDaemonWith(t, viaFDs, func(dir string) string { return webRDPConfig(dir, false, "") })
	reload := func(cfg string) {
		t.Helper()
		d.writeConfig(cfg)
		d.signal(syscall.SIGHUP)
		d.waitNotify("READY=1", 10*time.Second)
	}
	addLabUsers(t, d, "alice", "bob")
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("the daemon's log ends:\n%s", tail(d.log.String(), 6000))
		}
	})
	alice := signedIn(t, lab["BASTION_PUB4"], "alice")

	t.Run("a certificate nobody approved", func(t *testing.T) {
		tk := alice.connectTicket("vm2", "rdp")
		resp := alice.openDesktop().request(tk, anyTLS)
		if resp.Error == nil || resp.Error.TLSAlert != 42 || resp.ServerCertChain != nil {
			t.Fatalf("answer: %+v", resp)
		}
		if code, o := alice.outcome(tk); code != 200 || o.Reason != "certificate" || !strings.Contains(o.Message, "no pinned certificate for vm2") {
			t.Errorf("outcome: %d %+v", code, o)
		}
		out, err := d.ctl(nil, "hostkeys", "list", "vm2")
		if err != nil || !strings.Contains(out, "rdp-cert") || !strings.Contains(out, "pending") {
			t.Errorf("the certificate seen should wait for approval: %v\n%s", err, out)
		}
		recs := endedRecords(d, "vm2")
		if len(recs) != 1 || !strings.HasPrefix(recs[0]["reason"].(string), "host key not pinned: ") {
			t.Errorf("end records: %v", recs)
		}
	})

	// What an admin does: scan, compare, pin. Both shadow servers present
	// the certificate they share.
	out, err := d.ctl(nil, "hostkeys", "scan", "vm2", "--pin", "--json")
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
		{"NLA over IPv4", "BASTION_PUB4", false, anyTLS, rdcleanpath.ProtocolHybrid, lab["VM2_4"]},
		{"NLA from an IPv6 client", "BASTION_PUB6", false, anyTLS, rdcleanpath.ProtocolHybrid, lab["VM2_4"]},
		{"TLS to an IPv6 target", "BASTION_PUB4", true, tlsOnly, rdcleanpath.ProtocolSSL, lab["VM2_6"]},
	} {
		t.Run(c.name, func(t *testing.T) {
			reload(webRDPConfig(d.dir, c.tlsV6, ""))
			u := signedIn(t, lab[c.bastion], "alice")
			tk := u.connectTicket("vm2", "rdp")
			rc := u.openDesktop()
			resp := rc.request(tk, c.protocols)
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
			if code, o := u.outcome(tk); code != 200 || o.Reason != "client_closed" || o.Session == "" {
				t.Errorf("outcome: %d %+v", code, o)
			}
			recs := endedRecords(d, "vm2")
			last := recs[len(recs)-1]
			if last["reason"] != "client closed" || last["protocol"] != "rdp" || last["via"] != "browser" || last["user"] != "alice" {
				t.Errorf("end record: %v", last)
			}
		})
	}

	t.Run("the server requires NLA", func(t *testing.T) {
		reload(webRDPConfig(d.dir, false, ""))
		tk := alice.connectTicket("vm2", "rdp")
		resp := alice.openDesktop().request(tk, tlsOnly)
		if resp.Error == nil || resp.Error.Code != rdcleanpath.ErrorNegotiation || resp.X224ConnectionPDU == nil {
			t.Fatalf("answer: %+v", resp)
		}
		cc, err := rdcleanpath.ParseConnectionConfirm(resp.X224ConnectionPDU)
		if err != nil || cc.Negotiation != rdcleanpath.RDPNegFailure || cc.FailureCode != 5 {
			t.Errorf("the server's confirm: %+v %v", cc, err)
		}
		if code, o := alice.outcome(tk); code != 200 || o.Reason != "negotiation" || !strings.Contains(o.Message, "NLA") {
			t.Errorf("outcome: %d %+v", code, o)
		}
	})

	t.Run("RDP weighs more than the capacity left", func(t *testing.T) {
		reload(webRDPConfig(d.dir, false, "  capacity: 3\n")) // an RDP session takes 2 units
		defer reload(webRDPConfig(d.dir, false, ""))
		first := alice.openDesktop()
		if resp := first.request(alice.connectTicket("vm2", "rdp"), anyTLS); resp.Error != nil {
			t.Fatalf("the first desktop: %+v", resp.Error)
		}
		defer first.ws.Close(websocket.StatusNormalClosure, "")
		tk := alice.connectTicket("vm2", "rdp")
		resp := alice.openDesktop().request(tk, anyTLS)
		if resp.Error == nil || resp.Error.HTTPStatus != 503 {
			t.Errorf("answer: %+v", resp)
		}
		if code, o := alice.outcome(tk); code != 200 || o.Reason != "at_capacity" || !strings.Contains(o.Message, "capacity") {
			t.Errorf("outcome: %d %+v", code, o)
		}
	})

	t.Run("a reload that withdraws the right ends the desktop", func(t *testing.T) {
		u := signedIn(t, lab["BASTION_PUB4"], "alice")
		tk := u.connectTicket("vm2", "rdp")
		rc := u.openDesktop()
		if resp := rc.request(tk, anyTLS); resp.Error != nil {
			t.Fatalf("answer: %+v", resp.Error)
		}
		reload(strings.Replace(webRDPConfig(d.dir, false, ""), "ops: [alice]", "ops: []", 1))
		defer reload(webRDPConfig(d.dir, false, ""))
		rc.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.Copy(io.Discard, rc.conn); errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatal("the desktop is still open after its right was withdrawn")
		}
		if code, o := u.outcome(tk); code != 200 || o.Reason != "denied" || !strings.Contains(o.Message, "withdrawn") {
			t.Errorf("outcome: %d %+v", code, o)
		}
		if recs := endedRecords(d, "vm2"); recs[len(recs)-1]["reason"] != "access revoked" {
			t.Errorf("end record: %v", recs[len(recs)-1])
		}
	})

	t.Run("a used ticket", func(t *testing.T) {
		tk := alice.connectTicket("vm2", "rdp")
		rc := alice.openDesktop()
		if resp := rc.request(tk, anyTLS); resp.Error != nil {
			t.Fatalf("first use: %+v", resp.Error)
		}
		resp := alice.openDesktop().request(tk, anyTLS)
		if resp.Error == nil || resp.Error.HTTPStatus != 401 {
			t.Errorf("replayed ticket: %+v", resp)
		}
		rc.ws.Close(websocket.StatusNormalClosure, "")
	})

	t.Run("an SSH ticket", func(t *testing.T) {
		reload(strings.Replace(webRDPConfig(d.dir, false, ""), "protocols: [rdp]\n    - name: no-clipboard",
			"protocols: [rdp]\n    - name: shell\n      subjects: [group:ops]\n      targets: [vm1]\n      protocols: [ssh]\n    - name: no-clipboard", 1))
		tk := alice.connectTicket("vm1", "ssh")
		resp := alice.openDesktop().request(tk, anyTLS)
		if resp.Error == nil || resp.Error.HTTPStatus != 401 {
			t.Errorf("an SSH ticket on the desktop: %+v", resp)
		}
		if code, o := alice.outcome(tk); code != 200 || o.Reason != "expired" {
			t.Errorf("outcome: %d %+v", code, o)
		}
	})

	t.Run("another user cannot read the outcome", func(t *testing.T) {
		tk := alice.connectTicket("vm2", "rdp")
		alice.openDesktop().request(tk, tlsOnly)
		bob := signedIn(t, lab["BASTION_PUB4"], "bob")
		if resp, err := bob.c.Get(bob.base + "/api/rdp/outcome?ticket=" + tk); err != nil || resp.StatusCode != http.StatusNotFound {
			t.Errorf("bob read alice's outcome: %v %v", resp.StatusCode, err)
		}
	})
}

// TestXfreerdpThroughGateway: FreeRDP's own client completes a TLS-secured
// connection to vm2's shadow server through the gateway (by way of
// rdpBridge), and the session's record counts exactly the bytes relayed.
func TestXfreerdpThroughGateway(t *testing.T) {
	d := startDaemonWith(t, viaFDs, func(dir string) string { return webRDPConfig(dir, true, "") })
	addLabUsers(t, d, "alice")
	if out, err := d.ctl(nil, "hostkeys", "scan", "vm2", "--pin"); err != nil {
		t.Fatalf("hostkeys scan vm2 --pin: %v\n%s", err, out)
	}
	addLabUsers(t, d, "bob")
	t.Run("the clipboard refused at the gateway", func(t *testing.T) {
		// bob's role disables the clipboard; xfreerdp asks for it anyway.
		b := newRDPBridge(t, signedIn(t, lab["BASTION_PUB4"], "bob"), "vm2")
		c := b.xfreerdp("+clipboard", "/size:800x600")
		c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(6 * time.Second)
		syscall.Kill(-c.Process.Pid, syscall.SIGTERM)
		c.Wait()
		b.waitEnded(t)
		if !strings.Contains(d.log.String(), `"msg":"rdp clipboard channel removed: the role disables the clipboard","user":"bob"`) ||
			!strings.Contains(d.log.String(), `"channels":1`) {
			t.Errorf("no removal of xfreerdp's clipboard channel in the log")
		}
		recs := endedRecords(d, "vm2")
		if last := recs[len(recs)-1]; last["user"] != "bob" || last["bytes_down"].(float64) < 10000 {
			t.Errorf("the desktop did not run without its clipboard: %v (bridge: %v)", last, b.errors())
		}
	})
	for _, bastion := range []string{"BASTION_PUB4", "BASTION_PUB6"} {
		t.Run(bastion, func(t *testing.T) {
			b := newRDPBridge(t, signedIn(t, lab[bastion], "alice"), "vm2")
			if out, err := b.xfreerdp("+auth-only").CombinedOutput(); err != nil {
				t.Fatalf("xfreerdp +auth-only through the gateway: %v\n%s\nbridge: %v", err, out, b.errors())
			}
			b.waitEnded(t)
			if errs := b.errors(); len(errs) > 0 {
				t.Fatalf("bridge: %v", errs)
			}
			recs := endedRecords(d, "vm2")
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
