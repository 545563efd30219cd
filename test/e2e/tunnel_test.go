package e2e

import (
	"encoding/json"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bastiond/bastiond/api/tunnelwire"
	"github.com/bastiond/bastiond/tunnel"
)

// blockUDP443 drops the client's UDP to port 443, as a restrictive network
// would; the returned function lifts it.
func blockUDP443(t testing.TB) func() {
	t.Helper()
	rules := "table inet bl_block_quic {\n  chain out {\n    type filter hook output priority 0;\n    udp dport 443 drop\n  }\n}\n"
	nft := exec.Command("ip", "netns", "exec", LabValue(t, "NS_CLIENT"), "nft", "-f", "-")
	nft.Stdin = strings.NewReader(rules)
	if out, err := nft.CombinedOutput(); err != nil {
		t.Fatalf("block UDP: %v\n%s", err, out)
	}
	lift := func() {
		exec.Command("ip", "netns", "exec", LabValue(t, "NS_CLIENT"), "nft", "delete table inet bl_block_quic").Run()
	}
	t.Cleanup(lift)
	return lift
}

// TestTunnelClients: OpenSSH through `bastionctl ssh-proxy` and FreeRDP
// through `bastionctl tunnel` reach the lab's real servers, over QUIC and,
// with UDP 443 blocked, over the TLS fallback, to both of the bastion's
// addresses.
func TestTunnelClients(t *testing.T) {
	d := StartDaemonWith(t, ViaFDs, func(dir string) string {
		return TunnelConfig(dir, TunnelAccess(""))
	})
	AddLabUsers(t, d, "alice")
	for _, fam := range []struct{ name, addr string }{{"ipv4", LabValue(t, "BASTION_PUB4")}, {"ipv6", LabValue(t, "BASTION_PUB6")}} {
		creds := LoginAs(t, "alice", fam.addr)
		for _, blocked := range []bool{false, true} {
			via := "quic"
			if blocked {
				via = "websocket"
			}
			t.Run(fam.name+"/ssh-proxy/"+via, func(t *testing.T) {
				if blocked {
					defer blockUDP443(t)()
				}
				ssh := exec.Command("ip", "netns", "exec", LabValue(t, "NS_CLIENT"), "ssh", "-F", "none",
					"-o", "ProxyCommand="+filepath.Join(binDir, "bastionctl")+" ssh-proxy vm1",
					"-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes",
					"-i", LabValue(t, "LAB_KEY"), "lab@vm1", "echo hello from $(hostname) as $(id -un)")
				ssh.Env = append(os.Environ(), "BASTION_CREDENTIALS="+creds)
				seen := len(endedTo(d, "vm1"))
				out, err := ssh.CombinedOutput()
				if err != nil || !strings.Contains(string(out), "hello from") || !strings.Contains(string(out), "as lab") {
					t.Fatalf("ssh through the bastion: %v\n%s\ndaemon log:\n%s", err, out, d.Log.String())
				}
				// The record says which transport carried it.
				id := nextEnded(t, d, "vm1", seen)
				if r := d.AuditRecord(id, "session_end"); r["via"] != via || r["user"] != "alice" || r["protocol"] != "tunnel" {
					t.Errorf("end record: %v", r)
				}
			})
		}
	}

	t.Run("xfreerdp through bastionctl tunnel", func(t *testing.T) {
		creds := LoginAs(t, "alice", LabValue(t, "BASTION_PUB6"))
		tunOut := StartRDPTunnel(t, creds)
		for i := range 2 { // many connections through one tunnel
			rdp := exec.Command("ip", "netns", "exec", LabValue(t, "NS_CLIENT"), "xvfb-run", "-a", "xfreerdp", "/v:127.0.0.1:13389",
				"/u:"+LabValue(t, "LAB_USER"), "/p:"+LabValue(t, "LAB_PASSWORD"), "/cert:ignore", "+auth-only", "/log-level:ERROR")
			out, err := rdp.CombinedOutput()
			if err != nil {
				t.Fatalf("xfreerdp +auth-only #%d through the tunnel: %v\n%s\ntunnel:\n%s", i, err, out, tunOut.String())
			}
		}
	})
}

// endedTo lists the IDs of the ended sessions to target in the audit
// file, oldest first.
func endedTo(d *Daemon, target string) []string {
	data, _ := os.ReadFile(d.AuditFile())
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
func nextEnded(t testing.TB, d *Daemon, target string, seen int) string {
	t.Helper()
	for end := time.Now().Add(10 * time.Second); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		if ids := endedTo(d, target); len(ids) > seen {
			return ids[seen]
		}
	}
	t.Fatalf("no new ended session to %s in the audit file; live: %v\n%s", target, d.liveSessions(), d.Log.String())
	return ""
}

// TestTunnelBroker: refusals, limits, kill, timeouts and a VM that goes
// away, each ending with its record.
func TestTunnelBroker(t *testing.T) {
	d := StartDaemonWith(t, ViaFDs, func(dir string) string {
		return TunnelConfig(dir, TunnelAccess(""))
	})
	AddLabUsers(t, d, "alice", "bob")
	StartSink(t, LabValue(t, "NS_VM1"), "[::]:9000", SinkAnswer)
	StartSink(t, LabValue(t, "NS_ROGUE"), "[::]:9000", SinkAnswer)
	pub4, pub6 := LabValue(t, "BASTION_PUB4"), LabValue(t, "BASTION_PUB6")
	alice := TunnelClient(t, LoginAs(t, "alice", pub4), pub4, "quic")
	alice6 := TunnelClient(t, LoginAs(t, "alice", pub6), pub6, "tcp")

	reload := func(limits string) {
		t.Helper()
		d.WriteConfig(TunnelConfig(d.Dir, TunnelAccess(limits)))
		d.Signal(syscall.SIGHUP)
		d.WaitNotify("READY=1", 10*time.Second)
	}

	t.Run("100 MiB exactly, both address families", func(t *testing.T) {
		for _, c := range []struct {
			name   string
			cl     *tunnel.Client
			target string
		}{{"quic to vm1 (IPv4 first)", alice, "vm1"}, {"tls to an IPv6-only target", alice6, "rogue6"}} {
			conn, err := Dial(t, c.cl, c.target, 9000)
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
			r := d.AuditRecord(id, "session_end")
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

	t.Run("capacity and the per-user cap", func(t *testing.T) {
		reload("  capacity: 2\n")
		var open []net.Conn
		defer func() {
			for _, c := range open {
				c.Close()
			}
		}()
		for range 2 {
			c, err := Dial(t, alice, "vm1", 9000)
			if err != nil {
				t.Fatal(err)
			}
			open = append(open, c)
		}
		_, err := Dial(t, alice6, "vm1", 9000)
		WantRefusal(t, err, tunnelwire.StatusCapacity, "bastion at capacity")
		for _, c := range open {
			c.Close()
		}
		open = nil
		waitNoSessions(t, d)

		reload("  sessions_per_user: 1\n")
		c, err := Dial(t, alice, "vm1", 9000)
		if err != nil {
			t.Fatal(err)
		}
		open = append(open, c)
		_, err = Dial(t, alice, "vm1", 9000)
		WantRefusal(t, err, tunnelwire.StatusUserLimit, "sessions open")
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
		c, err := Dial(t, alice, "vm1", 9000)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		id := d.sessionID("vm1")
		if out, err := d.Ctl(nil, "sessions"); err != nil || !strings.Contains(out, id) || !strings.Contains(out, "alice") {
			t.Fatalf("sessions: %v\n%s", err, out)
		}
		if out, err := d.Ctl(nil, "sessions", "kill", id, "--reason", "maintenance window"); err != nil {
			t.Fatalf("kill: %v\n%s", err, out)
		}
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.Copy(io.Discard, c); isTimeout(err) {
			t.Errorf("the killed session's client conn stayed open")
		}
		if r := d.AuditRecord(id, "session_end"); r["reason"] != "killed: by root: maintenance window" {
			t.Errorf("end record: %v", r)
		}
		if out, err := d.Ctl(nil, "sessions", "kill", id, "--reason", "again"); err == nil || !strings.Contains(out, "no live session") {
			t.Errorf("killing a dead session: %v\n%s", err, out)
		}
	})

	t.Run("idle timeout", func(t *testing.T) {
		reload("  tunnel: {idle_timeout: 2s}\n")
		defer reload("")
		c, err := Dial(t, alice, "vm1", 9000)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		id := d.sessionID("vm1")
		c.SetReadDeadline(time.Now().Add(15 * time.Second))
		if _, err := io.Copy(io.Discard, c); isTimeout(err) {
			t.Fatalf("the idle session was not ended")
		}
		if r := d.AuditRecord(id, "session_end"); r["reason"] != "idle timeout" {
			t.Errorf("end record: %v", r)
		}
	})

	t.Run("access revoked by a reload", func(t *testing.T) {
		c, err := Dial(t, alice, "vm1", 9000)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		id := d.sessionID("vm1")
		d.WriteConfig(strings.Replace(TunnelConfig(d.Dir, TunnelAccess("")), "targets: [\"*\"]", "targets: [vm2]", 1))
		d.Signal(syscall.SIGHUP)
		d.WaitNotify("READY=1", 10*time.Second)
		if r := d.AuditRecord(id, "session_end"); r["reason"] != "access revoked" {
			t.Errorf("end record: %v", r)
		}
		reload("")
	})

	t.Run("a VM that goes down mid-session", func(t *testing.T) {
		c, err := Dial(t, alice, "vm1", 9000)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		id := d.sessionID("vm1")
		port := "vm1p"
		down := exec.Command("ip", "-n", LabValue(t, "NS_BASTION"), "link", "set", port, "down")
		if out, err := down.CombinedOutput(); err != nil {
			t.Fatalf("link down: %v\n%s", err, out)
		}
		defer exec.Command("ip", "-n", LabValue(t, "NS_BASTION"), "link", "set", port, "up").Run()
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
		r := d.AuditRecord(id, "session_end")
		if r["reason"] != "target unreachable" {
			t.Errorf("end record: %v", r)
		}
	})
}

func hasSession(d *Daemon, id string) bool {
	for _, s := range d.liveSessions() {
		if s["id"] == id {
			return true
		}
	}
	return false
}

func waitNoSessions(t testing.TB, d *Daemon) { waitNoSessionsWithin(t, d, 10*time.Second) }

func waitNoSessionsWithin(t testing.TB, d *Daemon, limit time.Duration) {
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
	out, err := exec.Command("ip", "netns", "exec", LabValue(t, "NS_BASTION"), "curl", "-sf", "http://127.0.0.1:9443/metrics").Output()
	if err != nil {
		t.Fatalf("metrics: %v", err)
	}
	return string(out)
}

// TestTunnelCrashRecovery: a daemon killed with SIGKILL mid-session leaves
// start records without ends; the next start writes them "abandoned".
func TestTunnelCrashRecovery(t *testing.T) {
	d := StartDaemonWith(t, ViaFDs, func(dir string) string {
		return TunnelConfig(dir, TunnelAccess(""))
	})
	AddLabUsers(t, d, "alice")
	StartSink(t, LabValue(t, "NS_VM1"), "[::]:9000", SinkAnswer)
	pub4 := LabValue(t, "BASTION_PUB4")
	alice := TunnelClient(t, LoginAs(t, "alice", pub4), pub4, "quic")
	var ids []string
	for range 3 {
		c, err := Dial(t, alice, "vm1", 9000)
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
	d.Signal(syscall.SIGKILL)
	d.Wait(10 * time.Second)
	for _, id := range ids {
		d.AuditRecord(id, "session_start")
	}

	d2 := d.restart(ViaFDs)
	for _, id := range ids {
		r := d2.AuditRecord(id, "session_end")
		if r["reason"] != "abandoned" || r["bytes_exact"] != false || r["user"] != "alice" {
			t.Errorf("recovered record: %v", r)
		}
	}
	if out, _ := d2.Ctl(nil, "sessions"); !strings.Contains(out, "no live sessions") {
		t.Errorf("sessions after the restart:\n%s", out)
	}
}
