package e2e

import (
	"encoding/json"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestTargetsDiscover: the rogue host, which is on the VNet but not in the
// inventory, is found by its IPv4 and IPv6 addresses and its MAC once it has
// talked to the bastion; the targets and the bastion itself are not listed.
func TestTargetsDiscover(t *testing.T) {
	NeedLab(t)
	d := StartDaemon(t, ViaFDs, "")
	t.Cleanup(func() {
		d.Stop()
		InBastion(t, filepath.Join(binDir, "bastiond"), "-cleanup")
	})
	bastion, rogue := LabValue(t, "NS_BASTION"), LabValue(t, "NS_ROGUE")
	// The bastion talks to the targets; the rogue knocks on the bastion
	// (dropped, but it had to resolve the bastion's address first).
	for _, key := range []string{"VM1_4", "VM1_6", "VM2_4", "VM2_6"} {
		Probe(t, bastion, LabValue(t, key), 22, "")
	}
	for _, key := range []string{"BASTION_VNET4", "BASTION_VNET6"} {
		Probe(t, rogue, LabValue(t, key), 443, "")
	}

	out, err := d.Ctl(nil, "targets", "discover", "--json")
	if err != nil {
		t.Fatalf("targets discover: %v\n%s", err, out)
	}
	var v struct {
		Interface string
		Unknown   []struct {
			MAC        string
			Addrs      []string
			Targets    []string
			BridgeOnly bool `json:"bridge_only"`
		}
	}
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	const rogueMAC = "02:b5:00:00:01:66" // test/lab/lab.sh
	found := false
	for _, h := range v.Unknown {
		for _, key := range []string{"VM1_4", "VM1_6", "VM2_4", "VM2_6", "BASTION_VNET4", "BASTION_VNET6"} {
			if slices.Contains(h.Addrs, LabValue(t, key)) {
				t.Errorf("%s (%s) listed as unknown: %+v", key, LabValue(t, key), h)
			}
		}
		if h.MAC == rogueMAC {
			found = true
			for _, key := range []string{"ROGUE4", "ROGUE6"} {
				if !slices.Contains(h.Addrs, LabValue(t, key)) {
					t.Errorf("the rogue's %s is missing: %+v", LabValue(t, key), h)
				}
			}
			if len(h.Targets) > 0 || h.BridgeOnly {
				t.Errorf("rogue: %+v", h)
			}
		}
	}
	if !found || v.Interface != "vnet0" {
		t.Errorf("the rogue (%s) is not listed on vnet0:\n%s", rogueMAC, out)
	}
	text, err := d.Ctl(nil, "targets", "discover")
	if err != nil || !strings.Contains(text, rogueMAC) || !strings.Contains(text, LabValue(t, "ROGUE6")) {
		t.Errorf("targets discover: %v\n%s", err, text)
	}
	t.Logf("bastionctl targets discover:\n%s", text)
}
