package auth

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/bastiond/bastiond/internal/store"
	"github.com/bastiond/bastiond/internal/store/pgstore/pgstoretest"
)

// cheap are password hash costs for tests that make many sign-ins.
var cheap = argon2idParams{memory: 64, time: 1, threads: 1}

// instances are n Authenticators with the shared throttle, each with its
// own account store, all on db and one clock: the instances of a cluster
// on one database.
func instances(t *testing.T, db store.DB, n int, tc ThrottleConfig) ([]*Authenticator, *clock) {
	t.Helper()
	var as []*Authenticator
	var c *clock
	for i := range n {
		s, ci := newTestStoreOn(t, db, cheap)
		if i == 0 {
			c = ci
		}
		s.now = c.now
		a, err := NewAuthenticator(AuthenticatorConfig{Store: s, Logger: zap.NewNop(), Throttle: tc, SharedThrottle: true})
		if err != nil {
			t.Fatal(err)
		}
		as = append(as, a)
	}
	return as, c
}

// guessing is what a guesser meets, failure after failure: the wait of
// its source before each guess and the failure at which the account is
// locked.
type guessing struct {
	waits    []time.Duration
	lockedAt int
	lockedBy []string
}

// guess has src guess alice's password lockAt times, each time at the
// next Authenticator of as, waiting out its backoff in between.
func guess(t *testing.T, as []*Authenticator, c *clock, src netip.Addr) guessing {
	t.Helper()
	var g guessing
	for i := range as[0].lockAt {
		a := as[i%len(as)]
		w := sourceWait(t, a, src)
		for _, other := range as {
			if ow := sourceWait(t, other, src); ow != w {
				t.Fatalf("failure %d: the instances disagree on the wait: %v and %v", i+1, w, ow)
			}
		}
		g.waits = append(g.waits, w)
		if w > 0 {
			if r := loginReason(a, "alice", goodPassword, "", src); r != "throttled" {
				t.Fatalf("failure %d: the right password during the backoff: %s", i+1, r)
			}
		}
		c.advance(w)
		if r := loginReason(a, "alice", "guess", "", src); r != "wrong password" {
			t.Fatalf("failure %d: %s", i+1, r)
		}
		if u, _ := a.Store().User("alice"); g.lockedAt == 0 && c.t.Before(u.LockedUntil) {
			g.lockedAt, g.lockedBy = i+1, u.LockedBy
		}
	}
	return g
}

// TestSharedThrottleAcrossInstances: a guesser taking turns at two
// instances on one database meets the backoff and the lockout it meets at
// one, from IPv4 and from IPv6; and its sources are refused on both.
func TestSharedThrottleAcrossInstances(t *testing.T) {
	for _, src := range []netip.Addr{netip.MustParseAddr("203.0.113.66"), netip.MustParseAddr("2001:db8:bad::1")} {
		t.Run(src.String(), func(t *testing.T) {
			one, c1 := instances(t, openDB(t), 1, ThrottleConfig{})
			one[0].Store().AddUser("alice", goodPassword, nil)
			want := guess(t, one, c1, src)
			if want.lockedAt != one[0].lockAt || want.waits[len(want.waits)-1] == 0 {
				t.Fatalf("one instance: %+v", want)
			}

			two, c2 := instances(t, openDB(t), 2, ThrottleConfig{})
			two[0].Store().AddUser("alice", goodPassword, nil)
			got := guess(t, two, c2, src)
			if !slices.Equal(got.waits, want.waits) || got.lockedAt != want.lockedAt || !slices.Equal(got.lockedBy, want.lockedBy) {
				t.Fatalf("taking turns at two instances: %+v; at one: %+v", got, want)
			}
			// The lock holds on both: the guesser's source is refused
			// with the right password on either.
			for i, a := range two {
				c2.advance(sourceWait(t, a, src))
				if r := loginReason(a, "alice", goodPassword, "", src); r != "locked" {
					t.Errorf("instance %d: %s, want locked", i, r)
				}
			}
			// An unlock on one clears the count on both.
			if err := two[1].Unlock("alice"); err != nil {
				t.Fatal(err)
			}
			if w := userWait(t, two[0], "alice"); w != 0 {
				t.Errorf("the account still held up on A after an unlock on B: %v", w)
			}
		})
	}
}

// TestSharedThrottleSignInClears: a sign-in on B clears the account's
// failures counted on A, as on one instance; the source's stay.
func TestSharedThrottleSignInClears(t *testing.T) {
	as, c := instances(t, openDB(t), 2, ThrottleConfig{})
	as[0].Store().AddUser("alice", goodPassword, nil)
	guesser, owner := netip.MustParseAddr("2001:db8:bad::1"), netip.MustParseAddr("192.0.2.10")
	for range 4 {
		c.advance(sourceWait(t, as[0], guesser))
		loginReason(as[0], "alice", "guess", "", guesser)
	}
	if userWait(t, as[1], "alice") == 0 {
		t.Fatal("A's failures do not hold the account up on B")
	}
	c.advance(userWait(t, as[1], "alice"))
	if r := loginReason(as[1], "alice", goodPassword, "", owner); r != "ok" {
		t.Fatalf("sign-in on B: %s", r)
	}
	if w := userWait(t, as[0], "alice"); w != 0 {
		t.Errorf("the account still held up on A: %v", w)
	}
	// The guesser's backoff ran out meanwhile; its count did not.
	loginReason(as[1], "alice", "guess", "", guesser)
	if sourceWait(t, as[0], guesser) == 0 {
		t.Error("the guesser's count was cleared by the owner's sign-in")
	}
}

// TestSharedThrottleBounded: a flood of new sources leaves each table
// within MaxEntries plus MaxEntries/8 per instance; a guesser in backoff
// stays in it; entries idle for Forget are swept.
func TestSharedThrottleBounded(t *testing.T) {
	db := openDB(t)
	tc := ThrottleConfig{MaxEntries: 16, Forget: time.Hour}
	as, c := instances(t, db, 2, tc)
	as[0].Store().AddUser("alice", goodPassword, nil)
	guesser := netip.MustParseAddr("203.0.113.66")
	for range 4 {
		c.advance(sourceWait(t, as[0], guesser))
		loginReason(as[0], "alice", "guess", "", guesser)
	}
	sizes := func() (sources, users, pairs int) {
		t.Helper()
		err := db.View(func(tx store.Tx) error {
			sources, users, pairs = 0, 0, 0
			return tx.Bucket(bucketThrottle).ForEach(nil, func(k, _ []byte) error {
				switch k[0] {
				case tableSources:
					sources++
				case tableUsers:
					users++
				case tablePairs:
					pairs++
				}
				return nil
			})
		})
		if err != nil {
			t.Fatal(err)
		}
		return sources, users, pairs
	}
	bound := tc.MaxEntries + 2*(tc.MaxEntries/8)
	for i := range 200 {
		src := netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 0xf1, 0x00, 0, byte(i), 15: 1})
		if i%2 == 0 {
			src = netip.AddrFrom4([4]byte{198, 51, 100, byte(i)})
		}
		loginReason(as[i%2], "alice", "guess", "", src)
		if s, _, p := sizes(); s > bound || p > bound {
			t.Fatalf("after %d sources: %d sources, %d pairs, bound %d", i+1, s, p, bound)
		}
	}
	if sourceWait(t, as[1], guesser) == 0 {
		t.Error("the guesser in backoff was forgotten to make room")
	}
	st := as[0].Stats()
	st1 := as[1].Stats()
	if st.SourceEvictions+st1.SourceEvictions == 0 || st.Sources == 0 {
		t.Errorf("stats %+v %+v", st, st1)
	}
	// An hour and the longest backoff later, one failure's sweep forgets
	// every idle entry.
	c.advance(tc.Forget + 6*time.Minute)
	loginReason(as[0], "nobody", "guess", "", netip.MustParseAddr("192.0.2.99"))
	if s, u, p := sizes(); s != 1 || u != 0 || p != 0 {
		t.Errorf("after Forget: %d sources, %d accounts, %d pairs left, want the newest source only", s, u, p)
	}
}

// TestStoreUnavailable: a sign-in that cannot be checked, the database
// (of the shared throttle, of the accounts) being unreachable, is refused
// with ErrUnavailable, not as a failed sign-in, and is an audit event.
func TestStoreUnavailable(t *testing.T) {
	forEachThrottle(t, func(t *testing.T, shared bool) {
		s, _ := newTestStoreOn(t, failingDB{}, cheap)
		sink := &capture{}
		a, err := NewAuthenticator(AuthenticatorConfig{Store: s, Logger: zap.NewNop(), Audit: sink, SharedThrottle: shared})
		if err != nil {
			t.Fatal(err)
		}
		for _, src := range []netip.Addr{netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("2001:db8::1")} {
			_, err := a.Login(context.Background(), "alice", goodPassword, "", src)
			if !errors.Is(err, ErrUnavailable) || errors.Is(err, ErrLoginFailed) {
				t.Fatalf("%v", err)
			}
			checkEvents(t, sink.Take(), want{event: "signin_refused", actor: "-", source: src.String(), user: "alice", reason: "unavailable"})
		}
		if st := a.Stats(); st.Sources != 0 {
			t.Errorf("counted as failures: %+v", st)
		}
	})
}

// failingDB is a state store that cannot be reached.
type failingDB struct{}

func (failingDB) View(func(store.Tx) error) error {
	return fmt.Errorf("%w: connection refused", store.ErrUnavailable)
}

func (failingDB) Update(func(store.Tx) error) error {
	return fmt.Errorf("%w: connection refused", store.ErrUnavailable)
}

// TestSharedThrottleCountsRace: two instances counting failures of one
// account from one source at once lose none: the count and the backoff of
// a failure are one transaction. IPv4 and IPv6.
func TestSharedThrottleCountsRace(t *testing.T) {
	for _, src := range []netip.Addr{netip.MustParseAddr("203.0.113.66"), netip.MustParseAddr("2001:db8:bad::1")} {
		t.Run(src.String(), func(t *testing.T) {
			db := openDB(t)
			a, b := newSharedThrottle(db, ThrottleConfig{}), newSharedThrottle(db, ThrottleConfig{})
			now := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
			const each = 12
			var wg sync.WaitGroup
			for i := range 2 * each {
				th := a
				if i%2 == 1 {
					th = b
				}
				wg.Go(func() {
					if _, err := th.fail("alice", src, true, now); err != nil {
						t.Error(err)
					}
				})
			}
			wg.Wait()
			n, err := a.fail("alice", src, true, now)
			if err != nil || n != 2*each+1 {
				t.Fatalf("count %d, %v; want %d", n, err, 2*each+1)
			}
			longest := ThrottleConfig{}.withDefaults().MaxDelay
			if w, err := b.sourceWait(src, now); err != nil || w != longest {
				t.Errorf("wait %v, %v", w, err)
			}
		})
	}
}

// BenchmarkThrottleFail is the throttle's part of a failed sign-in of a
// known account (the password hash excluded): in memory, and shared.
func BenchmarkThrottleFail(b *testing.B) {
	for _, tc := range []struct {
		name string
		th   func() throttler
	}{
		{"memory", func() throttler { return newThrottle(ThrottleConfig{}) }},
		{"shared", func() throttler { return newSharedThrottle(openDB(b), ThrottleConfig{}) }},
	} {
		b.Run(tc.name, func(b *testing.B) {
			th := tc.th()
			now := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
			src := netip.MustParseAddr("2001:db8::1")
			b.ReportAllocs()
			for b.Loop() {
				if _, err := th.sourceWait(src, now); err != nil {
					b.Fatal(err)
				}
				if _, err := th.fail("alice", src, true, now); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestUnreadableAccount: an account whose record cannot be decoded is not
// an unknown user (a wrong message in the audit trail, and a guesser's
// failures counted against nobody): the sign-in fails as
// unreadable_account, with the account's name as actor, on both stores.
func TestUnreadableAccount(t *testing.T) {
	for _, be := range pgstoretest.Backends {
		t.Run(be.Name, func(t *testing.T) {
			db := be.Open(t)
			s, _ := newTestStoreOn(t, db, cheap)
			if err := s.AddUser("alice", goodPassword, nil); err != nil {
				t.Fatal(err)
			}
			err := db.Update(func(tx store.Tx) error { return tx.Bucket(bucketUsers).Put([]byte("alice"), []byte("{not json")) })
			if err != nil {
				t.Fatal(err)
			}
			sink := &capture{}
			a, err := NewAuthenticator(AuthenticatorConfig{Store: s, Logger: zap.NewNop(), Audit: sink, SharedThrottle: true})
			if err != nil {
				t.Fatal(err)
			}
			for _, src := range []netip.Addr{netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("2001:db8::1")} {
				_, err := a.Login(context.Background(), "alice", goodPassword, "", src)
				if !errors.Is(err, ErrLoginFailed) {
					t.Fatalf("%v, want a failed sign-in", err)
				}
				checkEvents(t, sink.Take(), want{event: "signin_failed", actor: "alice", source: src.String(), user: "alice", reason: "unreadable_account"})
			}
		})
	}
}
