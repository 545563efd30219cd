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
	"github.com/bastiond/bastiond/internal/audit/audittest"
	"github.com/bastiond/bastiond/internal/metrictest"
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
			audittest.Check(t, "sign in", take(), audittest.Want{Event: audit.SigninSucceeded, Actor: "alice", Source: tc.ip, User: "alice", Reason: "password"})
			session := alice.cookies[websession.CookieName].Value

			r := alice.post("/connect", url.Values{"csrf": {csrf}, "target": {"vm1"}, "protocol": {"ssh"}})
			tk := strings.TrimPrefix(r.header.Get("Location"), "/connect/")
			audittest.Check(t, "ticket", take(), audittest.Want{Event: audit.TicketIssued, Actor: "alice", Source: tc.ip, User: "alice",
				Target: "vm1", Protocol: "ssh", Port: 22, Via: "portal"})

			alice.post("/connect", url.Values{"csrf": {csrf}, "target": {"vm2"}, "protocol": {"rdp"}})
			audittest.Check(t, "no role", take(), audittest.Want{Event: audit.ConnectRefused, Actor: "alice", Source: tc.ip, User: "alice",
				Target: "vm2", Protocol: "rdp", Reason: authz.NoRole, Via: "portal"})
			alice.postJSON("/api/connect", map[string]string{"target": "nope", "protocol": "ssh"}, map[string]string{"X-CSRF-Token": csrf})
			audittest.Check(t, "unknown target", take(), audittest.Want{Event: audit.ConnectRefused, Actor: "alice", Source: tc.ip, User: "alice",
				Target: "nope", Protocol: "ssh", Reason: authz.UnknownTarget})

			ws := func(tk, protocol string) reply {
				return alice.do(http.MethodGet, "/ws/"+protocol+"?ticket="+tk, nil, map[string]string{"Origin": alice.origin})
			}
			if r := ws(tk, "ssh"); r.code != http.StatusSwitchingProtocols {
				t.Fatalf("relay: %d", r.code)
			}
			audittest.Check(t, "relay", take()) // the broker writes session_start
			ws(tk, "ssh")
			audittest.Check(t, "used ticket", take(), audittest.Want{Event: audit.ConnectRefused, Actor: "alice", Source: tc.ip, User: "alice",
				Protocol: "ssh", Reason: "bad_ticket", Via: "browser"})
			r = alice.post("/connect", url.Values{"csrf": {csrf}, "target": {"vm1"}, "protocol": {"ssh"}})
			tk2 := strings.TrimPrefix(r.header.Get("Location"), "/connect/")
			take()
			ws(tk2, "tunnel")
			audittest.Check(t, "ticket for another protocol", take(), audittest.Want{Event: audit.ConnectRefused, Actor: "alice", Source: tc.ip,
				User: "alice", Target: "vm1", Protocol: "tunnel", Reason: "bad_ticket", Via: "browser"})

			alice.post("/logout", url.Values{"csrf": {csrf}})
			got := take()
			audittest.Check(t, "sign out", got, audittest.Want{Event: audit.Signout, Actor: "alice", Source: tc.ip, User: "alice", Session: true})
			if got[0].Start == nil || time.Since(*got[0].Start) > time.Minute {
				t.Errorf("signout lacks the sign-in time: %v", got[0].Start)
			}

			// A form without its token is refused before any check.
			stranger := newBrowser(t, h)
			stranger.remote = tc.remote
			stranger.post("/login", url.Values{"user": {"alice"}, "password": {testPassword}})
			audittest.Check(t, "form", take(), audittest.Want{Event: audit.SigninRefused, Actor: audit.ActorAnonymous, Source: tc.ip, Reason: "form"})

			if n := metrictest.Value(t, srv.authz().Metrics(), "bastiond_connect_refusals_total", "reason", authz.NoRole); n != 1 {
				t.Errorf("no_role refusals: %v", n)
			}
			if n := metrictest.Value(t, srv.authz().Metrics(), "bastiond_connect_refusals_total", "reason", "bad_ticket"); n != 2 {
				t.Errorf("bad_ticket refusals: %v", n)
			}
			audittest.NoSecrets(t, all, testPassword, tk, tk2, session, csrf)
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
			audittest.Check(t, "issue", got,
				audittest.Want{Event: audit.SigninSucceeded, Actor: "carol", Source: tc.ip, User: "carol", Reason: "password"},
				audittest.Want{Event: audit.TokenIssued, Actor: "carol", Source: tc.ip, User: "carol", Token: true})
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
			audittest.Check(t, "ticket", sink.Take(), audittest.Want{Event: audit.TicketIssued, Actor: "carol", Source: tc.ip, User: "carol",
				Target: "vm2", Protocol: "tunnel", Port: 5985, Via: "api", Token: true})

			forged := tr.Secret[:len(tr.Secret)-4] + "AAAA"
			if forged == tr.Secret {
				forged = tr.Secret[:len(tr.Secret)-4] + "BBBB"
			}
			cli.do(http.MethodGet, "/api/targets", nil, bearer(forged))
			cli.do(http.MethodGet, "/api/targets", nil, bearer("not a token at all"))
			cli.do(http.MethodGet, "/api/targets", nil, map[string]string{"Authorization": "Basic Zm9vOmJhcg=="})
			got = sink.Take()
			all = append(all, got...)
			audittest.Check(t, "refused", got,
				audittest.Want{Event: audit.TokenRefused, Actor: audit.ActorAnonymous, Source: tc.ip, User: "carol", Reason: auth.TokenBadSecret, Via: "api", Token: true},
				audittest.Want{Event: audit.TokenRefused, Actor: audit.ActorAnonymous, Source: tc.ip, Reason: auth.TokenMalformed, Via: "api"},
				audittest.Want{Event: audit.TokenRefused, Actor: audit.ActorAnonymous, Source: tc.ip, Reason: auth.TokenMalformed, Via: "api"})

			cli.do(http.MethodDelete, "/api/tokens/current", nil, bearer(tr.Secret))
			audittest.Check(t, "revoke", sink.Take(), audittest.Want{Event: audit.TokenRevoked, Actor: "carol", Source: tc.ip, User: "carol", Token: true})
			cli.do(http.MethodGet, "/api/targets", nil, bearer(tr.Secret))
			got = sink.Take()
			all = append(all, got...)
			audittest.Check(t, "revoked token", got, audittest.Want{Event: audit.TokenRefused, Actor: audit.ActorAnonymous, Source: tc.ip,
				Reason: auth.TokenUnknown, Via: "api"})
			audittest.NoSecrets(t, all, testPassword, tr.Secret, forged, strings.SplitN(tr.Secret, "_", 3)[2], cr.Ticket)
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
	audittest.Check(t, "idle", got, audittest.Want{Event: audit.WebSessionEnded, Actor: audit.ActorDaemon, Source: audit.SourceLocal,
		User: "alice", Reason: websession.EndIdle, Session: true})
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
	audittest.Check(t, "disabled", sink.Take(), audittest.Want{Event: audit.WebSessionEnded, Actor: audit.ActorDaemon, Source: audit.SourceLocal,
		User: "bob", Reason: "account_disabled", Session: true})
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
				want  audittest.Want
			}{
				{"root", audittest.Want{Event: audit.ConnectRefused, Actor: "alice", Source: host, User: "alice", Target: "vm1",
					Protocol: access.SSH, Reason: authz.NoRole, Via: "browser"}},
				{"deploy", audittest.Want{Event: audit.ConnectRefused, Actor: "alice", Source: host, User: "alice", Target: "vm1",
					Protocol: access.SSH, Reason: authz.DialGuard, Via: "browser"}},
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
				audittest.Check(t, tc.login+" ("+string(end)+")", got, tc.want)
				if got[0].Login != tc.login {
					t.Errorf("login %q, want %q", got[0].Login, tc.login)
				}
				audittest.NoSecrets(t, got, password)
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
				v, err := e.s.tickets.Issue(ticket.Ticket{Session: "ws1", User: user, Target: "vm2", Protocol: protocol, Port: 3389})
				if err != nil {
					t.Fatal(err)
				}
				return v
			}
			for _, tc := range []struct {
				name, user, ticket string
				want               audittest.Want
			}{
				{"bad ticket", "carol", "forged-ticket-value-123", audittest.Want{Event: audit.ConnectRefused, Actor: "carol", Source: host, User: "carol",
					Protocol: access.RDP, Reason: ticket.ReasonBad, Via: "browser"}},
				{"ssh ticket", "carol", issue("carol", access.SSH), audittest.Want{Event: audit.ConnectRefused, Actor: "carol", Source: host,
					User: "carol", Target: "vm2", Protocol: access.RDP, Reason: ticket.ReasonBad, Via: "browser"}},
				{"no role", "alice", issue("alice", access.RDP), audittest.Want{Event: audit.ConnectRefused, Actor: "alice", Source: host,
					User: "alice", Target: "vm2", Protocol: access.RDP, Reason: authz.NoRole, Via: "browser"}},
				{"dial guard", "carol", issue("carol", access.RDP), audittest.Want{Event: audit.ConnectRefused, Actor: "carol", Source: host,
					User: "carol", Target: "vm2", Protocol: access.RDP, Reason: authz.DialGuard, Via: "browser"}},
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
				audittest.Check(t, tc.name, got, tc.want)
				audittest.NoSecrets(t, got, tc.ticket)
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
