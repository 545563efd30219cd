package e2e

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestFirewall drives the daemon's ruleset in the lab: policy show, verify
// and export, per-target counters, the per-source rate limit and drift
// repair. test/security proves the invariants the ruleset keeps.
func TestFirewall(t *testing.T) {
	NeedLab(t)
	client4, client6 := LabValue(t, "CLIENT4"), LabValue(t, "CLIENT6")
	pub4 := LabValue(t, "BASTION_PUB4")
	allow := fmt.Sprintf("firewall:\n  admin_cidrs: [%s/32, \"%s/128\"]\n", client4, client6)
	d := StartDaemon(t, ViaFDs, allow)
	t.Cleanup(func() {
		d.Stop()
		InBastion(t, filepath.Join(binDir, "bastiond"), "-cleanup")
	})

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
		export, err := d.Ctl(nil, "policy", "export", "--target", "vm1")
		if err != nil || !strings.Contains(export, "table inet bastiond_guard {") {
			t.Fatalf("export: %v\n%s", err, export)
		}
	})

	t.Run("per-target counters: policy show --counters and metrics", func(t *testing.T) {
		// The bastion reaches vm1:22 and vm2:3389 over IPv4 and IPv6 and
		// the rogue is dropped on its way to both; a reload comes in
		// between, and the counts carry over it.
		for _, tg := range []struct {
			key  string
			port int
		}{{"VM1_4", 22}, {"VM1_6", 22}, {"VM2_4", 3389}, {"VM2_6", 3389}} {
			ExpectProbe(t, LabValue(t, "NS_ROGUE"), LabValue(t, tg.key), tg.port, "filtered")
			ExpectProbe(t, LabValue(t, "NS_BASTION"), LabValue(t, tg.key), tg.port, "open")
		}
		d.Signal(syscall.SIGHUP)
		d.WaitNotify("RELOADING=1", 5*time.Second)
		if n := d.WaitNotify("READY=1", 10*time.Second); strings.Contains(n, "failed") {
			t.Fatalf("reload: %s", n)
		}
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
}
