package adminapi

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"os/user"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bastiond/bastiond/api/adminclient"
	"github.com/bastiond/bastiond/internal/audit"
	"github.com/bastiond/bastiond/proxy/broker"
	"github.com/bastiond/bastiond/proxy/registry"
)

type recorder = audit.Capture

// expect checks that the events r was given since the last look are want.
func expect(t *testing.T, r *recorder, want ...audit.Event) {
	t.Helper()
	got := r.Take()
	if !reflect.DeepEqual(got, want) {
		t.Errorf("events:\n got %+v\nwant %+v", got, want)
	}
}

// liveSessions is a registry of one session.
type liveSessions struct {
	mu       sync.Mutex
	killed   []string // reasons
	instance string   // the session's, in a cluster
	listErr  error
	killErr  error
}

func (l *liveSessions) List() ([]broker.Info, error) {
	return []broker.Info{{ID: "0123456789abcdef", Instance: l.instance, User: "bob", Target: "vm1", Protocol: "ssh",
		Client: netip.MustParseAddrPort("[2001:db8::7]:51234")}}, l.listErr
}

func (l *liveSessions) Kill(id, reason string) error {
	if id != "0123456789abcdef" {
		return broker.ErrNoSession
	}
	if l.killErr != nil {
		return l.killErr
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.killed = append(l.killed, reason)
	return nil
}

// TestSessionKilledEvent: a kill names the admin as actor and the
// session's user as user; a kill of no session is no event.
func TestSessionKilledEvent(t *testing.T) {
	rec, ss := &recorder{}, &liveSessions{}
	path := startServer(t, "", func(c *Config) { c.Sessions, c.Audit = ss, rec })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := adminclient.NewClient(path).Kill(ctx, "0123456789abcdef", "left open overnight"); err != nil {
		t.Fatal(err)
	}
	expect(t, rec, audit.Event{Event: audit.SessionKilled, Actor: me(t), Source: audit.SourceLocal, Session: "0123456789abcdef",
		User: "bob", Client: "2001:db8::7", Target: "vm1", Protocol: "ssh", Detail: "left open overnight"})
	if want := "by " + me(t) + ": left open overnight"; len(ss.killed) != 1 || ss.killed[0] != want {
		t.Errorf("the session's end reason: %q, want %q", ss.killed, want)
	}
	if err := adminclient.NewClient(path).Kill(ctx, "ffffffffffffffff", "gone"); err == nil {
		t.Error("killing no session succeeded")
	}
	expect(t, rec)
}

// TestClusterKill: in a cluster, a kill's reason names the instance the
// admin was on, the event the instance that carried the session; a dead
// instance's session and an unreadable registry are clear errors.
func TestClusterKill(t *testing.T) {
	rec, ss := &recorder{}, &liveSessions{instance: "bastion-a"}
	path := startServer(t, "", func(c *Config) { c.Sessions, c.Audit, c.Instance = ss, rec, "bastion-b" })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c := adminclient.NewClient(path)
	if err := c.Kill(ctx, "0123456789abcdef", "left open"); err != nil {
		t.Fatal(err)
	}
	if want := "by " + me(t) + " on instance bastion-b: left open"; len(ss.killed) != 1 || ss.killed[0] != want {
		t.Errorf("the session's end reason: %q, want %q", ss.killed, want)
	}
	expect(t, rec, audit.Event{Event: audit.SessionKilled, Actor: me(t), Source: audit.SourceLocal, Session: "0123456789abcdef",
		User: "bob", Client: "2001:db8::7", Target: "vm1", Protocol: "ssh", Detail: "left open (carried by instance bastion-a)"})

	ss.killErr = fmt.Errorf("%w: instance bastion-a has not been heard from for 21s", registry.ErrInstanceDead)
	if err := c.Kill(ctx, "0123456789abcdef", "again"); err == nil || !strings.Contains(err.Error(), "instance bastion-a has not been heard from") {
		t.Errorf("kill on a dead instance: %v", err)
	}
	expect(t, rec)
	ss.listErr = errors.New("cannot read the cluster's sessions from the state store: state store unavailable")
	if list, err := c.Sessions(ctx); err == nil || !strings.Contains(err.Error(), "state store unavailable") {
		t.Errorf("list with the store down: %v, %v", list, err)
	}
}

// blocked is a blocklist that removes what it is asked to.
type blocked struct {
	Policy
	removed []netip.Prefix
}

func (b *blocked) Unblock(sources []netip.Prefix) ([]netip.Prefix, error) { return b.removed, nil }

// TestBlocklistClearedEvent: one event per source removed, IPv4 and IPv6.
func TestBlocklistClearedEvent(t *testing.T) {
	rec := &recorder{}
	p := &blocked{removed: []netip.Prefix{netip.MustParsePrefix("203.0.113.7/32"), netip.MustParsePrefix("2001:db8:cafe::/64")}}
	path := startServer(t, "", func(c *Config) { c.Policy, c.Audit = p, rec })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	n, err := adminclient.NewClient(path).Unblock(ctx, []string{"203.0.113.7", "2001:db8:cafe::21"}, false)
	if err != nil || n != 2 {
		t.Fatalf("unblock: %d, %v", n, err)
	}
	detail := "cleared the sources overlapping 203.0.113.7/32, 2001:db8:cafe::21/128"
	expect(t, rec, audit.Event{Event: audit.BlocklistClear, Actor: me(t), Source: audit.SourceLocal, Prefix: "203.0.113.7/32", Detail: detail},
		audit.Event{Event: audit.BlocklistClear, Actor: me(t), Source: audit.SourceLocal, Prefix: "2001:db8:cafe::/64", Detail: detail})

	p.removed = p.removed[1:]
	if _, err := adminclient.NewClient(path).Unblock(ctx, nil, true); err != nil {
		t.Fatal(err)
	}
	expect(t, rec, audit.Event{Event: audit.BlocklistClear, Actor: me(t), Source: audit.SourceLocal, Prefix: "2001:db8:cafe::/64",
		Detail: "the whole blocklist cleared"})
	if _, err := adminclient.NewClient(path).Unblock(ctx, []string{"not-an-address"}, false); err == nil {
		t.Error("unblocking a name succeeded")
	}
	expect(t, rec)
}

// TestCallerWithoutName: an admin whose uid has no name (a member of the
// admin group) is "uid:N" in the trail and in the session's end reason.
func TestCallerWithoutName(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to connect as another user")
	}
	for _, tool := range []string{"setpriv", "curl"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed", tool)
		}
	}
	g, err := user.LookupGroup("users")
	if err != nil {
		t.Skip("no group 'users' on this host")
	}
	const uid = "54321"
	if _, err := user.LookupId(uid); err == nil {
		t.Skipf("uid %s has a name here", uid)
	}
	rec, ss := &recorder{}, &liveSessions{}
	path := startServer(t, "users", func(c *Config) { c.Sessions, c.Audit = ss, rec })
	out, err := exec.Command("setpriv", "--reuid="+uid, "--regid="+uid, "--groups="+g.Gid,
		"curl", "-sS", "--unix-socket", path, "-X", "POST", "-d", `{"reason":"test"}`,
		"http://bastiond/v1/sessions/0123456789abcdef/kill").CombinedOutput()
	if err != nil || strings.Contains(string(out), "error") {
		t.Fatalf("setpriv curl: %v: %s", err, out)
	}
	expect(t, rec, audit.Event{Event: audit.SessionKilled, Actor: "uid:" + uid, Source: audit.SourceLocal, Session: "0123456789abcdef",
		User: "bob", Client: "2001:db8::7", Target: "vm1", Protocol: "ssh", Detail: "test"})
	if len(ss.killed) != 1 || ss.killed[0] != "by uid:"+uid+": test" {
		t.Errorf("the session's end reason: %q", ss.killed)
	}
}

// TestAdminRefusedEvent: a local user who is not an admin is refused, and
// the refusal is an audit event naming them.
func TestAdminRefusedEvent(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to connect as another user")
	}
	for _, tool := range []string{"setpriv", "curl"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed", tool)
		}
	}
	rec, ss := &recorder{}, &liveSessions{}
	path := startServer(t, "", func(c *Config) { c.Sessions, c.Audit = ss, rec })
	out, err := exec.Command("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
		"curl", "-sS", "--unix-socket", path, "-X", "POST", "-d", `{"reason":"test"}`,
		"http://bastiond/v1/sessions/0123456789abcdef/kill").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "permission denied") {
		t.Fatalf("setpriv curl: %v: %s", err, out)
	}
	if len(ss.killed) != 0 {
		t.Fatal("a refused caller killed a session")
	}
	got := rec.Take()
	actor := "uid:65534"
	if u, err := user.LookupId("65534"); err == nil {
		actor = u.Username
	}
	prefix := "POST /v1/sessions/0123456789abcdef/kill: uid 65534 (pid "
	if len(got) != 1 || !strings.HasPrefix(got[0].Detail, prefix) || !strings.HasSuffix(got[0].Detail, ") is not root and not in the admin group") {
		t.Fatalf("events: %+v", got)
	}
	want := audit.Event{Event: audit.AdminRefused, Actor: actor, Source: audit.SourceLocal, Reason: "not_admin", Detail: got[0].Detail}
	if !reflect.DeepEqual(got[0], want) {
		t.Errorf("event:\n got %+v\nwant %+v", got[0], want)
	}
}
