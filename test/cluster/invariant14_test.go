package cluster

import (
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/bastiond/bastiond/internal/seal"
	"github.com/bastiond/bastiond/test/e2e"
)

// newDatabase creates an empty database on the lab's PostgreSQL, owned by
// bastiond, and returns a DSN file naming it (the lab's, with another
// database): each test's cluster starts from nothing.
func newDatabase(t testing.TB) string {
	t.Helper()
	name := fmt.Sprintf("t%d", os.Getpid()%100000) + strings.ToLower(strings.NewReplacer("/", "_", " ", "_").Replace(t.Name()))
	name = name[:min(len(name), 60)]
	dir := filepath.Join(filepath.Dir(e2e.LabValue(t, "DB_DSN_FILE")))
	bin, _ := filepath.Glob("/usr/lib/postgresql/*/bin/psql")
	if len(bin) == 0 {
		t.Fatal("no psql")
	}
	cmd := exec.Command("ip", "netns", "exec", e2e.LabValue(t, "NS_DB"), "setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups",
		bin[len(bin)-1], "-h", filepath.Join(dir, "run"), "-p", e2e.LabValue(t, "DB_PORT"), "-U", "postgres", "-qc",
		fmt.Sprintf("CREATE DATABASE %q OWNER bastiond", name))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("create database %s: %v\n%s", name, err, out)
	}
	dsn, err := os.ReadFile(e2e.LabValue(t, "DB_DSN_FILE"))
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "db.dsn")
	if err := os.WriteFile(path, []byte(strings.Replace(string(dsn), "/bastiond?", "/"+name+"?", 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// invariantConfig is instance name of a fresh cluster on dsn: users may
// open browser SSH to vm1.
func invariantConfig(t testing.TB, name, dsn, sealKey string) string {
	return fmt.Sprintf(`cluster: {instance: %s}
store:
  backend: postgres
  postgres: {dsn_file: %s, ca_file: %s, seal_key: %s}
access:
  roles:
    - name: ops
      subjects: [user:carol, user:dave, user:erin]
      targets: [vm1]
      protocols: [ssh]
`, name, dsn, e2e.LabValue(t, "DB_CA"), sealKey)
}

// TestInvariant14ClusterWideTicketsCodesAndThrottle is invariant 14 in the
// cluster lab: two instances on one PostgreSQL, reached directly (past the
// balancer) from an operator's host, over IPv4 and IPv6. A browser signed
// in on one is signed in on the other; a ticket issued by one is redeemed
// on the other, once, and the replay is refused by both, as is the loser
// of two redemptions racing on the two; a TOTP code used on one is refused
// on the other; and sign-in failures counted on one hold up the account's
// source on the other.
func TestInvariant14ClusterWideTicketsCodesAndThrottle(t *testing.T) {
	e2e.NeedLab(t)
	dsn := newDatabase(t)
	sealKey := filepath.Join(t.TempDir(), "seal.key")
	if err := os.WriteFile(sealKey, []byte(seal.Generate()), 0o600); err != nil {
		t.Fatal(err)
	}
	a := e2e.StartDaemonIn(t, e2e.LabValue(t, "NS_BASTION"), e2e.ViaFDs, instanceConfig(t, invariantConfig(t, "a", dsn, sealKey)))
	b := e2e.StartDaemonIn(t, e2e.LabValue(t, "NS_BASTION2"), e2e.ViaFDs, instanceConfig(t, invariantConfig(t, "b", dsn, sealKey)))
	e2e.AddLabUsers(t, a, "carol", "dave", "erin")
	ops := e2e.LabValue(t, "NS_OPS")
	onA4, onA6 := e2e.LabValue(t, "BASTION_FE4"), e2e.LabValue(t, "BASTION_FE6")
	onB4, onB6 := e2e.LabValue(t, "BASTION2_FE4"), e2e.LabValue(t, "BASTION2_FE6")

	t.Run("a ticket is redeemed once, cluster-wide", func(t *testing.T) {
		ua := e2e.NewWebUserIn(t, ops, onA4)
		if status, page := ua.SignIn("carol", e2e.TunnelPassword, ""); status != http.StatusSeeOther || !strings.Contains(page, "vm1") {
			t.Fatalf("sign-in on a: %d\n%s", status, page)
		}
		// The same browser, on b over IPv6: signed in there too.
		ub := ua.Via(ops, onB6)
		tk := ua.ConnectTicket("vm1", "ssh")
		ws, _, err := ub.DialTicket("ssh", tk)
		if err != nil {
			t.Fatalf("a's ticket on b: %v", err)
		}
		ws.CloseNow()
		for name, u := range map[string]*e2e.WebUser{"a": ua, "b": ub} {
			if ws, resp, err := u.DialTicket("ssh", tk); err == nil {
				ws.CloseNow()
				t.Errorf("the replay of a redeemed ticket was accepted on %s", name)
			} else if resp == nil || resp.StatusCode != http.StatusForbidden {
				t.Errorf("the replay on %s: %v, want HTTP 403", name, err)
			}
		}
		// Racing: each ticket presented to both instances at once.
		ua6, ub4 := ua.Via(ops, onA6), ua.Via(ops, onB4)
		for round := range 6 {
			tk := []*e2e.WebUser{ub4, ua6}[round%2].ConnectTicket("vm1", "ssh")
			var mu sync.Mutex
			won := 0
			var wg sync.WaitGroup
			for _, u := range []*e2e.WebUser{ua6, ub4} {
				wg.Go(func() {
					if ws, _, err := u.DialTicket("ssh", tk); err == nil {
						ws.CloseNow()
						mu.Lock()
						won++
						mu.Unlock()
					}
				})
			}
			wg.Wait()
			if won != 1 {
				t.Fatalf("round %d: a ticket presented to both instances at once was redeemed %d times, want once", round, won)
			}
		}
	})

	t.Run("a TOTP code is used once, cluster-wide", func(t *testing.T) {
		secret, _ := e2e.EnrolTOTP(t, a, "dave")
		code := e2e.TOTPAt(t, secret, 1) // the enrolment used this step's
		if status, page := e2e.NewWebUserIn(t, ops, onB4).SignIn("dave", e2e.TunnelPassword, code); status != http.StatusSeeOther {
			t.Fatalf("dave's first sign-in with the code, on b: %d\n%s", status, page)
		}
		if status, _ := e2e.NewWebUserIn(t, ops, onA6).SignIn("dave", e2e.TunnelPassword, code); status == http.StatusSeeOther {
			t.Fatal("a TOTP code used on b signed in on a")
		}
	})

	t.Run("failures on one instance hold up the source on the other", func(t *testing.T) {
		// Three free failures, taking turns; then the right password on
		// the instance that saw one of them is held up by the backoff.
		for i, addr := range []string{onA4, onB4, onA4} {
			if status, _ := e2e.NewWebUserIn(t, ops, addr).SignIn("erin", "not the password", ""); status == http.StatusSeeOther {
				t.Fatalf("failure %d signed in", i+1)
			}
		}
		if status, _ := e2e.NewWebUserIn(t, ops, onA4).SignIn("erin", "not the password either", ""); status == http.StatusSeeOther {
			t.Fatal("failure 4 signed in")
		}
		if status, _ := e2e.NewWebUserIn(t, ops, onB4).SignIn("erin", e2e.TunnelPassword, ""); status == http.StatusSeeOther {
			t.Error("the right password on b during the backoff that failures on a and b started: signed in")
		}
		found := false
		for _, e := range auditLines(t, b, "signin_throttled") {
			if e["user"] == "erin" {
				found = true
			}
		}
		if !found {
			t.Errorf("b did not record erin's sign-in as throttled: %v", auditLines(t, b, "signin_throttled"))
		}
	})
}
