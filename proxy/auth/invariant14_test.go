package auth

import (
	"net/netip"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/bastiond/bastiond/internal/store"
	"github.com/bastiond/bastiond/internal/store/pgstore/pgstoretest"
)

var clusterBackends = pgstoretest.Clusters

// instancesOn is an Authenticator on each of dbs, with the shared throttle
// and one clock.
func instancesOn(t testing.TB, dbs ...store.DB) ([]*Authenticator, *clock) {
	t.Helper()
	return instancesCosting(t, cheap, dbs...)
}

// instancesCosting is instancesOn with passwords hashed at p.
func instancesCosting(t testing.TB, p argon2idParams, dbs ...store.DB) ([]*Authenticator, *clock) {
	t.Helper()
	var as []*Authenticator
	var c *clock
	for i, db := range dbs {
		s, ci := newTestStoreOn(t, db, p)
		if i == 0 {
			c = ci
		}
		s.now = c.now
		a, err := NewAuthenticator(AuthenticatorConfig{Store: s, Logger: zap.NewNop(), SharedThrottle: true})
		if err != nil {
			t.Fatal(err)
		}
		as = append(as, a)
	}
	return as, c
}

// TestTOTPStepOnceClusterWide is invariant 14's TOTP part: a code accepted
// by one instance is refused by every other, even when the two see it at
// the same moment; and the next step's code works once, anywhere.
func TestTOTPStepOnceClusterWide(t *testing.T) {
	for _, be := range clusterBackends {
		t.Run(be.Name, func(t *testing.T) {
			dbA, dbB := be.Open(t)
			as, c := instancesOn(t, dbA, dbB)
			s := as[0].Store()
			s.AddUser("alice", goodPassword, nil)
			e, err := s.BeginTOTP("alice", "bastion.example")
			if err != nil {
				t.Fatal(err)
			}
			secret, _ := b32.DecodeString(e.Secret)
			if err := s.ConfirmTOTP("alice", totpAt(secret, totpStep(c.t))); err != nil {
				t.Fatal(err)
			}
			srcs := []netip.Addr{netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("2001:db8::1")}
			for round := range 10 {
				c.advance(30 * time.Second)
				code := totpAt(secret, totpStep(c.t))
				// Both instances at once, several tries each.
				var mu sync.Mutex
				ok := 0
				var wg sync.WaitGroup
				for i := range 6 {
					wg.Go(func() {
						if loginReason(as[i%2], "alice", goodPassword, code, srcs[i%2]) == "ok" {
							mu.Lock()
							ok++
							mu.Unlock()
						}
					})
				}
				wg.Wait()
				if ok != 1 {
					t.Fatalf("round %d: the code of one step signed in %d times across two instances, want once", round, ok)
				}
				for i, a := range as {
					if r := loginReason(a, "alice", goodPassword, code, srcs[i]); r == "ok" {
						t.Fatalf("round %d: instance %d accepted a used code", round, i)
					}
				}
				// The failures above are the user's own: clear them so that
				// the next round is not held up by backoff.
				if err := as[1].Unlock("alice"); err != nil {
					t.Fatal(err)
				}
				for _, src := range srcs {
					c.advance(sourceWait(t, as[0], src))
				}
			}
		})
	}
}

// TestLockoutClusterWide is invariant 14's lockout part, on both backends:
// a guesser taking turns at two instances is locked out after as many
// failures as at one, and the lockout holds on both, from IPv4 and IPv6.
func TestLockoutClusterWide(t *testing.T) {
	for _, be := range clusterBackends {
		for _, src := range []netip.Addr{netip.MustParseAddr("203.0.113.66"), netip.MustParseAddr("2001:db8:bad::1")} {
			t.Run(be.Name+"/"+src.String(), func(t *testing.T) {
				dbA, dbB := be.Open(t)
				as, c := instancesOn(t, dbA, dbB)
				as[0].Store().AddUser("alice", goodPassword, nil)
				g := guess(t, as, c, src)
				if g.lockedAt != as[0].lockAt {
					t.Fatalf("locked at failure %d across two instances, want %d", g.lockedAt, as[0].lockAt)
				}
				for i, a := range as {
					c.advance(sourceWait(t, a, src))
					if r := loginReason(a, "alice", goodPassword, "", src); r != "locked" {
						t.Errorf("instance %d: %s, want locked", i, r)
					}
				}
			})
		}
	}
}
