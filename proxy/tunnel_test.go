package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"go.etcd.io/bbolt"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/bastiond/bastiond/api/tunnelwire"
	"github.com/bastiond/bastiond/internal/audit"
	"github.com/bastiond/bastiond/internal/statedb"
	"github.com/bastiond/bastiond/internal/store"
	"github.com/bastiond/bastiond/proxy/access"
	"github.com/bastiond/bastiond/proxy/auth"
	"github.com/bastiond/bastiond/proxy/auth/authtest"
	"github.com/bastiond/bastiond/proxy/broker"
	"github.com/bastiond/bastiond/proxy/gate/gatetest"
	"github.com/bastiond/bastiond/tunnel"
)

// tunnelEnv is a test Server with a broker whose inventory puts vm1 and
// vm2 on loopback, which the dial guard refuses: every refusal the tunnel
// can answer is reachable without root. (Successful tunnels to real
// machines are tested in the lab, test/e2e.)
type tunnelEnv struct {
	s      *Server
	tcp    string // host:port of TLS
	udp    string // host:port of QUIC
	tokens map[string]string
}

func newTunnelEnv(t *testing.T, network string) *tunnelEnv {
	t.Helper()
	return newTunnelEnvAuth(t, network, nil)
}

// newTunnelEnvAuth is newTunnelEnv whose server signs in with a (see
// newAuthTestServer).
func newTunnelEnvAuth(t *testing.T, network string, a *auth.Authenticator) *tunnelEnv {
	t.Helper()
	return newTunnelEnvPolicy(t, network, a, tunnelPolicy())
}

// newTunnelEnvPolicy is newTunnelEnvAuth with the access policy p. Its
// broker has a network lab of the loopback addresses, SSH only.
func newTunnelEnvPolicy(t *testing.T, network string, a *auth.Authenticator, p *access.Policy) *tunnelEnv {
	t.Helper()
	db, err := bbolt.Open(filepath.Join(t.TempDir(), "broker.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	loop := netip.MustParseAddr("127.0.0.1")
	b, err := broker.New(broker.Config{Logger: zap.NewNop(), Targets: []broker.Target{
		{Name: "vm1", Addresses: []netip.Addr{loop}, SSH: 22},
		{Name: "vm2", Addresses: []netip.Addr{loop}, RDP: 3389, Tunnel: []uint16{5985}},
	}, Networks: []broker.Network{{Name: "lab", Prefixes: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}, SSH: 22}},
	}, broker.Options{LiveDir: filepath.Join(t.TempDir(), "live"), AuditFile: filepath.Join(t.TempDir(), "audit.jsonl")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		b.Close(context.Background())
		db.Close()
	})
	s := newAuthTestServer(t, Config{Broker: b, Access: p}, tuning{}, a)
	host := "127.0.0.1"
	if network == "6" {
		host = "::1"
	}
	ln, err := net.Listen("tcp"+network, net.JoinHostPort(host, "0"))
	if err != nil {
		t.Fatal(err)
	}
	pc, err := net.ListenPacket("udp"+network, net.JoinHostPort(host, "0"))
	if err != nil {
		t.Fatal(err)
	}
	serve(t, s, []net.Listener{ln}, []net.PacketConn{pc})
	e := &tunnelEnv{s: s, tcp: ln.Addr().String(), udp: pc.LocalAddr().String(), tokens: map[string]string{}}
	for _, u := range []string{"alice", "bob", "carol"} {
		secret, _, err := s.auth.Store().IssueToken(u, []string{auth.ScopeTunnel, auth.ScopeAPI}, time.Hour, "test", "")
		if err != nil {
			t.Fatal(err)
		}
		e.tokens[u] = secret
	}
	apiOnly, _, err := s.auth.Store().IssueToken("carol", []string{auth.ScopeAPI}, time.Hour, "test", "")
	if err != nil {
		t.Fatal(err)
	}
	e.tokens["api-only"] = apiOnly
	return e
}

// tunnelPolicy is testPolicy with one more role: bob may tunnel to any
// port of any machine, so his roles cover every target and port, even
// those the inventory lacks.
func tunnelPolicy() *access.Policy {
	return testPolicy(access.Role{Name: "explorer", Subjects: []string{"user:bob"}, Targets: []string{"*"}, Protocols: []string{access.Tunnel}})
}

func (e *tunnelEnv) client(t *testing.T, token, transport string) *tunnel.Client {
	t.Helper()
	addr := e.udp
	if transport == "tcp" {
		addr = e.tcp
	}
	c, err := tunnel.NewClient(tunnel.ClientConfig{Server: testName, Address: addr, TLS: &tls.Config{InsecureSkipVerify: true},
		Token: token, Transport: transport})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestTunnelRefusals(t *testing.T) {
	for _, network := range []string{"4", "6"} {
		e := newTunnelEnv(t, network)
		for _, transport := range []string{"quic", "tcp"} {
			t.Run("ipv"+network+"/"+transport, func(t *testing.T) {
				cases := []struct {
					name, token, target string
					port                uint16
					status              tunnelwire.Status
					msg                 string
				}{
					{"forged token", "bst_0123456789abcdef_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "vm2", 5985, tunnelwire.StatusUnauthorized, "bastionctl login"},
					{"token without the tunnel scope", e.tokens["api-only"], "vm2", 5985, tunnelwire.StatusUnauthorized, "tunnel scope"},
					// Whoever the roles do not cover gets the same answer
					// for a machine that does not exist, a port it does not
					// offer and one it offers: nothing to tell them apart.
					{"unknown target, not covered", e.tokens["carol"], "vm9", 22, tunnelwire.StatusDenied, "carol may not open tunnels to vm9 port 22"},
					{"an address, not covered", e.tokens["carol"], "127.0.0.1", 22, tunnelwire.StatusDenied, "carol may not open tunnels to 127.0.0.1 port 22"},
					{"port not offered, not covered", e.tokens["carol"], "vm2", 8080, tunnelwire.StatusDenied, "carol may not open tunnels to vm2 port 8080"},
					{"no role", e.tokens["alice"], "vm2", 5985, tunnelwire.StatusDenied, "alice may not open tunnels to vm2 port 5985"},
					{"role without that port", e.tokens["carol"], "vm2", 3389, tunnelwire.StatusDenied, "carol may not open tunnels to vm2 port 3389"},
					// A user whose roles cover the target and port may learn
					// what is missing.
					{"unknown target, covered", e.tokens["bob"], "vm9", 22, tunnelwire.StatusUnknownTarget, `no machine called "vm9"`},
					{"an address, covered", e.tokens["bob"], "127.0.0.1", 22, tunnelwire.StatusUnknownTarget, "no machine called"},
					{"port not offered, covered", e.tokens["bob"], "vm2", 8080, tunnelwire.StatusUnknownTarget, "does not offer port 8080"},
					{"the dial guard refuses loopback", e.tokens["carol"], "vm2", 5985, tunnelwire.StatusUnreachable, "dial guard"},
				}
				for _, c := range cases {
					cl := e.client(t, c.token, transport)
					ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
					_, err := cl.Dial(ctx, c.target, c.port)
					cancel()
					var te *tunnelwire.Error
					if !errors.As(err, &te) || te.Status != c.status || !strings.Contains(err.Error(), c.msg) {
						t.Errorf("%s: got %v, want %v mentioning %q", c.name, err, c.status, c.msg)
					}
				}
			})
		}
	}
}

// TestTunnelNoEnumeration: a user whose roles do not cover a request gets
// one answer, byte for byte the same but for the names asked for, whether
// the machine exists and offers the port (not allowed), exists and does
// not offer it, or does not exist: the refusals tell nothing of the
// inventory.
func TestTunnelNoEnumeration(t *testing.T) {
	for _, network := range []string{"4", "6"} {
		e := newTunnelEnv(t, network)
		for _, transport := range []string{"quic", "tcp"} {
			for _, user := range []string{"alice", "carol"} {
				t.Run("ipv"+network+"/"+transport+"/"+user, func(t *testing.T) {
					cl := e.client(t, e.tokens[user], transport)
					for _, c := range []struct {
						name, target string
						port         uint16
					}{
						{"unknown target", "vm9", 3389},
						{"port not offered", "vm2", 3390},
						{"offered, not allowed", "vm1", 22},
						{"offered, not allowed, other port", "vm2", 3389},
					} {
						ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
						_, err := cl.Dial(ctx, c.target, c.port)
						cancel()
						want := fmt.Sprintf("bastion refused the tunnel to %s:%d: %s may not open tunnels to %s port %d", c.target, c.port, user, c.target, c.port)
						var te *tunnelwire.Error
						if !errors.As(err, &te) || te.Status != tunnelwire.StatusDenied || err.Error() != want {
							t.Errorf("%s: got %v, want %v %q", c.name, err, tunnelwire.StatusDenied, want)
						}
					}
				})
			}
		}
	}
}

// TestTunnelWebSocketRefusesBrowsers: a page cannot open a tunnel, even
// from our own origin.
func TestTunnelWebSocketRefusesBrowsers(t *testing.T) {
	e := newTunnelEnv(t, "4")
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{ServerName: testName, InsecureSkipVerify: true},
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, e.tcp)
		}}}
	req, _ := http.NewRequest(http.MethodGet, "https://"+testName+tunnelwire.WebSocketPath, nil)
	req.Header.Set("Origin", "https://"+testName)
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", "websocket")
	req.Header.Set("Sec-WebSocket-Version", "13")
	req.Header.Set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("upgrade with an Origin: %s, want 403", resp.Status)
	}
}

// TestTunnelBadHeader: a stream that does not speak the protocol gets a
// clear answer and counts as a failed handshake.
func TestTunnelBadHeader(t *testing.T) {
	e := newTunnelEnv(t, "4")
	conn, err := quicDialForTest(t, e.udp)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name   string
		data   []byte
		status tunnelwire.Status
	}{
		{"HTTP", []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), tunnelwire.StatusBadRequest},
		{"future version", []byte("BTUN\x09\x00\x00"), tunnelwire.StatusUnsupportedVersion},
	} {
		str, err := conn.OpenStreamSync(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		str.Write(c.data)
		str.SetReadDeadline(time.Now().Add(5 * time.Second))
		resp, err := tunnelwire.ReadResponse(str)
		if err != nil || resp.Status != c.status {
			t.Errorf("%s: %v %v, want %v", c.name, resp, err, c.status)
		}
	}
}

func quicDialForTest(t *testing.T, addr string) (*quic.Conn, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, err := quic.DialAddr(ctx, addr, gatetest.TunnelTLS(testName), &quic.Config{Versions: []quic.Version{quic.Version1}})
	if err == nil {
		t.Cleanup(func() { conn.CloseWithError(0, "") })
	}
	return conn, err
}

// TestTunnelRecordedRoleRefused: invariant 11. A user whose rights to a
// tunnel come with a role that records (a reload or a grant combined
// them; the configuration check refuses it) is refused, told why, and
// the refusal is a connect_refused event; nothing is dialled.
func TestTunnelRecordedRoleRefused(t *testing.T) {
	for _, network := range []string{"4", "6"} {
		e := newTunnelEnv(t, network)
		var mu sync.Mutex
		var events []audit.Event
		cfg := *e.s.cfg.Load()
		cfg.Access = testPolicy(access.Role{Name: "watched", Subjects: []string{"user:alice"}, Targets: []string{"vm2"},
			Protocols: []string{"tunnel:5985"}, Record: true})
		cfg.Audit = audit.SinkFunc(func(ev audit.Event) { mu.Lock(); events = append(events, ev); mu.Unlock() })
		if err := e.s.SetConfig(cfg); err != nil {
			t.Fatal(err)
		}
		for _, transport := range []string{"quic", "tcp"} {
			t.Run("ipv"+network+"/"+transport, func(t *testing.T) {
				cl := e.client(t, e.tokens["alice"], transport)
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				_, err := cl.Dial(ctx, "vm2", 5985)
				var te *tunnelwire.Error
				if !errors.As(err, &te) || te.Status != tunnelwire.StatusDenied ||
					!strings.Contains(err.Error(), "must be recorded") || !strings.Contains(err.Error(), "end-to-end encrypted") {
					t.Fatalf("got %v", err)
				}
				mu.Lock()
				defer mu.Unlock()
				last := events[len(events)-1]
				if last.Event != audit.ConnectRefused || last.Reason != "recording_unavailable" || last.Actor != "alice" ||
					last.Target != "vm2" || last.Port != 5985 || netip.MustParseAddr(last.Source).Is6() != (network == "6") {
					t.Errorf("event %+v", last)
				}
				t.Logf("example line: %s", audit.Marshal(last))
			})
		}
		// carol's role allows the same tunnel without recording: her
		// refusal is the dial guard's (loopback), not the recording's.
		cl := e.client(t, e.tokens["carol"], "tcp")
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err := cl.Dial(ctx, "vm2", 5985)
		cancel()
		if err == nil || strings.Contains(err.Error(), "recorded") {
			t.Errorf("carol: %v", err)
		}
	}
}

// TestTunnelFilesDisabledRefused: invariant 18. alice may open vm2's
// desktop in the browser without files, and tunnels to vm2's RDP port: the
// tunnel would carry files end to end (a desktop's drives, its clipboard),
// so it is refused, told why, and audited; her tunnel to another port of
// the same machine is not refused for it.
func TestTunnelFilesDisabledRefused(t *testing.T) {
	for _, network := range []string{"4", "6"} {
		e := newTunnelEnv(t, network)
		var mu sync.Mutex
		var events []audit.Event
		cfg := *e.s.cfg.Load()
		cfg.Access = testPolicy(
			access.Role{Name: "desk-no-files", Subjects: []string{"user:alice"}, Targets: []string{"vm2"}, Protocols: []string{access.RDP}, DisableFileTransfer: true},
			access.Role{Name: "tunnels", Subjects: []string{"user:alice"}, Targets: []string{"vm2"}, Protocols: []string{access.Tunnel}})
		cfg.Audit = audit.SinkFunc(func(ev audit.Event) { mu.Lock(); events = append(events, ev); mu.Unlock() })
		if err := e.s.SetConfig(cfg); err != nil {
			t.Fatal(err)
		}
		for _, transport := range []string{"quic", "tcp"} {
			t.Run("ipv"+network+"/"+transport, func(t *testing.T) {
				cl := e.client(t, e.tokens["alice"], transport)
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				_, err := cl.Dial(ctx, "vm2", 3389)
				var te *tunnelwire.Error
				if !errors.As(err, &te) || te.Status != tunnelwire.StatusDenied || !strings.Contains(err.Error(), "disable_file_transfer") {
					t.Fatalf("got %v", err)
				}
				mu.Lock()
				last := events[len(events)-1]
				mu.Unlock()
				if last.Event != audit.ConnectRefused || last.Reason != "file_transfer_disabled" || last.Actor != "alice" ||
					last.Target != "vm2" || last.Port != 3389 || !strings.Contains(last.Detail, "desk-no-files") {
					t.Errorf("event %+v", last)
				}
				// Port 5985 carries no RDP: its refusal is the dial guard's
				// (the test's vm2 is loopback), not the files'.
				_, err = cl.Dial(ctx, "vm2", 5985)
				if err == nil || strings.Contains(err.Error(), "disable_file_transfer") {
					t.Errorf("tunnel to 5985: %v", err)
				}
			})
		}
	}
}

// downDB is a state store that a test takes down and brings back.
type downDB struct {
	store.DB
	down atomic.Bool
}

func (d *downDB) View(fn func(store.Tx) error) error {
	if d.down.Load() {
		return fmt.Errorf("%w: connection refused", store.ErrUnavailable)
	}
	return d.DB.View(fn)
}

func (d *downDB) Update(fn func(store.Tx) error) error {
	if d.down.Load() {
		return fmt.Errorf("%w: connection refused", store.ErrUnavailable)
	}
	return d.DB.Update(fn)
}

// TestTunnelDatabaseDown: while a cluster's database is down, a tunnel is
// refused as unavailable with a message that says so, over QUIC and TCP,
// IPv4 and IPv6, and not as a bad token (which would tell the user to sign
// in again and count the client as a guesser); once the database is back,
// the same token is accepted (here, up to the dial guard's refusal).
func TestTunnelDatabaseDown(t *testing.T) {
	for _, network := range []string{"4", "6"} {
		h, err := statedb.Open(filepath.Join(t.TempDir(), "state.db"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { h.Close() })
		db := &downDB{DB: h}
		// The server's accounts and tokens are in db.
		log := zaptest.NewLogger(t, zaptest.Level(zap.ErrorLevel))
		e := newTunnelEnvAuth(t, network, authtest.Shared(t, db, log, testPassword, "alice", "bob", "carol"))
		token, _, err := e.s.auth.Store().IssueToken("carol", []string{auth.ScopeTunnel}, time.Hour, "test", "")
		if err != nil {
			t.Fatal(err)
		}
		for _, transport := range []string{"quic", "tcp"} {
			t.Run("ipv"+network+"/"+transport, func(t *testing.T) {
				dial := func() error {
					ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
					defer cancel()
					_, err := e.client(t, token, transport).Dial(ctx, "vm2", 5985)
					return err
				}
				db.down.Store(true)
				var te *tunnelwire.Error
				if err := dial(); !errors.As(err, &te) || te.Status != tunnelwire.StatusUnavailable || !strings.Contains(err.Error(), "cannot reach its database") {
					t.Errorf("with the database down: %v, want unavailable, saying why", err)
				}
				db.down.Store(false)
				if err := dial(); !errors.As(err, &te) || te.Status != tunnelwire.StatusUnreachable {
					t.Errorf("with the database back: %v, want the dial guard's refusal", err)
				}
			})
		}
	}
}
