package e2e

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/bastiond/bastiond/internal/syncbuf"
	"github.com/bastiond/bastiond/proxy/tunnel"
)

const tunnelPW = "tunnel password 1234"

// tunnelConfig is the lab's configuration with raw TCP services for the
// tunnel tests: vm1 also offers 9000 (the sink), 9001 (the holder) and 5201
// (iperf3); "rogue6" is the rogue host by its IPv6 address only (a target
// dialled over IPv6), port 9000; "self" names the bastion's own public
// address, which the dial guard must refuse.
func tunnelConfig(dir, extra string) string {
	targets := fmt.Sprintf(`    - name: rogue6
      addresses: ["%s"]
      ports: {tunnel: [9000]}
    - name: self
      addresses: [%s]
      ports: {tunnel: [9000]}
`, lab["ROGUE6"], lab["BASTION_PUB4"])
	return strings.Replace(labConfigTargets(dir, targets, extra), "ports: {ssh: 22}", "ports: {ssh: 22, tunnel: [9000, 9001, 5201]}", 1)
}

func tunnelAccess(extraLimits string) string {
	return `access:
  roles:
    - name: tunnels
      subjects: [user:alice]
      targets: ["*"]
      protocols: [tunnel]
limits:
  target_timeout: 2s
` + extraLimits
}

// sink is a TCP service in a lab namespace.
type sink struct {
	accepted atomic.Int64
}

type sinkMode int

const (
	sinkAnswer sinkMode = iota // read the connection to its end, then send sinkReply bytes and close
	sinkHold                   // read the connection to its end, then close
	sinkClose                  // close at once: only count connections
	sinkEcho                   // send back what it reads
)

const sinkReply = 1<<20 + 7

func startSink(t testing.TB, ns, addr string, mode sinkMode) *sink {
	t.Helper()
	var ln net.Listener
	if err := inNetns(ns, func() (err error) {
		ln, err = net.Listen("tcp", addr)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	s := &sink{}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.accepted.Add(1)
			if mode == sinkClose {
				c.Close()
				continue
			}
			go func() {
				defer c.Close()
				if mode == sinkEcho {
					io.Copy(c, c)
					return
				}
				io.Copy(io.Discard, c)
				if mode == sinkAnswer {
					c.Write(make([]byte, sinkReply))
				}
			}()
		}
	}()
	return s
}

// loginAs runs bastionctl login in the client namespace against the
// bastion's address addr and returns the credentials file.
func loginAs(t testing.TB, user, addr string) string {
	t.Helper()
	creds := filepath.Join(t.TempDir(), "credentials.json")
	login := exec.Command("ip", "netns", "exec", labValue(t, "NS_CLIENT"), filepath.Join(binDir, "bastionctl"), "login",
		"--server", serverName, "--address", net.JoinHostPort(addr, "443"), "--insecure",
		"--user", user, "--password-stdin", "--ttl", "1h")
	login.Env = append(os.Environ(), "BASTION_CREDENTIALS="+creds)
	login.Stdin = strings.NewReader(tunnelPW + "\n")
	if out, err := login.CombinedOutput(); err != nil {
		t.Fatalf("login: %v\n%s", err, out)
	}
	return creds
}

// tunnelClient is the tunnel library in the client namespace, with the
// token of a credentials file.
func tunnelClient(t testing.TB, creds, addr, transport string) *tunnel.Client {
	t.Helper()
	data, err := os.ReadFile(creds)
	if err != nil {
		t.Fatal(err)
	}
	var c struct{ Token string }
	if err := json.Unmarshal(data, &c); err != nil {
		t.Fatal(err)
	}
	cl, err := tunnel.NewClient(tunnel.ClientConfig{Server: serverName, Address: net.JoinHostPort(addr, "443"),
		TLS: &tls.Config{InsecureSkipVerify: true}, Token: c.Token, Transport: transport})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close() })
	return cl
}

// dial opens a tunnel from the client namespace (where the client's
// sockets are made).
func dial(t testing.TB, cl *tunnel.Client, target string, port uint16) (net.Conn, error) {
	t.Helper()
	var c net.Conn
	err := inNetns(labValue(t, "NS_CLIENT"), func() (err error) {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		c, err = cl.Dial(ctx, target, port)
		return err
	})
	return c, err
}

// wantRefusal checks that err is the bastion's answer st and mentions msg.
func wantRefusal(t testing.TB, err error, st tunnel.Status, msg string) {
	t.Helper()
	var te *tunnel.Error
	if !errors.As(err, &te) || te.Status != st || !strings.Contains(err.Error(), msg) {
		t.Errorf("got %v, want the bastion's %v answer mentioning %q", err, st, msg)
	}
}

// auditRecord waits for the audit record of session id with event ev.
func (d *daemon) auditRecord(id, ev string) map[string]any {
	d.t.Helper()
	for end := time.Now().Add(15 * time.Second); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		f, err := os.Open(d.auditFile())
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			var r map[string]any
			if json.Unmarshal(sc.Bytes(), &r) == nil && r["session"] == id && r["event"] == ev {
				f.Close()
				return r
			}
		}
		f.Close()
	}
	d.t.Fatalf("no %s record for session %s in the audit file", ev, id)
	return nil
}

// lastSession is the newest live session of user, from bastionctl sessions.
func (d *daemon) liveSessions() []map[string]any {
	d.t.Helper()
	out, err := d.ctl(nil, "sessions", "--json")
	if err != nil {
		d.t.Fatalf("sessions: %v\n%s", err, out)
	}
	var list []map[string]any
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		d.t.Fatalf("sessions --json: %v\n%s", err, out)
	}
	return list
}

// sessionID is the ID of the one live session to target, waiting for it.
func (d *daemon) sessionID(target string) string {
	d.t.Helper()
	for end := time.Now().Add(10 * time.Second); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		for _, s := range d.liveSessions() {
			if s["target"] == target {
				return s["id"].(string)
			}
		}
	}
	d.t.Fatalf("no live session to %s", target)
	return ""
}

// blockUDP443 drops the client's UDP to port 443, as a restrictive network
// would; the returned function lifts it.
func blockUDP443(t testing.TB) func() {
	t.Helper()
	rules := "table inet bl_block_quic {\n  chain out {\n    type filter hook output priority 0;\n    udp dport 443 drop\n  }\n}\n"
	nft := exec.Command("ip", "netns", "exec", labValue(t, "NS_CLIENT"), "nft", "-f", "-")
	nft.Stdin = strings.NewReader(rules)
	if out, err := nft.CombinedOutput(); err != nil {
		t.Fatalf("block UDP: %v\n%s", err, out)
	}
	lift := func() {
		exec.Command("ip", "netns", "exec", labValue(t, "NS_CLIENT"), "nft", "delete table inet bl_block_quic").Run()
	}
	t.Cleanup(lift)
	return lift
}

func addLabUsers(t testing.TB, d *daemon, users ...string) {
	t.Helper()
	for _, u := range users {
		if out, err := d.ctlStdin(tunnelPW+"\n", "users", "add", u, "--password-stdin"); err != nil {
			t.Fatalf("users add %s: %v\n%s", u, err, out)
		}
	}
}

// TestTunnelClients: OpenSSH through `bastionctl ssh-proxy` and FreeRDP
// through `bastionctl tunnel` reach the lab's real servers, over QUIC and,
// with UDP 443 blocked, over the TLS fallback, to both of the bastion's
// addresses.
func TestTunnelClients(t *testing.T) {
	d := startDaemonWith(t, viaFDs, func(dir string) string {
		return tunnelConfig(dir, tunnelAccess(""))
	})
	addLabUsers(t, d, "alice")
	for _, fam := range []struct{ name, addr string }{{"ipv4", labValue(t, "BASTION_PUB4")}, {"ipv6", labValue(t, "BASTION_PUB6")}} {
		creds := loginAs(t, "alice", fam.addr)
		for _, blocked := range []bool{false, true} {
			via := "quic"
			if blocked {
				via = "websocket"
			}
			t.Run(fam.name+"/ssh-proxy/"+via, func(t *testing.T) {
				if blocked {
					defer blockUDP443(t)()
				}
				ssh := exec.Command("ip", "netns", "exec", labValue(t, "NS_CLIENT"), "ssh", "-F", "none",
					"-o", "ProxyCommand="+filepath.Join(binDir, "bastionctl")+" ssh-proxy vm1",
					"-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes",
					"-i", labValue(t, "LAB_KEY"), "lab@vm1", "echo hello from $(hostname) as $(id -un)")
				ssh.Env = append(os.Environ(), "BASTION_CREDENTIALS="+creds)
				seen := len(endedTo(d, "vm1"))
				out, err := ssh.CombinedOutput()
				if err != nil || !strings.Contains(string(out), "hello from") || !strings.Contains(string(out), "as lab") {
					t.Fatalf("ssh through the bastion: %v\n%s\ndaemon log:\n%s", err, out, d.log.String())
				}
				// The record says which transport carried it.
				id := nextEnded(t, d, "vm1", seen)
				if r := d.auditRecord(id, "session_end"); r["via"] != via || r["user"] != "alice" || r["protocol"] != "tunnel" {
					t.Errorf("end record: %v", r)
				}
			})
		}
	}

	t.Run("xfreerdp through bastionctl tunnel", func(t *testing.T) {
		creds := loginAs(t, "alice", labValue(t, "BASTION_PUB6"))
		tun := exec.Command("ip", "netns", "exec", labValue(t, "NS_CLIENT"), filepath.Join(binDir, "bastionctl"),
			"tunnel", "vm2", "--port", labValue(t, "VM2_RDP_NLA_PORT"), "--listen", "127.0.0.1:13389")
		tun.Env = append(os.Environ(), "BASTION_CREDENTIALS="+creds)
		var tunOut syncbuf.Buffer
		tun.Stdout, tun.Stderr = &tunOut, &tunOut
		if err := tun.Start(); err != nil {
			t.Fatal(err)
		}
		defer func() {
			tun.Process.Signal(syscall.SIGTERM)
			tun.Wait()
		}()
		for end := time.Now().Add(10 * time.Second); !strings.Contains(tunOut.String(), "listening on 127.0.0.1:13389"); time.Sleep(20 * time.Millisecond) {
			if time.Now().After(end) {
				t.Fatalf("bastionctl tunnel did not start:\n%s", tunOut.String())
			}
		}
		for i := range 2 { // many connections through one tunnel
			rdp := exec.Command("ip", "netns", "exec", labValue(t, "NS_CLIENT"), "xvfb-run", "-a", "xfreerdp", "/v:127.0.0.1:13389",
				"/u:"+labValue(t, "LAB_USER"), "/p:"+labValue(t, "LAB_PASSWORD"), "/cert:ignore", "+auth-only", "/log-level:ERROR")
			out, err := rdp.CombinedOutput()
			if err != nil {
				t.Fatalf("xfreerdp +auth-only #%d through the tunnel: %v\n%s\ntunnel:\n%s", i, err, out, tunOut.String())
			}
		}
	})
}

// endedTo lists the IDs of the ended sessions to target in the audit
// file, oldest first.
func endedTo(d *daemon, target string) []string {
	data, _ := os.ReadFile(d.auditFile())
	var ids []string
	for line := range strings.SplitSeq(string(data), "\n") {
		var r map[string]any
		if json.Unmarshal([]byte(line), &r) == nil && r["event"] == "session_end" && r["target"] == target {
			ids = append(ids, r["session"].(string))
		}
	}
	return ids
}

// nextEnded waits for an end record to target beyond the first seen and
// returns its session's ID.
func nextEnded(t testing.TB, d *daemon, target string, seen int) string {
	t.Helper()
	for end := time.Now().Add(10 * time.Second); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		if ids := endedTo(d, target); len(ids) > seen {
			return ids[seen]
		}
	}
	t.Fatalf("no new ended session to %s in the audit file; live: %v\n%s", target, d.liveSessions(), d.log.String())
	return ""
}

// TestTunnelBroker: refusals, limits, kill, timeouts and a VM that goes
// away, each ending with its record.
func TestTunnelBroker(t *testing.T) {
	d := startDaemonWith(t, viaFDs, func(dir string) string {
		return tunnelConfig(dir, tunnelAccess(""))
	})
	addLabUsers(t, d, "alice", "bob")
	startSink(t, labValue(t, "NS_VM1"), "[::]:9000", sinkAnswer)
	startSink(t, labValue(t, "NS_ROGUE"), "[::]:9000", sinkAnswer)
	pub4, pub6 := labValue(t, "BASTION_PUB4"), labValue(t, "BASTION_PUB6")
	alice := tunnelClient(t, loginAs(t, "alice", pub4), pub4, "quic")
	alice6 := tunnelClient(t, loginAs(t, "alice", pub6), pub6, "tcp")

	reload := func(limits string) {
		t.Helper()
		d.writeConfig(tunnelConfig(d.dir, tunnelAccess(limits)))
		d.signal(syscall.SIGHUP)
		d.waitNotify("READY=1", 10*time.Second)
	}

	t.Run("100 MiB exactly, both address families", func(t *testing.T) {
		for _, c := range []struct {
			name   string
			cl     *tunnel.Client
			target string
		}{{"quic to vm1 (IPv4 first)", alice, "vm1"}, {"tls to an IPv6-only target", alice6, "rogue6"}} {
			conn, err := dial(t, c.cl, c.target, 9000)
			if err != nil {
				t.Fatalf("%s: %v", c.name, err)
			}
			id := d.sessionID(c.target)
			const up = 100 << 20
			go func() {
				buf := make([]byte, 256<<10)
				for sent := 0; sent < up; sent += len(buf) {
					if _, err := conn.Write(buf); err != nil {
						return
					}
				}
				conn.(interface{ CloseWrite() error }).CloseWrite()
			}()
			conn.SetReadDeadline(time.Now().Add(2 * time.Minute))
			down, err := io.Copy(io.Discard, conn)
			conn.Close()
			if err != nil || down != sinkReply {
				t.Fatalf("%s: read %d bytes back (%v), want %d", c.name, down, err, sinkReply)
			}
			r := d.auditRecord(id, "session_end")
			if r["bytes_up"] != float64(up) || r["bytes_down"] != float64(sinkReply) || r["reason"] != "client closed" {
				t.Errorf("%s: end record %v, want bytes_up %d, bytes_down %d, client closed", c.name, r, up, sinkReply)
			}
			wantAddr := lab["VM1_4"] + ":9000"
			if c.target == "rogue6" {
				wantAddr = "[" + lab["ROGUE6"] + "]:9000"
			}
			if r["address"] != wantAddr {
				t.Errorf("%s: dialled %v, want %s", c.name, r["address"], wantAddr)
			}
		}
	})

	t.Run("nothing outside the inventory is dialled", func(t *testing.T) {
		rogue := startSink(t, labValue(t, "NS_ROGUE"), "[::]:22", sinkClose)
		self := startSink(t, labValue(t, "NS_BASTION"), "[::]:9000", sinkClose)
		for _, name := range []string{"rogue", lab["ROGUE4"], "198.18.1.66.nip.io", "vm1.", "localhost"} {
			_, err := dial(t, alice, name, 22)
			wantRefusal(t, err, tunnel.StatusUnknownTarget, "no machine called")
		}
		_, err := dial(t, alice, "vm1", 2222)
		wantRefusal(t, err, tunnel.StatusUnknownTarget, "does not offer port 2222")
		_, err = dial(t, alice, "self", 9000)
		wantRefusal(t, err, tunnel.StatusUnreachable, "dial guard")
		time.Sleep(200 * time.Millisecond)
		if n, m := rogue.accepted.Load(), self.accepted.Load(); n != 0 || m != 0 {
			t.Errorf("the rogue host saw %d connections and the bastion's own address %d; want none", n, m)
		}
	})

	t.Run("denied and bad tokens", func(t *testing.T) {
		bob := tunnelClient(t, loginAs(t, "bob", pub4), pub4, "quic")
		_, err := dial(t, bob, "vm1", 22)
		wantRefusal(t, err, tunnel.StatusDenied, "may not open tunnels to vm1")
		forged, _ := tunnel.NewClient(tunnel.ClientConfig{Server: serverName, Address: net.JoinHostPort(pub4, "443"),
			TLS: &tls.Config{InsecureSkipVerify: true}, Token: "bst_0123456789abcdef_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", Transport: "quic"})
		defer forged.Close()
		_, err = dial(t, forged, "vm1", 22)
		wantRefusal(t, err, tunnel.StatusUnauthorized, "bastionctl login")
	})

	t.Run("capacity and the per-user cap", func(t *testing.T) {
		reload("  capacity: 2\n")
		var open []net.Conn
		defer func() {
			for _, c := range open {
				c.Close()
			}
		}()
		for range 2 {
			c, err := dial(t, alice, "vm1", 9000)
			if err != nil {
				t.Fatal(err)
			}
			open = append(open, c)
		}
		_, err := dial(t, alice6, "vm1", 9000)
		wantRefusal(t, err, tunnel.StatusCapacity, "bastion at capacity")
		for _, c := range open {
			c.Close()
		}
		open = nil
		waitNoSessions(t, d)

		reload("  sessions_per_user: 1\n")
		c, err := dial(t, alice, "vm1", 9000)
		if err != nil {
			t.Fatal(err)
		}
		open = append(open, c)
		_, err = dial(t, alice, "vm1", 9000)
		wantRefusal(t, err, tunnel.StatusUserLimit, "sessions open")
		metrics := metricsText(t)
		for _, m := range []string{`bastiond_admission_refusals_total{reason="capacity"} 1`, `bastiond_admission_refusals_total{reason="user_limit"} 1`,
			`bastiond_sessions_active{protocol="tunnel"} 1`} {
			if !strings.Contains(metrics, m) {
				t.Errorf("metrics lack %s", m)
			}
		}
		c.Close()
		waitNoSessions(t, d)
		reload("")
	})

	t.Run("kill", func(t *testing.T) {
		c, err := dial(t, alice, "vm1", 9000)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		id := d.sessionID("vm1")
		if out, err := d.ctl(nil, "sessions"); err != nil || !strings.Contains(out, id) || !strings.Contains(out, "alice") {
			t.Fatalf("sessions: %v\n%s", err, out)
		}
		if out, err := d.ctl(nil, "sessions", "kill", id, "--reason", "maintenance window"); err != nil {
			t.Fatalf("kill: %v\n%s", err, out)
		}
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.Copy(io.Discard, c); isTimeout(err) {
			t.Errorf("the killed session's client conn stayed open")
		}
		if r := d.auditRecord(id, "session_end"); r["reason"] != "killed: by root: maintenance window" {
			t.Errorf("end record: %v", r)
		}
		if out, err := d.ctl(nil, "sessions", "kill", id, "--reason", "again"); err == nil || !strings.Contains(out, "no live session") {
			t.Errorf("killing a dead session: %v\n%s", err, out)
		}
	})

	t.Run("idle timeout", func(t *testing.T) {
		reload("  tunnel: {idle_timeout: 2s}\n")
		defer reload("")
		c, err := dial(t, alice, "vm1", 9000)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		id := d.sessionID("vm1")
		c.SetReadDeadline(time.Now().Add(15 * time.Second))
		if _, err := io.Copy(io.Discard, c); isTimeout(err) {
			t.Fatalf("the idle session was not ended")
		}
		if r := d.auditRecord(id, "session_end"); r["reason"] != "idle timeout" {
			t.Errorf("end record: %v", r)
		}
	})

	t.Run("access revoked by a reload", func(t *testing.T) {
		c, err := dial(t, alice, "vm1", 9000)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		id := d.sessionID("vm1")
		d.writeConfig(strings.Replace(tunnelConfig(d.dir, tunnelAccess("")), "targets: [\"*\"]", "targets: [vm2]", 1))
		d.signal(syscall.SIGHUP)
		d.waitNotify("READY=1", 10*time.Second)
		if r := d.auditRecord(id, "session_end"); r["reason"] != "access revoked" {
			t.Errorf("end record: %v", r)
		}
		reload("")
	})

	t.Run("a VM that goes down mid-session", func(t *testing.T) {
		c, err := dial(t, alice, "vm1", 9000)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		id := d.sessionID("vm1")
		port := "vm1p"
		down := exec.Command("ip", "-n", labValue(t, "NS_BASTION"), "link", "set", port, "down")
		if out, err := down.CombinedOutput(); err != nil {
			t.Fatalf("link down: %v\n%s", err, out)
		}
		defer exec.Command("ip", "-n", labValue(t, "NS_BASTION"), "link", "set", port, "up").Run()
		// Keep sending: the bastion's unacknowledged data to the VM hits
		// the target timeout (2s).
		buf := make([]byte, 16<<10)
		for end := time.Now().Add(30 * time.Second); time.Now().Before(end); {
			c.SetWriteDeadline(time.Now().Add(time.Second))
			if _, err := c.Write(buf); err != nil && !isTimeout(err) {
				break
			}
			if !hasSession(d, id) {
				break
			}
		}
		r := d.auditRecord(id, "session_end")
		if r["reason"] != "target unreachable" {
			t.Errorf("end record: %v", r)
		}
	})
}

func hasSession(d *daemon, id string) bool {
	for _, s := range d.liveSessions() {
		if s["id"] == id {
			return true
		}
	}
	return false
}

func waitNoSessions(t testing.TB, d *daemon) { waitNoSessionsWithin(t, d, 10*time.Second) }

func waitNoSessionsWithin(t testing.TB, d *daemon, limit time.Duration) {
	t.Helper()
	for end := time.Now().Add(limit); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		if len(d.liveSessions()) == 0 {
			return
		}
	}
	t.Fatalf("sessions still live: %v", d.liveSessions())
}

// metricsText scrapes the daemon's metrics from inside the bastion namespace.
func metricsText(t testing.TB) string {
	t.Helper()
	out, err := exec.Command("ip", "netns", "exec", labValue(t, "NS_BASTION"), "curl", "-sf", "http://127.0.0.1:9443/metrics").Output()
	if err != nil {
		t.Fatalf("metrics: %v", err)
	}
	return string(out)
}

// TestTunnelCrashRecovery: a daemon killed with SIGKILL mid-session leaves
// start records without ends; the next start writes them "abandoned".
func TestTunnelCrashRecovery(t *testing.T) {
	d := startDaemonWith(t, viaFDs, func(dir string) string {
		return tunnelConfig(dir, tunnelAccess(""))
	})
	addLabUsers(t, d, "alice")
	startSink(t, labValue(t, "NS_VM1"), "[::]:9000", sinkAnswer)
	pub4 := labValue(t, "BASTION_PUB4")
	alice := tunnelClient(t, loginAs(t, "alice", pub4), pub4, "quic")
	var ids []string
	for range 3 {
		c, err := dial(t, alice, "vm1", 9000)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.Write([]byte("some bytes"))
	}
	for _, s := range d.liveSessions() {
		ids = append(ids, s["id"].(string))
	}
	if len(ids) != 3 {
		t.Fatalf("%d live sessions, want 3", len(ids))
	}
	d.signal(syscall.SIGKILL)
	d.wait(10 * time.Second)
	for _, id := range ids {
		d.auditRecord(id, "session_start")
	}

	d2 := d.restart(viaFDs)
	for _, id := range ids {
		r := d2.auditRecord(id, "session_end")
		if r["reason"] != "abandoned" || r["bytes_exact"] != false || r["user"] != "alice" {
			t.Errorf("recovered record: %v", r)
		}
	}
	if out, _ := d2.ctl(nil, "sessions"); !strings.Contains(out, "no live sessions") {
		t.Errorf("sessions after the restart:\n%s", out)
	}
}
