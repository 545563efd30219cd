package netpolicy

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/vishvananda/netns"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

var nsSeq atomic.Int32

// testNetns makes a fresh network namespace for t, removed when t ends, and
// returns its name and an nftables connection into it.
func testNetns(t *testing.T) (string, *nftables.Conn) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: programs nftables in a fresh network namespace")
	}
	if _, err := exec.LookPath("nft"); err != nil {
		t.Skip("nft not installed (test/deps.sh installs it)")
	}
	name := fmt.Sprintf("bastiond-np-%d-%d", os.Getpid(), nsSeq.Add(1))
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", name).Run() })
	h, err := netns.GetFromName(name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	c, err := nftables.New(nftables.WithNetNSFd(int(h)), nftables.WithSockOptions(bigSendBuffer))
	if err != nil {
		t.Fatal(err)
	}
	return name, c
}

// kernelIn opens a Kernel in namespace ns.
func kernelIn(t *testing.T, ns string) *Kernel {
	t.Helper()
	h, err := netns.GetFromName(ns)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() }) // each netlink request dials through it
	k, err := OpenNetNS(int(h))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// testKernel makes a fresh namespace for t and opens a Kernel in it.
func testKernel(t *testing.T) (string, *Kernel) {
	t.Helper()
	ns, _ := testNetns(t)
	return ns, kernelIn(t, ns)
}

func nft(t *testing.T, ns string, args ...string) string {
	t.Helper()
	out, err := exec.Command("ip", append([]string{"netns", "exec", ns, "nft"}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("nft %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// TestApplyMatchesNft holds the netlink encoding to nft's own: the ruleset
// applied by Apply must list exactly like the rendered text loaded by nft.
func TestApplyMatchesNft(t *testing.T) {
	cases := map[string]func(*Input){} // every golden case
	for _, gc := range goldenCases {
		cases[gc.name] = gc.edit
	}
	for name, edit := range cases {
		t.Run(name, func(t *testing.T) {
			rs, err := Compile(labInput(edit))
			if err != nil {
				t.Fatal(err)
			}
			refNS, _ := testNetns(t)
			nft(t, refNS, "-f", filepath.Join("testdata", name+".nft"))
			want := nft(t, refNS, "list", "ruleset")

			ns, c := testNetns(t)
			// Someone else's table must survive everything we do.
			nft(t, ns, "add table inet theirs; add chain inet theirs c { type filter hook input priority 10; policy accept; }")
			if err := Apply(c, rs); err != nil {
				t.Fatal(err)
			}
			got := nft(t, ns, "list", "ruleset")
			if ours := withoutTable(got, "inet theirs"); ours != want {
				t.Fatalf("applied ruleset lists differently from nft's load of the same text\n--- nft -f:\n%s\n--- Apply:\n%s", want, ours)
			}
			if !strings.Contains(got, "table inet theirs") {
				t.Error("Apply removed a table that is not ours")
			}
			// Idempotent: applying the same ruleset again changes nothing.
			if err := Apply(c, rs); err != nil {
				t.Fatal(err)
			}
			if again := nft(t, ns, "list", "ruleset"); again != got {
				t.Errorf("second Apply changed the ruleset:\n%s", again)
			}
			if err := Remove(c, rs.Tables); err != nil {
				t.Fatal(err)
			}
			if left := strings.TrimSpace(withoutTable(nft(t, ns, "list", "ruleset"), "inet theirs")); left != "" {
				t.Errorf("Remove left:\n%s", left)
			}
		})
	}
}

// withoutTable drops one table's block from an nft listing.
func withoutTable(listing, table string) string {
	var out []string
	skip := false
	for _, line := range strings.SplitAfter(listing, "\n") {
		switch {
		case strings.HasPrefix(line, "table "+table+" {"):
			skip = true
		case skip && line == "}\n":
			skip = false
		case !skip:
			out = append(out, line)
		}
	}
	return strings.TrimLeft(strings.Join(out, ""), "\n")
}

// A re-apply (a reload) must not forgive blocklisted sources.
func TestApplyKeepsBlocklist(t *testing.T) {
	ns, c := testNetns(t)
	rs, err := Compile(labInput(nil))
	if err != nil {
		t.Fatal(err)
	}
	if err := Apply(c, rs); err != nil {
		t.Fatal(err)
	}
	nft(t, ns, "add element inet bastiond blocklist4 { 203.0.113.99 timeout 5m }")
	// Whole IPv6 addresses, as an older ruleset put them there: kept as
	// the /64 they lie in, which is what the rules now look up.
	nft(t, ns, "add element inet bastiond blocklist6 { 2001:db8:cafe::99, 2001:db8:cafe::98 timeout 5m }")
	nft(t, ns, "add element inet bastiond conn4 { 203.0.113.98 }")
	if err := Apply(c, rs); err != nil {
		t.Fatal(err)
	}
	b4 := nft(t, ns, "list", "set", "inet", "bastiond", "blocklist4")
	b6 := nft(t, ns, "list", "set", "inet", "bastiond", "blocklist6")
	if !strings.Contains(b4, "203.0.113.99 timeout") || !strings.Contains(b6, "elements = { 2001:db8:cafe:: timeout") {
		t.Errorf("blocklist lost on re-apply:\n%s\n%s", b4, b6)
	}
	if strings.Contains(b6, "::99") || strings.Contains(b6, "::98") {
		t.Errorf("IPv6 entries kept as whole addresses, which the /64 lookup never matches:\n%s", b6)
	}
	if strings.Contains(b4, "timeout 10m expires") {
		t.Errorf("kept entry got a fresh full timeout instead of its remaining time:\n%s", b4)
	}
	if conn := nft(t, ns, "list", "set", "inet", "bastiond", "conn4"); strings.Contains(conn, "203.0.113.98") {
		t.Errorf("a meter set was carried over:\n%s", conn)
	}
}

func TestVerifyAndReconcile(t *testing.T) {
	ns, k := testKernel(t)
	rs, err := Compile(labInput(func(in *Input) { in.Firewall.AdminCIDRs = []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")} }))
	if err != nil {
		t.Fatal(err)
	}
	if err := k.Apply(rs); err != nil {
		t.Fatal(err)
	}
	mustClean := func(why string) {
		t.Helper()
		if d, err := k.Verify(); err != nil || len(d) > 0 {
			t.Fatalf("%s: verify = %v, %v", why, d, err)
		}
	}
	mustClean("right after apply")
	// Traffic-driven changes are not drift.
	nft(t, ns, "add element inet bastiond blocklist4 { 203.0.113.7 }")
	nft(t, ns, "add element inet bastiond conn6 { 2001:db8::7 }")
	mustClean("after dynamic set updates")

	tamper := []struct {
		name, cmd, undo, want string
	}{
		{"rule added", "insert rule inet bastiond input tcp dport 22 accept", "", "chain input: a rule was added at position 1"},
		{"constant set changed", "add element inet bastiond admin4 { 198.51.100.0/24 }", "", "set admin4 was changed"},
		{"chain policy changed", "add chain inet bastiond input { type filter hook input priority 0; policy accept; }", "", "chain input: hook, priority or policy changed"},
		{"table deleted", "delete table bridge bastiond_vnet", "", "table bridge bastiond_vnet is missing"},
		{"set added", "add set inet bastiond extra { type ipv4_addr; }", "", "set extra was added"},
	}
	for _, tc := range tamper {
		t.Run(tc.name, func(t *testing.T) {
			nft(t, ns, tc.cmd)
			d, err := k.Verify()
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(strings.Join(d, "\n"), tc.want) {
				t.Errorf("verify = %q, want %q", d, tc.want)
			}
			if err := k.Apply(rs); err != nil {
				t.Fatal(err)
			}
			mustClean("after re-apply")
		})
	}

	t.Run("reconcile restores a deleted table", func(t *testing.T) {
		core, logs := observer.New(zap.InfoLevel)
		repaired := make(chan []string, 4)
		k.OnRepair(func(d []string) { repaired <- d })
		defer k.OnRepair(nil)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- k.Reconcile(ctx, zap.New(core), time.Hour) }() // only notifications can trigger the repair
		defer func() { cancel(); <-done }()
		nft(t, ns, "delete table inet bastiond")
		deadline := time.Now().Add(5 * time.Second)
		for logs.FilterMessage("firewall restored").Len() == 0 {
			if time.Now().After(deadline) {
				t.Fatalf("not restored; logs: %v", logs.All())
			}
			time.Sleep(20 * time.Millisecond)
		}
		drift := logs.FilterMessageSnippet("firewall drift").All()
		if len(drift) == 0 || !strings.Contains(fmt.Sprint(drift[0].ContextMap()["differences"]), "table inet bastiond is missing") {
			t.Errorf("drift log lacks what differed: %v", drift)
		}
		if !strings.Contains(nft(t, ns, "list", "ruleset"), "table inet bastiond") {
			t.Error("table not back")
		}
		select {
		case d := <-repaired:
			if !strings.Contains(strings.Join(d, "\n"), "table inet bastiond is missing") {
				t.Errorf("OnRepair was told %q", d)
			}
		default:
			t.Error("OnRepair was not called")
		}
		mustClean("after reconcile")
	})
}

// The blocklist lists IPv4 sources as /32s and IPv6 sources as /64s, and
// clearing an address or a prefix clears the sources it overlaps.
func TestBlocklistListAndClear(t *testing.T) {
	pfx := netip.MustParsePrefix
	cases := []struct {
		name string
		add  []string // nft add element commands
		list []netip.Prefix
		// clear, then what is left; nil clear is --all.
		clear []netip.Prefix
		left  []netip.Prefix
	}{
		{
			name:  "IPv4 one address",
			add:   []string{"blocklist4 { 203.0.113.7, 203.0.113.8 timeout 2m }"},
			list:  []netip.Prefix{pfx("203.0.113.8/32"), pfx("203.0.113.7/32")},
			clear: []netip.Prefix{pfx("203.0.113.7/32")},
			left:  []netip.Prefix{pfx("203.0.113.8/32")},
		},
		{
			name:  "IPv4 a prefix",
			add:   []string{"blocklist4 { 203.0.113.7, 198.51.100.9 timeout 2m }"},
			list:  []netip.Prefix{pfx("198.51.100.9/32"), pfx("203.0.113.7/32")},
			clear: []netip.Prefix{pfx("203.0.113.0/24")},
			left:  []netip.Prefix{pfx("198.51.100.9/32")},
		},
		{
			name:  "IPv4-mapped address",
			add:   []string{"blocklist4 { 203.0.113.7 }"},
			list:  []netip.Prefix{pfx("203.0.113.7/32")},
			clear: []netip.Prefix{pfx("::ffff:203.0.113.7/128")},
		},
		{
			name: "IPv6 another address of the /64",
			// The rules add /64s; a whole address is what an older
			// ruleset left, listed as its /64 all the same.
			add:   []string{"blocklist6 { 2001:db8:cafe::, 2001:db8:cafe:1::5 timeout 2m }"},
			list:  []netip.Prefix{pfx("2001:db8:cafe:1::/64"), pfx("2001:db8:cafe::/64")},
			clear: []netip.Prefix{pfx("2001:db8:cafe::21/128")},
			left:  []netip.Prefix{pfx("2001:db8:cafe:1::/64")},
		},
		{
			name:  "IPv6 the /64",
			add:   []string{"blocklist6 { 2001:db8:cafe::, 2001:db8:cafe:1:: timeout 2m }"},
			list:  []netip.Prefix{pfx("2001:db8:cafe:1::/64"), pfx("2001:db8:cafe::/64")},
			clear: []netip.Prefix{pfx("2001:db8:cafe:1::/64")},
			left:  []netip.Prefix{pfx("2001:db8:cafe::/64")},
		},
		{
			name:  "IPv6 a /48 clears its /64s",
			add:   []string{"blocklist6 { 2001:db8:cafe::, 2001:db8:cafe:1::, 2001:db8:beef:: timeout 2m }"},
			list:  []netip.Prefix{pfx("2001:db8:beef::/64"), pfx("2001:db8:cafe:1::/64"), pfx("2001:db8:cafe::/64")},
			clear: []netip.Prefix{pfx("2001:db8:cafe::/48")},
			left:  []netip.Prefix{pfx("2001:db8:beef::/64")},
		},
		{
			name: "all",
			add:  []string{"blocklist4 { 203.0.113.7 }", "blocklist6 { 2001:db8:cafe:: timeout 2m }"},
			list: []netip.Prefix{pfx("2001:db8:cafe::/64"), pfx("203.0.113.7/32")},
		},
	}
	ns, k := testKernel(t)
	rs, _ := Compile(labInput(nil))
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if err := k.Apply(rs); err != nil {
				t.Fatal(err)
			}
			if n, err := k.Unblock(nil); err != nil {
				t.Fatalf("clear all first: %d, %v", n, err)
			}
			for _, a := range tc.add {
				nft(t, ns, "add element inet bastiond "+a)
			}
			list, err := k.Blocklist()
			if err != nil {
				t.Fatal(err)
			}
			if got := prefixes(list); !slices.Equal(got, tc.list) {
				t.Fatalf("blocklist = %v, want %v (soonest to expire first)", got, tc.list)
			}
			for _, e := range list {
				if e.Expires <= 0 || e.Expires > 10*time.Minute {
					t.Errorf("%v expires in %v", e.Prefix, e.Expires)
				}
			}
			n, err := k.Unblock(tc.clear)
			if err != nil || n != len(tc.list)-len(tc.left) {
				t.Fatalf("unblock %v: %d, %v; want %d removed", tc.clear, n, err, len(tc.list)-len(tc.left))
			}
			list, _ = k.Blocklist()
			if got := prefixes(list); !slices.Equal(got, tc.left) {
				t.Errorf("left %v, want %v", got, tc.left)
			}
			if d, _ := k.Verify(); len(d) != 0 {
				t.Errorf("clearing the blocklist counted as drift: %v", d)
			}
		})
	}
}

func prefixes(list []BlockEntry) []netip.Prefix {
	var out []netip.Prefix
	for _, e := range list {
		out = append(out, e.Prefix)
	}
	return out
}

// A large inventory must arrive whole: every element of every set, in one
// transaction (netlink attributes are limited to 64 KiB each).
func TestApplyLargeInventory(t *testing.T) {
	_, c := testNetns(t)
	for _, n := range []int{2000, 5000} {
		rs, err := Compile(bigInput(n))
		if err != nil {
			t.Fatal(err)
		}
		if err := Apply(c, rs); err != nil {
			t.Fatalf("%d targets: %v", n, err)
		}
		for _, set := range rs.Tables[1].Sets {
			ks, err := c.GetSetByName(&nftables.Table{Family: nftables.TableFamilyBridge, Name: VNetTable}, set.Name)
			if err != nil {
				t.Fatal(err)
			}
			got, err := c.GetSetElements(ks)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(set.Elements) {
				t.Errorf("%d targets: set %s holds %d elements in the kernel, want %d", n, set.Name, len(got), len(set.Elements))
			}
		}
	}
}
