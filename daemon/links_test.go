package daemon

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/bastiond/bastiond/daemon/config"
	"github.com/bastiond/bastiond/internal/statedb"
	"github.com/bastiond/bastiond/proxy/broker"
	"github.com/bastiond/bastiond/proxy/link"
)

// TestLinkRevoked: a reload re-checks a link's live sessions by their
// link, not as an account's (none is called link:ID): a live link keeps
// them; a revoked or removed link, links turned off, or the target's
// protocol gone from the inventory ends them.
func TestLinkRevoked(t *testing.T) {
	db, err := statedb.Open(filepath.Join(t.TempDir(), "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	parse := func(extra string) *config.Config {
		cfg, err := config.Parse("x.yaml", []byte(testConfig+extra))
		if err != nil {
			t.Fatal(err)
		}
		return cfg
	}
	on := parse("links: {enabled: true}\n")
	store := link.NewStore(db)
	newLink := func(target, protocol string) link.Link {
		l, _, err := store.Create(link.New{Target: target, Protocol: protocol, Login: "deploy", Valid: time.Hour, Uses: 1})
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	live, revoked, rdp := newLink("vm1", "ssh"), newLink("vm1", "ssh"), newLink("vm2", "rdp")
	if _, err := store.Revoke(revoked.ID); err != nil {
		t.Fatal(err)
	}
	check := func(cfg *config.Config) map[string]bool {
		d := &daemon{cfg: cfg, state: db, log: zap.NewNop()}
		f := d.linkRevoked()
		out := map[string]bool{}
		for _, id := range []string{live.ID, revoked.ID, rdp.ID, "0123456789abcdef"} {
			out[id] = f(id, broker.Info{User: link.User(id)})
		}
		return out
	}
	got := check(on)
	if got[live.ID] || !got[revoked.ID] || got[rdp.ID] || !got["0123456789abcdef"] {
		t.Errorf("links on: ended %v (live %s, revoked %s, rdp %s)", got, live.ID, revoked.ID, rdp.ID)
	}
	noRDP := parse("links: {enabled: true}\n")
	noRDP.Inventory.Targets[1].Ports.RDP = 0
	if got := check(noRDP); got[live.ID] || !got[rdp.ID] {
		t.Errorf("vm2's RDP gone: ended %v", got)
	}
	for id, ended := range check(parse("")) {
		if !ended {
			t.Errorf("links off: %s's sessions go on", id)
		}
	}
	if err := linkTarget(on, "vm9", "ssh"); err == nil || !strings.Contains(err.Error(), "no target") {
		t.Errorf("unknown target: %v", err)
	}
	if err := linkTarget(on, "vm1", "rdp"); err == nil {
		t.Error("vm1 offers no rdp")
	}
}
