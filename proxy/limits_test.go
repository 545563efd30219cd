package proxy

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/bastiond/bastiond/api/admin"
	"github.com/bastiond/bastiond/api/tunnelwire"
	"github.com/bastiond/bastiond/internal/audit"
	"github.com/bastiond/bastiond/internal/audit/audittest"
	"github.com/bastiond/bastiond/internal/metrictest"
	"github.com/bastiond/bastiond/internal/store/pgstore/pgstoretest"
	"github.com/bastiond/bastiond/proxy/auth"
	"github.com/bastiond/bastiond/proxy/authz"
	"github.com/bastiond/bastiond/proxy/broker"
	"github.com/bastiond/bastiond/proxy/registry"
)

// TestTunnelUserLimitCluster: a user whose sessions on another instance of
// the cluster reach limits.sessions_per_user is refused a tunnel on this
// one (IPv4 and IPv6, QUIC and TLS), told "you have 2 sessions open, the
// most allowed", audited as connect_refused reason user_cap and counted in
// bastiond_connect_refusals_total{reason="user_cap"}; this instance's
// broker holds none of those sessions.
func TestTunnelUserLimitCluster(t *testing.T) {
	for _, be := range pgstoretest.Backends {
		t.Run(be.Name, func(t *testing.T) {
			db := be.Open(t)
			here, err := registry.New(registry.Config{DB: db, Instance: "bastion-a", Logger: zap.NewNop()})
			if err != nil {
				t.Fatal(err)
			}
			other, err := registry.New(registry.Config{DB: db, Instance: "bastion-b", Logger: zap.NewNop()})
			if err != nil {
				t.Fatal(err)
			}
			for i, client := range []string{"192.0.2.20:50000", "[2001:db8::20]:50000"} {
				s := admin.Session{ID: []string{"bbbb00000001", "bbbb00000002"}[i], User: "bob", Client: netip.MustParseAddrPort(client),
					Target: "vm1", Protocol: "ssh", Port: 22, Start: time.Now()}
				if err := other.Add("live-1-00000000.db", s, 2); err != nil {
					t.Fatal(err)
				}
			}
			loop := netip.MustParseAddr("127.0.0.1")
			b, err := broker.New(broker.Config{Logger: zap.NewNop(), PerUser: 2, Targets: []broker.Target{
				{Name: "vm2", Addresses: []netip.Addr{loop}, RDP: 3389, Tunnel: []uint16{5985}},
			}}, broker.Options{LiveDir: filepath.Join(t.TempDir(), "live"), AuditFile: filepath.Join(t.TempDir(), "audit.jsonl"),
				Instance: "bastion-a", Registry: here})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { b.Close(context.Background()) })
			s := newTestServer(t, Config{Broker: b, Access: tunnelPolicy()})
			sink := audited(t, s)
			token, _, err := s.auth.Store().IssueToken("bob", []string{auth.ScopeTunnel}, time.Hour, "test", "")
			if err != nil {
				t.Fatal(err)
			}
			for _, network := range []string{"4", "6"} {
				host := map[string]string{"4": "127.0.0.1", "6": "::1"}[network]
				ln, err := net.Listen("tcp"+network, net.JoinHostPort(host, "0"))
				if err != nil {
					t.Fatal(err)
				}
				pc, err := net.ListenPacket("udp"+network, net.JoinHostPort(host, "0"))
				if err != nil {
					t.Fatal(err)
				}
				serve(t, s, []net.Listener{ln}, []net.PacketConn{pc})
				e := &tunnelEnv{s: s, tcp: ln.Addr().String(), udp: pc.LocalAddr().String()}
				for _, transport := range []string{"quic", "tcp"} {
					via := map[string]string{"quic": "quic", "tcp": "websocket"}[transport]
					ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
					_, err := e.client(t, token, transport).Dial(ctx, "vm2", 5985)
					cancel()
					var te *tunnelwire.Error
					if !errors.As(err, &te) || !strings.Contains(err.Error(), "you have 2 sessions open, the most allowed") {
						t.Fatalf("ipv%s/%s: %v, want the user's limit", network, transport, err)
					}
					audittest.Check(t, "ipv"+network+"/"+transport, sink.Take(), audittest.Want{Event: audit.ConnectRefused, Actor: "bob",
						Source: host, User: "bob", Target: "vm2", Protocol: "tunnel", Port: 5985, Reason: authz.UserCap, Via: via, Token: true})
				}
			}
			if n := metrictest.Value(t, s.RequestMetrics(), "bastiond_connect_refusals_total", "reason", authz.UserCap); n != 4 {
				t.Errorf("user_cap refusals counted: %v, want 4", n)
			}
			if b.Live() != 0 {
				t.Errorf("%d sessions live here", b.Live())
			}
		})
	}
}
