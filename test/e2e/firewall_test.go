package e2e

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// probe says what a TCP connection attempt from namespace ns to addr:port
// meets: "open", "refused" (an RST: the port is visibly closed) or
// "filtered" (silence: dropped).
func probe(t testing.TB, ns, addr string, port int, from string) string {
	t.Helper()
	var result string
	err := inNetns(ns, func() error {
		d := net.Dialer{Timeout: 800 * time.Millisecond}
		if from != "" {
			d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(from)}
		}
		c, err := d.Dial("tcp", net.JoinHostPort(addr, fmt.Sprint(port)))
		switch {
		case err == nil:
			c.Close()
			result = "open"
		case errors.Is(err, syscall.ECONNREFUSED):
			result = "refused"
		case isTimeout(err):
			result = "filtered"
		default:
			return err
		}
		return nil
	})
	if err != nil {
		t.Fatalf("probe %s:%d from %s: %v", addr, port, ns, err)
	}
	return result
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func expectProbe(t testing.TB, ns, addr string, port int, want string) {
	t.Helper()
	if got := probe(t, ns, addr, port, ""); got != want {
		t.Errorf("from %s, %s port %d is %s, want %s", ns, addr, port, got, want)
	}
}

func inBastion(t testing.TB, args ...string) (string, error) {
	t.Helper()
	out, err := exec.Command("ip", append([]string{"netns", "exec", labValue(t, "NS_BASTION")}, args...)...).CombinedOutput()
	return string(out), err
}

// TestFirewall checks invariants 1, 3, 4 and 9 in the lab with the daemon's
// own ruleset in force.
func TestFirewall(t *testing.T) {
	needLab(t)
	client4, client6 := labValue(t, "CLIENT4"), labValue(t, "CLIENT6")
	pub4, pub6 := labValue(t, "BASTION_PUB4"), labValue(t, "BASTION_PUB6")
	allow := fmt.Sprintf("firewall:\n  admin_cidrs: [%s/32, \"%s/128\"]\n", client4, client6)
	d := startDaemon(t, viaFDs, allow)
	t.Cleanup(func() {
		d.stop()
		inBastion(t, filepath.Join(binDir, "bastiond"), "-cleanup")
	})
	closed := []int{1, 22, 80, 3389, 8443, 9443, 65535}

	t.Run("invariant 1: only 443 answers on the public side", func(t *testing.T) {
		for _, addr := range []string{pub4, pub6} {
			expectProbe(t, labValue(t, "NS_CLIENT"), addr, 443, "open")
			for _, port := range closed {
				expectProbe(t, labValue(t, "NS_CLIENT"), addr, port, "filtered")
			}
			// The client is allowlisted: its probes did not blocklist it.
			expectProbe(t, labValue(t, "NS_CLIENT"), addr, 443, "open")
		}
	})

	t.Run("invariant 4: only the bastion reaches SSH and RDP", func(t *testing.T) {
		rogue, bastion := labValue(t, "NS_ROGUE"), labValue(t, "NS_BASTION")
		targets := []struct {
			key  string
			port int
		}{{"VM1_4", 22}, {"VM1_6", 22}, {"VM2_4", 3389}, {"VM2_6", 3389}}
		for _, tg := range targets {
			addr := labValue(t, tg.key)
			expectProbe(t, rogue, addr, tg.port, "filtered")
			expectProbe(t, bastion, addr, tg.port, "open")
		}
		// A rogue that takes the bastion's own address gets no further.
		vnet4 := labValue(t, "BASTION_VNET4")
		if out, err := exec.Command("ip", "-n", rogue, "addr", "add", vnet4+"/32", "dev", "eth0").CombinedOutput(); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		defer exec.Command("ip", "-n", rogue, "addr", "del", vnet4+"/32", "dev", "eth0").Run()
		if got := probe(t, rogue, labValue(t, "VM1_4"), 22, vnet4); got != "filtered" {
			t.Errorf("rogue spoofing the bastion's address reached vm1:22 (%s)", got)
		}
		expectProbe(t, bastion, labValue(t, "VM1_4"), 22, "open")
	})

	t.Run("invariant 3: a probe blocklists the source, http:// does not", func(t *testing.T) {
		// Reload without the allowlist: the trap is armed for the client now.
		d.writeConfig(labConfig(d.dir, ""))
		d.signal(syscall.SIGHUP)
		d.waitNotify("RELOADING=1", 5*time.Second)
		if n := d.waitNotify("READY=1", 10*time.Second); strings.Contains(n, "failed") {
			t.Fatalf("reload: %s", n)
		}
		ns := labValue(t, "NS_CLIENT")
		expectProbe(t, ns, pub4, 80, "filtered")
		expectProbe(t, ns, pub4, 443, "open") // typing http:// locks nobody out
		expectProbe(t, ns, pub4, 22, "filtered")
		expectProbe(t, ns, pub4, 443, "filtered") // blocklisted: 443 is silent too
		expectProbe(t, ns, pub6, 443, "open")     // another source address
		expectProbe(t, ns, pub6, 3389, "filtered")
		expectProbe(t, ns, pub6, 443, "filtered")
		for _, set := range []string{"blocklist4", "blocklist6"} {
			out, err := inBastion(t, "nft", "list", "set", "inet", "bastiond", set)
			if err != nil || !strings.Contains(out, map[string]string{"blocklist4": client4, "blocklist6": client6}[set]) {
				t.Errorf("%s does not hold the client: %v\n%s", set, err, out)
			}
		}
		out, err := d.ctl(nil, "policy", "blocklist")
		if err != nil || !strings.Contains(out, client4) || !strings.Contains(out, client6) {
			t.Errorf("bastionctl policy blocklist: %v\n%s", err, out)
		}
		// Clearing the entry lets the user back in.
		if out, err := d.ctl(nil, "policy", "blocklist", "clear", client4); err != nil || !strings.Contains(out, "removed 1 ") {
			t.Fatalf("clear: %v: %s", err, out)
		}
		expectProbe(t, ns, pub4, 443, "open")
		expectProbe(t, ns, pub6, 443, "filtered") // only the named entry went
	})

	var export string
	t.Run("policy show, verify and export", func(t *testing.T) {
		out, err := d.ctl(nil, "policy", "show")
		if err != nil || !strings.Contains(out, "table inet bastiond {") || !strings.Contains(out, "table bridge bastiond_vnet {") ||
			!strings.Contains(out, `iifname "pub0" tcp dport 443 accept`) || strings.Contains(out, "WARNING") {
			t.Errorf("policy show: %v\n%s", err, out)
		}
		if out, err := d.ctl(nil, "policy", "verify"); err != nil || !strings.Contains(out, "in force") {
			t.Errorf("policy verify: %v\n%s", err, out)
		}
		if out, err := d.ctl(nil, "policy", "export", "--target", "vm9"); err == nil || !strings.Contains(out, `target "vm9": not in the inventory`) {
			t.Errorf("export of an unknown target: %v\n%s", err, out)
		}
		export, err = d.ctl(nil, "policy", "export", "--target", "vm1")
		if err != nil || !strings.Contains(export, "table inet bastiond_guard {") {
			t.Fatalf("export: %v\n%s", err, export)
		}
	})

	t.Run("per-target counters: policy show --counters and metrics", func(t *testing.T) {
		// The bastion reached vm1:22 and vm2:3389 above, over IPv4 and
		// IPv6, and the rogue was dropped on its way to both; a reload
		// came in between, and the counts carried over it.
		out, err := d.ctl(nil, "policy", "show", "--counters", "--json")
		if err != nil {
			t.Fatalf("policy show --counters --json: %v\n%s", err, out)
		}
		var v struct {
			Targets []struct {
				Target                  string
				Sent, Received, Blocked struct{ Packets, Bytes uint64 }
			}
		}
		if err := json.Unmarshal([]byte(out), &v); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		if len(v.Targets) != 2 {
			t.Fatalf("counters for %d targets, want vm1 and vm2:\n%s", len(v.Targets), out)
		}
		for _, c := range v.Targets {
			if c.Sent.Packets < 2 || c.Received.Packets < 2 || c.Blocked.Packets < 2 || c.Sent.Bytes == 0 || c.Blocked.Bytes == 0 {
				t.Errorf("%s: sent %+v received %+v blocked %+v, want each at least one IPv4 and one IPv6 packet",
					c.Target, c.Sent, c.Received, c.Blocked)
			}
		}
		if out, err := d.ctl(nil, "policy", "show", "--counters"); err != nil || !strings.Contains(out, "BLOCKED PKTS") || !strings.Contains(out, "vm2") {
			t.Errorf("policy show --counters: %v\n%s", err, out)
		}
		metrics, err := inBastion(t, "curl", "-sSf", "--max-time", "10", "http://127.0.0.1:9443/metrics")
		if err != nil {
			t.Fatalf("metrics: %v\n%s", err, metrics)
		}
		for _, want := range []string{
			`bastiond_target_packets_total{direction="blocked",target="vm1"}`,
			`bastiond_target_bytes_total{direction="sent",target="vm2"}`,
			`bastiond_blocklist_entries{family="ipv6"} 1`, // the client, still blocked over IPv6
			"bastiond_firewall_drift_repairs_total 0",
		} {
			if !strings.Contains(metrics, want) {
				t.Errorf("metrics lack %s", want)
			}
		}
	})

	t.Run("per-source rate limit on new connections to 443", func(t *testing.T) {
		d.writeConfig(labConfig(d.dir, "firewall:\n  conn_rate: 5\n")) // bursts of 10
		d.signal(syscall.SIGHUP)
		d.waitNotify("RELOADING=1", 5*time.Second)
		if n := d.waitNotify("READY=1", 10*time.Second); strings.Contains(n, "failed") {
			t.Fatalf("reload: %s", n)
		}
		ns := labValue(t, "NS_CLIENT")
		opened, limited := 0, false
		for range 40 { // bounded: at most 40 attempts, the first silent one ends it
			if probe(t, ns, pub4, 443, "") != "open" {
				limited = true
				break
			}
			opened++
		}
		t.Logf("%d new connections opened before the first was dropped", opened)
		if !limited || opened < 10 || opened > 20 {
			t.Errorf("%d connections opened before the first was dropped (limited: %v); want the burst of 10, give or take the refill", opened, limited)
		}
		time.Sleep(time.Second) // the rate refills: a limit, not a block
		expectProbe(t, ns, pub4, 443, "open")
	})

	t.Run("a hand-deleted table is restored within 5s and logged", func(t *testing.T) {
		start := time.Now()
		if out, err := inBastion(t, "nft", "delete", "table", "inet", "bastiond"); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		for {
			if out, err := inBastion(t, "nft", "list", "table", "inet", "bastiond"); err == nil && strings.Contains(out, "policy drop") {
				break
			}
			if time.Since(start) > 5*time.Second {
				t.Fatalf("not restored within 5s\n%s", d.log.String())
			}
			time.Sleep(50 * time.Millisecond)
		}
		t.Logf("drift repaired in %s", time.Since(start).Round(time.Millisecond))
		d.waitLog("table inet bastiond is missing", 2*time.Second)
		expectProbe(t, labValue(t, "NS_CLIENT"), pub4, 22, "filtered")
		if m, err := inBastion(t, "curl", "-sSf", "--max-time", "10", "http://127.0.0.1:9443/metrics"); err != nil || !strings.Contains(m, "bastiond_firewall_drift_repairs_total 1") {
			t.Errorf("metrics do not count the repair: %v", err)
		}
	})

	t.Run("invariant 9: the firewall stays closed after kill -9; -cleanup removes it", func(t *testing.T) {
		d.cmd.Process.Kill()
		d.wait(10 * time.Second)
		if out, err := inBastion(t, "nft", "list", "table", "inet", "bastiond"); err != nil || !strings.Contains(out, "policy drop") {
			t.Fatalf("host table gone after kill -9: %v\n%s", err, out)
		}
		expectProbe(t, labValue(t, "NS_CLIENT"), pub4, 22, "filtered")
		expectProbe(t, labValue(t, "NS_ROGUE"), labValue(t, "VM1_4"), 22, "filtered")
		if out, err := inBastion(t, filepath.Join(binDir, "bastiond"), "-cleanup"); err != nil {
			t.Fatalf("-cleanup: %v: %s", err, out)
		}
		if out, _ := inBastion(t, "nft", "list", "tables"); strings.Contains(out, "bastiond") {
			t.Errorf("tables left after -cleanup:\n%s", out)
		}
		expectProbe(t, labValue(t, "NS_ROGUE"), labValue(t, "VM1_4"), 22, "open")

		// Where the bastion only sits in the VNet, the exported script does
		// the same job on the machine itself.
		script := filepath.Join(t.TempDir(), "guard.nft")
		if err := os.WriteFile(script, []byte(export), 0o600); err != nil {
			t.Fatal(err)
		}
		vm1 := labValue(t, "NS_VM1")
		if out, err := exec.Command("ip", "netns", "exec", vm1, "nft", "-f", script).CombinedOutput(); err != nil {
			t.Fatalf("loading the export on vm1: %v\n%s", err, out)
		}
		defer exec.Command("ip", "netns", "exec", vm1, "nft", "delete", "table", "inet", "bastiond_guard").Run()
		for _, key := range []string{"VM1_4", "VM1_6"} {
			expectProbe(t, labValue(t, "NS_ROGUE"), labValue(t, key), 22, "filtered")
			expectProbe(t, labValue(t, "NS_BASTION"), labValue(t, key), 22, "open")
		}
	})
}

// scanPorts are the ports an nmap scan covers: 1-1024 and every port the
// lab's services and the daemon use.
const scanPorts = "1-1024,3389,3390,8443,9443"

// nmapScan SYN-scans addr from namespace ns and returns the open ports and
// how many ports nmap found filtered.
func nmapScan(t testing.TB, ns, addr string, extra ...string) (open []string, filtered int) {
	t.Helper()
	if _, err := exec.LookPath("nmap"); err != nil {
		t.Skip("nmap not installed (test/deps.sh installs it)")
	}
	args := []string{"netns", "exec", ns, "nmap", "-Pn", "-sS", "-n", "-p", scanPorts, "--max-retries", "1", "-T4",
		"--host-timeout", "120s", "-oG", "-"}
	if strings.Contains(addr, ":") {
		args = append(args, "-6")
	}
	args = append(append(args, extra...), addr)
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("nmap: %v\n%s", err, out)
	}
	for _, line := range strings.Split(string(out), "\n") {
		_, ports, ok := strings.Cut(line, "Ports: ")
		if !ok {
			continue
		}
		ports, ignored, _ := strings.Cut(ports, "\tIgnored State: ")
		for _, p := range strings.Split(ports, ", ") {
			f := strings.Split(p, "/")
			switch {
			case len(f) > 1 && f[1] == "open":
				open = append(open, f[0])
			case len(f) > 1 && f[1] == "filtered":
				filtered++
			}
		}
		if n, ok := strings.CutPrefix(ignored, "filtered ("); ok {
			var k int
			fmt.Sscanf(n, "%d", &k)
			filtered += k
		}
	}
	t.Logf("nmap %s from %s: open %v, filtered %d", addr, ns, open, filtered)
	return open, filtered
}

// TestScan is the scan a stranger runs, as nmap reports it.
func TestScan(t *testing.T) {
	needLab(t)
	client4, client6 := labValue(t, "CLIENT4"), labValue(t, "CLIENT6")
	allow := fmt.Sprintf("firewall:\n  admin_cidrs: [%s/32, \"%s/128\"]\n", client4, client6)
	d := startDaemon(t, viaFDs, allow)
	t.Cleanup(func() {
		d.stop()
		inBastion(t, filepath.Join(binDir, "bastiond"), "-cleanup")
	})
	total := 1024 + 4
	ns := labValue(t, "NS_CLIENT")
	for _, key := range []string{"BASTION_PUB4", "BASTION_PUB6"} {
		t.Run("allowlisted client sees 443 only over "+key, func(t *testing.T) {
			open, filtered := nmapScan(t, ns, labValue(t, key))
			if len(open) != 1 || open[0] != "443" || filtered != total-1 {
				t.Errorf("open %v, filtered %d; want only 443 open and %d filtered", open, filtered, total-1)
			}
		})
	}
	// Arm the trap for the client.
	d.writeConfig(labConfig(d.dir, ""))
	d.signal(syscall.SIGHUP)
	d.waitNotify("RELOADING=1", 5*time.Second)
	d.waitNotify("READY=1", 10*time.Second)
	for _, key := range []string{"BASTION_PUB4", "BASTION_PUB6"} {
		t.Run("a stranger sees no open port at all over "+key, func(t *testing.T) {
			// -r: ports in order, so a closed port is probed before 443.
			open, filtered := nmapScan(t, ns, labValue(t, key), "-r")
			if len(open) != 0 || filtered != total {
				t.Errorf("open %v, filtered %d; want nothing open", open, filtered)
			}
		})
	}
	if out, err := d.ctl(nil, "policy", "blocklist", "clear", "--all"); err != nil || !strings.Contains(out, "removed 2 ") {
		t.Errorf("clear: %v: %s", err, out)
	}
}
