package authz

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap/zaptest"

	"github.com/bastiond/bastiond/internal/audit"
	"github.com/bastiond/bastiond/proxy/access"
	"github.com/bastiond/bastiond/proxy/auth"
	"github.com/bastiond/bastiond/proxy/broker"
	"github.com/bastiond/bastiond/proxy/ticket"
)

// testPolicy: alice (group ops) may SSH to vm1 as deploy; carol may tunnel
// to vm2's 5985; bob may tunnel anywhere, to machines the inventory lacks
// too.
func testPolicy() *access.Policy {
	return access.New("bastion.test.example", []access.Target{
		{Name: "vm1", Tags: []string{"linux"}, SSH: 22},
		{Name: "vm2", RDP: 3389, Tunnel: []uint16{5985}},
	}, map[string][]string{"ops": {"alice"}}, []access.Role{
		{Name: "ops", Subjects: []string{"group:ops"}, Targets: []string{"tag:linux"}, Protocols: []string{access.SSH}, Logins: []string{"deploy"}},
		{Name: "win", Subjects: []string{"user:carol"}, Targets: []string{"vm2"}, Protocols: []string{"tunnel:5985"}},
		{Name: "explorer", Subjects: []string{"user:bob"}, Targets: []string{"*"}, Protocols: []string{access.Tunnel}},
		{Name: "audit", Subjects: []string{"user:dave"}, Auditor: true},
	})
}

func newTest(t *testing.T) (*Authorizer, *audit.Capture) {
	t.Helper()
	sink := &audit.Capture{}
	a, err := New(Config{Logger: zaptest.NewLogger(t), Access: testPolicy(), Audit: sink})
	if err != nil {
		t.Fatal(err)
	}
	return a, sink
}

// count is bastiond_connect_refusals_total{reason}.
func count(a *Authorizer, reason string) float64 {
	return testutil.ToFloat64(a.refusals.WithLabelValues(reason))
}

func TestCheck(t *testing.T) {
	for _, fam := range []struct{ name, client, source string }{
		{"ipv4", "192.0.2.10:50000", "192.0.2.10"},
		{"ipv6", "[2001:db8::10]:50000", "2001:db8::10"},
		{"ipv4 in ipv6", "[::ffff:192.0.2.10]:50000", "192.0.2.10"},
	} {
		t.Run(fam.name, func(t *testing.T) {
			client := netip.MustParseAddrPort(fam.client)
			for _, tc := range []struct {
				name   string
				who    Who
				what   What
				reason string // "" for allowed
			}{
				{"allowed", Who{User: "alice", Via: "portal"}, What{Target: "vm1", Protocol: access.SSH}, ""},
				{"allowed login", Who{User: "alice", Via: "browser", Client: client}, What{Target: "vm1", Protocol: access.SSH, Login: "deploy"}, ""},
				{"allowed tunnel", Who{User: "carol", Via: "quic", Client: client, Token: "tok1"}, What{Target: "vm2", Protocol: access.Tunnel, Port: 5985}, ""},
				{"no role", Who{User: "carol", Via: "portal"}, What{Target: "vm1", Protocol: access.SSH}, NoRole},
				{"login not allowed", Who{User: "alice", Via: "browser", Client: client}, What{Target: "vm1", Protocol: access.SSH, Login: "root"}, NoRole},
				{"tunnel port of no role", Who{User: "carol", Via: "websocket", Client: client, Token: "tok1"}, What{Target: "vm2", Protocol: access.Tunnel, Port: 3389}, NoRole},
				{"unknown target", Who{User: "bob", Via: "quic", Client: client, Token: "tok2"}, What{Target: "vm9", Protocol: access.Tunnel, Port: 22}, UnknownTarget},
				{"port not offered", Who{User: "bob", Via: "quic", Client: client, Token: "tok2"}, What{Target: "vm2", Protocol: access.Tunnel, Port: 8080}, UnknownTarget},
				{"protocol not offered", Who{User: "alice", Via: "api", Token: "tok3"}, What{Target: "vm2", Protocol: access.SSH}, UnknownTarget},
				{"unknown target without a role", Who{User: "alice", Via: "portal"}, What{Target: "vm9", Protocol: access.SSH}, UnknownTarget},
			} {
				t.Run(tc.name, func(t *testing.T) {
					a, sink := newTest(t)
					tc.who.Granted, tc.who.Source = nil, client.Addr()
					d := a.Check(tc.who, tc.what)
					got := sink.Take()
					if tc.reason == "" {
						if !d.Allowed || len(got) != 0 || count(a, NoRole)+count(a, UnknownTarget) != 0 {
							t.Fatalf("allowed request: %+v, events %+v", d, got)
						}
						return
					}
					if d.Allowed || d.Reason == "" {
						t.Fatalf("refused request answered %+v", d)
					}
					want := audit.Event{Event: audit.ConnectRefused, Actor: tc.who.User, Source: fam.source, User: tc.who.User,
						Target: tc.what.Target, Protocol: tc.what.Protocol, Port: tc.what.Port, Login: tc.what.Login, Via: tc.who.Via,
						Token: tc.who.Token, Reason: tc.reason, Detail: d.Reason}
					if tc.who.Client.IsValid() {
						want.Client = fam.client
						if fam.name == "ipv4 in ipv6" {
							want.Client = client.String()
						}
					}
					if len(got) == 1 {
						stamp := time.Unix(1700000000, 0) // Marshal stamps an event without a time
						got[0].Time, want.Time = stamp, stamp
					}
					if len(got) != 1 || string(audit.Marshal(got[0])) != string(audit.Marshal(want)) {
						t.Fatalf("events %+v, want %+v", got, want)
					}
					if n := count(a, tc.reason); n != 1 {
						t.Errorf("%s refusals counted: %v", tc.reason, n)
					}
					if d2 := a.Decide(tc.who, tc.what); d2.Allowed || len(sink.Take()) != 0 || count(a, tc.reason) != 1 {
						t.Errorf("Decide recorded a refusal")
					}
				})
			}
		})
	}
}

// TestReload: a new policy applies to the next request; the counts go on.
func TestReload(t *testing.T) {
	a, sink := newTest(t)
	who, what := Who{User: "alice", Source: netip.MustParseAddr("2001:db8::1"), Via: "browser"}, What{Target: "vm1", Protocol: access.SSH}
	a.Check(Who{User: "carol"}, what)
	if !a.Check(who, what).Allowed {
		t.Fatal("alice refused before the reload")
	}
	if err := a.SetConfig(Config{Access: access.New("bastion.test.example", []access.Target{{Name: "vm1", SSH: 22}}, nil, nil), Audit: sink}); err != nil {
		t.Fatal(err)
	}
	if a.Check(who, what).Allowed {
		t.Fatal("alice allowed after her role was removed")
	}
	if n := count(a, NoRole); n != 2 {
		t.Errorf("no_role refusals: %v", n)
	}
	if err := a.SetConfig(Config{}); err == nil {
		t.Error("a config without a policy taken")
	}
}

func TestRefuse(t *testing.T) {
	a, sink := newTest(t)
	client := netip.MustParseAddrPort("[2001:db8::7]:4000")
	who := Who{User: "alice", Source: client.Addr(), Client: client, Via: "browser"}
	a.Refuse(who, What{Target: "vm1", Protocol: access.SSH, Login: "deploy"}, Refusal{Reason: HostKey, Detail: "changed", Session: "s1"})
	a.Refuse(who, What{Target: "vm2", Protocol: access.Tunnel, Port: 5985}, Refusal{Reason: DialGuard, Detail: "loopback", Roles: []string{"win"}})
	got := sink.Take()
	want := []string{
		`"event":"connect_refused","actor":"alice","source":"2001:db8::7"`,
		`"event":"connect_refused","actor":"alice","source":"2001:db8::7"`,
	}
	if len(got) != 2 {
		t.Fatalf("events %+v", got)
	}
	for i, e := range got {
		line := string(audit.Marshal(e))
		if !strings.Contains(line, want[i]) {
			t.Errorf("event %d: %s", i, line)
		}
	}
	if got[0].Session != "s1" || got[0].Login != "deploy" || got[0].Client != client.String() || got[0].Reason != HostKey {
		t.Errorf("host key refusal %+v", got[0])
	}
	if got[1].Port != 5985 || len(got[1].Roles) != 1 || got[1].Reason != DialGuard {
		t.Errorf("dial guard refusal %+v", got[1])
	}
	if count(a, HostKey) != 1 || count(a, DialGuard) != 1 {
		t.Error("refusals not counted")
	}
}

func TestAuditor(t *testing.T) {
	a, _ := newTest(t)
	if !a.Auditor(Who{User: "dave"}) || a.Auditor(Who{User: "alice"}) {
		t.Error("auditors wrong")
	}
}

// TestMetrics: every reason is a series from the start, at zero.
func TestMetrics(t *testing.T) {
	a, _ := newTest(t)
	reg := prometheus.NewRegistry()
	if err := reg.Register(a.Metrics()); err != nil {
		t.Fatal(err)
	}
	if n, err := testutil.GatherAndCount(reg, "bastiond_connect_refusals_total"); err != nil || n != len(Reasons) {
		t.Errorf("%d series (%v), want %d", n, err, len(Reasons))
	}
}

func TestReasons(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{broker.ErrAuditUnavailable, AuditDown},
		{&broker.Error{Kind: broker.KindUnknownTarget}, UnknownTarget},
		{&broker.Error{Kind: broker.KindUserLimit}, UserCap},
		{&broker.Error{Kind: broker.KindCapacity}, Capacity},
		{&broker.Error{Kind: broker.KindUnreachable}, DialFailed},
		{&broker.Error{Kind: broker.KindRefused}, DialGuard},
		{&broker.Error{Kind: broker.KindClosed}, ShuttingDown},
		{errors.New("journal full"), Internal},
	} {
		if got := BrokerRefusal(tc.err); got != tc.want {
			t.Errorf("BrokerRefusal(%v) = %s, want %s", tc.err, got, tc.want)
		}
	}
	if r, d := TicketRefusal(&ticket.Error{Reason: ticket.ReasonExpired, Detail: "late"}); r != ticket.ReasonExpired || d != "late" {
		t.Errorf("ticket error: %s %s", r, d)
	}
	if r, _ := TicketRefusal(errors.New("odd")); r != ticket.ReasonBad {
		t.Errorf("other error: %s", r)
	}
}

func TestTokenRefused(t *testing.T) {
	a, sink := newTest(t)
	src := netip.MustParseAddr("192.0.2.9")
	a.TokenRefused(src, "api", auth.ErrBadToken)
	a.TokenRefused(src, "quic", errors.New("the store was handed over"))
	a.ScopeRefused(netip.MustParseAddr("2001:db8::9"), "websocket", auth.Token{ID: "t1", User: "carol"}, auth.ScopeTunnel)
	a.TokenRefused(netip.MustParseAddr("2001:db8::7"), "quic", fmt.Errorf("%w: check a token: database down", auth.ErrUnavailable))
	got := sink.Take()
	if len(got) != 3 {
		t.Fatalf("events %+v", got)
	}
	if e := got[0]; e.Event != audit.TokenRefused || e.Actor != audit.ActorAnonymous || e.Source != "192.0.2.9" || e.Reason != auth.TokenMalformed || e.Via != "api" {
		t.Errorf("malformed token: %+v", e)
	}
	if e := got[1]; e.Actor != "carol" || e.Source != "2001:db8::9" || e.Token != "t1" || e.Reason != "no_scope" || e.Via != "websocket" {
		t.Errorf("scope: %+v", e)
	}
	if e := got[2]; e.Actor != audit.ActorAnonymous || e.Source != "2001:db8::7" || e.Reason != "unavailable" || e.Via != "quic" {
		t.Errorf("database down: %+v", e)
	}
}

func TestAddrString(t *testing.T) {
	for in, want := range map[netip.Addr]string{
		netip.MustParseAddr("::ffff:192.0.2.1"): "192.0.2.1",
		netip.MustParseAddr("2001:db8::1"):      "2001:db8::1",
		{}:                                      audit.ActorAnonymous,
	} {
		if got := AddrString(in); got != want {
			t.Errorf("AddrString(%v) = %q, want %q", in, got, want)
		}
	}
}
