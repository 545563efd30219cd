// Package security proves the security invariants in the lab,
// one test per invariant, named after it: TestInvariant01... and on (the
// README lists them). Each would fail if its invariant broke. They use the
// lab harness of test/e2e and, like those tests, need root.
package security

import (
	"crypto/rand"
	"encoding/hex"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bastiond/bastiond/test/e2e"
)

func TestMain(m *testing.M) {
	flag.Parse()
	if flag.Lookup("test.run").Value.String() == "^$" {
		os.Exit(m.Run()) // benchmarks only, and this package has none: no lab
	}
	os.Exit(e2e.Main(m))
}

// allowClient is configuration that allowlists the lab's client, so that
// its probes of closed ports do not get it blocklisted.
func allowClient(t testing.TB) string {
	return fmt.Sprintf("firewall:\n  admin_cidrs: [%s/32, \"%s/128\"]\n", e2e.LabValue(t, "CLIENT4"), e2e.LabValue(t, "CLIENT6"))
}

// removeFirewallAtEnd removes the daemon's tables once the test is over:
// the daemon leaves them in force when it stops (invariant 9).
func removeFirewallAtEnd(t testing.TB) {
	t.Cleanup(func() { e2e.InBastion(t, e2e.BinPath("bastiond"), "-cleanup") })
}

// reload makes d read cfg.
func reload(t testing.TB, d *e2e.Daemon, cfg string) {
	t.Helper()
	d.WriteConfig(cfg)
	d.Signal(syscall.SIGHUP)
	d.WaitNotify("RELOADING=1", 5*time.Second)
	if n := d.WaitNotify("READY=1", 10*time.Second); strings.Contains(n, "failed") {
		t.Fatalf("reload: %s", n)
	}
}

// checkConfig runs `bastiond -check-config` on cfg in the bastion's
// namespace.
func checkConfig(t testing.TB, cfg string) (string, error) {
	t.Helper()
	path := t.TempDir() + "/bastiond.yaml"
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("ip", "netns", "exec", e2e.LabValue(t, "NS_BASTION"), e2e.BinPath("bastiond"),
		"-check-config", "-config", path).CombinedOutput()
	return string(out), err
}

// secret is a string nobody else would write.
func secret(what string) string {
	b := make([]byte, 8)
	rand.Read(b)
	return what + " " + hex.EncodeToString(b)
}
