package adminapi

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/bastiond/bastiond/api/admin"
	"github.com/bastiond/bastiond/api/adminclient"
	"github.com/bastiond/bastiond/internal/audit"
	"github.com/bastiond/bastiond/internal/statedb"
	"github.com/bastiond/bastiond/proxy/link"
)

// TestLinks: create prints the URL once and its event names the link,
// never the secret; the limits and the inventory are checked; list shows
// the states; revoke is an event; with links off, create says how to
// turn them on.
func TestLinks(t *testing.T) {
	db, err := statedb.Open(t.TempDir() + "/state.db")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	store := link.NewStore(db)
	settings := LinkSettings{Store: store, Enabled: true, MaxValid: 24 * time.Hour, MaxUses: 10, ServerName: "bastion.example",
		Check: func(target, protocol string) error {
			if target != "vm1" {
				return errors.New("no target " + target)
			}
			return nil
		}}
	sink := &audit.Capture{}
	path := startServer(t, "", func(c *Config) {
		c.Links = func() LinkSettings { return settings }
		c.Audit = sink
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c := adminclient.NewClient(path)

	got, err := c.CreateLink(ctx, admin.LinkRequest{Target: "vm1", Protocol: "ssh", Login: "deploy", Valid: "2h", Uses: 3})
	if err != nil {
		t.Fatal(err)
	}
	secret, ok := strings.CutPrefix(got.URL, "https://bastion.example/l/")
	if !ok || !link.Plausible(secret) || got.Link.Left != 3 || got.Link.State != link.StateActive || got.Link.CreatedBy == "" {
		t.Fatalf("created %+v", got)
	}
	if l, err := store.Peek(secret); err != nil || l.ID != got.Link.ID {
		t.Fatalf("the URL's secret opens %+v, %v", l, err)
	}
	for name, req := range map[string]admin.LinkRequest{
		"too long":       {Target: "vm1", Protocol: "ssh", Login: "deploy", Valid: "25h", Uses: 1},
		"too many uses":  {Target: "vm1", Protocol: "ssh", Login: "deploy", Valid: "1h", Uses: 11},
		"no uses":        {Target: "vm1", Protocol: "ssh", Login: "deploy", Valid: "1h"},
		"not a duration": {Target: "vm1", Protocol: "ssh", Login: "deploy", Valid: "soon", Uses: 1},
		"unknown target": {Target: "vm9", Protocol: "ssh", Login: "deploy", Valid: "1h", Uses: 1},
		"bad login":      {Target: "vm1", Protocol: "ssh", Login: "-x", Valid: "1h", Uses: 1},
	} {
		if _, err := c.CreateLink(ctx, req); err == nil {
			t.Errorf("%s: created", name)
		}
	}
	if _, err := c.CreateLink(ctx, admin.LinkRequest{Target: "vm1", Protocol: "rdp", Login: "deploy", Valid: "1d", Uses: 1}); err != nil {
		t.Errorf("a day's link: %v", err)
	}
	r, err := c.RevokeLink(ctx, got.Link.ID)
	if err != nil || r.State != link.StateRevoked || r.Revoked == nil {
		t.Fatalf("revoke: %+v %v", r, err)
	}
	if _, err := c.RevokeLink(ctx, "0123456789abcdef"); err == nil || !strings.Contains(err.Error(), "no link") {
		t.Errorf("revoke of no link: %v", err)
	}
	list, err := c.Links(ctx)
	if err != nil || len(list) != 2 {
		t.Fatalf("list: %+v %v", list, err)
	}
	states := map[string]string{}
	for _, l := range list {
		states[l.ID] = l.State
	}
	if states[got.Link.ID] != link.StateRevoked {
		t.Errorf("states %v", states)
	}

	es := sink.Take()
	var kinds []string
	for _, e := range es {
		kinds = append(kinds, e.Event)
		if strings.Contains(string(audit.Marshal(e)), secret) {
			t.Errorf("the secret is in %s", audit.Marshal(e))
		}
	}
	if strings.Join(kinds, ",") != "link_created,link_created,link_revoked" {
		t.Fatalf("events %v", kinds)
	}
	if e := es[0]; e.Link != got.Link.ID || e.Target != "vm1" || e.Login != "deploy" || e.Uses != 3 || e.Expires == nil || e.Source != audit.SourceLocal {
		t.Errorf("link_created %+v", e)
	}

	settings.Enabled = false
	_, err = c.CreateLink(ctx, admin.LinkRequest{Target: "vm1", Protocol: "ssh", Login: "deploy", Valid: "1h", Uses: 1})
	if err == nil || !strings.Contains(err.Error(), "links.enabled: true") {
		t.Errorf("links off: %v", err)
	}
}
