package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestFirewall checks invariants 1, 3, 4 and 9 in the lab with the daemon's
// own ruleset in force.
func TestFirewall(t *testing.T) {
	NeedLab(t)
	client4, client6 := LabValue(t, "CLIENT4"), LabValue(t, "CLIENT6")
	pub4, pub6 := LabValue(t, "BASTION_PUB4"), LabValue(t, "BASTION_PUB6")
	allow := fmt.Sprintf("firewall:\n  admin_cidrs: [%s/32, \"%s/128\"]\n", client4, client6)
	d := StartDaemon(t, ViaFDs, allow)
	t.Cleanup(func() {
		d.Stop()
		InBastion(t, filepath.Join(binDir, "bastiond"), "-cleanup")
	})
	closed := []int{1, 22, 80, 3389, 8443, 9443, 65535}

	t.Run("invariant 1: only 443 answers on the public side", func(t *testing.T) {
		for _, addr := range []string{pub4, pub6} {
			ExpectProbe(t, LabValue(t, "NS_CLIENT"), addr, 443, "open")
			for _, port := range closed {
				ExpectProbe(t, LabValue(t, "NS_CLIENT"), addr, port, "filtered")
			}
			// The client is allowlisted: its probes did not blocklist it.
			ExpectProbe(t, LabValue(t, "NS_CLIENT"), addr, 443, "open")
		}
	})

	t.Run("invariant 4: only the bastion reaches SSH and RDP", func(t *testing.T) {
		rogue, bastion := LabValue(t, "NS_ROGUE"), LabValue(t, "NS_BASTION")
		targets := []struct {
			key  string
			port int
		}{{"VM1_4", 22}, {"VM1_6", 22}, {"VM2_4", 3389}, {"VM2_6", 3389}}
		for _, tg := range targets {
			addr := LabValue(t, tg.key)
			ExpectProbe(t, rogue, addr, tg.port, "filtered")
			ExpectProbe(t, bastion, addr, tg.port, "open")
		}
		// A rogue that takes the bastion's own address gets no further.
		vnet4 := LabValue(t, "BASTION_VNET4")
		if out, err := exec.Command("ip", "-n", rogue, "addr", "add", vnet4+"/32", "dev", "eth0").CombinedOutput(); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		defer exec.Command("ip", "-n", rogue, "addr", "del", vnet4+"/32", "dev", "eth0").Run()
		if got := Probe(t, rogue, LabValue(t, "VM1_4"), 22, vnet4); got != "filtered" {
			t.Errorf("rogue spoofing the bastion's address reached vm1:22 (%s)", got)
		}
		ExpectProbe(t, bastion, LabValue(t, "VM1_4"), 22, "open")
	})

	t.Run("invariant 3: a probe blocklists the source, http:// does not", func(t *testing.T) {
		// Reload without the allowlist: the trap is armed for the client now.
		d.WriteConfig(LabConfig(d.Dir, ""))
		d.Signal(syscall.SIGHUP)
		d.WaitNotify("RELOADING=1", 5*time.Second)
		if n := d.WaitNotify("READY=1", 10*time.Second); strings.Contains(n, "failed") {
			t.Fatalf("reload: %s", n)
		}
		ns := LabValue(t, "NS_CLIENT")
		ExpectProbe(t, ns, pub4, 80, "filtered")
		ExpectProbe(t, ns, pub4, 443, "open") // typing http:// locks nobody out
		ExpectProbe(t, ns, pub4, 22, "filtered")
		ExpectProbe(t, ns, pub4, 443, "filtered") // blocklisted: 443 is silent too
		ExpectProbe(t, ns, pub6, 443, "open")     // another source address
		ExpectProbe(t, ns, pub6, 3389, "filtered")
		ExpectProbe(t, ns, pub6, 443, "filtered")
		for _, set := range []string{"blocklist4", "blocklist6"} {
			out, err := InBastion(t, "nft", "list", "set", "inet", "bastiond", set)
			if err != nil || !strings.Contains(out, map[string]string{"blocklist4": client4, "blocklist6": client6}[set]) {
				t.Errorf("%s does not hold the client: %v\n%s", set, err, out)
			}
		}
		out, err := d.Ctl(nil, "policy", "blocklist")
		if err != nil || !strings.Contains(out, client4) || !strings.Contains(out, client6) {
			t.Errorf("bastionctl policy blocklist: %v\n%s", err, out)
		}
		// Clearing the entry lets the user back in.
		if out, err := d.Ctl(nil, "policy", "blocklist", "clear", client4); err != nil || !strings.Contains(out, "removed 1 ") {
			t.Fatalf("clear: %v: %s", err, out)
		}
		ExpectProbe(t, ns, pub4, 443, "open")
		ExpectProbe(t, ns, pub6, 443, "filtered") // only the named entry went
	})

	var export string
	t.Run("policy show, verify and export", func(t *testing.T) {
		out, err := d.Ctl(nil, "policy", "show")
		if err != nil || !strings.Contains(out, "table inet bastiond {") || !strings.Contains(out, "table bridge bastiond_vnet {") ||
			!strings.Contains(out, `iifname "pub0" tcp dport 443 accept`) || strings.Contains(out, "WARNING") {
			t.Errorf("policy show: %v\n%s", err, out)
		}
		if out, err := d.Ctl(nil, "policy", "verify"); err != nil || !strings.Contains(out, "in force") {
			t.Errorf("policy verify: %v\n%s", err, out)
		}
		if out, err := d.Ctl(nil, "policy", "export", "--target", "vm9"); err == nil || !strings.Contains(out, `target "vm9": not in the inventory`) {
			t.Errorf("export of an unknown target: %v\n%s", err, out)
		}
		export, err = d.Ctl(nil, "policy", "export", "--target", "vm1")
		if err != nil || !strings.Contains(export, "table inet bastiond_guard {") {
			t.Fatalf("export: %v\n%s", err, export)
		}
	})

	t.Run("per-target counters: policy show --counters and metrics", func(t *testing.T) {
		// The bastion reached vm1:22 and vm2:3389 above, over IPv4 and
		// IPv6, and the rogue was dropped on its way to both; a reload
		// came in between, and the counts carried over it.
		out, err := d.Ctl(nil, "policy", "show", "--counters", "--json")
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
		if out, err := d.Ctl(nil, "policy", "show", "--counters"); err != nil || !strings.Contains(out, "BLOCKED PKTS") || !strings.Contains(out, "vm2") {
			t.Errorf("policy show --counters: %v\n%s", err, out)
		}
		metrics, err := InBastion(t, "curl", "-sSf", "--max-time", "10", "http://127.0.0.1:9443/metrics")
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
		d.WriteConfig(LabConfig(d.Dir, "firewall:\n  conn_rate: 5\n")) // bursts of 10
		d.Signal(syscall.SIGHUP)
		d.WaitNotify("RELOADING=1", 5*time.Second)
		if n := d.WaitNotify("READY=1", 10*time.Second); strings.Contains(n, "failed") {
			t.Fatalf("reload: %s", n)
		}
		ns := LabValue(t, "NS_CLIENT")
		opened, limited := 0, false
		for range 40 { // bounded: at most 40 attempts, the first silent one ends it
			if Probe(t, ns, pub4, 443, "") != "open" {
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
		ExpectProbe(t, ns, pub4, 443, "open")
	})

	t.Run("a hand-deleted table is restored within 5s and logged", func(t *testing.T) {
		start := time.Now()
		if out, err := InBastion(t, "nft", "delete", "table", "inet", "bastiond"); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		for {
			if out, err := InBastion(t, "nft", "list", "table", "inet", "bastiond"); err == nil && strings.Contains(out, "policy drop") {
				break
			}
			if time.Since(start) > 5*time.Second {
				t.Fatalf("not restored within 5s\n%s", d.Log.String())
			}
			time.Sleep(50 * time.Millisecond)
		}
		t.Logf("drift repaired in %s", time.Since(start).Round(time.Millisecond))
		d.WaitLog("table inet bastiond is missing", 2*time.Second)
		ExpectProbe(t, LabValue(t, "NS_CLIENT"), pub4, 22, "filtered")
		if m, err := InBastion(t, "curl", "-sSf", "--max-time", "10", "http://127.0.0.1:9443/metrics"); err != nil || !strings.Contains(m, "bastiond_firewall_drift_repairs_total 1") {
			t.Errorf("metrics do not count the repair: %v", err)
		}
	})

	t.Run("invariant 9: the firewall stays closed after kill -9; -cleanup removes it", func(t *testing.T) {
		d.Cmd.Process.Kill()
		d.Wait(10 * time.Second)
		if out, err := InBastion(t, "nft", "list", "table", "inet", "bastiond"); err != nil || !strings.Contains(out, "policy drop") {
			t.Fatalf("host table gone after kill -9: %v\n%s", err, out)
		}
		ExpectProbe(t, LabValue(t, "NS_CLIENT"), pub4, 22, "filtered")
		ExpectProbe(t, LabValue(t, "NS_ROGUE"), LabValue(t, "VM1_4"), 22, "filtered")
		if out, err := InBastion(t, filepath.Join(binDir, "bastiond"), "-cleanup"); err != nil {
			t.Fatalf("-cleanup: %v: %s", err, out)
		}
		if out, _ := InBastion(t, "nft", "list", "tables"); strings.Contains(out, "bastiond") {
			t.Errorf("tables left after -cleanup:\n%s", out)
		}
		ExpectProbe(t, LabValue(t, "NS_ROGUE"), LabValue(t, "VM1_4"), 22, "open")

		// Where the bastion only sits in the VNet, the exported script does
		// the same job on the machine itself.
		script := filepath.Join(t.TempDir(), "guard.nft")
		if err := os.WriteFile(script, []byte(export), 0o600); err != nil {
			t.Fatal(err)
		}
		vm1 := LabValue(t, "NS_VM1")
		if out, err := exec.Command("ip", "netns", "exec", vm1, "nft", "-f", script).CombinedOutput(); err != nil {
			t.Fatalf("loading the export on vm1: %v\n%s", err, out)
		}
		defer exec.Command("ip", "netns", "exec", vm1, "nft", "delete", "table", "inet", "bastiond_guard").Run()
		for _, key := range []string{"VM1_4", "VM1_6"} {
			ExpectProbe(t, LabValue(t, "NS_ROGUE"), LabValue(t, key), 22, "filtered")
			ExpectProbe(t, LabValue(t, "NS_BASTION"), LabValue(t, key), 22, "open")
		}
	})
}

// TestScan is the scan a stranger runs, as nmap reports it.
func TestScan(t *testing.T) {
	NeedLab(t)
	client4, client6 := LabValue(t, "CLIENT4"), LabValue(t, "CLIENT6")
	allow := fmt.Sprintf("firewall:\n  admin_cidrs: [%s/32, \"%s/128\"]\n", client4, client6)
	d := StartDaemon(t, ViaFDs, allow)
	t.Cleanup(func() {
		d.Stop()
		InBastion(t, filepath.Join(binDir, "bastiond"), "-cleanup")
	})
	total := 1024 + 4
	ns := LabValue(t, "NS_CLIENT")
	for _, key := range []string{"BASTION_PUB4", "BASTION_PUB6"} {
		t.Run("allowlisted client sees 443 only over "+key, func(t *testing.T) {
			open, filtered := NmapScan(t, ns, LabValue(t, key))
			if len(open) != 1 || open[0] != "443" || filtered != total-1 {
				t.Errorf("open %v, filtered %d; want only 443 open and %d filtered", open, filtered, total-1)
			}
		})
	}
	// Arm the trap for the client.
	d.WriteConfig(LabConfig(d.Dir, ""))
	d.Signal(syscall.SIGHUP)
	d.WaitNotify("RELOADING=1", 5*time.Second)
	d.WaitNotify("READY=1", 10*time.Second)
	for _, key := range []string{"BASTION_PUB4", "BASTION_PUB6"} {
		t.Run("a stranger sees no open port at all over "+key, func(t *testing.T) {
			// -r: ports in order, so a closed port is probed before 443.
			open, filtered := NmapScan(t, ns, LabValue(t, key), "-r")
			if len(open) != 0 || filtered != total {
				t.Errorf("open %v, filtered %d; want nothing open", open, filtered)
			}
		})
	}
	if out, err := d.Ctl(nil, "policy", "blocklist", "clear", "--all"); err != nil || !strings.Contains(out, "removed 2 ") {
		t.Errorf("clear: %v: %s", err, out)
	}
}
