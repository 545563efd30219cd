package daemon

import (
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/bastiond/bastiond/daemon/config"
	"github.com/bastiond/bastiond/proxy/portal"
)

// TestReloadWithoutWebClient: a daemon built without its browser client
// refuses, as config_invalid, a configuration whose roles grant sessions in
// the browser, and keeps the running one; one that grants only tunnels
// passes the check.
func TestReloadWithoutWebClient(t *testing.T) {
	e := adminDaemon(t)
	e.d.webClientMissing = true
	running := e.d.config()
	_, err := e.d.tryReload()
	var re *reloadError
	if !errors.As(err, &re) || re.reason != "config_invalid" {
		t.Fatalf("reload without the web client: %v, want a config_invalid refusal", err)
	}
	for _, want := range []string{"built without its browser client", "make web", "roles ops, dba", "grant only tunnel"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("refusal %q does not say %q", err, want)
		}
	}
	if e.d.config() != running {
		t.Error("a refused configuration replaced the running one")
	}

	tunnels := strings.ReplaceAll(strings.ReplaceAll(testConfig, "protocols: [ssh]", "protocols: [tunnel]"), "protocols: [rdp]", "protocols: [tunnel]")
	if err := os.WriteFile(e.d.file, []byte(tunnels), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(e.d.file)
	if err != nil {
		t.Fatal(err)
	}
	if err := portal.CheckWebClient(accessPolicy(cfg), true); err != nil {
		t.Errorf("tunnels only, without the web client: %v", err)
	}
	if err := portal.CheckWebClient(accessPolicy(running), false); err != nil {
		t.Errorf("with the web client: %v", err)
	}
}
