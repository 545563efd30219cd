package ticket

import (
	"errors"
	"strings"
	"testing"
	"time"
)

type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func newTestStore() (*Store, *clock) {
	s := NewStore()
	c := &clock{t: time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)}
	s.now = c.now
	return s, c
}

func TestTicket(t *testing.T) {
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
			s, c := newTestStore()
			v := s.Issue(want)
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

func TestPeekThenRedeem(t *testing.T) {
	s, _ := newTestStore()
	v := s.Issue(Ticket{Session: "s1", User: "alice"})
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
func TestWrongSessionBurns(t *testing.T) {
	s, _ := newTestStore()
	v := s.Issue(Ticket{Session: "s1", User: "alice"})
	if _, err := s.Peek(v, "attacker"); !errors.Is(err, ErrExpired) {
		t.Fatal("accepted from another session")
	}
	if _, err := s.Redeem(v, "s1"); !errors.Is(err, ErrExpired) {
		t.Fatal("a ticket shown to another session still works")
	}
}

func TestLimitsAndLogout(t *testing.T) {
	s, c := newTestStore()
	var first string
	for i := range MaxPerSession + 4 {
		v := s.Issue(Ticket{Session: "s1"})
		if i == 0 {
			first = v
		}
		c.t = c.t.Add(time.Millisecond)
	}
	if n := s.Len(); n != MaxPerSession {
		t.Errorf("%d tickets outstanding, want %d", n, MaxPerSession)
	}
	if _, err := s.Peek(first, "s1"); !errors.Is(err, ErrExpired) {
		t.Error("oldest ticket survived the cap")
	}
	s.Issue(Ticket{Session: "s2"})
	s.EndSession("s1")
	if n := s.Len(); n != 1 {
		t.Errorf("after logout: %d", n)
	}
	c.t = c.t.Add(TTL)
	if n := s.Len(); n != 0 {
		t.Errorf("after expiry: %d", n)
	}
}

func FuzzRedeem(f *testing.F) {
	s, _ := newTestStore()
	good := s.Issue(Ticket{Session: "s"})
	f.Add(good, "s")
	f.Add(strings.Repeat("A", encodedLen), "s")
	f.Add("", "")
	f.Fuzz(func(t *testing.T, v, session string) {
		s, _ := newTestStore()
		real := s.Issue(Ticket{Session: "s"})
		if _, err := s.Redeem(v, session); err == nil && (v != real || session != "s") {
			t.Fatalf("%q from %q redeemed", v, session)
		}
	})
}

func BenchmarkIssueRedeem(b *testing.B) {
	s := NewStore()
	b.ReportAllocs()
	for b.Loop() {
		v := s.Issue(Ticket{Session: "s", User: "alice", Target: "vm1", Protocol: "ssh"})
		if _, err := s.Redeem(v, "s"); err != nil {
			b.Fatal(err)
		}
	}
}

func TestExportImport(t *testing.T) {
	old, c := newTestStore()
	early := old.Issue(Ticket{Session: "s1", User: "alice", Target: "vm1", Protocol: "ssh", Port: 22})
	c.t = c.t.Add(30 * time.Second)
	late := old.Issue(Ticket{Session: "s1", User: "alice", Target: "vm1", Protocol: "ssh", Port: 22})
	used := old.Issue(Ticket{Session: "s1"})
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
	if s.Len() != 1 {
		t.Errorf("%d tickets imported, want 1", s.Len())
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
		if err := s.Import([]byte(in)); err == nil || s.Len() != 0 {
			t.Errorf("%s: imported, %d tickets", name, s.Len())
		}
	}
}

func TestRefusalReasons(t *testing.T) {
	s := NewStore()
	c := &clock{t: time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)}
	s.now = c.now
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
	v := s.Issue(Ticket{Session: "s1", User: "alice", Target: "vm1", Protocol: "ssh"})
	if _, err := s.Redeem(v, "s2"); reason(err) != ReasonBad {
		t.Errorf("another session: %v", err)
	}
	if _, err := s.Redeem(v, "s1"); reason(err) != ReasonBad {
		t.Errorf("burnt: %v", err)
	}
	v = s.Issue(Ticket{Session: "s1", User: "alice", Target: "vm1", Protocol: "ssh"})
	c.t = c.t.Add(TTL)
	if _, err := s.Redeem(v, "s1"); reason(err) != ReasonExpired {
		t.Errorf("expired: %v", err)
	}
	if _, err := s.Redeem(v, "s1"); reason(err) != ReasonBad {
		t.Errorf("used after expiry: %v", err)
	}
}
