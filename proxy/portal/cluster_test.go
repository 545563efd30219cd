package portal

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/bastiond/bastiond/internal/statedb"
	"github.com/bastiond/bastiond/internal/store"
	"github.com/bastiond/bastiond/proxy/auth/authtest"
	"github.com/bastiond/bastiond/proxy/authz"
	"github.com/bastiond/bastiond/proxy/ticket"
)

// openSharedDB opens the database the instances of a test cluster share:
// bbolt, one handle for all (a bbolt file opens once; two processes on
// one PostgreSQL amount to the same).
var openSharedDB = func(t testing.TB) store.DB {
	h, err := statedb.Open(filepath.Join(t.TempDir(), "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}

// clusterPortal is one instance of a cluster on db: its own Authenticator
// and Portal, with the web sessions, tickets and throttle in db. Its
// browser SSH relay records the tickets it gets.
func clusterPortal(t *testing.T, db store.DB, rr *relayRecorder) *Portal {
	t.Helper()
	log := zaptest.NewLogger(t, zaptest.Level(zap.ErrorLevel))
	a := authtest.Shared(t, db, log, testPassword, "alice", "bob", "carol")
	az, err := authz.New(authz.Config{Logger: log, Access: testPolicy()})
	if err != nil {
		t.Fatal(err)
	}
	p, err := New(Config{Logger: log, ServerName: testName, Authz: az, Shared: db}, a)
	if err != nil {
		t.Fatal(err)
	}
	p.relaySSH = func(w http.ResponseWriter, r *http.Request, _ caller, t ticket.Ticket) { rr.relay(w, r, t) }
	return p
}

// TestCluster: two portals on one database, a browser going from one to
// the other as a balancer would send it, from IPv4 and from IPv6. Signed
// in on A, it is signed in on B with the same CSRF token; a ticket A
// issued is redeemed on B, once, and its replay refused on both; signing
// out on B signs out on A; ending a user's sessions on B ends them on A;
// a guesser's failures taking turns at A and B add up.
func TestCluster(t *testing.T) {
	for _, remote := range []string{"192.0.2.10:50000", "[2001:db8::10]:50000"} {
		t.Run(remote, func(t *testing.T) {
			db := openSharedDB(t)
			rr := &relayRecorder{}
			a, b := clusterPortal(t, db, rr), clusterPortal(t, db, rr)
			ha, hb := a.routes(), b.routes()
			alice := newBrowser(t, ha)
			alice.remote = remote
			csrf := alice.signIn("alice")

			alice.h = hb
			page := alice.get("/")
			if page.code != http.StatusOK || !strings.Contains(page.body, "vm1") {
				t.Fatalf("signed in on A, the portal on B: %d\n%s", page.code, page.body)
			}
			if got := csrfOf(t, page.body); got != csrf {
				t.Fatalf("CSRF token %q on B, %q on A", got, csrf)
			}

			alice.h = ha
			r := alice.post("/connect", url.Values{"csrf": {csrf}, "target": {"vm1"}, "protocol": {"ssh"}})
			tk := strings.TrimPrefix(r.header.Get("Location"), "/connect/")
			if r.code != http.StatusSeeOther || tk == "" {
				t.Fatalf("connect on A: %d %q", r.code, r.header.Get("Location"))
			}
			alice.h = hb
			if r := alice.get("/connect/" + tk); r.code != http.StatusOK {
				t.Fatalf("A's ticket's page on B: %d", r.code)
			}
			ws := func(h http.Handler) int {
				alice.h = h
				return alice.do(http.MethodGet, "/ws/ssh?ticket="+tk, nil, map[string]string{"Origin": alice.origin}).code
			}
			if code := ws(hb); code != http.StatusSwitchingProtocols {
				t.Fatalf("A's ticket redeemed on B: %d", code)
			}
			if got := rr.got[len(rr.got)-1]; got.User != "alice" || got.Target != "vm1" || got.Port != 22 {
				t.Errorf("relay got %+v", got)
			}
			for name, h := range map[string]http.Handler{"A": ha, "B": hb} {
				if code := ws(h); code != http.StatusForbidden {
					t.Errorf("replay on %s: %d", name, code)
				}
			}
			if len(rr.got) != 1 {
				t.Errorf("%d relays, want 1", len(rr.got))
			}

			// Signed out on B: signed out on A.
			alice.h = hb
			alice.post("/logout", url.Values{"csrf": {csrf}})
			alice.h = ha
			if r := alice.get("/"); strings.Contains(r.body, "vm1") {
				t.Fatal("signed out on B, still signed in on A")
			}
			// EndUser on B ends the sessions of A.
			csrf = alice.signIn("alice")
			if n, err := b.EndUser("alice"); err != nil || n != 1 {
				t.Fatalf("EndUser on B: %d, %v", n, err)
			}
			if r := alice.get("/"); strings.Contains(r.body, "vm1") {
				t.Fatal("ended on B, still signed in on A")
			}
			if n, err := a.WebSessions(); err != nil || n != 0 {
				t.Errorf("%d web sessions, %v", n, err)
			}

			// A guesser taking turns at A and B: after the free failures,
			// the right password is refused on both.
			guesser := newBrowser(t, ha)
			guesser.remote = strings.Replace(remote, "10", "66", 1)
			for i := range 4 {
				guesser.h = []http.Handler{ha, hb}[i%2]
				login := guesser.get("/")
				if r := guesser.post("/login", url.Values{"csrf": {csrfOf(t, login.body)}, "user": {"bob"}, "password": {"guess"}}); r.code != http.StatusUnauthorized {
					t.Fatalf("guess %d: %d", i+1, r.code)
				}
			}
			for name, h := range map[string]http.Handler{"A": ha, "B": hb} {
				guesser.h = h
				login := guesser.get("/")
				r := guesser.post("/login", url.Values{"csrf": {csrfOf(t, login.body)}, "user": {"bob"}, "password": {testPassword}})
				if r.code != http.StatusUnauthorized {
					t.Errorf("the guesser's right password on %s during its backoff: %d", name, r.code)
				}
			}
		})
	}
}

// TestClusterHandover: a binary upgrade of an instance whose web sessions
// and tickets are shared hands nothing over (ExportSessions holds none of
// them) and signs nobody out: the successor reads them from the database.
func TestClusterHandover(t *testing.T) {
	db := openSharedDB(t)
	rr := &relayRecorder{}
	old := clusterPortal(t, db, rr)
	alice := newBrowser(t, old.routes())
	csrf := alice.signIn("alice")
	r := alice.post("/connect", url.Values{"csrf": {csrf}, "target": {"vm1"}, "protocol": {"ssh"}})
	tk := strings.TrimPrefix(r.header.Get("Location"), "/connect/")
	web, tickets, err := old.ExportSessions()
	if err != nil {
		t.Fatal(err)
	}
	if string(web) != "[]" || string(tickets) != "[]" {
		t.Fatalf("shared sessions exported: %q %q", web, tickets)
	}
	s := clusterPortal(t, db, rr)
	if err := s.ImportSessions(web, tickets); err != nil {
		t.Fatal(err)
	}
	alice.h = s.routes()
	if r := alice.get("/"); r.code != http.StatusOK || strings.Contains(r.body, `action="/login"`) {
		t.Fatalf("signed out by the upgrade: %d", r.code)
	}
	if code := alice.do(http.MethodGet, "/ws/ssh?ticket="+tk, nil, map[string]string{"Origin": alice.origin}).code; code != http.StatusSwitchingProtocols {
		t.Errorf("the ticket after the upgrade: %d", code)
	}
}

// flakyDB is a database that goes down and comes back when a test says.
type flakyDB struct {
	store.DB
	down atomic.Bool
}

func (f *flakyDB) View(fn func(store.Tx) error) error {
	if f.down.Load() {
		return fmt.Errorf("%w: connection refused", store.ErrUnavailable)
	}
	return f.DB.View(fn)
}

func (f *flakyDB) Update(fn func(store.Tx) error) error {
	if f.down.Load() {
		return fmt.Errorf("%w: connection refused", store.ErrUnavailable)
	}
	return f.DB.Update(fn)
}

// TestClusterDatabaseDown: while the cluster's database is down, a
// sign-in fails with a message that says so (503, not "sign-in failed"),
// and a signed-in browser is treated as signed out, but what it asks to
// open (a connect form or API call) is answered 503 saying why, not
// "session expired"; once it is back, the same browser is signed in
// again and new sign-ins work.
func TestClusterDatabaseDown(t *testing.T) {
	for _, remote := range []string{"192.0.2.10:50000", "[2001:db8::10]:50000"} {
		t.Run(remote, func(t *testing.T) {
			db := &flakyDB{DB: openSharedDB(t)}
			p := clusterPortal(t, db, &relayRecorder{})
			alice := newBrowser(t, p.routes())
			alice.remote = remote
			csrf := alice.signIn("alice")

			db.down.Store(true)
			if r := alice.get("/"); !strings.Contains(r.body, `action="/login"`) {
				t.Fatalf("signed in with the database down: %d", r.code)
			}
			r := alice.postJSON("/api/connect", map[string]string{"target": "vm1", "protocol": "ssh"}, map[string]string{"X-CSRF-Token": csrf})
			if r.code != http.StatusServiceUnavailable || !strings.Contains(r.body, "cannot reach its database") {
				t.Errorf("POST /api/connect with the database down: %d %s", r.code, r.body)
			}
			r = alice.post("/connect", url.Values{"csrf": {csrf}, "target": {"vm1"}, "protocol": {"ssh"}})
			if r.code != http.StatusServiceUnavailable || !strings.Contains(r.body, "cannot reach its database") {
				t.Errorf("POST /connect with the database down: %d\n%s", r.code, r.body)
			}
			bob := newBrowser(t, p.routes())
			bob.remote = remote
			login := bob.get("/")
			r = bob.post("/login", url.Values{"csrf": {csrfOf(t, login.body)}, "user": {"bob"}, "password": {testPassword}})
			if r.code != http.StatusServiceUnavailable || !strings.Contains(r.body, "cannot reach its database") {
				t.Fatalf("sign-in with the database down: %d\n%s", r.code, r.body)
			}

			db.down.Store(false)
			if r := alice.get("/"); r.code != http.StatusOK || strings.Contains(r.body, `action="/login"`) {
				t.Fatalf("signed out by the database's absence: %d", r.code)
			}
			if r := alice.postJSON("/api/connect", map[string]string{"target": "vm1", "protocol": "ssh"}, map[string]string{"X-CSRF-Token": csrf}); r.code != http.StatusOK {
				t.Errorf("POST /api/connect after the database is back: %d %s", r.code, r.body)
			}
			bob.signIn("bob")
		})
	}
}

// TestClusterTokensDatabaseDown: while the cluster's database is down,
// bastionctl login (POST /api/tokens) and a request with an API token are
// answered 503 with a message that says so, not as a wrong password or a
// bad token; once it is back, both work again.
func TestClusterTokensDatabaseDown(t *testing.T) {
	for _, remote := range []string{"192.0.2.10:50000", "[2001:db8::10]:50000"} {
		t.Run(remote, func(t *testing.T) {
			db := &flakyDB{DB: openSharedDB(t)}
			cli := newBrowser(t, clusterPortal(t, db, &relayRecorder{}).routes())
			cli.remote, cli.origin = remote, ""
			issue := func() reply {
				return cli.postJSON("/api/tokens", TokenRequest{User: "carol", Password: testPassword, TTL: "1h"}, nil)
			}
			r := issue()
			if r.code != http.StatusOK {
				t.Fatalf("issue: %d %s", r.code, r.body)
			}
			var tr TokenResponse
			json.Unmarshal([]byte(r.body), &tr)
			bearer := map[string]string{"Authorization": "Bearer " + tr.Secret}

			db.down.Store(true)
			if r := issue(); r.code != http.StatusServiceUnavailable || !strings.Contains(r.body, "cannot reach its database") {
				t.Errorf("bastionctl login with the database down: %d %s", r.code, r.body)
			}
			for _, path := range []string{"/api/targets", "/api/tokens"} {
				if r := cli.do(http.MethodGet, path, nil, bearer); r.code != http.StatusServiceUnavailable || !strings.Contains(r.body, "cannot reach its database") {
					t.Errorf("GET %s with a token, the database down: %d %s", path, r.code, r.body)
				}
			}

			db.down.Store(false)
			if r := cli.do(http.MethodGet, "/api/targets", nil, bearer); r.code != http.StatusOK {
				t.Errorf("the token after the database is back: %d %s", r.code, r.body)
			}
			if r := issue(); r.code != http.StatusOK {
				t.Errorf("bastionctl login after the database is back: %d %s", r.code, r.body)
			}
		})
	}
}
