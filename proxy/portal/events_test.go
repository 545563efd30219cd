package portal

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"go.uber.org/zap"
	"golang.org/x/crypto/ssh"

	"github.com/bastiond/bastiond/internal/audit"
	"github.com/bastiond/bastiond/proxy/access"
	"github.com/bastiond/bastiond/proxy/auth"
	"github.com/bastiond/bastiond/proxy/authz"
	"github.com/bastiond/bastiond/proxy/broker"
	"github.com/bastiond/bastiond/proxy/rdcleanpath"
	"github.com/bastiond/bastiond/proxy/sshca"
	"github.com/bastiond/bastiond/proxy/ticket"
	"github.com/bastiond/bastiond/proxy/websession"
	"github.com/bastiond/bastiond/proxy/webssh"
)

type capture = audit.Capture

// audited has s send its audit events, and its authenticator's, to a
// capture.
func audited(t *testing.T, s *Portal) *capture {
	t.Helper()
	sink := &capture{}
	setAudit(t, s, sink)
	a, err := auth.NewAuthenticator(auth.AuthenticatorConfig{Store: s.auth.Store(), Logger: zap.NewNop(), Audit: sink})
	if err != nil {
		t.Fatal(err)
	}
	s.auth = a
	return sink
}

// ev is the part of an event a test checks; empty fields are not checked
// but for Event, Actor and Source.
type ev struct {
	event, actor, source, user, target, protocol, reason, via string
	port                                                      uint16
	token, session                                            bool // set
}

func checkEvents(t *testing.T, what string, got []audit.Event, wants ...ev) {
	t.Helper()
	if len(got) != len(wants) {
		t.Fatalf("%s: %d events, want %d: %+v", what, len(got), len(wants), got)
	}
	for i, w := range wants {
		e := got[i]
		ok := e.Event == w.event && e.Actor == w.actor && e.Source == w.source &&
			(w.user == "" || e.User == w.user) && (w.target == "" || e.Target == w.target) &&
			(w.protocol == "" || e.Protocol == w.protocol) && e.Reason == w.reason && (w.via == "" || e.Via == w.via) &&
			(w.port == 0 || e.Port == w.port) && (e.Token != "") == w.token && (!w.session || e.Session != "")
		if !ok {
			b, _ := json.Marshal(e)
			t.Errorf("%s: event %d is %s, want %+v", what, i, b, w)
		}
	}
}

// noSecrets fails if any marshalled event holds one of secrets.
func noSecrets(t *testing.T, es []audit.Event, secrets ...string) {
	t.Helper()
	for _, e := range es {
		line := string(audit.Marshal(e))
		for _, s := range secrets {
			if s != "" && strings.Contains(line, s) {
				t.Errorf("a secret (%.12q...) is in the audit line %s", s, line)
			}
		}
	}
}

func TestPortalAuditEvents(t *testing.T) {
	for _, tc := range []struct{ name, remote, ip string }{
		{"ipv4", "192.0.2.10:50000", "192.0.2.10"},
		{"ipv6", "[2001:db8::10]:50000", "2001:db8::10"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rr := &relayRecorder{}
			srv := newTunedTestServer(t, testConfig{}, tuning{relay: rr.relay})
			sink := audited(t, srv)
			h := srv.routes()
			var all []audit.Event
			take := func() []audit.Event {
				es := sink.Take()
				all = append(all, es...)
				return es
			}
			alice := newBrowser(t, h)
			alice.remote = tc.remote
			csrf := alice.signIn("alice")
			checkEvents(t, "sign in", take(), ev{event: audit.SigninSucceeded, actor: "alice", source: tc.ip, user: "alice", reason: "password"})
			session := alice.cookies[websession.CookieName].Value

			r := alice.post("/connect", url.Values{"csrf": {csrf}, "target": {"vm1"}, "protocol": {"ssh"}})
			tk := strings.TrimPrefix(r.header.Get("Location"), "/connect/")
			checkEvents(t, "ticket", take(), ev{event: audit.TicketIssued, actor: "alice", source: tc.ip, user: "alice",
				target: "vm1", protocol: "ssh", port: 22, via: "portal"})

			alice.post("/connect", url.Values{"csrf": {csrf}, "target": {"vm2"}, "protocol": {"rdp"}})
			checkEvents(t, "no role", take(), ev{event: audit.ConnectRefused, actor: "alice", source: tc.ip, user: "alice",
				target: "vm2", protocol: "rdp", reason: authz.NoRole, via: "portal"})
			alice.postJSON("/api/connect", map[string]string{"target": "nope", "protocol": "ssh"}, map[string]string{"X-CSRF-Token": csrf})
			checkEvents(t, "unknown target", take(), ev{event: audit.ConnectRefused, actor: "alice", source: tc.ip, user: "alice",
				target: "nope", protocol: "ssh", reason: authz.UnknownTarget})

			ws := func(tk, protocol string) reply {
				return alice.do(http.MethodGet, "/ws/"+protocol+"?ticket="+tk, nil, map[string]string{"Origin": alice.origin})
			}
			if r := ws(tk, "ssh"); r.code != http.StatusSwitchingProtocols {
				t.Fatalf("relay: %d", r.code)
			}
			checkEvents(t, "relay", take()) // the broker writes session_start
			ws(tk, "ssh")
			checkEvents(t, "used ticket", take(), ev{event: audit.ConnectRefused, actor: "alice", source: tc.ip, user: "alice",
				protocol: "ssh", reason: "bad_ticket", via: "browser"})
			r = alice.post("/connect", url.Values{"csrf": {csrf}, "target": {"vm1"}, "protocol": {"ssh"}})
			tk2 := strings.TrimPrefix(r.header.Get("Location"), "/connect/")
			take()
			ws(tk2, "tunnel")
			checkEvents(t, "ticket for another protocol", take(), ev{event: audit.ConnectRefused, actor: "alice", source: tc.ip,
				user: "alice", target: "vm1", protocol: "tunnel", reason: "bad_ticket", via: "browser"})

			alice.post("/logout", url.Values{"csrf": {csrf}})
			got := take()
			checkEvents(t, "sign out", got, ev{event: audit.Signout, actor: "alice", source: tc.ip, user: "alice", session: true})
			if got[0].Start == nil || time.Since(*got[0].Start) > time.Minute {
				t.Errorf("signout lacks the sign-in time: %v", got[0].Start)
			}

			// A form without its token is refused before any check.
			stranger := newBrowser(t, h)
			stranger.remote = tc.remote
			stranger.post("/login", url.Values{"user": {"alice"}, "password": {testPassword}})
			checkEvents(t, "form", take(), ev{event: audit.SigninRefused, actor: audit.ActorAnonymous, source: tc.ip, reason: "form"})

			if n := counterValue(t, srv.authz().Metrics(), "bastiond_connect_refusals_total", authz.NoRole); n != 1 {
				t.Errorf("no_role refusals: %v", n)
			}
			if n := counterValue(t, srv.authz().Metrics(), "bastiond_connect_refusals_total", "bad_ticket"); n != 2 {
				t.Errorf("bad_ticket refusals: %v", n)
			}
			noSecrets(t, all, testPassword, tk, tk2, session, csrf)
		})
	}
}

func TestTokenAuditEvents(t *testing.T) {
	for _, tc := range []struct{ name, remote, ip string }{
		{"ipv4", "198.51.100.7:40000", "198.51.100.7"},
		{"ipv6", "[2001:db8:7::7]:40000", "2001:db8:7::7"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newTestServer(t, testConfig{})
			sink := audited(t, s)
			cli := newBrowser(t, s.routes())
			cli.origin, cli.remote = "", tc.remote
			r := cli.postJSON("/api/tokens", TokenRequest{User: "carol", Password: testPassword, TTL: "1h"}, nil)
			var tr TokenResponse
			json.Unmarshal([]byte(r.body), &tr)
			got := sink.Take()
			all := got
			checkEvents(t, "issue", got,
				ev{event: audit.SigninSucceeded, actor: "carol", source: tc.ip, user: "carol", reason: "password"},
				ev{event: audit.TokenIssued, actor: "carol", source: tc.ip, user: "carol", token: true})
			if got[1].Token != tr.ID || got[1].Until == nil || !got[1].Until.Equal(tr.Expires) || !strings.Contains(got[1].Detail, "api") {
				t.Errorf("token_issued %+v, want token %s until %v", got[1], tr.ID, tr.Expires)
			}
			bearer := func(v string) map[string]string { return map[string]string{"Authorization": "Bearer " + v} }
			r = cli.postJSON("/api/connect", ConnectRequest{Target: "vm2", Protocol: "tunnel", Port: 5985}, bearer(tr.Secret))
			if r.code != http.StatusOK {
				t.Fatalf("connect: %d %s", r.code, r.body)
			}
			var cr ConnectResponse
			json.Unmarshal([]byte(r.body), &cr)
			checkEvents(t, "ticket", sink.Take(), ev{event: audit.TicketIssued, actor: "carol", source: tc.ip, user: "carol",
				target: "vm2", protocol: "tunnel", port: 5985, via: "api", token: true})

			forged := tr.Secret[:len(tr.Secret)-4] + "AAAA"
			if forged == tr.Secret {
				forged = tr.Secret[:len(tr.Secret)-4] + "BBBB"
			}
			cli.do(http.MethodGet, "/api/targets", nil, bearer(forged))
			cli.do(http.MethodGet, "/api/targets", nil, bearer("not a token at all"))
			cli.do(http.MethodGet, "/api/targets", nil, map[string]string{"Authorization": "Basic Zm9vOmJhcg=="})
			got = sink.Take()
			all = append(all, got...)
			checkEvents(t, "refused", got,
				ev{event: audit.TokenRefused, actor: audit.ActorAnonymous, source: tc.ip, user: "carol", reason: auth.TokenBadSecret, via: "api", token: true},
				ev{event: audit.TokenRefused, actor: audit.ActorAnonymous, source: tc.ip, reason: auth.TokenMalformed, via: "api"},
				ev{event: audit.TokenRefused, actor: audit.ActorAnonymous, source: tc.ip, reason: auth.TokenMalformed, via: "api"})

			cli.do(http.MethodDelete, "/api/tokens/current", nil, bearer(tr.Secret))
			checkEvents(t, "revoke", sink.Take(), ev{event: audit.TokenRevoked, actor: "carol", source: tc.ip, user: "carol", token: true})
			cli.do(http.MethodGet, "/api/targets", nil, bearer(tr.Secret))
			got = sink.Take()
			all = append(all, got...)
			checkEvents(t, "revoked token", got, ev{event: audit.TokenRefused, actor: audit.ActorAnonymous, source: tc.ip,
				reason: auth.TokenUnknown, via: "api"})
			noSecrets(t, all, testPassword, tr.Secret, forged, strings.SplitN(tr.Secret, "_", 3)[2], cr.Ticket)
		})
	}
}

func TestWebSessionExpiredEvent(t *testing.T) {
	s := newTestServer(t, testConfig{WebSessions: websession.Config{Idle: 300 * time.Millisecond}})
	sink := audited(t, s)
	alice := newBrowser(t, s.routes())
	alice.remote = "[2001:db8::44]:1234"
	alice.signIn("alice")
	sink.Take()
	time.Sleep(400 * time.Millisecond)
	if r := alice.get("/"); !strings.Contains(r.body, `name="password"`) {
		t.Fatalf("an idle session still works:\n%s", r.body)
	}
	got := sink.Take()
	checkEvents(t, "idle", got, ev{event: audit.WebSessionEnded, actor: audit.ActorDaemon, source: audit.SourceLocal,
		user: "alice", reason: websession.EndIdle, session: true})
	if got[0].Client != "2001:db8::44" || got[0].Start == nil {
		t.Errorf("websession_expired client %q start %v", got[0].Client, got[0].Start)
	}

	// A session whose account was disabled ends at its next request.
	bob := newBrowser(t, s.routes())
	bob.remote = "192.0.2.8:1234"
	bob.signIn("bob")
	sink.Take()
	s.auth.Store().SetDisabled("bob", true)
	bob.get("/")
	checkEvents(t, "disabled", sink.Take(), ev{event: audit.WebSessionEnded, actor: audit.ActorDaemon, source: audit.SourceLocal,
		user: "bob", reason: "account_disabled", session: true})
}

// TestBrowserSSHAuditEvents: the refusals of the terminal's logins are
// connect_refused events naming the target, the protocol and the login.
// (The broker's dial guard refuses vm1 on loopback: the login that the
// policy allows is refused there.)
func TestBrowserSSHAuditEvents(t *testing.T) {
	for _, network := range []string{"4", "6"} {
		t.Run("ipv"+network, func(t *testing.T) {
			e := newBrokerEnv(t)
			sink := audited(t, e.s)
			c := *e.s.cfg.Load()
			c.SSH.HostKeys = func(string) (ssh.HostKeyCallback, []string) { return nil, nil }
			e.s.cfg.Store(&c)
			u, err := e.s.auth.Store().User("alice")
			if err != nil {
				t.Fatal(err)
			}
			host := "127.0.0.1"
			if network == "6" {
				host = "::1"
			}
			ln, err := net.Listen("tcp"+network, net.JoinHostPort(host, "0"))
			if err != nil {
				t.Fatal(err)
			}
			srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				e.s.serveSSH(w, r, caller{user: u}, ticket.Ticket{User: "alice", Target: "vm1", Protocol: access.SSH, Port: 22})
			}))
			srv.Listener = ln
			srv.Start()
			t.Cleanup(srv.Close)
			const password = "hunter2 is not a password"
			for _, tc := range []struct {
				login string
				want  ev
			}{
				{"root", ev{event: audit.ConnectRefused, actor: "alice", source: host, user: "alice", target: "vm1",
					protocol: access.SSH, reason: authz.NoRole, via: "browser"}},
				{"deploy", ev{event: audit.ConnectRefused, actor: "alice", source: host, user: "alice", target: "vm1",
					protocol: access.SSH, reason: authz.DialGuard, via: "browser"}},
			} {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				ws, _, err := websocket.Dial(ctx, srv.URL, &websocket.DialOptions{Subprotocols: []string{webssh.Subprotocol}})
				if err != nil {
					cancel()
					t.Fatal(err)
				}
				ws.Read(ctx) // hello
				auth, _ := json.Marshal(map[string]any{"type": "auth", "login": tc.login, "password": password, "cols": 80, "rows": 24})
				ws.Write(ctx, websocket.MessageText, auth)
				_, end, _ := ws.Read(ctx)
				ws.CloseNow()
				cancel()
				got := sink.Take()
				checkEvents(t, tc.login+" ("+string(end)+")", got, tc.want)
				if got[0].Login != tc.login {
					t.Errorf("login %q, want %q", got[0].Login, tc.login)
				}
				noSecrets(t, got, password)
			}
		})
	}
}

// TestBrowserRDPAuditEvents: the refusals of remote desktops are
// connect_refused events naming the target and the protocol.
func TestBrowserRDPAuditEvents(t *testing.T) {
	for _, network := range []string{"4", "6"} {
		t.Run("ipv"+network, func(t *testing.T) {
			e := newBrokerEnv(t)
			sink := audited(t, e.s)
			c := *e.s.cfg.Load()
			c.RDP.Certificate = func(string, string) func(tls.ConnectionState) error { return nil }
			e.s.cfg.Store(&c)
			host := "127.0.0.1"
			if network == "6" {
				host = "::1"
			}
			ln, err := net.Listen("tcp"+network, net.JoinHostPort(host, "0"))
			if err != nil {
				t.Fatal(err)
			}
			var as auth.User
			srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				e.s.serveRDP(w, r, caller{user: as, session: websession.Session{ID: "ws1", User: as.Name}})
			}))
			srv.Listener = ln
			srv.Start()
			t.Cleanup(srv.Close)
			issue := func(user, protocol string) string {
				return e.s.tickets.Issue(ticket.Ticket{Session: "ws1", User: user, Target: "vm2", Protocol: protocol, Port: 3389})
			}
			for _, tc := range []struct {
				name, user, ticket string
				want               ev
			}{
				{"bad ticket", "carol", "forged-ticket-value-123", ev{event: audit.ConnectRefused, actor: "carol", source: host, user: "carol",
					protocol: access.RDP, reason: ticket.ReasonBad, via: "browser"}},
				{"ssh ticket", "carol", issue("carol", access.SSH), ev{event: audit.ConnectRefused, actor: "carol", source: host,
					user: "carol", target: "vm2", protocol: access.RDP, reason: ticket.ReasonBad, via: "browser"}},
				{"no role", "alice", issue("alice", access.RDP), ev{event: audit.ConnectRefused, actor: "alice", source: host,
					user: "alice", target: "vm2", protocol: access.RDP, reason: authz.NoRole, via: "browser"}},
				{"dial guard", "carol", issue("carol", access.RDP), ev{event: audit.ConnectRefused, actor: "carol", source: host,
					user: "carol", target: "vm2", protocol: access.RDP, reason: authz.DialGuard, via: "browser"}},
			} {
				as, err = e.s.auth.Store().User(tc.user)
				if err != nil {
					t.Fatal(err)
				}
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				ws, _, err := websocket.Dial(ctx, srv.URL, nil)
				if err != nil {
					cancel()
					t.Fatal(err)
				}
				conn := websocket.NetConn(ctx, ws, websocket.MessageBinary)
				req, _ := (&rdcleanpath.PDU{Version: rdcleanpath.Version, ProxyAuth: tc.ticket, Destination: "ignored:3389",
					X224ConnectionPDU: rdcleanpath.ConnectionRequestPDU("carol", rdcleanpath.ProtocolSSL)}).Marshal()
				conn.Write(req)
				resp, err := rdcleanpath.Read(conn, 1<<20)
				conn.Close()
				cancel()
				if err != nil || resp.Error == nil {
					t.Fatalf("%s: the gateway answered %+v, %v", tc.name, resp, err)
				}
				got := sink.Take()
				checkEvents(t, tc.name, got, tc.want)
				noSecrets(t, got, tc.ticket)
			}
		})
	}
}

func TestCertSignedEvent(t *testing.T) {
	ca, err := sshca.Open(sshca.Config{Dir: t.TempDir(), ServerName: testName})
	if err != nil {
		t.Fatal(err)
	}
	signer, err := ca.Sign("deploy", "alice (bastiond session 0123456789ab)", 0)
	if err != nil {
		t.Fatal(err)
	}
	cert := signer.PublicKey().(*ssh.Certificate)
	for _, client := range []string{"192.0.2.10:50000", "[2001:db8::10]:50000"} {
		ap := netip.MustParseAddrPort(client)
		e := certSigned("alice", ap, "vm1", "0123456789ab", cert)
		if e.Event != audit.CertSigned || e.Actor != "alice" || e.Source != ap.Addr().String() || e.Session != "0123456789ab" ||
			e.Target != "vm1" || e.Serial != cert.Serial || e.Serial == 0 || e.Principal != "deploy" ||
			e.Fingerprint != ssh.FingerprintSHA256(cert.Key) || e.Until == nil || e.Until.Unix() != int64(cert.ValidBefore) {
			t.Errorf("%s: %+v", client, e)
		}
		t.Log(string(audit.Marshal(e)))
	}
}

// brokerEnv is a test Portal with a broker whose inventory puts vm1 and
// vm2 on loopback, which the dial guard refuses: every refusal of a
// browser session is reachable without root. (Sessions to real machines
// are tested in the lab, test/e2e.)
type brokerEnv struct {
	s *Portal
}

func newBrokerEnv(t *testing.T) *brokerEnv {
	t.Helper()
	loop := netip.MustParseAddr("127.0.0.1")
	b, err := broker.New(broker.Config{Logger: zap.NewNop(), Targets: []broker.Target{
		{Name: "vm1", Addresses: []netip.Addr{loop}, SSH: 22},
		{Name: "vm2", Addresses: []netip.Addr{loop}, RDP: 3389, Tunnel: []uint16{5985}},
	}}, broker.Options{LiveDir: filepath.Join(t.TempDir(), "live"), AuditFile: filepath.Join(t.TempDir(), "audit.jsonl")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close(context.Background()) })
	// bob may tunnel to any port of any machine, as in the tunnel's tests.
	pol := testPolicy(access.Role{Name: "explorer", Subjects: []string{"user:bob"}, Targets: []string{"*"}, Protocols: []string{access.Tunnel}})
	return &brokerEnv{s: newTestServer(t, testConfig{Broker: b, Access: pol})}
}
