package proxy

import (
	"context"
	"net"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/bastiond/bastiond/proxy/access"
	"github.com/bastiond/bastiond/proxy/auth"
	"github.com/bastiond/bastiond/proxy/auth/authtest"
	"github.com/bastiond/bastiond/proxy/certs"
)

// testPolicy: alice (group ops) may SSH to vm1 as deploy; carol may RDP to
// vm2; bob is in no role, unless extra gives him one.
func testPolicy(extra ...access.Role) *access.Policy {
	return access.New(testName, []access.Target{
		{Name: "vm1", Description: "Debian", Tags: []string{"linux"}, SSH: 22},
		{Name: "vm2", Tags: []string{"windows"}, RDP: 3389, Tunnel: []uint16{5985}},
	}, map[string][]string{"ops": {"alice"}}, append([]access.Role{
		{Name: "ops", Subjects: []string{"group:ops"}, Targets: []string{"tag:linux"}, Protocols: []string{access.SSH}, Logins: []string{"deploy"}},
		{Name: "win", Subjects: []string{"user:carol"}, Targets: []string{"vm2"}, Protocols: []string{access.RDP, "tunnel:5985"}},
	}, extra...))
}

// newTestServer returns a Server for testName with a self-signed
// certificate, testPolicy and a fresh account store holding alice, bob and
// carol, all with password testPassword.
func newTestServer(t testing.TB, cfg Config) *Server {
	t.Helper()
	return newTunedTestServer(t, cfg, tuning{})
}

// newTunedTestServer is newTestServer with the tuning tn.
func newTunedTestServer(t testing.TB, cfg Config, tn tuning) *Server {
	t.Helper()
	return newAuthTestServer(t, cfg, tn, nil)
}

// newAuthTestServer is newTunedTestServer signing in with a, or with
// alice, bob and carol in a store of their own when a is nil.
func newAuthTestServer(t testing.TB, cfg Config, tn tuning, a *auth.Authenticator) *Server {
	t.Helper()
	store := &certs.Store{}
	if err := store.Load(certs.Config{SelfSigned: true, ServerName: testName, Dir: t.TempDir()}); err != nil {
		t.Fatal(err)
	}
	cfg.Logger, cfg.ServerName, cfg.Certs = zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel)), testName, store
	if cfg.Access == nil {
		cfg.Access = testPolicy()
	}
	if a == nil {
		a = authtest.Authenticator(t, cfg.Logger, testPassword, "alice", "bob", "carol")
	}
	s, err := newServer(cfg, a, tn)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

const testPassword = "correct horse battery"

func newTestServerF(f *testing.F) *Server { return newTestServer(f, Config{}) }

// serve runs s on the listeners until the test ends, then shuts it down
// and checks that Serve returned cleanly.
func serve(t *testing.T, s *Server, tcp []net.Listener, udp []net.PacketConn) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- s.Serve(tcp, udp) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		s.Shutdown(ctx)
		s.Close()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
}

// TestImportSessions: what ExportSessions gives, ImportSessions of a new
// server takes; a future version of it is refused. (The portal's tests
// check that a browser signed in stays signed in.)
func TestImportSessions(t *testing.T) {
	old, s := newTestServer(t, Config{}), newTestServer(t, Config{})
	b, err := old.ExportSessions()
	if err != nil {
		t.Fatal(err)
	}
	if err := s.ImportSessions(b); err != nil {
		t.Fatal(err)
	}
	if err := s.ImportSessions([]byte(`{"version":2}`)); err == nil {
		t.Error("a future version imported")
	}
}
