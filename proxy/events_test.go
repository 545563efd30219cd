package proxy

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"

	"github.com/bastiond/bastiond/api/tunnelwire"
	"github.com/bastiond/bastiond/internal/audit"
	"github.com/bastiond/bastiond/internal/audit/audittest"
	"github.com/bastiond/bastiond/internal/metrictest"
	"github.com/bastiond/bastiond/proxy/auth"
	"github.com/bastiond/bastiond/proxy/authz"
)

type capture = audit.Capture

// audited has s send its audit events, and its authenticator's, to a
// capture.
func audited(t *testing.T, s *Server) *capture {
	t.Helper()
	sink := &capture{}
	a, err := auth.NewAuthenticator(auth.AuthenticatorConfig{Store: s.auth.Store(), Logger: zap.NewNop(), Audit: sink})
	if err != nil {
		t.Fatal(err)
	}
	// Swapped before the configuration is: a server goroutine loads the
	// configuration (atomically) before it reads s.auth, so it reads the
	// new authenticator (and the race detector sees why).
	s.auth = a
	c := *s.cfg.Load()
	c.Audit = sink
	if err := s.SetConfig(c); err != nil {
		t.Fatal(err)
	}
	return sink
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
					want                audittest.Want
				}{
					{"forged token", forged, "vm2", 5985,
						audittest.Want{Event: audit.TokenRefused, Actor: audit.ActorAnonymous, Source: ip, Reason: auth.TokenUnknown, Via: via}},
					{"no tunnel scope", e.tokens["api-only"], "vm2", 5985,
						audittest.Want{Event: audit.TokenRefused, Actor: "carol", Source: ip, User: "carol", Reason: "no_scope", Via: via, Token: true}},
					{"no role", e.tokens["alice"], "vm2", 5985,
						audittest.Want{Event: audit.ConnectRefused, Actor: "alice", Source: ip, User: "alice", Target: "vm2", Protocol: "tunnel",
							Port: 5985, Reason: authz.NoRole, Via: via, Token: true}},
					{"unknown target", e.tokens["bob"], "vm9", 22,
						audittest.Want{Event: audit.ConnectRefused, Actor: "bob", Source: ip, User: "bob", Target: "vm9", Protocol: "tunnel",
							Port: 22, Reason: authz.UnknownTarget, Via: via, Token: true}},
					{"port not offered", e.tokens["bob"], "vm2", 8080,
						audittest.Want{Event: audit.ConnectRefused, Actor: "bob", Source: ip, User: "bob", Target: "vm2", Protocol: "tunnel",
							Port: 8080, Reason: authz.UnknownTarget, Via: via, Token: true}},
					{"dial guard", e.tokens["carol"], "vm2", 5985,
						audittest.Want{Event: audit.ConnectRefused, Actor: "carol", Source: ip, User: "carol", Target: "vm2", Protocol: "tunnel",
							Port: 5985, Reason: authz.DialGuard, Via: via, Token: true}},
				}
				before := metrictest.Value(t, e.s.RequestMetrics(), "bastiond_connect_refusals_total", "reason", authz.DialGuard)
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
					audittest.Check(t, c.name, got, c.want)
					audittest.NoSecrets(t, got, forged, e.tokens["alice"], e.tokens["bob"], e.tokens["carol"], e.tokens["api-only"])
				}
				if n := metrictest.Value(t, e.s.RequestMetrics(), "bastiond_connect_refusals_total", "reason", authz.DialGuard) - before; n != 1 {
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
