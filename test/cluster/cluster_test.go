// Package cluster is the test tier of bastiond as a cluster: the lab in its
// cluster mode (test/lab/lab.sh up --cluster), with two instances behind a
// real HAProxy that speaks the PROXY protocol to them and checks their
// readiness, and a real PostgreSQL.
package cluster

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/bastiond/bastiond/test/e2e"
)

func TestMain(m *testing.M) { os.Exit(e2e.MainCluster(m)) }

// instanceConfig is an instance's configuration: attached to the VNet
// switch (no instance is the VNet's bridge), behind the balancer, whose
// front addresses may send the PROXY protocol; extra is appended.
func instanceConfig(t testing.TB, extra ...string) func(dir string) string {
	v := func(k string) string { return e2e.LabValue(t, k) }
	return func(dir string) string {
		return fmt.Sprintf(`listen:
  server_name: %s
  tls: {self_signed: true}
  admin_socket: %s/admin.sock
  admin_group: users
  proxy_protocol:
    from: [%s/32, "%s/128"]
bastion:
  public_interface: pub0
  vnet_interface: vnet0
  subnets: [%s, "%s"]
  mode: attached
inventory:
  targets:
    - name: vm1
      addresses: [%s, "%s"]
      ports: {ssh: 22, tunnel: [9001]}
logging: {audit_file: %s/audit.jsonl, format: json}
state_dir: %s/state
limits: {drain_grace: 3s}
`, e2e.ServerName, dir, v("LB_FE4"), v("LB_FE6"), v("BASTION_SUBNET4"), v("BASTION_SUBNET6"),
			v("VM1_4"), v("VM1_6"), dir, dir) + strings.Join(extra, "")
	}
}

// serverStates is what HAProxy's checks say of each instance ("UP",
// "DOWN", ...), from its admin socket.
func serverStates(t testing.TB) map[string]string {
	t.Helper()
	cmd := exec.Command("socat", "-", "UNIX-CONNECT:"+e2e.LabValue(t, "LB_ADMIN"))
	cmd.Stdin = strings.NewReader("show stat\n")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("haproxy show stat: %v", err)
	}
	states := map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	for sc.Scan() {
		f := strings.Split(sc.Text(), ",")
		// # pxname,svname,...,status is the 18th field.
		if len(f) > 17 && f[0] == "instances" && f[1] != "BACKEND" && f[1] != "FRONTEND" {
			states[f[1]] = strings.Fields(f[17] + " ")[0]
		}
	}
	return states
}

func waitStates(t testing.TB, want map[string]string, timeout time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		got := serverStates(t)
		ok := true
		for k, v := range want {
			ok = ok && got[k] == v
		}
		if ok {
			return time.Since(start)
		}
		if time.Since(start) > timeout {
			t.Fatalf("HAProxy's checks say %v after %s, want %v", got, timeout, want)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// signInEvents are the signin_succeeded events of an instance's audit file.
func signInEvents(t testing.TB, d *e2e.Daemon) []map[string]any {
	t.Helper()
	b, err := os.ReadFile(d.AuditFile())
	if err != nil {
		t.Fatal(err)
	}
	var evs []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		var e map[string]any
		if json.Unmarshal([]byte(line), &e) == nil && e["event"] == "signin_succeeded" {
			evs = append(evs, e)
		}
	}
	return evs
}

// TestBehindTheBalancer runs two instances behind the lab's HAProxy: the
// balancer's checks find both ready; users of both address families reach
// them through the one public address, and the instances see the users'
// own addresses (PROXY v2), not the balancer's; kill -9 of one instance
// and the balancer moves new users to the other. (The instances' state is
// not shared yet here: each has its own users.)
func TestBehindTheBalancer(t *testing.T) {
	e2e.NeedLab(t)
	a := e2e.StartDaemonIn(t, e2e.LabValue(t, "NS_BASTION"), e2e.ViaFDs, instanceConfig(t))
	b := e2e.StartDaemonIn(t, e2e.LabValue(t, "NS_BASTION2"), e2e.ViaFDs, instanceConfig(t))
	for _, d := range []*e2e.Daemon{a, b} {
		e2e.AddLabUsers(t, d, "alice")
	}
	took := waitStates(t, map[string]string{"a": "UP", "b": "UP"}, 20*time.Second)
	t.Logf("both instances ready for HAProxy %s after their start", took.Round(10*time.Millisecond))

	clients := map[string]string{e2e.LabValue(t, "BASTION_PUB4"): e2e.LabValue(t, "CLIENT4"), e2e.LabValue(t, "BASTION_PUB6"): e2e.LabValue(t, "CLIENT6")}
	// leastconn with no connection open alternates: four sign-ins over
	// both families reach both instances.
	for range 2 {
		for pub := range clients {
			e2e.LoginAs(t, "alice", pub)
		}
	}
	seen := map[string]bool{}
	for name, d := range map[string]*e2e.Daemon{"a": a, "b": b} {
		evs := signInEvents(t, d)
		if len(evs) == 0 {
			t.Errorf("instance %s served no sign-in: the balancer does not reach it", name)
		}
		for _, e := range evs {
			src, _ := e["source"].(string)
			seen[src] = true
			if src == e2e.LabValue(t, "LB_FE4") || src == e2e.LabValue(t, "LB_FE6") {
				t.Errorf("instance %s records the balancer's address as the user's: %v", name, e)
			}
		}
	}
	for _, c := range clients {
		if !seen[c] {
			t.Errorf("no sign-in recorded from the user's own address %s (saw %v)", c, seen)
		}
	}

	// kill -9 of instance a: new users reach b at once (HAProxy
	// redispatches a refused connection), and the checks take a out.
	before := len(signInEvents(t, b))
	killed := time.Now()
	a.Cmd.Process.Kill()
	var firstOK time.Duration
	for try := 0; firstOK == 0; try++ {
		resp, err := e2e.HTTPSGetWithin(t, e2e.LabValue(t, "BASTION_PUB4"), "/", 2*time.Second)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				firstOK = time.Since(killed)
			}
		}
		if try == 100 {
			t.Fatalf("no page through the balancer in 100 tries after the kill: %v", err)
		}
	}
	down := waitStates(t, map[string]string{"a": "DOWN", "b": "UP"}, 20*time.Second) + firstOK
	for pub := range clients {
		e2e.LoginAs(t, "alice", pub)
	}
	if n := len(signInEvents(t, b)) - before; n != len(clients) {
		t.Errorf("instance b recorded %d of the %d sign-ins after the kill", n, len(clients))
	}
	t.Logf("kill -9 of instance a: first page through the balancer %s after the kill; HAProxy marked a down after %s",
		firstOK.Round(time.Millisecond), down.Round(10*time.Millisecond))
}
