package ticket

import (
	"bytes"
	"encoding/base64"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/bastiond/bastiond/internal/store"
)

// twoInstances are the ticket stores of two bastiond instances on one
// database, each with its own clock (set to the same time).
func twoInstances(t *testing.T, db store.DB) (a, b *Shared, ca, cb *clock) {
	a, ca = newShared(db)
	b, cb = newShared(db)
	return a, b, ca, cb
}

func forEachBackend(t *testing.T, f func(t *testing.T, db store.DB)) {
	for _, be := range backends {
		t.Run(be.Name, func(t *testing.T) { f(t, be.Open(t)) })
	}
}

// TestSharedAcrossInstances: a ticket issued by A is good on B, once: the
// replay is refused on both; logout on B drops A's tickets of the
// session; a ticket shown to another session on B is burnt for A too.
func TestSharedAcrossInstances(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db store.DB) {
		a, b, _, _ := twoInstances(t, db)
		v := issue(t, a, Ticket{Session: "s1", User: "alice", Target: "vm1", Protocol: "ssh", Port: 22})
		if got, err := b.Peek(v, "s1"); err != nil || got.Target != "vm1" || got.Port != 22 {
			t.Fatalf("peek on B: %+v, %v", got, err)
		}
		if got, err := b.Redeem(v, "s1"); err != nil || got.User != "alice" {
			t.Fatalf("redeem on B: %+v, %v", got, err)
		}
		for name, s := range map[string]*Shared{"A": a, "B": b} {
			if _, err := s.Redeem(v, "s1"); !errors.Is(err, ErrExpired) {
				t.Errorf("replay on %s: %v", name, err)
			}
		}

		v1 := issue(t, a, Ticket{Session: "s1", User: "alice"})
		v2 := issue(t, a, Ticket{Session: "s2", User: "bob"})
		if err := b.EndSession("s1"); err != nil {
			t.Fatal(err)
		}
		if _, err := a.Peek(v1, "s1"); !errors.Is(err, ErrExpired) {
			t.Error("a ticket of a session ended on B still good on A")
		}
		if _, err := a.Peek(v2, "s2"); err != nil {
			t.Errorf("another session's ticket lost to a logout: %v", err)
		}
		if _, err := b.Peek(v2, "attacker"); !errors.Is(err, ErrExpired) {
			t.Fatal("accepted from another session")
		}
		if _, err := a.Redeem(v2, "s2"); !errors.Is(err, ErrExpired) {
			t.Error("a ticket burnt on B still good on A")
		}
		if n := count(t, b); n != 0 {
			t.Errorf("%d tickets left", n)
		}
	})
}

// TestSharedExpiryAcrossInstances: a ticket issued by A expires on B TTL
// after it was issued, whichever instance looks.
func TestSharedExpiryAcrossInstances(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db store.DB) {
		a, b, _, cb := twoInstances(t, db)
		v := issue(t, a, Ticket{Session: "s1", User: "alice"})
		cb.t = cb.t.Add(TTL - time.Millisecond)
		if _, err := b.Peek(v, "s1"); err != nil {
			t.Fatalf("within TTL: %v", err)
		}
		cb.t = cb.t.Add(time.Millisecond)
		var te *Error
		if _, err := b.Redeem(v, "s1"); !errors.As(err, &te) || te.Reason != ReasonExpired {
			t.Fatalf("after TTL: %v", err)
		}
		if _, err := a.Redeem(v, "s1"); !errors.Is(err, ErrExpired) {
			t.Fatal("an expired ticket redeemed on A after B refused it")
		}
	})
}

// TestSharedRedeemOnce: instances racing to redeem one ticket (two store
// handles' worth of them on one database): exactly one wins, every other
// gets the refusal of a used ticket.
func TestSharedRedeemOnce(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db store.DB) {
		a, b, _, _ := twoInstances(t, db)
		const rounds, racers = 20, 8
		for r := range rounds {
			v := issue(t, a, Ticket{Session: "s1", User: "alice"})
			var mu sync.Mutex
			won, refused := 0, 0
			var wg sync.WaitGroup
			for i := range racers {
				s := a
				if i%2 == 1 {
					s = b
				}
				wg.Go(func() {
					_, err := s.Redeem(v, "s1")
					var te *Error
					mu.Lock()
					defer mu.Unlock()
					switch {
					case err == nil:
						won++
					case errors.As(err, &te) && te.Reason == ReasonBad:
						refused++
					default:
						t.Errorf("round %d: %v", r, err)
					}
				})
			}
			wg.Wait()
			if won != 1 || refused != racers-1 {
				t.Fatalf("round %d: %d redeemed, %d refused", r, won, refused)
			}
		}
	})
}

// TestSharedStoresNoValue: nothing in the database is a ticket's value or
// can be presented as one.
func TestSharedStoresNoValue(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db store.DB) {
		s, _ := newShared(db)
		v := issue(t, s, Ticket{Session: "s1", User: "alice"})
		raw, _ := base64.RawURLEncoding.DecodeString(v)
		err := db.View(func(tx store.Tx) error {
			return tx.Bucket(bucket).ForEach(nil, func(k, val []byte) error {
				for _, secret := range [][]byte{[]byte(v), raw} {
					if bytes.Contains(k, secret) || bytes.Contains(val, secret) {
						t.Errorf("the ticket's value is stored under %x", k)
					}
				}
				return nil
			})
		})
		if err != nil {
			t.Fatal(err)
		}
	})
}

// TestSharedSweep: expired tickets nobody presents again are deleted,
// index and all, by the next sweep of any instance.
func TestSharedSweep(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db store.DB) {
		a, b, _, cb := twoInstances(t, db)
		for i := range 50 {
			issue(t, a, Ticket{Session: string(rune('a' + i%5)), User: "alice"})
		}
		cb.t = cb.t.Add(TTL)
		if n := count(t, b); n != 0 {
			t.Fatalf("%d live after TTL", n)
		}
		keys := 0
		if err := db.View(func(tx store.Tx) error {
			return tx.Bucket(bucket).ForEach(nil, func(_, _ []byte) error { keys++; return nil })
		}); err != nil {
			t.Fatal(err)
		}
		if keys != 0 {
			t.Fatalf("%d keys left after the sweep", keys)
		}
	})
}

// TestSharedExportImport: the shared tickets need no handing over; Export
// is an empty list that a Store (memory) imports too.
func TestSharedExportImport(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db store.DB) {
		s, _ := newShared(db)
		v := issue(t, s, Ticket{Session: "s1", User: "alice"})
		b, err := s.Export()
		if err != nil || bytes.Contains(b, []byte(v)) {
			t.Fatalf("export %q, %v", b, err)
		}
		if err := s.Import(b); err != nil {
			t.Fatal(err)
		}
		if err := NewStore().Import(b); err != nil {
			t.Fatalf("a Store cannot import a Shared's export: %v", err)
		}
		if _, err := s.Redeem(v, "s1"); err != nil {
			t.Fatalf("after import: %v", err)
		}
	})
}
