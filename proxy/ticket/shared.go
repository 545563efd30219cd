package ticket

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/bastiond/bastiond/internal/store"
)

// bucket holds the shared tickets. Its keys:
//
//	't' + SHA-256(value)                       -> the Ticket, JSON
//	's' + SHA-256(session)[:16] + SHA-256(value) -> its expiry, Unix ns, 8 bytes
//
// The second is the index of a session's tickets (its cap, its logout).
// Neither holds a ticket's value: what is stored cannot be redeemed.
const bucket = "tickets"

const sessionHashLen = 16

func ticketKey(k key) []byte { return append([]byte{'t'}, k[:]...) }

func sessionPrefix(session string) []byte {
	h := sha256.Sum256([]byte(session))
	return append([]byte{'s'}, h[:sessionHashLen]...)
}

func indexKey(session string, k key) []byte { return append(sessionPrefix(session), k[:]...) }

// Shared keeps tickets in a store.DB that every instance of a cluster
// shares: a ticket issued by one instance is good on all, and redeemed at
// most once among them, since a redemption is one transaction that reads
// and deletes it (the store's transactions are serializable).
type Shared struct {
	db  store.DB
	now func() time.Time

	mu    sync.Mutex // guards swept
	swept time.Time
}

// NewShared returns the tickets kept in db.
func NewShared(db store.DB) *Shared {
	return &Shared{db: db, now: time.Now}
}

// indexed is one entry of a session's index.
type indexed struct {
	k       key
	expires int64
}

// Issue stores t, setting its expiry, and returns the ticket's value.
func (s *Shared) Issue(t Ticket) (string, error) {
	v := newValue()
	k := hash(v)
	now := s.now()
	t.Expires = now.Add(TTL)
	rec, err := json.Marshal(t)
	if err != nil {
		return "", fmt.Errorf("ticket: issue: %w", err)
	}
	var exp [8]byte
	binary.BigEndian.PutUint64(exp[:], uint64(t.Expires.UnixNano()))
	// The session's index is read in a snapshot, not in the transaction
	// that writes: on PostgreSQL a SERIALIZABLE read of the index would
	// conflict with every other session's tickets written at once. The cap
	// is then one ticket wider per issue racing in the same session.
	var mine []indexed
	err = s.db.View(func(tx store.Tx) error {
		mine = nil
		return tx.Bucket(bucket).ForEach(sessionPrefix(t.Session), func(ik, v []byte) error {
			if len(ik) != 1+sessionHashLen+len(key{}) || len(v) != 8 {
				return fmt.Errorf("ticket: malformed index entry %x", ik)
			}
			mine = append(mine, indexed{key(ik[1+sessionHashLen:]), int64(binary.BigEndian.Uint64(v))})
			return nil
		})
	})
	if err != nil {
		return "", fmt.Errorf("ticket: issue: %w", err)
	}
	// The expired tickets of the session go; if it still holds
	// MaxPerSession, so does its oldest.
	live := mine[:0]
	for _, e := range mine {
		if now.UnixNano() >= e.expires {
			if err := s.take(t.Session, e.k); err != nil {
				return "", fmt.Errorf("ticket: issue: %w", err)
			}
			continue
		}
		live = append(live, e)
	}
	if len(live) >= MaxPerSession {
		oldest := live[0]
		for _, e := range live {
			if e.expires < oldest.expires {
				oldest = e
			}
		}
		if err := s.take(t.Session, oldest.k); err != nil {
			return "", fmt.Errorf("ticket: issue: %w", err)
		}
	}
	// Writes only: nothing read, nothing to conflict with.
	err = s.db.Update(func(tx store.Tx) error {
		b := tx.Bucket(bucket)
		if err := b.Put(ticketKey(k), rec); err != nil {
			return err
		}
		return b.Put(indexKey(t.Session, k), exp[:])
	})
	if err != nil {
		return "", fmt.Errorf("ticket: issue: %w", err)
	}
	// The ticket is issued: a sweep that fails is tried again next time.
	_ = s.sweepEvery(now)
	return v, nil
}

// take removes the ticket k of session and its index entry, each by
// itself (store.Take): a ticket without its index entry, or the reverse,
// is harmless and goes with its expiry.
func (s *Shared) take(session string, k key) error {
	if _, err := store.Take(s.db, bucket, ticketKey(k)); err != nil {
		return err
	}
	_, err := store.Take(s.db, bucket, indexKey(session, k))
	return err
}

// drop deletes the ticket k of session and its index entry.
func drop(b store.Bucket, session string, k key) error {
	if err := b.Delete(ticketKey(k)); err != nil {
		return err
	}
	return b.Delete(indexKey(session, k))
}

// Peek returns the ticket for v if it is live and bound to session,
// without using it. A ticket peeked from the wrong session is burnt.
func (s *Shared) Peek(v, session string) (Ticket, error) { return s.lookup(v, session, false) }

// Redeem uses the ticket for v: it is gone afterwards, whatever the
// outcome. Of the instances redeeming one ticket at once, one gets it.
func (s *Shared) Redeem(v, session string) (Ticket, error) { return s.lookup(v, session, true) }

func (s *Shared) lookup(v, session string, use bool) (Ticket, error) {
	if len(v) != encodedLen || session == "" {
		return Ticket{}, &Error{Reason: ReasonBad, Detail: "not a ticket"}
	}
	k := hash(v)
	now := s.now()
	var t Ticket
	var found bool
	if !use {
		// A peek at a live ticket of this session changes nothing: a
		// read will do.
		err := s.db.View(func(tx store.Tx) error {
			t, found = Ticket{}, false
			rec, err := tx.Bucket(bucket).Get(ticketKey(k))
			if err != nil || rec == nil {
				return err
			}
			found = true
			return json.Unmarshal(rec, &t)
		})
		if err != nil {
			return Ticket{}, fmt.Errorf("ticket: %w", err)
		}
		if !found {
			return Ticket{}, errNoTicket()
		}
		if t.Session == session && now.Before(t.Expires) {
			return t, nil
		}
	}
	// A redemption, or a peek that burns or drops the ticket: whoever
	// takes it (one statement on PostgreSQL) has it; the rest find nothing.
	rec, err := store.Take(s.db, bucket, ticketKey(k))
	switch {
	case err != nil:
		return Ticket{}, fmt.Errorf("ticket: %w", err)
	case rec == nil:
		return Ticket{}, errNoTicket()
	}
	t = Ticket{}
	if err := json.Unmarshal(rec, &t); err != nil {
		return Ticket{}, fmt.Errorf("ticket: stored ticket: %w", err)
	}
	if _, err := store.Take(s.db, bucket, indexKey(t.Session, k)); err != nil {
		return Ticket{}, fmt.Errorf("ticket: %w", err)
	}
	return check(t, session, now)
}

// EndSession drops every ticket of a session (logout).
func (s *Shared) EndSession(session string) error {
	err := s.db.Update(func(tx store.Tx) error {
		b := tx.Bucket(bucket)
		var ks []key
		err := b.ForEach(sessionPrefix(session), func(ik, _ []byte) error {
			if len(ik) == 1+sessionHashLen+len(key{}) {
				ks = append(ks, key(ik[1+sessionHashLen:]))
			}
			return nil
		})
		if err != nil {
			return err
		}
		for _, k := range ks {
			if err := drop(b, session, k); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("ticket: end session: %w", err)
	}
	return nil
}

// Len counts outstanding tickets, of every instance.
func (s *Shared) Len() (int, error) {
	now := s.now()
	if err := s.sweepEvery(now); err != nil {
		return 0, err
	}
	n := 0
	err := s.db.View(func(tx store.Tx) error {
		n = 0
		return tx.Bucket(bucket).ForEach([]byte{'t'}, func(_, v []byte) error {
			var t Ticket
			if err := json.Unmarshal(v, &t); err != nil {
				return fmt.Errorf("ticket: stored ticket: %w", err)
			}
			if now.Before(t.Expires) {
				n++
			}
			return nil
		})
	})
	if err != nil {
		return 0, fmt.Errorf("ticket: count: %w", err)
	}
	return n, nil
}

// maxSweep bounds the tickets one sweep deletes: the rest go in the next.
const maxSweep = 4096

// sweepEvery deletes expired tickets, at most once a TTL from this
// instance: those never presented again would stay in the store for ever.
// A session's own expired tickets also go whenever it is issued one.
func (s *Shared) sweepEvery(now time.Time) error {
	s.mu.Lock()
	if now.Sub(s.swept) < TTL {
		s.mu.Unlock()
		return nil
	}
	s.swept = now
	s.mu.Unlock()
	err := s.db.Update(func(tx store.Tx) error {
		b := tx.Bucket(bucket)
		type gone struct {
			k       key
			session string
		}
		var old []gone
		err := b.ForEach([]byte{'t'}, func(tk, v []byte) error {
			var t Ticket
			if len(tk) != 1+len(key{}) || json.Unmarshal(v, &t) != nil {
				return fmt.Errorf("ticket: malformed ticket %x", tk)
			}
			if !now.Before(t.Expires) {
				old = append(old, gone{key(tk[1:]), t.Session})
				if len(old) == maxSweep {
					return errEnough
				}
			}
			return nil
		})
		if err != nil && !errors.Is(err, errEnough) {
			return err
		}
		for _, g := range old {
			if err := drop(b, g.session, g.k); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		s.mu.Lock()
		s.swept = time.Time{}
		s.mu.Unlock()
		return fmt.Errorf("ticket: sweep: %w", err)
	}
	return nil
}

var errEnough = errors.New("enough for one sweep")

// Export returns an empty list: the tickets are in the shared store,
// where the successor finds them. (A Store, in memory, can import it.)
func (s *Shared) Export() ([]byte, error) { return []byte("[]"), nil }

// Import does nothing and never fails: the successor of a binary upgrade
// shares the predecessor's store, tickets included. A Store's export
// (the predecessor kept its tickets in memory) is dropped: its users
// start again from the portal.
func (s *Shared) Import([]byte) error { return nil }
