package portal

import (
	"net/http"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/bastiond/bastiond/internal/audit"
	"github.com/bastiond/bastiond/proxy/access"
	"github.com/bastiond/bastiond/proxy/auth/authtest"
	"github.com/bastiond/bastiond/proxy/authz"
	"github.com/bastiond/bastiond/proxy/broker"
	"github.com/bastiond/bastiond/proxy/ticket"
	"github.com/bastiond/bastiond/proxy/websession"
)

const testName = "bastion.test.example"

const testPassword = "correct horse battery"

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

// testConfig is what a test sets of a portal and of its authorizer; its
// zero value is the defaults, with testPolicy.
type testConfig struct {
	Access           *access.Policy
	Audit            audit.Sink
	HandshakeTimeout time.Duration
	WebSessions      websession.Config
	SSH              SSHConfig
	RDP              RDPConfig
	Broker           *broker.Broker
}

// tuning is what a test changes of the portal to see a check from the
// other side.
type tuning struct {
	// relay, if set, takes the place of the browser SSH relay: the tests
	// of the ticket checks see there which tickets got through.
	relay func(http.ResponseWriter, *http.Request, ticket.Ticket)
}

// newTestServer returns a Portal for testName with testPolicy (unless cfg
// names another) and a fresh account store holding alice, bob and carol,
// all with password testPassword.
func newTestServer(t testing.TB, cfg testConfig) *Portal {
	t.Helper()
	return newTunedTestServer(t, cfg, tuning{})
}

// newTunedTestServer is newTestServer with the tuning tn.
func newTunedTestServer(t testing.TB, cfg testConfig, tn tuning) *Portal {
	t.Helper()
	log := zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel))
	if cfg.Access == nil {
		cfg.Access = testPolicy()
	}
	a := authtest.Authenticator(t, log, testPassword, "alice", "bob", "carol")
	az, err := authz.New(authz.Config{Logger: log, Access: cfg.Access, Audit: cfg.Audit})
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(Config{Logger: log, Audit: cfg.Audit, ServerName: testName, HandshakeTimeout: cfg.HandshakeTimeout, Authz: az,
		WebSessions: cfg.WebSessions, SSH: cfg.SSH, RDP: cfg.RDP, Broker: cfg.Broker}, a)
	if err != nil {
		t.Fatal(err)
	}
	if tn.relay != nil {
		s.relaySSH = func(w http.ResponseWriter, r *http.Request, _ caller, t ticket.Ticket) { tn.relay(w, r, t) }
	}
	return s
}

func newTestServerF(f *testing.F) *Portal { return newTestServer(f, testConfig{}) }

// setAudit has s and its authorizer send their audit events to sink.
func setAudit(t *testing.T, s *Portal, sink audit.Sink) {
	t.Helper()
	c := *s.cfg.Load()
	c.Audit = sink
	if err := c.Authz.SetConfig(authz.Config{Logger: c.Logger, Access: c.Authz.Policy(), Audit: sink}); err != nil {
		t.Fatal(err)
	}
	if err := s.SetConfig(c); err != nil {
		t.Fatal(err)
	}
}
