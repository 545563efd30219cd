package broker

import (
	"context"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/bastiond/bastiond/api/admin"
	"github.com/bastiond/bastiond/internal/store/pgstore/pgstoretest"
)

var clusterStores = pgstoretest.Clusters

// openAs opens a session of user to target from client and returns it,
// or the refusal, which must come before the target is dialled.
func openAs(t *testing.T, b *Broker, user, target string, srv *server, client string) (*Session, error) {
	t.Helper()
	req := tunnelTo(user, target, srv.addrPort().Port())
	req.Client = netip.MustParseAddrPort(client)
	s, err := b.Open(context.Background(), req)
	if err != nil {
		srv.none(t)
	} else {
		srv.next(t)
	}
	return s, err
}

// heartbeatLoad is instance's load as its last heartbeat in reg says.
func heartbeatLoad(t *testing.T, in *instance, of string) admin.Load {
	t.Helper()
	hbs, err := in.reg.Instances()
	if err != nil {
		t.Fatal(err)
	}
	for _, hb := range hbs {
		if hb.Instance == of {
			return hb.Load
		}
	}
	return admin.Load{}
}

// TestClusterUserLimit: limits.sessions_per_user holds across instances
// (IPv4 and IPv6 targets and clients): with one session on each, a user's
// third is refused on either, as KindUserLimit with the single host's
// sentence and counted as user_limit, before the target is dialled (the front door audits it as
// connect_refused reason user_cap, authz.Reason), though neither broker
// holds two of them; a slot comes back when a session ends, and when a dead
// instance's sessions are taken over and recorded as abandoned. Each
// heartbeat carries its instance's capacity and used units.
func TestClusterUserLimit(t *testing.T) {
	for _, cs := range clusterStores {
		t.Run(cs.Name, func(t *testing.T) {
			dbA, dbB := cs.Open(t)
			cfg, v4, v6 := clusterTargets(t)
			cfg.PerUser, cfg.Capacity, cfg.Weights = 2, 20, map[string]int{Tunnel: 3}
			a := newInstance(t, dbA, "bastion-a", cfg, time.Hour)
			b := newInstance(t, dbB, "bastion-b", cfg, 300*time.Millisecond)
			s1, err := openAs(t, a.b, "alice", "vm4", v4, "192.0.2.10:50000")
			if err != nil {
				t.Fatal(err)
			}
			s2, err := openAs(t, b.b, "alice", "vm6", v6, "[2001:db8::10]:50001")
			if err != nil {
				t.Fatal(err)
			}
			for _, in := range []*instance{a, b} {
				_, err := openAs(t, in.b, "alice", "vm6", v6, "[2001:db8::10]:50002")
				wantKind(t, err, KindUserLimit, "you have 2 sessions open, the most allowed")
				_, err = openAs(t, in.b, "alice", "vm4", v4, "192.0.2.10:50003")
				wantKind(t, err, KindUserLimit, "you have 2 sessions open, the most allowed")
				if n := testutil.ToFloat64(in.b.metrics.refusals.WithLabelValues("user_limit")); n != 2 {
					t.Errorf("%s counted %v user_limit refusals, want 2", in.name, n)
				}
				if in.b.Live() != 1 {
					t.Errorf("%s carries %d sessions", in.name, in.b.Live())
				}
			}
			bob, err := openAs(t, a.b, "bob", "vm6", v6, "[2001:db8::20]:50000")
			if err != nil {
				t.Fatalf("another user: %v", err)
			}
			if got, want := a.b.Load(), (admin.Load{Capacity: 20, Used: 6, Sessions: 2}); got != want {
				t.Errorf("a's load %+v, want %+v", got, want)
			}
			waitUntil(t, "a's heartbeat to carry its load", func() bool {
				return heartbeatLoad(t, b, "bastion-a") == admin.Load{Capacity: 20, Used: 6, Sessions: 2}
			})
			bob.End(ReasonClientClosed)

			// An end frees a slot, on the other instance too.
			s2.End(ReasonClientClosed)
			s3, err := openAs(t, a.b, "alice", "vm6", v6, "[2001:db8::10]:50004")
			if err != nil {
				t.Fatalf("after an end: %v", err)
			}
			_, err = openAs(t, b.b, "alice", "vm4", v4, "192.0.2.10:50005")
			wantKind(t, err, KindUserLimit, "the most allowed")

			// a dies with alice's two sessions: once b has recorded them as
			// abandoned, they no longer count.
			ids := []string{s1.ID(), s3.ID()}
			a.halt()
			a.b.crashForTest()
			waitUntil(t, "b to record a's sessions", func() bool {
				ends := endRecords(t, b.opt.AuditFile)
				return len(ends[ids[0]]) > 0 && len(ends[ids[1]]) > 0
			})
			for _, id := range ids {
				if r := endRecords(t, b.opt.AuditFile)[id]; len(r) != 1 || r[0].Reason != ReasonAbandoned {
					t.Errorf("session %s: end records %+v", id, r)
				}
			}
			for i, c := range []struct {
				target string
				srv    *server
				client string
			}{{"vm4", v4, "192.0.2.10:50006"}, {"vm6", v6, "[2001:db8::10]:50007"}} {
				if _, err := openAs(t, b.b, "alice", c.target, c.srv, c.client); err != nil {
					t.Fatalf("session %d after a's were abandoned: %v", i, err)
				}
			}
			// Both on b now: its own count refuses.
			_, err = openAs(t, b.b, "alice", "vm4", v4, "192.0.2.10:50008")
			wantKind(t, err, KindUserLimit, "the most allowed")
		})
	}
}

// TestClusterUserLimitRace: two instances open a user's last session at
// once, round after round: exactly one of them gets it, the other refuses
// it as KindUserLimit.
func TestClusterUserLimitRace(t *testing.T) {
	const rounds = 10
	for _, cs := range clusterStores {
		t.Run(cs.Name, func(t *testing.T) {
			dbA, dbB := cs.Open(t)
			cfg, v4, v6 := clusterTargets(t)
			cfg.PerUser = 1
			a := newInstance(t, dbA, "bastion-a", cfg, time.Hour)
			b := newInstance(t, dbB, "bastion-b", cfg, time.Hour)
			for _, srv := range []*server{v4, v6} {
				go func() {
					for c := range srv.accepted {
						c.Close()
					}
				}()
			}
			for round := range rounds {
				var wg sync.WaitGroup
				start := make(chan struct{})
				sessions := make([]*Session, 2)
				errs := make([]error, 2)
				for i, in := range []*instance{a, b} {
					target, port, client := "vm4", v4.addrPort().Port(), "192.0.2.10:50000"
					if i == 1 {
						target, port, client = "vm6", v6.addrPort().Port(), "[2001:db8::10]:50000"
					}
					wg.Go(func() {
						req := tunnelTo("alice", target, port)
						req.Client = netip.MustParseAddrPort(client)
						<-start
						sessions[i], errs[i] = in.b.Open(context.Background(), req)
					})
				}
				close(start)
				wg.Wait()
				won := 0
				for i := range 2 {
					if errs[i] == nil {
						won++
						continue
					}
					wantKind(t, errs[i], KindUserLimit, "you have 1 sessions open, the most allowed")
				}
				if won != 1 {
					t.Fatalf("round %d: %d instances opened the user's one session: %v", round, won, errs)
				}
				for _, s := range sessions {
					if s != nil {
						s.End(ReasonClientClosed)
					}
				}
			}
		})
	}
}
