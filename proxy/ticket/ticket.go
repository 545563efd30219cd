// Package ticket issues connect tickets: the proof, good for one use within
// a minute, that a signed-in user asked to open one protocol on one target
// from one web session. A ticket is 256 random bits; the server keeps its
// SHA-256 only. Whatever goes wrong with a ticket (unknown, used, expired,
// presented from another session) the caller gets the one answer
// ErrExpired (an *Error whose Reason says why, for the audit trail), and a
// ticket presented from the wrong session is burnt, so that a leaked
// connect link is worth nothing to anyone.
//
// Two implementations of Tickets keep them: Store, in this process's
// memory (one host: handed to the next process of a binary upgrade by
// Export and Import), and Shared, in a store.DB that every instance of a
// cluster shares, where a ticket issued by one instance is redeemed by any
// other, at most once cluster-wide.
package ticket

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"
)

// TTL is how long a ticket lives.
const TTL = 60 * time.Second

// MaxPerSession caps the tickets one web session may hold unused.
const MaxPerSession = 16

// ErrExpired is the one answer for a ticket that cannot be used.
var ErrExpired = errors.New("your session has expired, start again from the portal")

// Why a ticket could not be used: Error.Reason, the reason of the
// connect_refused audit event.
const (
	ReasonBad     = "bad_ticket"     // malformed, unknown, used already, or presented from another session
	ReasonExpired = "ticket_expired" // its minute passed
)

// Error is a ticket refused: errors.Is(err, ErrExpired), with ErrExpired's
// message whatever the reason. Reason and Detail are for the audit trail.
type Error struct {
	Reason string
	Detail string
}

func (e *Error) Error() string { return ErrExpired.Error() }

// Is makes errors.Is(err, ErrExpired) true.
func (e *Error) Is(target error) bool { return target == ErrExpired }

// Ticket is what a ticket stands for.
type Ticket struct {
	// Session is the web session (or API token) id it is bound to.
	Session  string
	User     string
	Target   string
	Protocol string
	Port     uint16
	Expires  time.Time
}

type key [sha256.Size]byte

// Tickets is what the portal needs of a ticket store.
type Tickets interface {
	// Issue stores t, setting its expiry, and returns the ticket's value.
	// A session holding MaxPerSession unused tickets loses its oldest.
	Issue(t Ticket) (string, error)
	// Peek returns the ticket for v if it is live and bound to session,
	// without using it. A ticket peeked from the wrong session is burnt.
	Peek(v, session string) (Ticket, error)
	// Redeem uses the ticket for v: it is gone afterwards, whatever the
	// outcome. A refused ticket gets an *Error; another error is the
	// store's (unreachable), and nothing was used.
	Redeem(v, session string) (Ticket, error)
	// EndSession drops every ticket of a session (logout).
	EndSession(session string) error
	// Len counts outstanding tickets.
	Len() (int, error)
	// Export and Import hand the tickets to the process that takes over
	// from this one in a binary upgrade.
	Export() ([]byte, error)
	Import(b []byte) error
}

var (
	_ Tickets = (*Store)(nil)
	_ Tickets = (*Shared)(nil)
)

// Store holds outstanding tickets in memory.
type Store struct {
	now func() time.Time

	mu      sync.Mutex // guards tickets
	tickets map[key]*Ticket
}

// NewStore returns an empty Store.
func NewStore() *Store {
	return &Store{now: time.Now, tickets: map[key]*Ticket{}}
}

// Encoded tickets are 43 characters of base64url.
const encodedLen = 43

func hash(v string) key { return sha256.Sum256([]byte(v)) }

// newValue returns a fresh ticket value.
func newValue() string {
	var b [32]byte
	rand.Read(b[:]) // never fails (crypto/rand, Go 1.24+)
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// Issue stores t, setting its expiry, and returns the ticket's value. It
// never fails.
func (s *Store) Issue(t Ticket) (string, error) {
	v := newValue()
	now := s.now()
	t.Expires = now.Add(TTL)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.expire(now)
	// A session holding too many unused tickets loses its oldest.
	var oldest key
	var oldestExp time.Time
	n := 0
	for k, o := range s.tickets {
		if o.Session == t.Session {
			if n == 0 || o.Expires.Before(oldestExp) {
				oldest, oldestExp = k, o.Expires
			}
			n++
		}
	}
	if n >= MaxPerSession {
		delete(s.tickets, oldest)
	}
	s.tickets[hash(v)] = &t
	return v, nil
}

// Peek returns the ticket for v if it is live and bound to session,
// without using it: the connect page checks a ticket before its relay
// redeems it. A ticket peeked from the wrong session is burnt.
func (s *Store) Peek(v, session string) (Ticket, error) {
	return s.lookup(v, session, false)
}

// Redeem uses the ticket for v: it is gone afterwards, whatever the outcome.
func (s *Store) Redeem(v, session string) (Ticket, error) {
	return s.lookup(v, session, true)
}

func (s *Store) lookup(v, session string, use bool) (Ticket, error) {
	if len(v) != encodedLen || session == "" {
		return Ticket{}, &Error{Reason: ReasonBad, Detail: "not a ticket"}
	}
	k := hash(v)
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	t, ok := s.tickets[k]
	if !ok {
		return Ticket{}, errNoTicket()
	}
	if use || t.Session != session || !now.Before(t.Expires) {
		delete(s.tickets, k)
	}
	return check(*t, session, now)
}

// errNoTicket is the refusal of a ticket the store does not hold.
func errNoTicket() error {
	return &Error{Reason: ReasonBad, Detail: "no such ticket: never issued, used already, or expired and forgotten"}
}

// check is the refusal of t presented from session at now, or t itself.
func check(t Ticket, session string, now time.Time) (Ticket, error) {
	switch {
	case t.Session != session:
		return Ticket{}, &Error{Reason: ReasonBad, Detail: "the ticket of " + t.User + ", presented from another session: burnt"}
	case !now.Before(t.Expires):
		return Ticket{}, &Error{Reason: ReasonExpired, Detail: "the ticket expired at " + t.Expires.UTC().Format(time.RFC3339)}
	}
	return t, nil
}

// EndSession drops every ticket of a session (logout). It never fails.
func (s *Store) EndSession(session string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for k, t := range s.tickets {
		if t.Session == session {
			delete(s.tickets, k)
		}
	}
	return nil
}

// Len counts outstanding tickets. It never fails.
func (s *Store) Len() (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.expire(s.now())
	return len(s.tickets), nil
}

func (s *Store) expire(now time.Time) {
	for k, t := range s.tickets {
		if !now.Before(t.Expires) {
			delete(s.tickets, k)
		}
	}
}

// exported is a ticket as Export writes it, under the SHA-256 of its
// value: the store never had the value itself.
type exported struct {
	Hash []byte
	Ticket
}

// Export returns the outstanding tickets, for Import in the process that
// takes over from this one.
func (s *Store) Export() ([]byte, error) {
	s.mu.Lock()
	s.expire(s.now())
	out := make([]exported, 0, len(s.tickets))
	for k, t := range s.tickets {
		out = append(out, exported{Hash: k[:], Ticket: *t})
	}
	s.mu.Unlock()
	b, err := json.Marshal(out)
	if err != nil {
		return nil, fmt.Errorf("ticket: export: %w", err)
	}
	return b, nil
}

// Import adds the tickets Export returned, each with its expiry: those
// expired already are left out. On an error, nothing is added.
func (s *Store) Import(b []byte) error {
	var in []exported
	if err := json.Unmarshal(b, &in); err != nil {
		return fmt.Errorf("ticket: import: %w", err)
	}
	for _, e := range in {
		if len(e.Hash) != len(key{}) || e.Session == "" {
			return errors.New("ticket: import: a ticket lacks its hash or session")
		}
	}
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, e := range in {
		if now.Before(e.Expires) {
			s.tickets[key(e.Hash)] = &e.Ticket
		}
	}
	return nil
}
