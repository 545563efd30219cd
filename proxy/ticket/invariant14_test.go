package ticket

import (
	"errors"
	"sync"
	"testing"

	"github.com/bastiond/bastiond/internal/pgtest"
	"github.com/bastiond/bastiond/internal/store/pgstore/pgstoretest"
)

// TestRedeemOnceClusterWide is invariant 14's ticket part on PostgreSQL, as
// a cluster runs it: two instances, each with its own connection pool (one
// over IPv4, one over IPv6), race to redeem each ticket the other issued;
// exactly one redemption wins, and the loser is told the ticket expired.
func TestRedeemOnceClusterWide(t *testing.T) {
	s := pgtest.Start(t)
	name := s.NewDatabase(t)
	a, _ := newShared(pgstoretest.On(t, s, "127.0.0.1", name))
	b, _ := newShared(pgstoretest.On(t, s, "::1", name))
	for round := range 20 {
		issuer := []*Shared{a, b}[round%2]
		v := issue(t, issuer, Ticket{Session: "s1", User: "alice", Target: "vm1", Protocol: "ssh", Port: 22})
		var mu sync.Mutex
		won := 0
		var wg sync.WaitGroup
		for i := range 8 {
			wg.Go(func() {
				_, err := []*Shared{a, b}[i%2].Redeem(v, "s1")
				switch {
				case err == nil:
					mu.Lock()
					won++
					mu.Unlock()
				case !errors.Is(err, ErrExpired):
					t.Errorf("round %d: a losing redemption: %v, want ErrExpired", round, err)
				}
			})
		}
		wg.Wait()
		if won != 1 {
			t.Fatalf("round %d: %d of 8 redemptions on two instances won, want exactly 1", round, won)
		}
	}
}
