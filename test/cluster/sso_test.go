package cluster

import (
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bastiond/bastiond/internal/seal"
	"github.com/bastiond/bastiond/test/e2e"
)

// TestSSOAcrossInstances: a single sign-on begun on one instance is
// finished on the other (the balancer drains the first between the two),
// over IPv4 and IPv6: the flow's cookie is sealed with the cluster's key,
// the account and its web session are the cluster's, and the answer
// replayed on the first instance is refused there.
func TestSSOAcrossInstances(t *testing.T) {
	e2e.NeedLab(t)
	idp := e2e.LabIdP(t)
	dsn := newDatabase(t)
	sealKey := filepath.Join(t.TempDir(), "seal.key")
	if err := os.WriteFile(sealKey, []byte(seal.Generate()), 0o600); err != nil {
		t.Fatal(err)
	}
	config := func(name string) func(string) string {
		return instanceConfig(t, `cluster: {instance: `+name+`}
store:
  backend: postgres
  postgres: {dsn_file: `+dsn+`, ca_file: `+e2e.LabValue(t, "DB_CA")+`, seal_key: `+sealKey+`}
`+idp.OIDCConfig()+`access:
  roles:
    - name: sso-ops
      subjects: [oidc-group:`+e2e.IdPProvider+`/`+e2e.IdPGroup+`]
      targets: [vm1]
      protocols: [ssh]
`)
	}
	a := e2e.StartDaemonIn(t, e2e.LabValue(t, "NS_BASTION"), e2e.ViaFDs, config("a"))
	b := e2e.StartDaemonIn(t, e2e.LabValue(t, "NS_BASTION2"), e2e.ViaFDs, config("b"))
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("instance a's log ends:\n%s", lastBytes(a.Log.String(), 5000))
			t.Logf("instance b's log ends:\n%s", lastBytes(b.Log.String(), 5000))
		}
	})
	waitStates(t, map[string]string{"a": "UP", "b": "UP"}, 20*time.Second)
	count := func(d *e2e.Daemon, msg string) int { return strings.Count(d.Log.String(), `"msg":"`+msg+`"`) }
	// logged waits for d to have logged msg n times: its log reaches the
	// test through a pipe, after the answer that follows the line.
	logged := func(d *e2e.Daemon, msg string, n int) bool {
		for deadline := time.Now().Add(5 * time.Second); count(d, msg) < n; time.Sleep(20 * time.Millisecond) {
			if time.Now().After(deadline) {
				return false
			}
		}
		return true
	}
	only := func(on, off string) {
		haproxy(t, "set server instances/"+on+" state ready")
		haproxy(t, "set server instances/"+off+" state drain")
	}
	t.Cleanup(func() { only("a", "b"); haproxy(t, "set server instances/b state ready") })
	for i, network := range []string{"tcp4", "tcp6"} {
		t.Run(network, func(t *testing.T) {
			first, second := a, b
			firstName, secondName := "a", "b"
			if i == 1 {
				first, second, firstName, secondName = b, a, "b", "a"
			}
			only(firstName, secondName)
			br := e2e.NewSSOBrowser(t, network)
			begun := count(first, "single sign-on begun")
			back := br.SignInAtIdP("/sso/"+e2e.IdPProvider, idp.User, idp.Password)
			if !logged(first, "single sign-on begun", begun+1) {
				t.Fatalf("the sign-in did not begin on instance %s", firstName)
			}
			flow := br.Cookie("__Host-bastion-sso")
			only(secondName, firstName)
			done := count(second, "signed in through single sign-on")
			if code, page, _ := br.Get(back); code != http.StatusOK {
				t.Fatalf("the answer on instance %s: %d\n%s", secondName, code, page)
			}
			if !logged(second, "signed in through single sign-on", done+1) {
				t.Fatalf("the answer was not taken by instance %s", secondName)
			}
			if code, page, _ := br.Get("https://" + e2e.ServerName + "/"); code != http.StatusOK || !strings.Contains(page, idp.User) || !strings.Contains(page, "vm1") {
				t.Fatalf("the portal on %s after the sign-in: %d\n%s", secondName, code, page)
			}
			// The answer replayed with the flow's cookie, on the first.
			only(firstName, secondName)
			thief := e2e.NewSSOBrowser(t, network)
			thief.SetCookie("__Host-bastion-sso", flow)
			if code, _, _ := thief.Get(back); code == http.StatusOK {
				t.Fatalf("the answer replayed on instance %s signed in", firstName)
			}
		})
	}
}
