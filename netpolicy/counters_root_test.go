package netpolicy

import (
	"net"
	"os/exec"
	"runtime"
	"testing"
	"time"

	"github.com/vishvananda/netns"
)

// dialIn attempts a TCP connection to addr from inside namespace ns. The
// namespace's VNet is one end of a veth pair with nothing behind the other:
// the SYN leaves through the output hook and nothing ever answers.
func dialIn(t *testing.T, ns, addr string) {
	t.Helper()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer orig.Close()
	h, err := netns.GetFromName(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	if err := netns.Set(h); err != nil {
		t.Fatal(err)
	}
	defer netns.Set(orig)
	if c, err := (&net.Dialer{Timeout: 300 * time.Millisecond}).Dial("tcp", addr); err == nil {
		c.Close()
	}
}

func TestTargetCounters(t *testing.T) {
	ns, _ := testNetns(t)
	for _, args := range [][]string{
		{"link", "add", "vnet0", "type", "veth", "peer", "name", "vnet0p"},
		{"link", "set", "vnet0", "up"},
		{"link", "set", "vnet0p", "up"},
		{"addr", "add", "198.18.0.4/16", "dev", "vnet0"},
		{"addr", "add", "2001:db8:b5::4/48", "dev", "vnet0", "nodad"},
	} {
		if out, err := exec.Command("ip", append([]string{"-n", ns}, args...)...).CombinedOutput(); err != nil {
			t.Fatalf("ip %v: %v: %s", args, err, out)
		}
	}
	k := kernelIn(t, ns)
	rs, err := Compile(labInput(nil))
	if err != nil {
		t.Fatal(err)
	}
	if err := k.Apply(rs); err != nil {
		t.Fatal(err)
	}
	counters := func() map[string]TargetCounters {
		t.Helper()
		list, err := k.Counters()
		if err != nil {
			t.Fatal(err)
		}
		m := map[string]TargetCounters{}
		for _, c := range list {
			m[c.Target] = c
		}
		return m
	}
	if c := counters(); len(c) != 2 || c["vm1"] != (TargetCounters{Target: "vm1"}) || c["vm2"] != (TargetCounters{Target: "vm2"}) {
		t.Fatalf("fresh counters = %+v, want vm1 and vm2 at zero", c)
	}

	dialIn(t, ns, "[2001:db8:b5:1::11]:22")
	v6 := counters()["vm1"].Sent
	if v6.Packets < 1 || v6.Bytes < 80 {
		t.Errorf("after an IPv6 SYN to vm1:22, vm1 sent = %+v", v6)
	}
	dialIn(t, ns, "198.18.1.11:22")
	dialIn(t, ns, "198.18.1.11:2222") // any traffic with the target counts
	c := counters()
	if got := c["vm1"].Sent; got.Packets < v6.Packets+2 || got.Bytes < v6.Bytes+2*60 {
		t.Errorf("after IPv4 SYNs to vm1:22 and :2222, vm1 sent = %+v (IPv6 alone: %+v)", got, v6)
	}
	if c["vm2"] != (TargetCounters{Target: "vm2"}) {
		t.Errorf("vm2 counted traffic it never saw: %+v", c["vm2"])
	}
	if c["vm1"].Received != (Traffic{}) || c["vm1"].Blocked != (Traffic{}) {
		t.Errorf("vm1 received/blocked = %+v/%+v, want zero: nothing answered, nothing crossed the bridge", c["vm1"].Received, c["vm1"].Blocked)
	}
	// A re-apply (a reload, a drift repair) replaces the tables, and the
	// counts carry over; a target that left the inventory is forgotten.
	before := counters()["vm1"]
	if err := k.Apply(rs); err != nil {
		t.Fatal(err)
	}
	if got := counters()["vm1"]; got != before {
		t.Errorf("after re-apply vm1 = %+v, want %+v carried over", got, before)
	}
	dialIn(t, ns, "198.18.1.11:22")
	if got := counters()["vm1"].Sent; got.Packets <= before.Sent.Packets {
		t.Errorf("after re-apply and one more SYN, vm1 sent = %+v, want more than %+v", got, before.Sent)
	}
	only2, err := Compile(labInput(func(in *Input) { in.Targets = in.Targets[1:] }))
	if err != nil {
		t.Fatal(err)
	}
	if err := k.Apply(only2); err != nil {
		t.Fatal(err)
	}
	if c := counters(); len(c) != 1 || c["vm2"] != (TargetCounters{Target: "vm2"}) {
		t.Errorf("after vm1 left the inventory, counters = %+v", c)
	}
	if err := k.Apply(rs); err != nil {
		t.Fatal(err)
	}
	if got := counters()["vm1"]; got != (TargetCounters{Target: "vm1"}) {
		t.Errorf("vm1 back in the inventory starts from zero, got %+v", got)
	}
}

// TestGeneration holds what the cheap drift check relies on: every
// committed transaction moves the generation on, and reads do not.
func TestGeneration(t *testing.T) {
	ns, k := testKernel(t)
	g0, err := k.gen.generation()
	if err != nil {
		t.Fatal(err)
	}
	nft(t, ns, "list", "ruleset")
	if g, _ := k.gen.generation(); g != g0 {
		t.Errorf("a read moved the generation from %d to %d", g0, g)
	}
	nft(t, ns, "add", "table", "inet", "someone_else")
	if g, _ := k.gen.generation(); g == g0 {
		t.Errorf("a transaction left the generation at %d", g)
	}
}
