package websession

import (
	"net/netip"
	"strings"
	"testing"
	"time"
)

func newTestStore(cfg Config) (*Store, *time.Time) {
	s := NewStore(cfg)
	now := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	s.now = func() time.Time { return now }
	return s, &now
}

var src = netip.MustParseAddr("2001:db8::7")

func TestExpiry(t *testing.T) {
	s, now := newTestStore(Config{Idle: 10 * time.Minute, Absolute: time.Hour})
	cookie, sess := s.New("alice", src)
	if len(cookie) != 43 || strings.Contains(cookie, sess.ID) || sess.CSRF == "" || sess.CSRF == cookie {
		t.Fatalf("cookie %q session %+v", cookie, sess)
	}
	// Activity keeps it alive past the idle period...
	for range 5 {
		*now = now.Add(9 * time.Minute)
		if _, ok := s.Get(cookie); !ok {
			t.Fatal("active session ended")
		}
	}
	// ...but not past the absolute lifetime.
	*now = now.Add(15 * time.Minute)
	if _, ok := s.Get(cookie); ok {
		t.Fatal("session outlived its absolute lifetime")
	}
	c2, s2 := s.New("alice", src)
	*now = now.Add(10 * time.Minute)
	if _, ok := s.Get(c2); ok || s.Alive(s2.ID) {
		t.Fatal("idle session still alive")
	}
}

func TestEnd(t *testing.T) {
	s, _ := newTestStore(Config{})
	c1, s1 := s.New("alice", src)
	c2, _ := s.New("alice", src)
	c3, _ := s.New("bob", src)
	s.End(s1.ID)
	if _, ok := s.Get(c1); ok {
		t.Error("logged-out session still valid")
	}
	if n := s.EndUser("alice"); n != 1 {
		t.Errorf("EndUser ended %d", n)
	}
	if _, ok := s.Get(c2); ok {
		t.Error("session of a disabled user still valid")
	}
	if _, ok := s.Get(c3); !ok {
		t.Error("another user's session ended")
	}
}

func TestPerUserCap(t *testing.T) {
	s, now := newTestStore(Config{MaxPerUser: 2})
	first, _ := s.New("alice", src)
	*now = now.Add(time.Second)
	s.New("alice", src)
	*now = now.Add(time.Second)
	s.New("alice", src)
	if _, ok := s.Get(first); ok {
		t.Error("oldest session survived the cap")
	}
	if s.Len() != 2 {
		t.Errorf("%d sessions", s.Len())
	}
}

func TestCSRF(t *testing.T) {
	s, _ := newTestStore(Config{})
	_, sess := s.New("alice", src)
	_, other := s.New("bob", src)
	if !sess.CheckCSRF(sess.CSRF) || sess.CheckCSRF("") || sess.CheckCSRF(other.CSRF) || sess.CheckCSRF(sess.CSRF[1:]) {
		t.Error("CSRF check wrong")
	}
}

func FuzzGet(f *testing.F) {
	s, _ := newTestStore(Config{})
	good, _ := s.New("alice", src)
	f.Add(good)
	f.Add("")
	f.Add(strings.Repeat("A", 43))
	f.Fuzz(func(t *testing.T, cookie string) {
		if sess, ok := s.Get(cookie); ok && (cookie != good || sess.User != "alice") {
			t.Fatalf("cookie %q accepted", cookie)
		}
	})
}

func TestExportImport(t *testing.T) {
	old, now := newTestStore(Config{})
	cookie, sess := old.New("alice", src)
	stale, _ := old.New("bob", src)
	*now = now.Add(20 * time.Minute)
	if _, ok := old.Get(cookie); !ok {
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
	got, ok := s.Get(cookie)
	if !ok || got.ID != sess.ID || got.User != "alice" || got.CSRF != sess.CSRF || !got.Created.Equal(sess.Created) || got.Source != src {
		t.Fatalf("alice's session after import: %+v, %v; want %+v", got, ok, sess)
	}
	if _, ok := s.Get(stale); ok || s.Len() != 1 {
		t.Errorf("an expired session was imported (%d sessions)", s.Len())
	}
	// Its absolute lifetime still counts from the first sign-in.
	*now2 = sess.Created.Add(12 * time.Hour)
	if _, ok := s.Get(cookie); ok {
		t.Error("an imported session outlived its absolute lifetime")
	}

	for name, in := range map[string]string{
		"not JSON":     "{",
		"short hash":   `[{"Hash":"AAAA","ID":"1","User":"u","CSRF":"c"}]`,
		"no CSRF":      `[{"Hash":"` + strings.Repeat("A", 43) + `=","ID":"1","User":"u"}]`,
		"not an array": `{}`,
	} {
		s := NewStore(Config{})
		if err := s.Import([]byte(in)); err == nil || s.Len() != 0 {
			t.Errorf("%s: imported, %d sessions", name, s.Len())
		}
	}
}

func TestOnExpire(t *testing.T) {
	s, now := newTestStore(Config{Idle: 10 * time.Minute, Absolute: time.Hour, MaxPerUser: 2})
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
	c1, s1 := s.New("alice", src)
	*now = now.Add(10 * time.Minute)
	s.Get(c1)
	check("idle", ended{s1.ID, "alice", EndIdle})

	// Absolute: noticed by the sweep of the next sign-in, though in use.
	c2, s2 := s.New("bob", netip.MustParseAddr("192.0.2.1"))
	for range 6 {
		*now = now.Add(9 * time.Minute)
		s.Get(c2)
	}
	check("in use")
	*now = now.Add(9 * time.Minute)
	s.New("carol", src)
	check("absolute", ended{s2.ID, "bob", EndAbsolute})

	// A sign-in past MaxPerUser ends the oldest.
	_, d1 := s.New("dave", src)
	*now = now.Add(time.Second)
	s.New("dave", src)
	*now = now.Add(time.Second)
	s.New("dave", src)
	check("per user cap", ended{d1.ID, "dave", EndPerUserCap})

	// Ended by a sign-out or an admin: not an expiry.
	_, e1 := s.New("erin", src)
	s.End(e1.ID)
	s.EndUser("dave")
	check("ended by someone")
}
