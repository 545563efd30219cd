package websession

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/bastiond/bastiond/internal/store"
)

func forEachBackend(t *testing.T, f func(t *testing.T, db store.DB)) {
	for _, be := range backends {
		t.Run(be.Name, func(t *testing.T) { f(t, be.Open(t)) })
	}
}

// TestSharedAcrossInstances: two instances on one database. A browser
// signed in on A is signed in on B, with the same session and CSRF token;
// a sign-out on A ends it on B; EndUser on B ends the user's sessions of
// A. IPv4 and IPv6 sources.
func TestSharedAcrossInstances(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db store.DB) {
		a, _ := newTestShared(db, Config{})
		b, _ := newTestShared(db, Config{})
		for _, src := range []netip.Addr{src4, src} {
			t.Run(src.String(), func(t *testing.T) {
				cookie, sess := newSession(t, a, "alice", src)
				got, err := b.Get(cookie)
				if err != nil || got.ID != sess.ID || got.User != "alice" || got.Source != src || !got.Created.Equal(sess.Created) {
					t.Fatalf("on B: %+v, %v; want %+v", got, err, sess)
				}
				if !got.CheckCSRF(sess.CSRF) {
					t.Fatal("the CSRF token of A's page is refused on B")
				}
				if !alive(t, b, sess.ID) {
					t.Fatal("not alive on B")
				}
				other, _ := newSession(t, b, "alice", src)
				bob, _ := newSession(t, a, "bob", src)
				if n := endUser(t, b, "alice"); n != 2 {
					t.Fatalf("EndUser on B ended %d, want 2", n)
				}
				for name, s := range map[string]*Shared{"A": a, "B": b} {
					if live(t, s, cookie) || live(t, s, other) {
						t.Errorf("alice still signed in on %s", name)
					}
					if !live(t, s, bob) {
						t.Errorf("bob signed out on %s", name)
					}
				}
				_, bs := newSession(t, b, "bob", src)
				if err := a.End(bs.ID); err != nil {
					t.Fatal(err)
				}
				if alive(t, b, bs.ID) {
					t.Error("a session ended on A is alive on B")
				}
				endUser(t, a, "bob")
			})
		}
	})
}

// TestSharedPerUserCapAcrossInstances: the cap counts a user's sessions
// of every instance.
func TestSharedPerUserCapAcrossInstances(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db store.DB) {
		a, na := newTestShared(db, Config{MaxPerUser: 2})
		b, nb := newTestShared(db, Config{MaxPerUser: 2})
		var ended []string
		b.OnExpire(func(sess Session, why string) { ended = append(ended, sess.ID+" "+why) })
		first, s1 := newSession(t, a, "alice", src4)
		*na, *nb = na.Add(time.Second), nb.Add(time.Second)
		newSession(t, a, "alice", src)
		*na, *nb = na.Add(time.Second), nb.Add(time.Second)
		newSession(t, b, "alice", src)
		if live(t, a, first) {
			t.Error("the oldest session, on A, survived the cap on B")
		}
		if len(ended) != 1 || ended[0] != s1.ID+" "+EndPerUserCap {
			t.Errorf("reported %v", ended)
		}
		if n := count(t, a); n != 2 {
			t.Errorf("%d sessions", n)
		}
	})
}

// TestSharedExpiryReportedOnce: both instances sweep and see the cookies
// of expired sessions at once; each expiry is reported exactly once in
// all, by the instance whose transaction deleted it.
func TestSharedExpiryReportedOnce(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db store.DB) {
		cfg := Config{Idle: 10 * time.Minute}
		a, na := newTestShared(db, cfg)
		b, nb := newTestShared(db, cfg)
		var mu sync.Mutex
		reports := map[string]int{}
		for _, s := range []*Shared{a, b} {
			s.OnExpire(func(sess Session, why string) {
				mu.Lock()
				reports[sess.ID+" "+why]++
				mu.Unlock()
			})
		}
		const n = 40
		cookies := make([]string, n)
		ids := make([]string, n)
		for i := range n {
			s, from := a, src4
			if i%2 == 1 {
				s, from = b, src
			}
			var sess Session
			cookies[i], sess = newSession(t, s, fmt.Sprintf("user%d", i), from)
			ids[i] = sess.ID
		}
		*na, *nb = na.Add(cfg.Idle), nb.Add(cfg.Idle)
		var wg sync.WaitGroup
		for _, s := range []*Shared{a, b} {
			wg.Go(func() {
				if _, err := s.Len(); err != nil {
					t.Error(err)
				}
			})
			for _, c := range cookies {
				wg.Go(func() {
					if _, err := s.Get(c); err != ErrNoSession {
						t.Errorf("an idle session: %v", err)
					}
				})
			}
		}
		wg.Wait()
		if len(reports) != n {
			t.Fatalf("%d sessions reported ended, want %d: %v", len(reports), n, reports)
		}
		for _, id := range ids {
			if k := reports[id+" "+EndIdle]; k != 1 {
				t.Errorf("session %s reported %d times", id, k)
			}
		}
	})
}

// storedLastSeen is the LastSeen in the database of the session of cookie.
func storedLastSeen(t *testing.T, db store.DB, cookie string) time.Time {
	t.Helper()
	var r record
	err := db.View(func(tx store.Tx) error {
		k := hash(cookie)
		v, err := tx.Bucket(bucket).Get(cookieKey(k))
		if err != nil || v == nil {
			return fmt.Errorf("no record: %v", err)
		}
		return json.Unmarshal(v, &r)
	})
	if err != nil {
		t.Fatal(err)
	}
	return r.LastSeen
}

// TestSharedTouch: a request writes LastSeen only when the stored one is
// TouchEvery old; a session in use every half TouchEvery lives on; one
// left alone ends Idle after its last request at the latest, and not
// before Idle minus TouchEvery.
func TestSharedTouch(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db store.DB) {
		cfg := Config{Idle: 30 * time.Minute, Absolute: 12 * time.Hour}
		s, now := newTestShared(db, cfg)
		cookie, sess := newSession(t, s, "alice", src)
		*now = now.Add(TouchEvery / 2)
		got, err := s.Get(cookie)
		if err != nil || !got.LastSeen.Equal(*now) {
			t.Fatalf("Get: %+v, %v", got, err)
		}
		if ls := storedLastSeen(t, db, cookie); !ls.Equal(sess.Created) {
			t.Fatalf("written at %v, half TouchEvery after sign-in", ls)
		}
		*now = now.Add(TouchEvery / 2)
		live(t, s, cookie)
		if ls := storedLastSeen(t, db, cookie); !ls.Equal(*now) {
			t.Fatalf("LastSeen %v, not written TouchEvery after sign-in (%v)", ls, *now)
		}
		// In use for 4 hours: never idle.
		for range int(4 * time.Hour / (TouchEvery / 2)) {
			*now = now.Add(TouchEvery / 2)
			if !live(t, s, cookie) {
				t.Fatalf("a session in use ended at %v", *now)
			}
		}
		last := *now
		*now = last.Add(cfg.Idle - TouchEvery)
		if !alive(t, s, sess.ID) {
			t.Fatal("ended more than TouchEvery early")
		}
		*now = last.Add(cfg.Idle)
		if alive(t, s, sess.ID) || live(t, s, cookie) {
			t.Fatal("alive Idle after its last request")
		}
	})
}

// TestSharedStoresNoSecret: nothing in the database is the cookie, the
// CSRF token, or anything that can be presented as either (invariant 10).
func TestSharedStoresNoSecret(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db store.DB) {
		s, _ := newTestShared(db, Config{})
		cookie, sess := newSession(t, s, "alice", src)
		raw, _ := base64.RawURLEncoding.DecodeString(cookie)
		rawCSRF, _ := base64.RawURLEncoding.DecodeString(sess.CSRF)
		keys := 0
		err := db.View(func(tx store.Tx) error {
			return tx.Bucket(bucket).ForEach(nil, func(k, v []byte) error {
				keys++
				for _, secret := range [][]byte{[]byte(cookie), raw, []byte(sess.CSRF), rawCSRF} {
					if bytes.Contains(k, secret) || bytes.Contains(v, secret) {
						t.Errorf("a secret is stored under %q", k)
					}
				}
				return nil
			})
		})
		if err != nil || keys != 3 {
			t.Fatalf("%d keys, %v", keys, err)
		}
		if sess.CSRF == "" || sess.CSRF == cookie {
			t.Fatalf("CSRF token %q", sess.CSRF)
		}
	})
}

// TestSharedExportImport: the shared sessions need no handing over;
// Export is an empty list that a Store (memory) imports too.
func TestSharedExportImport(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db store.DB) {
		s, _ := newTestShared(db, Config{})
		cookie, _ := newSession(t, s, "alice", src)
		b, err := s.Export()
		if err != nil || bytes.Contains(b, []byte(cookie)) {
			t.Fatalf("export %q, %v", b, err)
		}
		if err := s.Import(b); err != nil {
			t.Fatal(err)
		}
		if err := NewStore(Config{}).Import(b); err != nil {
			t.Fatalf("a Store cannot import a Shared's export: %v", err)
		}
		successor, _ := newTestShared(db, Config{})
		if !live(t, successor, cookie) {
			t.Fatal("signed out by the upgrade")
		}
	})
}

// TestSharedBadUser: a user name a key cannot hold is refused.
func TestSharedBadUser(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db store.DB) {
		s, _ := newTestShared(db, Config{})
		for _, u := range []string{"", "a\x00b"} {
			if _, _, err := s.New(u, src); err == nil {
				t.Errorf("%q: signed in", u)
			}
		}
	})
}

// BenchmarkGet is a request's session lookup, a request a second: in
// memory, and shared (a read, and a write once every TouchEvery).
func BenchmarkGet(b *testing.B) {
	for _, im := range impls() {
		b.Run(im.name, func(b *testing.B) {
			s, now := im.new(b, Config{Absolute: 1 << 62})
			cookie, _ := newSession(b, s, "alice", src)
			b.ReportAllocs()
			for b.Loop() {
				*now = now.Add(time.Second)
				if _, err := s.Get(cookie); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkNew is a sign-in's new session.
func BenchmarkNew(b *testing.B) {
	for _, im := range impls() {
		b.Run(im.name, func(b *testing.B) {
			s, now := im.new(b, Config{MaxPerUser: 4})
			b.ReportAllocs()
			for b.Loop() {
				*now = now.Add(time.Millisecond)
				newSession(b, s, "alice", src)
			}
		})
	}
}
