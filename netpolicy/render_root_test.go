package netpolicy

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// TestRenderedRulesetLoads loads every golden ruleset into a fresh network
// namespace with nft: the text `policy show` and `policy export` print must
// be something an admin can feed back to nft as it is.
func TestRenderedRulesetLoads(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: loads rulesets into a fresh network namespace")
	}
	if _, err := exec.LookPath("nft"); err != nil {
		t.Skip("nft not installed (test/deps.sh installs it)")
	}
	files, _ := filepath.Glob("testdata/*.nft")
	if len(files) == 0 {
		t.Fatal("no golden files")
	}
	ns := fmt.Sprintf("bastiond-nptest-%d", os.Getpid())
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			if out, err := exec.Command("ip", "netns", "exec", ns, "nft", "-f", f).CombinedOutput(); err != nil {
				t.Fatalf("nft -f %s: %v\n%s", f, err, out)
			}
			if out, err := exec.Command("ip", "netns", "exec", ns, "nft", "flush", "ruleset").CombinedOutput(); err != nil {
				t.Fatalf("flush: %v: %s", err, out)
			}
		})
	}
}
