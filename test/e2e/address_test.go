package e2e

import (
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// addressConfig is the lab with two networks: lab, vm1's addresses (SSH),
// which alice's role grants for the browser and tunnels; others, the rogue
// host's, which no role grants.
func addressConfig(dir string) string {
	networks := "  networks:\n" +
		"    - name: lab\n      cidrs: [" + lab["VM1_4"] + "/32, \"" + lab["VM1_6"] + "/128\"]\n      ports: {ssh: 22}\n      target_name: \"{network}-{dashed}\"\n" +
		"    - name: others\n      cidrs: [" + lab["ROGUE4"] + "/32, \"" + lab["ROGUE6"] + "/128\"]\n      ports: {ssh: 22}\n"
	access := `access:
  roles:
    - name: by-address
      subjects: [user:alice]
      targets: [network:lab]
      protocols: [ssh, tunnel]
limits:
  target_timeout: 2s
`
	return LabConfigTargets(dir, networks, access)
}

// eventsNamed are the audit file's events named event, oldest first.
func eventsNamed(d *Daemon, event string) []map[string]any {
	data, _ := os.ReadFile(d.AuditFile())
	var out []map[string]any
	for line := range strings.SplitSeq(string(data), "\n") {
		var r map[string]any
		if json.Unmarshal([]byte(line), &r) == nil && r["event"] == event {
			out = append(out, r)
		}
	}
	return out
}

// TestConnectByAddress: vm1 reached by its address, IPv4 and IPv6, typed in
// the portal's "Connect to an address" box (Chromium: the terminal opens)
// and given to `bastionctl ssh-proxy` as OpenSSH's ProxyCommand; an address
// outside the granted network refused with a page that says so and a
// connect_refused event; the records name the address and the network. One
// daemon and one browser for every case.
func TestConnectByAddress(t *testing.T) {
	b := startBrowser(t, "connect-by-address")
	d := StartDaemonWith(t, ViaFDs, addressConfig)
	AddLabUsers(t, d, "alice")
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("the daemon's log ends:\n%s", tail(d.Log.String(), 6000))
		}
	})
	vm1s := []string{lab["VM1_4"], lab["VM1_6"]}
	// An admin pins each address's host keys, as a named target's.
	for _, a := range vm1s {
		if out, err := d.Ctl(nil, "hostkeys", "scan", a, "--pin"); err != nil {
			t.Fatalf("hostkeys scan %s --pin: %v\n%s", a, err, out)
		}
	}
	base := "https://" + ServerName + "/"
	run := func(name string, f func(t *testing.T)) {
		t.Run(name, func(t *testing.T) {
			defer func() {
				if t.Failed() {
					b.Screenshot(t, "failed-"+name)
				}
			}()
			f(t)
		})
	}
	ended := func(t *testing.T, target string, seen int) map[string]any {
		t.Helper()
		id := nextEnded(t, d, target, seen)
		return d.AuditRecord(id, "session_end")
	}

	b.PortalLogin(t, base, "alice", TunnelPassword)
	for _, a := range vm1s {
		run("portal/"+a, func(t *testing.T) {
			b.Goto(t, base)
			b.WaitText(t, "section.address h2", "Connect to an address in lab")
			b.Screenshot(t, "portal")
			seen := len(endedTo(d, a))
			b.Fill(t, "section.address input[name=address]", a)
			b.Click(t, `section.address button[value="ssh"]`)
			b.SignIn(t, lab["LAB_USER"], lab["LAB_PASSWORD"])
			b.WaitTerminalText(t, "$ ")
			b.Type(t, "echo by-address-$((6*7))\n")
			b.WaitTerminalText(t, "by-address-42")
			b.Screenshot(t, "terminal")
			b.Type(t, "exit\n")
			b.WaitText(t, "#client .overlay", "exited")
			r := ended(t, a, seen)
			if r["network"] != "lab" || r["address"] != net.JoinHostPort(a, "22") || r["protocol"] != "ssh" || r["user"] != "alice" {
				t.Errorf("end record of the browser session to %s: %v", a, r)
			}
		})
	}
	for _, a := range []string{lab["ROGUE4"], lab["ROGUE6"], "198.18.1.200", "2001:db8:b5:1::200"} {
		run("portal refuses/"+a, func(t *testing.T) {
			seen := len(eventsNamed(d, "connect_refused"))
			b.Goto(t, base)
			b.Fill(t, "section.address input[name=address]", a)
			b.Click(t, `section.address button[value="ssh"]`)
			b.WaitText(t, "body", "You may not connect to "+a+" by SSH: it is not an address of a network open to you.")
			b.Screenshot(t, "refused")
			var refused map[string]any
			for end := time.Now().Add(5 * time.Second); refused == nil && time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
				if evs := eventsNamed(d, "connect_refused"); len(evs) > seen {
					refused = evs[seen]
				}
			}
			if refused["target"] != a || refused["user"] != "alice" || refused["protocol"] != "ssh" {
				t.Errorf("connect_refused for %s: %v", a, refused)
			}
		})
	}

	creds := LoginAs(t, "alice", lab["BASTION_PUB6"])
	for _, a := range vm1s {
		t.Run("ssh-proxy/"+a, func(t *testing.T) {
			seen := len(endedTo(d, a))
			ssh := exec.Command("ip", "netns", "exec", lab["NS_CLIENT"], "ssh", "-F", "none",
				"-o", "ProxyCommand="+filepath.Join(binDir, "bastionctl")+" ssh-proxy %h --port %p",
				"-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes",
				"-i", lab["LAB_KEY"], "lab@"+a, "echo hello from $(hostname) as $(id -un)")
			ssh.Env = append(os.Environ(), "BASTION_CREDENTIALS="+creds)
			out, err := ssh.CombinedOutput()
			if err != nil || !strings.Contains(string(out), "hello from") || !strings.Contains(string(out), "as lab") {
				t.Fatalf("ssh to %s through the bastion: %v\n%s", a, err, out)
			}
			r := ended(t, a, seen)
			if r["network"] != "lab" || r["address"] != net.JoinHostPort(a, "22") || r["protocol"] != "tunnel" {
				t.Errorf("end record of the tunnel to %s: %v", a, r)
			}
		})
	}
	t.Run("ssh-proxy refuses an address outside the granted network", func(t *testing.T) {
		ssh := exec.Command("ip", "netns", "exec", lab["NS_CLIENT"], "ssh", "-F", "none",
			"-o", "ProxyCommand="+filepath.Join(binDir, "bastionctl")+" ssh-proxy %h --port %p",
			"-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes",
			"-i", lab["LAB_KEY"], "lab@"+lab["ROGUE4"], "true")
		ssh.Env = append(os.Environ(), "BASTION_CREDENTIALS="+creds)
		out, err := ssh.CombinedOutput()
		if err == nil || !strings.Contains(string(out), "alice may not open tunnels to "+lab["ROGUE4"]+" port 22") {
			t.Errorf("ssh to the rogue through the bastion: %v\n%s", err, out)
		}
	})
}
