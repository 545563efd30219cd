package proxy

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"

	"github.com/bastiond/bastiond/api/tunnelwire"
	"github.com/bastiond/bastiond/internal/audit"
	"github.com/bastiond/bastiond/proxy/auth"
	"github.com/bastiond/bastiond/proxy/authz"
)

type capture = audit.Capture

// audited has s send its audit events, and its authenticator's, to a
// capture.
func audited(t *testing.T, s *Server) *capture {
	t.Helper()
	sink := &capture{}
	c := *s.cfg.Load()
	c.Audit = sink
	if err := s.SetConfig(c); err != nil {
		t.Fatal(err)
	}
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

func TestTunnelAuditEvents(t *testing.T) {
	for _, network := range []string{"4", "6"} {
		e := newTunnelEnv(t, network)
		sink := audited(t, e.s)
		ip := "127.0.0.1"
		if network == "6" {
			ip = "::1"
		}
		for _, transport := range []string{"quic", "tcp"} {
			t.Run("ipv"+network+"/"+transport, func(t *testing.T) {
				via := transport
				if transport == "tcp" {
					via = "websocket"
				}
				forged := "bst_0123456789abcdef_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
				cases := []struct {
					name, token, target string
					port                uint16
					want                ev
				}{
					{"forged token", forged, "vm2", 5985,
						ev{event: audit.TokenRefused, actor: audit.ActorAnonymous, source: ip, reason: auth.TokenUnknown, via: via}},
					{"no tunnel scope", e.tokens["api-only"], "vm2", 5985,
						ev{event: audit.TokenRefused, actor: "carol", source: ip, user: "carol", reason: "no_scope", via: via, token: true}},
					{"no role", e.tokens["alice"], "vm2", 5985,
						ev{event: audit.ConnectRefused, actor: "alice", source: ip, user: "alice", target: "vm2", protocol: "tunnel",
							port: 5985, reason: authz.NoRole, via: via, token: true}},
					{"unknown target", e.tokens["bob"], "vm9", 22,
						ev{event: audit.ConnectRefused, actor: "bob", source: ip, user: "bob", target: "vm9", protocol: "tunnel",
							port: 22, reason: authz.UnknownTarget, via: via, token: true}},
					{"port not offered", e.tokens["bob"], "vm2", 8080,
						ev{event: audit.ConnectRefused, actor: "bob", source: ip, user: "bob", target: "vm2", protocol: "tunnel",
							port: 8080, reason: authz.UnknownTarget, via: via, token: true}},
					{"dial guard", e.tokens["carol"], "vm2", 5985,
						ev{event: audit.ConnectRefused, actor: "carol", source: ip, user: "carol", target: "vm2", protocol: "tunnel",
							port: 5985, reason: authz.DialGuard, via: via, token: true}},
				}
				before := counterValue(t, e.s.RequestMetrics(), "bastiond_connect_refusals_total", authz.DialGuard)
				for _, c := range cases {
					cl := e.client(t, c.token, transport)
					ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
					_, err := cl.Dial(ctx, c.target, c.port)
					cancel()
					var te *tunnelwire.Error
					if !errors.As(err, &te) {
						t.Fatalf("%s: %v", c.name, err)
					}
					got := sink.Take()
					checkEvents(t, c.name, got, c.want)
					noSecrets(t, got, forged, e.tokens["alice"], e.tokens["bob"], e.tokens["carol"], e.tokens["api-only"])
				}
				if n := counterValue(t, e.s.RequestMetrics(), "bastiond_connect_refusals_total", authz.DialGuard) - before; n != 1 {
					t.Errorf("dial_guard refusals counted: %v", n)
				}
			})
		}
	}
}

func TestConnectRefusalMetric(t *testing.T) {
	s := newTestServer(t, Config{})
	n, err := testutil.GatherAndCount(prometheusRegistry(t, s), "bastiond_connect_refusals_total")
	if err != nil || n != len(authz.Reasons) {
		t.Errorf("%d series of bastiond_connect_refusals_total (%v), want %d at zero", n, err, len(authz.Reasons))
	}
}

func prometheusRegistry(t *testing.T, s *Server) *prometheus.Registry {
	t.Helper()
	reg := prometheus.NewRegistry()
	if err := reg.Register(s.RequestMetrics()); err != nil {
		t.Fatal(err)
	}
	return reg
}

// counterValue is the value of the counter name{reason=reason} among c's
// series.
func counterValue(t *testing.T, c prometheus.Collector, name, reason string) float64 {
	t.Helper()
	reg := prometheus.NewRegistry()
	if err := reg.Register(c); err != nil {
		t.Fatal(err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "reason" && l.GetValue() == reason {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	t.Fatalf("no series %s{reason=%q}", name, reason)
	return 0
}
