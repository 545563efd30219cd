package websession

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/bastiond/bastiond/internal/store"
	"github.com/bastiond/bastiond/internal/store/pgstore/pgstoretest"
)

func newTestStore(cfg Config) (*Store, *time.Time) {
	s := NewStore(cfg)
	now := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	s.now = func() time.Time { return now }
	return s, &now
}

func newTestShared(db store.DB, cfg Config) (*Shared, *time.Time) {
	s := NewShared(db, cfg)
	now := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	s.now = func() time.Time { return now }
	return s, &now
}

// backends are the databases Shared are tested on: bbolt and PostgreSQL.
var backends = pgstoretest.Backends

// impl is one implementation of Sessions under test, on a clock of its own.
type impl struct {
	name string
	new  func(t testing.TB, cfg Config) (Sessions, *time.Time)
}

// impls are the implementations of Sessions: the semantics they share are
// tested on each.
func impls() []impl {
	out := []impl{{"memory", func(_ testing.TB, cfg Config) (Sessions, *time.Time) { return newTestStore(cfg) }}}
	for _, b := range backends {
		out = append(out, impl{"shared/" + b.Name, func(t testing.TB, cfg Config) (Sessions, *time.Time) {
			return newTestShared(b.Open(t), cfg)
		}})
	}
	return out
}

// forEach runs f as a subtest on every implementation.
func forEach(t *testing.T, f func(t *testing.T, im impl)) {
	for _, im := range impls() {
		t.Run(im.name, func(t *testing.T) { f(t, im) })
	}
}

func newSession(t testing.TB, s Sessions, user string, src netip.Addr) (string, Session) {
	t.Helper()
	c, sess, err := s.New(user, src)
	if err != nil {
		t.Fatal(err)
	}
	return c, sess
}

// live says whether cookie has a live session in s (and marks it used).
func live(t testing.TB, s Sessions, cookie string) bool {
	t.Helper()
	_, err := s.Get(cookie)
	if err != nil && !errors.Is(err, ErrNoSession) {
		t.Fatal(err)
	}
	return err == nil
}

func alive(t testing.TB, s Sessions, id string) bool {
	t.Helper()
	ok, err := s.Alive(id)
	if err != nil {
		t.Fatal(err)
	}
	return ok
}

func count(t testing.TB, s Sessions) int {
	t.Helper()
	n, err := s.Len()
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func endUser(t testing.TB, s Sessions, user string) int {
	t.Helper()
	n, err := s.EndUser(user)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

var (
	src  = netip.MustParseAddr("2001:db8::7")
	src4 = netip.MustParseAddr("192.0.2.7")
)

func TestExpiry(t *testing.T) {
	forEach(t, func(t *testing.T, im impl) {
		for _, src := range []netip.Addr{src4, src} {
			t.Run(src.String(), func(t *testing.T) {
				s, now := im.new(t, Config{Idle: 10 * time.Minute, Absolute: time.Hour})
				cookie, sess := newSession(t, s, "alice", src)
				if len(cookie) != 43 || strings.Contains(cookie, sess.ID) || sess.CSRF == "" || sess.CSRF == cookie || sess.Source != src {
					t.Fatalf("cookie %q session %+v", cookie, sess)
				}
				// Activity keeps it alive past the idle period...
				for range 5 {
					*now = now.Add(9 * time.Minute)
					if !live(t, s, cookie) {
						t.Fatal("active session ended")
					}
				}
				// ...but not past the absolute lifetime.
				*now = now.Add(15 * time.Minute)
				if live(t, s, cookie) {
					t.Fatal("session outlived its absolute lifetime")
				}
				c2, s2 := newSession(t, s, "alice", src)
				*now = now.Add(10 * time.Minute)
				if live(t, s, c2) || alive(t, s, s2.ID) {
					t.Fatal("idle session still alive")
				}
			})
		}
	})
}

func TestEnd(t *testing.T) {
	forEach(t, func(t *testing.T, im impl) {
		s, _ := im.new(t, Config{})
		c1, s1 := newSession(t, s, "alice", src)
		c2, _ := newSession(t, s, "alice", src4)
		c3, _ := newSession(t, s, "bob", src)
		if err := s.End(s1.ID); err != nil {
			t.Fatal(err)
		}
		if live(t, s, c1) {
			t.Error("logged-out session still valid")
		}
		if n := endUser(t, s, "alice"); n != 1 {
			t.Errorf("EndUser ended %d", n)
		}
		if live(t, s, c2) {
			t.Error("session of a disabled user still valid")
		}
		if !live(t, s, c3) {
			t.Error("another user's session ended")
		}
	})
}

func TestPerUserCap(t *testing.T) {
	forEach(t, func(t *testing.T, im impl) {
		s, now := im.new(t, Config{MaxPerUser: 2})
		first, _ := newSession(t, s, "alice", src)
		*now = now.Add(time.Second)
		newSession(t, s, "alice", src4)
		*now = now.Add(time.Second)
		newSession(t, s, "alice", src)
		newSession(t, s, "alicea", src)
		if live(t, s, first) {
			t.Error("oldest session survived the cap")
		}
		if n := count(t, s); n != 3 {
			t.Errorf("%d sessions", n)
		}
	})
}

func TestCSRF(t *testing.T) {
	forEach(t, func(t *testing.T, im impl) {
		s, _ := im.new(t, Config{})
		c, sess := newSession(t, s, "alice", src)
		_, other := newSession(t, s, "bob", src4)
		if !sess.CheckCSRF(sess.CSRF) || sess.CheckCSRF("") || sess.CheckCSRF(other.CSRF) || sess.CheckCSRF(sess.CSRF[1:]) {
			t.Error("CSRF check wrong")
		}
		// Every request sees the token the page was given.
		got, err := s.Get(c)
		if err != nil || !got.CheckCSRF(sess.CSRF) {
			t.Errorf("the session's token changed: %+v, %v", got, err)
		}
	})
}

func FuzzGet(f *testing.F) {
	s, _ := newTestStore(Config{})
	good, _ := newSession(f, s, "alice", src)
	f.Add(good)
	f.Add("")
	f.Add(strings.Repeat("A", 43))
	f.Fuzz(func(t *testing.T, cookie string) {
		if sess, err := s.Get(cookie); err == nil && (cookie != good || sess.User != "alice") {
			t.Fatalf("cookie %q accepted", cookie)
		}
	})
}

func TestExportImport(t *testing.T) {
	old, now := newTestStore(Config{})
	cookie, sess := newSession(t, old, "alice", src)
	stale, _ := newSession(t, old, "bob", src4)
	*now = now.Add(20 * time.Minute)
	if !live(t, old, cookie) {
		t.Fatal("alice's session ended")
	}
	b, err := old.Export()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(b), cookie) || strings.Contains(string(b), stale) {
		t.Fatal("the export holds a cookie")
	}

	// The successor's idle limit is shorter: bob, idle for 20 minutes, is
	// out; alice, seen just now, is in, with her times.
	s, now2 := newTestStore(Config{Idle: 15 * time.Minute})
	*now2 = *now
	if err := s.Import(b); err != nil {
		t.Fatal(err)
	}
	got, err := s.Get(cookie)
	if err != nil || got.ID != sess.ID || got.User != "alice" || got.CSRF != sess.CSRF || !got.Created.Equal(sess.Created) || got.Source != src {
		t.Fatalf("alice's session after import: %+v, %v; want %+v", got, err, sess)
	}
	if live(t, s, stale) || count(t, s) != 1 {
		t.Errorf("an expired session was imported (%d sessions)", count(t, s))
	}
	// Its absolute lifetime still counts from the first sign-in.
	*now2 = sess.Created.Add(12 * time.Hour)
	if live(t, s, cookie) {
		t.Error("an imported session outlived its absolute lifetime")
	}

	for name, in := range map[string]string{
		"not JSON":     "{",
		"short hash":   `[{"Hash":"AAAA","ID":"1","User":"u","CSRF":"c"}]`,
		"no CSRF":      `[{"Hash":"` + strings.Repeat("A", 43) + `=","ID":"1","User":"u"}]`,
		"not an array": `{}`,
	} {
		s := NewStore(Config{})
		if err := s.Import([]byte(in)); err == nil || count(t, s) != 0 {
			t.Errorf("%s: imported, %d sessions", name, count(t, s))
		}
	}
}

func TestOnExpire(t *testing.T) {
	forEach(t, func(t *testing.T, im impl) {
		s, now := im.new(t, Config{Idle: 10 * time.Minute, Absolute: time.Hour, MaxPerUser: 2})
		type ended struct{ id, user, why string }
		var got []ended
		s.OnExpire(func(sess Session, why string) { got = append(got, ended{sess.ID, sess.User, why}) })
		check := func(what string, want ...ended) {
			t.Helper()
			if len(got) != len(want) {
				t.Fatalf("%s: ended %v, want %v", what, got, want)
			}
			for i := range want {
				if got[i] != want[i] {
					t.Errorf("%s: ended %v, want %v", what, got, want)
				}
			}
			got = nil
		}
		// Idle: noticed when the cookie comes back.
		c1, s1 := newSession(t, s, "alice", src)
		*now = now.Add(10 * time.Minute)
		s.Get(c1)
		check("idle", ended{s1.ID, "alice", EndIdle})

		// Absolute: noticed by the sweep of the next sign-in, though in use.
		c2, s2 := newSession(t, s, "bob", src4)
		for range 6 {
			*now = now.Add(9 * time.Minute)
			s.Get(c2)
		}
		check("in use")
		*now = now.Add(9 * time.Minute)
		newSession(t, s, "carol", src)
		check("absolute", ended{s2.ID, "bob", EndAbsolute})

		// A sign-in past MaxPerUser ends the oldest.
		_, d1 := newSession(t, s, "dave", src)
		*now = now.Add(time.Second)
		newSession(t, s, "dave", src)
		*now = now.Add(time.Second)
		newSession(t, s, "dave", src)
		check("per user cap", ended{d1.ID, "dave", EndPerUserCap})

		// Ended by a sign-out or an admin: not an expiry.
		_, e1 := newSession(t, s, "erin", src)
		s.End(e1.ID)
		s.EndUser("dave")
		check("ended by someone")
	})
}
