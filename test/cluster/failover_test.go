package cluster

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/bastiond/bastiond/internal/seal"
	"github.com/bastiond/bastiond/test/e2e"
	"github.com/bastiond/bastiond/web/browsertest"
)

// webConfig is instance name of a fresh cluster on dsn on which alice
// opens vm1's terminal and vm2's desktop (FreeRDP with NLA) in the
// browser, and tunnels to vm1.
func webConfig(t testing.TB, name, dsn, sealKey string) func(dir string) string {
	inst := instanceConfig(t, fmt.Sprintf(`cluster: {instance: %s}
store:
  backend: postgres
  postgres: {dsn_file: %s, ca_file: %s, seal_key: %s}
access:
  roles:
    - name: ops
      subjects: [user:alice]
      targets: [vm1, vm2]
      protocols: [ssh, rdp, tunnel]
`, name, dsn, e2e.LabValue(t, "DB_CA"), sealKey))
	vm2 := fmt.Sprintf("    - name: vm2\n      addresses: [%s, \"%s\"]\n      ports: {rdp: %s}\n",
		e2e.LabValue(t, "VM2_4"), e2e.LabValue(t, "VM2_6"), e2e.LabValue(t, "VM2_RDP_NLA_PORT"))
	return func(dir string) string {
		cfg := strings.Replace(inst(dir), "logging:", vm2+"logging:", 1)
		// sessions_per_user is cluster-wide: the tests open a dozen of
		// alice's sessions at once.
		return strings.Replace(cfg, "limits: {drain_grace: 3s}", "limits: {drain_grace: 3s, sessions_per_user: 50}", 1)
	}
}

// newCluster starts instances a and b of a cluster of their own (a fresh
// database), on config, waits until the balancer's checks find both up, and
// adds alice.
func newCluster(t *testing.T, config func(t testing.TB, name, dsn, sealKey string) func(string) string) (a, b *e2e.Daemon) {
	t.Helper()
	dsn := newDatabase(t)
	sealKey := filepath.Join(t.TempDir(), "seal.key")
	if err := os.WriteFile(sealKey, []byte(seal.Generate()), 0o600); err != nil {
		t.Fatal(err)
	}
	a = e2e.StartDaemonIn(t, e2e.LabValue(t, "NS_BASTION"), e2e.ViaFDs, config(t, "a", dsn, sealKey))
	b = e2e.StartDaemonIn(t, e2e.LabValue(t, "NS_BASTION2"), e2e.ViaFDs, config(t, "b", dsn, sealKey))
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("instance a's log ends:\n%s", lastBytes(a.Log.String(), 5000))
			t.Logf("instance b's log ends:\n%s", lastBytes(b.Log.String(), 5000))
		}
	})
	waitStates(t, map[string]string{"a": "UP", "b": "UP"}, 20*time.Second)
	e2e.AddLabUsers(t, a, "alice")
	return a, b
}

func lastBytes(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}

// haproxy sends command to the lab balancer's admin socket.
func haproxy(t testing.TB, command string) {
	t.Helper()
	cmd := exec.Command("socat", "-", "UNIX-CONNECT:"+e2e.LabValue(t, "LB_ADMIN"))
	cmd.Stdin = strings.NewReader(command + "\n")
	out, err := cmd.CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "" {
		t.Fatalf("haproxy %q: %v %s", command, err, out)
	}
}

// TestBrowserAcrossAnInstancesDeath is a user's Chromium through the
// balancer's one address (IPv4, then IPv6, each with a cluster of its
// own): signed in once, it opens vm1's terminal and vm2's desktop in two
// tabs, both on instance a (the balancer drains b meanwhile, so that the
// user lands on a); kill -9 of a; the same browser, its cookie and no new
// sign-in, reconnects the terminal and opens the desktop again from the
// portal, both now on b, and they work; b records a's two sessions as
// abandoned, once each.
func TestBrowserAcrossAnInstancesDeath(t *testing.T) {
	e2e.NeedLab(t)
	for _, fam := range []struct{ name, addr string }{
		{"IPv4", e2e.LabValue(t, "BASTION_PUB4")},
		{"IPv6", "[" + e2e.LabValue(t, "BASTION_PUB6") + "]"},
	} {
		t.Run(fam.name, func(t *testing.T) {
			// The user's name resolves to the balancer's address of one
			// family only.
			br := e2e.StartBrowser(t, "cluster-failover-"+strings.ToLower(fam.name),
				"--host-resolver-rules=MAP "+e2e.ServerName+" "+fam.addr)
			a, b := newCluster(t, webConfig)
			e2e.PinVM1(t, a)
			e2e.PinVM2(t, a)
			browserAcrossDeath(t, br, a, b)
		})
	}
}

// pageTimings is what a tab's page waited for: its navigation and the
// resources that took over half a second or never came.
const pageTimings = `JSON.stringify({state: document.readyState,
  nav: performance.getEntriesByType("navigation").map(e => [e.name, e.duration|0, e.loadEventEnd|0]),
  slow: performance.getEntriesByType("resource").filter(e => !e.responseEnd || e.duration > 500)
    .map(e => [e.name, e.startTime|0, e.connectEnd-e.connectStart|0, e.duration|0, e.nextHopProtocol])})`

// browserAcrossDeath is TestBrowserAcrossAnInstancesDeath in one family,
// br's name resolving to the balancer's address of that family.
func browserAcrossDeath(t *testing.T, br *browsertest.Browser, a, b *e2e.Daemon) {
	base := "https://" + e2e.ServerName + "/"
	user, password := e2e.LabValue(t, "LAB_USER"), e2e.LabValue(t, "LAB_PASSWORD")
	tabs := 1
	defer func() {
		if t.Failed() {
			for i, name := range []string{"terminal", "desktop"}[:tabs] {
				br.Tab(t, i)
				br.Screenshot(t, "failed-"+name)
				var rs string
				br.Eval(t, pageTimings, &rs)
				t.Logf("the %s tab: %s", name, rs)
			}
		}
	}()

	// Everything the browser opens now lands on a.
	haproxy(t, "set server instances/b state drain")
	t.Cleanup(func() { haproxy(t, "set server instances/b state ready") })
	br.PortalLogin(t, base, "alice", e2e.TunnelPassword)
	br.OpenTerminal(t, "vm1")
	br.SignIn(t, user, password)
	br.WaitTerminalText(t, "$ ")
	br.Type(t, "echo before-$((6*7))\n")
	br.WaitTerminalText(t, "before-42")
	if desk := br.NewTab(t); desk != 1 {
		t.Fatalf("the second tab is %d", desk)
	}
	tabs = 2
	br.Goto(t, base)
	br.OpenDesktop(t, "vm2")
	e2e.DesktopSignIn(t, br, password)
	e2e.WaitClientState(t, br, "connected")
	w, h := e2e.DesktopShown(t, br)
	t.Logf("on a: the terminal and a %dx%d desktop", w, h)
	for i, name := range []string{"terminal", "desktop"} {
		var ms float64
		br.Tab(t, i)
		br.Eval(t, `performance.getEntriesByType("navigation")[0].loadEventEnd`, &ms)
		t.Logf("the %s page loaded in %.0f ms", name, ms)
	}
	br.Tab(t, 1)
	br.Screenshot(t, "before")

	onA := map[string]string{} // session -> protocol
	for _, s := range liveSessions(t, b) {
		if s["instance"] != "a" {
			t.Errorf("a session on %v while b is drained: %v", s["instance"], s)
		}
		onA[s["id"].(string)] = s["protocol"].(string)
	}
	if len(onA) != 2 {
		t.Fatalf("the cluster lists %d sessions, want the terminal and the desktop: %v", len(onA), onA)
	}
	signIns := len(signInEvents(t, a)) + len(signInEvents(t, b))

	haproxy(t, "set server instances/b state ready")
	killed := time.Now()
	a.Cmd.Process.Kill()
	a.Wait(10 * time.Second)

	// Both tabs say what happened.
	br.Tab(t, 0)
	br.WaitText(t, "#client .overlay", "The connection to the bastion was lost.")
	br.Tab(t, 1)
	e2e.WaitClientState(t, br, "ended")
	if msg := br.Text(t, "#client-end-message"); !strings.Contains(msg, "lost") {
		t.Errorf("the desktop says %q after its instance died", msg)
	}

	// The terminal's Reconnect: a new ticket with the same cookie, now
	// from b (HAProxy redispatches what a refuses until its checks take a
	// out).
	br.Tab(t, 0)
	br.Click(t, `#client .overlay button:text("Reconnect")`)
	br.SignIn(t, user, password)
	br.WaitTerminalText(t, "$ ") // the new shell's prompt, on a cleared screen
	br.Type(t, "echo after-$((6*7))\n")
	br.WaitTerminalText(t, "after-42")
	t.Logf("terminal again %s after the kill", time.Since(killed).Round(100*time.Millisecond))
	// The desktop, from the portal: the same browser is still signed in.
	br.Tab(t, 1)
	br.Goto(t, base)
	if br.Count(t, "form.login") != 0 {
		t.Fatal("the portal asks the browser to sign in again after a's death")
	}
	br.OpenDesktop(t, "vm2")
	e2e.DesktopSignIn(t, br, password)
	e2e.WaitClientState(t, br, "connected")
	e2e.DesktopShown(t, br)
	t.Logf("desktop again %s after the kill", time.Since(killed).Round(100*time.Millisecond))
	br.Screenshot(t, "after")

	if n := len(signInEvents(t, b)) + len(signInEvents(t, a)); n != signIns {
		t.Errorf("%d sign-ins after the kill; the browser should not have signed in again", n-signIns)
	}
	// a's two sessions: abandoned, recorded by b, once each.
	var abandoned []map[string]any
	for deadline := time.Now().Add(40 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		abandoned = nil
		for _, e := range auditLines(t, b, "session_end") {
			if _, ok := onA[fmt.Sprint(e["session"])]; ok {
				abandoned = append(abandoned, e)
			}
		}
		if len(abandoned) >= len(onA) {
			break
		}
	}
	if len(abandoned) != len(onA) {
		t.Fatalf("b recorded %d end records of a's %d sessions: %v", len(abandoned), len(onA), abandoned)
	}
	seen := map[string]bool{}
	for _, e := range abandoned {
		id := fmt.Sprint(e["session"])
		if seen[id] || e["instance"] != "a" || e["recorded_by"] != "b" || e["reason"] != "abandoned" || e["protocol"] != onA[id] {
			t.Errorf("a's session %s (%s): end record %v", id, onA[id], e)
		}
		seen[id] = true
	}
	t.Logf("a's %d sessions recorded as abandoned by b %s after the kill", len(abandoned), time.Since(killed).Round(100*time.Millisecond))
	// Once they are, the cluster lists b's two alone.
	var onB []string
	for _, s := range liveSessions(t, b) {
		if s["instance"] != "b" {
			t.Errorf("after a's sessions were recorded as abandoned the cluster lists %v", s)
		}
		onB = append(onB, fmt.Sprint(s["protocol"]))
	}
	if slices.Sort(onB); !slices.Equal(onB, []string{"rdp", "ssh"}) {
		t.Errorf("the cluster lists %v, want b's terminal and desktop", onB)
	}
}
