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
