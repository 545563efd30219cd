package ticket

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/bastiond/bastiond/internal/store"
	"github.com/bastiond/bastiond/internal/store/pgstore/pgstoretest"
)

type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func newTestStore() (*Store, *clock) {
	s := NewStore()
	c := &clock{t: time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)}
	s.now = c.now
	return s, c
}

// backends are the databases the Shared tickets are tested on: bbolt and PostgreSQL.
var backends = pgstoretest.Backends

// impl is one implementation of Tickets under test, on a clock of its own.
type impl struct {
	name string
	new  func(t *testing.T) (Tickets, *clock)
}

// impls are the implementations of Tickets: the semantics they share are
// tested on each.
func impls() []impl {
	out := []impl{{"memory", func(*testing.T) (Tickets, *clock) { return newTestStore() }}}
	for _, b := range backends {
		out = append(out, impl{"shared/" + b.Name, func(t *testing.T) (Tickets, *clock) {
			s, c := newShared(b.Open(t))
			return s, c
		}})
	}
	return out
}

func newShared(db store.DB) (*Shared, *clock) {
	s := NewShared(db)
	c := &clock{t: time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)}
	s.now = c.now
	return s, c
}

// forEach runs f as a subtest on every implementation.
func forEach(t *testing.T, f func(t *testing.T, s Tickets, c *clock)) {
	for _, im := range impls() {
		t.Run(im.name, func(t *testing.T) {
			s, c := im.new(t)
			f(t, s, c)
		})
	}
}

func issue(t testing.TB, s Tickets, tk Ticket) string {
	t.Helper()
	v, err := s.Issue(tk)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func count(t testing.TB, s Tickets) int {
	t.Helper()
	n, err := s.Len()
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestTicket(t *testing.T) {
	for _, im := range impls() {
		t.Run(im.name, func(t *testing.T) { testTicket(t, im) })
	}
}

func testTicket(t *testing.T, im impl) {
	want := Ticket{Session: "s1", User: "alice", Target: "vm1", Protocol: "ssh"}
	for _, tc := range []struct {
		name    string
		session string
		wait    time.Duration
		redeems int // successful redeems before the checked one
		ok      bool
	}{
		{"same session, in time", "s1", 59 * time.Second, 0, true},
		{"replay after use", "s1", 0, 1, false},
		{"expired", "s1", TTL, 0, false},
		{"another session (copied link, other browser)", "s2", 0, 0, false},
		{"no session", "", 0, 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, c := im.new(t)
			v := issue(t, s, want)
			if len(v) != encodedLen {
				t.Fatalf("ticket %q: %d characters", v, len(v))
			}
			for range tc.redeems {
				if _, err := s.Redeem(v, "s1"); err != nil {
					t.Fatal(err)
				}
			}
			c.t = c.t.Add(tc.wait)
			got, err := s.Redeem(v, tc.session)
			if tc.ok {
				if err != nil || got.User != "alice" || got.Target != "vm1" || got.Protocol != "ssh" {
					t.Fatalf("%+v %v", got, err)
				}
			} else if !errors.Is(err, ErrExpired) {
				t.Fatalf("err %v, want ErrExpired", err)
			}
		})
	}
}

func TestPeekThenRedeem(t *testing.T) { forEach(t, testPeekThenRedeem) }

func testPeekThenRedeem(t *testing.T, s Tickets, _ *clock) {
	v := issue(t, s, Ticket{Session: "s1", User: "alice"})
	if _, err := s.Peek(v, "s1"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Peek(v, "s1"); err != nil {
		t.Fatal("peek used the ticket")
	}
	if _, err := s.Redeem(v, "s1"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Peek(v, "s1"); !errors.Is(err, ErrExpired) {
		t.Fatal("redeemed ticket still peekable")
	}
}

// A ticket presented from another session is burnt: the leak is closed
// even for its owner, who starts again from the portal.
func TestWrongSessionBurns(t *testing.T) { forEach(t, testWrongSessionBurns) }

func testWrongSessionBurns(t *testing.T, s Tickets, _ *clock) {
	v := issue(t, s, Ticket{Session: "s1", User: "alice"})
	if _, err := s.Peek(v, "attacker"); !errors.Is(err, ErrExpired) {
		t.Fatal("accepted from another session")
	}
	if _, err := s.Redeem(v, "s1"); !errors.Is(err, ErrExpired) {
		t.Fatal("a ticket shown to another session still works")
	}
}

func TestLimitsAndLogout(t *testing.T) { forEach(t, testLimitsAndLogout) }

func testLimitsAndLogout(t *testing.T, s Tickets, c *clock) {
	var first string
	for i := range MaxPerSession + 4 {
		v := issue(t, s, Ticket{Session: "s1"})
		if i == 0 {
			first = v
		}
		c.t = c.t.Add(time.Millisecond)
	}
	if n := count(t, s); n != MaxPerSession {
		t.Errorf("%d tickets outstanding, want %d", n, MaxPerSession)
	}
	if _, err := s.Peek(first, "s1"); !errors.Is(err, ErrExpired) {
		t.Error("oldest ticket survived the cap")
	}
	issue(t, s, Ticket{Session: "s2"})
	if err := s.EndSession("s1"); err != nil {
		t.Fatal(err)
	}
	if n := count(t, s); n != 1 {
		t.Errorf("after logout: %d", n)
	}
	c.t = c.t.Add(TTL)
	if n := count(t, s); n != 0 {
		t.Errorf("after expiry: %d", n)
	}
}

func FuzzRedeem(f *testing.F) {
	s, _ := newTestStore()
	good := issue(f, s, Ticket{Session: "s"})
	f.Add(good, "s")
	f.Add(strings.Repeat("A", encodedLen), "s")
	f.Add("", "")
	f.Fuzz(func(t *testing.T, v, session string) {
		s, _ := newTestStore()
		real := issue(t, s, Ticket{Session: "s"})
		if _, err := s.Redeem(v, session); err == nil && (v != real || session != "s") {
			t.Fatalf("%q from %q redeemed", v, session)
		}
	})
}

func BenchmarkIssueRedeem(b *testing.B) {
	b.Run("memory", func(b *testing.B) { benchIssueRedeem(b, NewStore()) })
	for _, be := range backends {
		b.Run("shared/"+be.Name, func(b *testing.B) { benchIssueRedeem(b, NewShared(be.Open(b))) })
	}
}

func benchIssueRedeem(b *testing.B, s Tickets) {
	b.ReportAllocs()
	for b.Loop() {
		v := issue(b, s, Ticket{Session: "s", User: "alice", Target: "vm1", Protocol: "ssh"})
		if _, err := s.Redeem(v, "s"); err != nil {
			b.Fatal(err)
		}
	}
}

func TestExportImport(t *testing.T) {
	old, c := newTestStore()
	early := issue(t, old, Ticket{Session: "s1", User: "alice", Target: "vm1", Protocol: "ssh", Port: 22})
	c.t = c.t.Add(30 * time.Second)
	late := issue(t, old, Ticket{Session: "s1", User: "alice", Target: "vm1", Protocol: "ssh", Port: 22})
	used := issue(t, old, Ticket{Session: "s1"})
	if _, err := old.Redeem(used, "s1"); err != nil {
		t.Fatal(err)
	}
	b, err := old.Export()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(b), early) || strings.Contains(string(b), late) {
		t.Fatal("the export holds a ticket's value")
	}

	// The successor takes over 31 s later: the early ticket has expired
	// by then, the late one has not, and keeps its expiry.
	s, c2 := newTestStore()
	c2.t = c.t.Add(31 * time.Second)
	if err := s.Import(b); err != nil {
		t.Fatal(err)
	}
	if n := count(t, s); n != 1 {
		t.Errorf("%d tickets imported, want 1", n)
	}
	if _, err := s.Peek(early, "s1"); !errors.Is(err, ErrExpired) {
		t.Error("an expired ticket was imported")
	}
	if _, err := s.Peek(used, "s1"); !errors.Is(err, ErrExpired) {
		t.Error("a used ticket was imported")
	}
	c2.t = c.t.Add(TTL - time.Second)
	if got, err := s.Peek(late, "s1"); err != nil || got.User != "alice" || got.Port != 22 {
		t.Errorf("the late ticket after import: %+v, %v", got, err)
	}
	c2.t = c.t.Add(TTL)
	if _, err := s.Peek(late, "s1"); !errors.Is(err, ErrExpired) {
		t.Error("an imported ticket outlived its expiry")
	}

	for name, in := range map[string]string{
		"not JSON":   "[",
		"short hash": `[{"Hash":"AAAA","Session":"s1"}]`,
		"no session": `[{"Hash":"` + strings.Repeat("A", 43) + `="}]`,
	} {
		s := NewStore()
		if err := s.Import([]byte(in)); err == nil || count(t, s) != 0 {
			t.Errorf("%s: imported, %d tickets", name, count(t, s))
		}
	}
}

func TestRefusalReasons(t *testing.T) { forEach(t, testRefusalReasons) }

func testRefusalReasons(t *testing.T, s Tickets, c *clock) {
	reason := func(err error) string {
		var te *Error
		if !errors.As(err, &te) || err.Error() != ErrExpired.Error() || !errors.Is(err, ErrExpired) {
			t.Fatalf("err %v is not a ticket *Error with ErrExpired's message", err)
		}
		return te.Reason
	}
	if _, err := s.Redeem("short", "s1"); reason(err) != ReasonBad {
		t.Errorf("malformed: %v", err)
	}
	v := issue(t, s, Ticket{Session: "s1", User: "alice", Target: "vm1", Protocol: "ssh"})
	if _, err := s.Redeem(v, "s2"); reason(err) != ReasonBad {
		t.Errorf("another session: %v", err)
	}
	if _, err := s.Redeem(v, "s1"); reason(err) != ReasonBad {
		t.Errorf("burnt: %v", err)
	}
	v = issue(t, s, Ticket{Session: "s1", User: "alice", Target: "vm1", Protocol: "ssh"})
	c.t = c.t.Add(TTL)
	if _, err := s.Redeem(v, "s1"); reason(err) != ReasonExpired {
		t.Errorf("expired: %v", err)
	}
	if _, err := s.Redeem(v, "s1"); reason(err) != ReasonBad {
		t.Errorf("used after expiry: %v", err)
	}
}
