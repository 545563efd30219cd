package cluster

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bastiond/bastiond/internal/seal"
	"github.com/bastiond/bastiond/test/e2e"
)

// clusterConfig is what makes instance name one of the cluster: the lab's
// PostgreSQL (TLS verified against the lab's CA), a seal key every
// instance shares, and a role that may tunnel to vm1's SSH and echo ports.
func clusterConfig(t testing.TB, name, sealKey string) string {
	return fmt.Sprintf(`cluster: {instance: %s}
store:
  backend: postgres
  postgres:
    dsn_file: %s
    ca_file: %s
    seal_key: %s
access:
  roles:
    - name: ops
      subjects: [user:alice]
      targets: [vm1]
      protocols: [tunnel]
`, name, e2e.LabValue(t, "DB_DSN_FILE"), e2e.LabValue(t, "DB_CA"), sealKey)
}

// liveSessions is bastionctl sessions --json on d.
func liveSessions(t testing.TB, d *e2e.Daemon) []map[string]any {
	t.Helper()
	out, err := d.Ctl(nil, "sessions", "--json")
	if err != nil {
		t.Fatalf("bastionctl sessions: %v\n%s", err, out)
	}
	var list []map[string]any
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		t.Fatalf("bastionctl sessions --json: %v\n%s", err, out)
	}
	return list
}

// auditLines are the lines of d's audit file with event ev.
func auditLines(t testing.TB, d *e2e.Daemon, ev string) []map[string]any {
	t.Helper()
	b, err := os.ReadFile(d.AuditFile())
	if err != nil {
		t.Fatal(err)
	}
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		var e map[string]any
		if json.Unmarshal([]byte(line), &e) == nil && e["event"] == ev {
			out = append(out, e)
		}
	}
	return out
}

// TestClusterOnPostgres runs two instances on the lab's PostgreSQL behind
// the balancer: one account and one SSH CA for both; a token issued by one
// opens tunnels on either (TCP through HAProxy, QUIC through the per-flow
// UDP balancer, IPv4 and IPv6); every instance lists every session and
// kills any; the machines' exported guard admits both instances and not the
// rogue; and when one instance dies, the other records its sessions as
// abandoned, once.
func TestClusterOnPostgres(t *testing.T) {
	e2e.NeedLab(t)
	sealKey := filepath.Join(t.TempDir(), "seal.key")
	if err := os.WriteFile(sealKey, []byte(seal.Generate()), 0o600); err != nil {
		t.Fatal(err)
	}
	a := e2e.StartDaemonIn(t, e2e.LabValue(t, "NS_BASTION"), e2e.ViaFDs, perUser5(instanceConfig(t, clusterConfig(t, "a", sealKey))))
	b := e2e.StartDaemonIn(t, e2e.LabValue(t, "NS_BASTION2"), e2e.ViaFDs, perUser5(instanceConfig(t, clusterConfig(t, "b", sealKey))))
	waitStates(t, map[string]string{"a": "UP", "b": "UP"}, 20*time.Second)

	t.Run("one account and one CA", func(t *testing.T) {
		e2e.AddLabUsers(t, a, "alice")
		if out, err := b.Ctl(nil, "users", "list"); err != nil || !strings.Contains(out, "alice") {
			t.Fatalf("an account added on a is not on b: %v\n%s", err, out)
		}
		caA, errA := a.Ctl(nil, "ca", "show")
		caB, errB := b.Ctl(nil, "ca", "show")
		if errA != nil || errB != nil || caA != caB || !strings.Contains(caA, "ssh-ed25519") {
			t.Errorf("the instances' CAs differ: a %q (%v), b %q (%v)", caA, errA, caB, errB)
		}
	})

	t.Run("the machines' guard admits every instance and nobody else", func(t *testing.T) {
		export, err := a.Ctl(nil, "policy", "export", "--target", "vm1")
		if err != nil || !strings.Contains(export, e2e.LabValue(t, "BASTION_SUBNET4")) || !strings.Contains(export, e2e.LabValue(t, "BASTION_SUBNET6")) {
			t.Fatalf("policy export on a cluster: %v\n%s", err, export)
		}
		// vm1's admin loads it.
		load := e2e.LabCommand(t, "vm1", "nft", "-f", "-")
		load.Stdin = strings.NewReader(export)
		if out, err := load.CombinedOutput(); err != nil {
			t.Fatalf("nft -f on vm1: %v\n%s", err, out)
		}
		for _, addr := range []string{e2e.LabValue(t, "VM1_4"), e2e.LabValue(t, "VM1_6")} {
			e2e.ExpectProbe(t, e2e.LabValue(t, "NS_BASTION"), addr, 22, "open")
			e2e.ExpectProbe(t, e2e.LabValue(t, "NS_BASTION2"), addr, 22, "open")
			e2e.ExpectProbe(t, e2e.LabValue(t, "NS_ROGUE"), addr, 22, "filtered")
		}
	})

	// Tunnels to vm1's echo service, opened with one token over both
	// balancers and both families: some land on a, some on b.
	e2e.StartSink(t, e2e.LabValue(t, "NS_VM1"), ":9001", e2e.SinkEcho)
	creds := e2e.LoginAs(t, "alice", e2e.LabValue(t, "BASTION_PUB4"))
	type tun struct {
		via  string
		conn interface{ Close() error }
	}
	var tunnels []tun
	for _, via := range []struct{ addr, transport string }{
		{e2e.LabValue(t, "BASTION_PUB4"), "tcp"}, {e2e.LabValue(t, "BASTION_PUB6"), "tcp"},
		{e2e.LabValue(t, "BASTION_PUB4"), "quic"}, {e2e.LabValue(t, "BASTION_PUB6"), "quic"},
	} {
		conn, err := e2e.Dial(t, e2e.TunnelClient(t, creds, via.addr, via.transport), "vm1", 9001)
		if err != nil {
			t.Fatalf("tunnel over %s via %s: %v", via.transport, via.addr, err)
		}
		t.Cleanup(func() { conn.Close() })
		echoOnce(t, conn, via.transport+" via "+via.addr)
		tunnels = append(tunnels, tun{via.transport + " via " + via.addr, conn})
	}

	var onA []string
	t.Run("every instance lists every session", func(t *testing.T) {
		for name, d := range map[string]*e2e.Daemon{"a": a, "b": b} {
			list := liveSessions(t, d)
			if len(list) != len(tunnels) {
				t.Errorf("bastionctl sessions on %s lists %d sessions, want %d: %v", name, len(list), len(tunnels), list)
			}
		}
		for _, s := range liveSessions(t, b) {
			if s["instance"] == "a" {
				onA = append(onA, s["id"].(string))
			}
		}
		t.Logf("%d of %d tunnels on instance a", len(onA), len(tunnels))
	})

	t.Run("audit events on either instance show every instance's session_start", func(t *testing.T) {
		want := map[string]string{} // session -> instance
		for _, s := range liveSessions(t, b) {
			want[s["id"].(string)] = s["instance"].(string)
		}
		for name, d := range map[string]*e2e.Daemon{"a": a, "b": b} {
			got := map[string]string{}
			// The copy is a few seconds behind the files.
			for deadline := time.Now().Add(15 * time.Second); len(got) < len(want) && time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
				out, err := d.Ctl(nil, "audit", "events", "--since", "10m", "--event", "session_start", "--json")
				if err != nil {
					t.Fatalf("bastionctl audit events on %s: %v\n%s", name, err, out)
				}
				got = map[string]string{}
				for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
					var e map[string]any
					if json.Unmarshal([]byte(line), &e) == nil {
						got[fmt.Sprint(e["session"])] = fmt.Sprint(e["instance"])
					}
				}
			}
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("bastionctl audit events on %s: session_start of %v, want %v (the live sessions)", name, got, want)
			}
		}
	})

	t.Run("sessions_per_user counts the user's sessions on both instances", func(t *testing.T) {
		// 4 open, the limit is 5: one more opens, wherever the balancer
		// puts it; then none, on either instance, either family.
		fifth, err := e2e.Dial(t, e2e.TunnelClient(t, creds, e2e.LabValue(t, "BASTION_PUB4"), "tcp"), "vm1", 9001)
		if err != nil {
			t.Fatalf("the fifth tunnel: %v", err)
		}
		echoOnce(t, fifth, "the fifth tunnel")
		for _, via := range []struct{ addr, transport string }{
			{e2e.LabValue(t, "BASTION_PUB4"), "tcp"}, {e2e.LabValue(t, "BASTION_PUB6"), "tcp"},
			{e2e.LabValue(t, "BASTION_PUB4"), "quic"}, {e2e.LabValue(t, "BASTION_PUB6"), "quic"},
		} {
			conn, err := e2e.Dial(t, e2e.TunnelClient(t, creds, via.addr, via.transport), "vm1", 9001)
			if err == nil {
				conn.Close()
				t.Errorf("a sixth tunnel over %s via %s opened", via.transport, via.addr)
			} else if !strings.Contains(err.Error(), "you have 5 sessions open, the most allowed") {
				t.Errorf("the sixth tunnel over %s via %s: %v, want the user's limit", via.transport, via.addr, err)
			}
		}
		var refused int
		for _, d := range []*e2e.Daemon{a, b} {
			for _, e := range auditLines(t, d, "connect_refused") {
				if e["reason"] == "user_cap" {
					refused++
				}
			}
		}
		if refused != 4 {
			t.Errorf("%d connect_refused user_cap events on the two instances, want 4", refused)
		}
		// Both instances' heartbeats carry their load: 5 tunnels, 5 units.
		for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(500 * time.Millisecond) {
			var st struct {
				Cluster []struct {
					Name     string
					Used     int
					Sessions int
					Capacity int
				}
			}
			out, err := b.Ctl(nil, "status", "--json")
			if err != nil || json.Unmarshal([]byte(out), &st) != nil {
				t.Fatalf("status --json: %v\n%s", err, out)
			}
			used, sessions := 0, 0
			for _, in := range st.Cluster {
				used, sessions = used+in.Used, sessions+in.Sessions
			}
			if len(st.Cluster) == 2 && used == 5 && sessions == 5 && st.Cluster[0].Capacity == 100 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("status on b after 15 s: %s", out)
			}
		}
		if out, err := b.Ctl(nil, "status"); err != nil || !strings.Contains(out, "a: ") || !strings.Contains(out, "(this instance)") {
			t.Errorf("status on b: %v\n%s", err, out)
		}
		fifth.Close()
		for deadline := time.Now().Add(15 * time.Second); len(liveSessions(t, b)) != len(tunnels); time.Sleep(200 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("the fifth tunnel is still listed")
			}
		}
	})

	t.Run("a kill on one instance ends a session on the other", func(t *testing.T) {
		var victim, on string
		for _, s := range liveSessions(t, b) {
			if s["instance"] == "a" {
				victim, on = s["id"].(string), "a"
				break
			}
		}
		killer := b
		if victim == "" { // all on b: kill one from a
			s := liveSessions(t, a)[0]
			victim, on, killer = s["id"].(string), "b", a
		}
		if out, err := killer.Ctl(nil, "sessions", "kill", victim, "--reason", "cluster test"); err != nil {
			t.Fatalf("sessions kill %s (on %s) from the other instance: %v\n%s", victim, on, err, out)
		}
		owner := map[string]*e2e.Daemon{"a": a, "b": b}[on]
		var end map[string]any
		for deadline := time.Now().Add(10 * time.Second); end == nil && time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
			for _, e := range auditLines(t, owner, "session_end") {
				if e["session"] == victim {
					end = e
				}
			}
		}
		if end == nil || !strings.Contains(fmt.Sprint(end["reason"], end["detail"]), "killed") || end["instance"] != on {
			t.Errorf("the killed session's end record on %s: %v", on, end)
		}
		onA = slicesDelete(onA, victim)
	})

	t.Run("kill -9 of an instance: the other records its sessions as abandoned, once", func(t *testing.T) {
		if len(onA) == 0 {
			t.Skip("no session left on instance a: the balancers put every tunnel on b")
		}
		killed := time.Now()
		a.Cmd.Process.Kill()
		var abandoned []map[string]any
		for deadline := time.Now().Add(40 * time.Second); len(abandoned) < len(onA) && time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
			abandoned = nil
			for _, e := range auditLines(t, b, "session_end") {
				if e["instance"] == "a" && e["recorded_by"] == "b" {
					abandoned = append(abandoned, e)
				}
			}
		}
		if len(abandoned) != len(onA) {
			t.Fatalf("b recorded %d of a's %d sessions as abandoned: %v", len(abandoned), len(onA), abandoned)
		}
		t.Logf("kill -9 of instance a: its %d sessions recorded as abandoned by b %s later", len(onA), time.Since(killed).Round(100*time.Millisecond))
		if n := len(liveSessions(t, b)); n != len(tunnels)-1-len(onA) {
			t.Errorf("b lists %d sessions after a's death, want %d", n, len(tunnels)-1-len(onA))
		}
	})
}

// perUser5 is cfg with limits.sessions_per_user 5.
func perUser5(cfg func(dir string) string) func(dir string) string {
	return func(dir string) string {
		return strings.Replace(cfg(dir), "limits: {drain_grace: 3s}", "limits: {drain_grace: 3s, sessions_per_user: 5}", 1)
	}
}

func slicesDelete(s []string, v string) []string {
	out := s[:0]
	for _, x := range s {
		if x != v {
			out = append(out, x)
		}
	}
	return out
}

// echoOnce sends a line through conn and wants it back.
func echoOnce(t testing.TB, conn any, what string) {
	t.Helper()
	c := conn.(interface {
		Write([]byte) (int, error)
		Read([]byte) (int, error)
		SetDeadline(time.Time) error
	})
	c.SetDeadline(time.Now().Add(15 * time.Second))
	line := []byte("through the cluster\n")
	if _, err := c.Write(line); err != nil {
		t.Fatalf("%s: write: %v", what, err)
	}
	got := make([]byte, len(line))
	for n := 0; n < len(got); {
		m, err := c.Read(got[n:])
		if err != nil {
			t.Fatalf("%s: read: %v", what, err)
		}
		n += m
	}
	if string(got) != string(line) {
		t.Fatalf("%s: got %q back", what, got)
	}
	c.SetDeadline(time.Time{})
}
