package registry

import (
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/bastiond/bastiond/api/admin"
)

// userSession is session id of user, from client.
func userSession(user, id, client string) admin.Session {
	s := session(id, client)
	s.User = user
	return s
}

// wantLimit fails t unless err is Add's refusal of user at limit.
func wantLimit(t *testing.T, err error, user string, limit int) {
	t.Helper()
	var le *LimitError
	if !errors.As(err, &le) || le.User != user || le.Limit != limit || le.UserLimit() != limit {
		t.Fatalf("Add: %v, want the refusal of %s at %d sessions", err, user, limit)
	}
}

// TestUserLimitAcrossInstances: limits.sessions_per_user counts a user's
// sessions on every instance (IPv4 and IPv6 clients): past it Add refuses
// on either instance and writes nothing; other users, names that begin
// with the user's included, do not count; a slot comes back when a session
// ends (Remove) and when it is taken over to be recorded as abandoned
// (Claim); a refresh of the byte counts changes no count.
func TestUserLimitAcrossInstances(t *testing.T) {
	for _, cs := range clusterStores {
		t.Run(cs.Name, func(t *testing.T) {
			dbA, dbB := cs.Open(t)
			a, b := instance(t, dbA, "bastion-a", nil), instance(t, dbB, "bastion-b", nil)
			must := func(r *Registry, s admin.Session) {
				t.Helper()
				if err := r.Add("journal-1", s, 3); err != nil {
					t.Fatalf("add %s of %s on %s: %v", s.ID, s.User, r.Instance(), err)
				}
			}
			must(a, userSession("alice", "aaaa00000001", "192.0.2.10:50000"))
			must(b, userSession("alice", "bbbb00000001", "[2001:db8::10]:50001"))
			must(a, userSession("alice", "aaaa00000002", "[2001:db8::10]:50002"))
			// Names that share the beginning of alice's keys are not hers.
			for i, user := range []string{"alic", "alice/bastion-a", "5:alice", "alice2"} {
				for j := range 3 {
					must([]*Registry{a, b}[j%2], userSession(user, fmt.Sprintf("cccc%04d%04d", i, j), "198.51.100.7:1"))
				}
			}
			wantLimit(t, b.Add("journal-1", userSession("alice", "bbbb00000002", "192.0.2.10:50003"), 3), "alice", 3)
			wantLimit(t, a.Add("journal-1", userSession("alice", "aaaa00000003", "[2001:db8::10]:50004"), 3), "alice", 3)
			if err := b.Add("journal-1", userSession("alice", "bbbb00000002", "192.0.2.10:50003"), 0); err != nil {
				t.Errorf("no limit (0): %v", err)
			}
			if err := b.Remove([]string{"bbbb00000002"}); err != nil {
				t.Fatal(err)
			}
			list, err := a.List()
			if err != nil {
				t.Fatal(err)
			}
			if len(list) != 3+4*3 {
				t.Errorf("refused sessions entered: %v", ids(list))
			}

			if err := a.Refresh("journal-1", []admin.Session{userSession("alice", "aaaa00000001", "192.0.2.10:50000")}); err != nil {
				t.Fatal(err)
			}
			wantLimit(t, b.Add("journal-1", userSession("alice", "bbbb00000002", "192.0.2.10:50003"), 3), "alice", 3)

			// An end frees a slot, on the other instance too.
			if err := a.Remove([]string{"aaaa00000001"}); err != nil {
				t.Fatal(err)
			}
			must(b, userSession("alice", "bbbb00000002", "192.0.2.10:50003"))
			wantLimit(t, a.Add("journal-1", userSession("alice", "aaaa00000003", "[2001:db8::10]:50004"), 3), "alice", 3)

			// A session taken over to be recorded as abandoned stops counting.
			if claimed, err := a.Claim([]string{"aaaa00000002"}); err != nil || !claimed["aaaa00000002"] {
				t.Fatalf("claim: %v %v", claimed, err)
			}
			must(b, userSession("alice", "bbbb00000003", "[2001:db8::10]:50005"))
			wantLimit(t, a.Add("journal-1", userSession("alice", "aaaa00000004", "192.0.2.10:50006"), 3), "alice", 3)

			// A limit lowered by a reload holds for new sessions.
			wantLimit(t, a.Add("journal-1", userSession("alice", "aaaa00000004", "192.0.2.10:50006"), 1), "alice", 1)
		})
	}
}

// TestUserLimitDeadInstance: the sessions of an instance that died stop
// counting for their users once a survivor takes them over to record them
// as abandoned.
func TestUserLimitDeadInstance(t *testing.T) {
	for _, cs := range clusterStores {
		t.Run(cs.Name, func(t *testing.T) {
			dbA, dbB := cs.Open(t)
			clk := newClock()
			recorded := map[string][]string{}
			a, b := instance(t, dbA, "bastion-a", clk), instance(t, dbB, "bastion-b", clk)
			ha, hb := newHandler("bastion-a", a, recorded, nil), newHandler("bastion-b", b, recorded, nil)
			add2 := func(r *Registry, s admin.Session) error { return r.Add("journal-1", s, 2) }
			if err := add2(a, userSession("alice", "aaaa00000001", "192.0.2.10:50000")); err != nil {
				t.Fatal(err)
			}
			if err := add2(a, userSession("alice", "aaaa00000002", "[2001:db8::10]:50001")); err != nil {
				t.Fatal(err)
			}
			for range 2 {
				a.tick(ha, false)
				b.tick(hb, false)
				clk.add(beat)
			}
			wantLimit(t, add2(b, userSession("alice", "bbbb00000001", "192.0.2.10:50002")), "alice", 2)
			// a stops beating; b takes it for dead after Dead.
			for range 5 {
				b.tick(hb, false)
				clk.add(beat)
			}
			recordedMu.Lock()
			n := len(recorded)
			recordedMu.Unlock()
			if n != 2 {
				t.Fatalf("abandoned records: %v", recorded)
			}
			if err := add2(b, userSession("alice", "bbbb00000001", "192.0.2.10:50002")); err != nil {
				t.Errorf("after the dead instance's sessions were abandoned: %v", err)
			}
			if err := add2(b, userSession("alice", "bbbb00000002", "[2001:db8::10]:50003")); err != nil {
				t.Errorf("after the dead instance's sessions were abandoned: %v", err)
			}
			wantLimit(t, add2(b, userSession("alice", "bbbb00000003", "192.0.2.10:50004")), "alice", 2)
		})
	}
}

// TestUserLimitRace: two instances race for a user's last sessions, on
// stores shared as in a cluster: exactly the limit's number of Adds win,
// the others are refused for the limit (not for a conflict), round after
// round.
func TestUserLimitRace(t *testing.T) {
	const limit, racers, rounds = 3, 8, 5
	for _, cs := range clusterStores {
		t.Run(cs.Name, func(t *testing.T) {
			dbA, dbB := cs.Open(t)
			regs := []*Registry{instance(t, dbA, "bastion-a", nil), instance(t, dbB, "bastion-b", nil)}
			for round := range rounds {
				var (
					wg      sync.WaitGroup
					start   = make(chan struct{})
					mu      sync.Mutex
					won     []string
					refused int
					other   []error
				)
				for i := range racers {
					r := regs[i%2]
					id := fmt.Sprintf("%04x%08x", round, i)
					client := "192.0.2.10:50000"
					if i%4 >= 2 {
						client = "[2001:db8::10]:50000"
					}
					wg.Go(func() {
						<-start
						err := r.Add("journal-1", userSession("alice", id, client), limit)
						var le *LimitError
						mu.Lock()
						defer mu.Unlock()
						switch {
						case err == nil:
							won = append(won, id)
						case errors.As(err, &le):
							refused++
						default:
							other = append(other, err)
						}
					})
				}
				close(start)
				wg.Wait()
				if len(won) != limit || refused != racers-limit || len(other) > 0 {
					t.Fatalf("round %d: %d won, %d refused for the limit, other errors %v", round, len(won), refused, other)
				}
				list, err := regs[0].List()
				if err != nil || len(list) != limit {
					t.Fatalf("round %d: the registry holds %d sessions, %v", round, len(list), err)
				}
				// The winners end, on their own instances.
				for _, r := range regs {
					if err := r.Remove(won); err != nil {
						t.Fatal(err)
					}
				}
			}
		})
	}
}

// TestHeartbeatLoad: each heartbeat carries its instance's capacity, used
// units, sessions and draining state as the handler says them now; the
// old process of an upgrade (retired), which beats on, keeps its
// successor's figures rather than writing its own over them.
func TestHeartbeatLoad(t *testing.T) {
	for _, cs := range clusterStores {
		t.Run(cs.Name, func(t *testing.T) {
			dbA, dbB := cs.Open(t)
			recorded := map[string][]string{}
			a, b := instance(t, dbA, "bastion-a", nil), instance(t, dbB, "bastion-b", nil)
			ha, hb := newHandler("bastion-a", a, recorded, nil), newHandler("bastion-b", b, recorded, nil)
			ha.load = admin.Load{Capacity: 100, Used: 12, Sessions: 9}
			hb.load = admin.Load{Capacity: 40, Used: 40, Sessions: 20, Draining: true}
			a.tick(ha, false)
			b.tick(hb, false)
			loads := func() map[string]admin.Load {
				t.Helper()
				hbs, err := a.Instances()
				if err != nil {
					t.Fatal(err)
				}
				m := map[string]admin.Load{}
				for _, h := range hbs {
					m[h.Instance] = h.Load
				}
				return m
			}
			if got := loads(); len(got) != 2 || got["bastion-a"] != ha.load || got["bastion-b"] != hb.load {
				t.Fatalf("heartbeats' loads %+v", got)
			}
			ha.mu.Lock()
			ha.load = admin.Load{Capacity: 100, Used: 14, Sessions: 10}
			ha.mu.Unlock()
			a.tick(ha, false)
			if got := loads()["bastion-a"]; got != ha.load {
				t.Errorf("the next heartbeat's load %+v, want %+v", got, ha.load)
			}

			// An upgrade: a2 takes over bastion-a, a retires and beats on.
			a2 := instance(t, dbA, "bastion-a", nil)
			h2 := newHandler("bastion-a", a2, recorded, nil)
			h2.load = admin.Load{Capacity: 100, Used: 1, Sessions: 1}
			a.Retire()
			a2.tick(h2, false)
			a.tick(ha, false)
			if got := loads()["bastion-a"]; got != h2.load {
				t.Errorf("after the retired process's heartbeat the load is %+v, want its successor's %+v", got, h2.load)
			}
		})
	}
}
