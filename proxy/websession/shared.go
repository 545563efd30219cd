package websession

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/bastiond/bastiond/internal/store"
)

// bucket holds the shared sessions. Its keys:
//
//	'c' + SHA-256(cookie)         -> the session (record), JSON
//	'i' + ID                      -> SHA-256(cookie): End, Alive
//	'u' + user + 0x00 + ID        -> SHA-256(cookie): EndUser, the per-user cap
//
// Nothing in it is secret: a cookie's hash cannot be presented as the
// cookie, and the CSRF token is not stored but derived from the cookie
// (csrfOf), which only the browser and the request carrying it hold.
const bucket = "websessions"

// TouchEvery is how often, at most, Shared writes a session's LastSeen:
// a write to a shared database at each HTTP request would cost more than
// the request. A session in use is therefore seen as last used up to
// TouchEvery earlier than it was, and may end as idle up to TouchEvery
// before Config.Idle after its last request, never after. With an Idle
// shorter than 8 TouchEvery, the interval is Idle/8.
const TouchEvery = time.Minute

// touchEvery is TouchEvery for c.
func (c Config) touchEvery() time.Duration { return min(TouchEvery, c.Idle/8) }

// record is a session as Shared stores it: without its CSRF token.
type record struct {
	ID       string     `json:"id"`
	User     string     `json:"user"`
	Source   netip.Addr `json:"source"`
	Created  time.Time  `json:"created"`
	LastSeen time.Time  `json:"last_seen"`
}

// session is r as a Session; its CSRF token is known only with the
// cookie (none for a session reported ended).
func (r record) session(cookie string) Session {
	sess := Session{ID: r.ID, User: r.User, Source: r.Source, Created: r.Created, LastSeen: r.LastSeen}
	if cookie != "" {
		sess.CSRF = csrfOf(cookie)
	}
	return sess
}

// csrfLabel makes the CSRF token of a cookie something else than any
// other value derived from it.
const csrfLabel = "bastiond web session CSRF token v1"

// csrfOf is the CSRF token of the session of cookie: HMAC-SHA-256 keyed by
// the cookie, in base64url. A page can show it (it must, for its forms)
// without giving the cookie away, a cross-site attacker can no more know
// it than the cookie, and no instance needs to store it.
func csrfOf(cookie string) string {
	m := hmac.New(sha256.New, []byte(cookie))
	m.Write([]byte(csrfLabel))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

func cookieKey(k key) []byte     { return append([]byte{'c'}, k[:]...) }
func idKey(id string) []byte     { return append([]byte{'i'}, id...) }
func userPrefix(u string) []byte { return append(append([]byte{'u'}, u...), 0) }
func userKey(u, id string) []byte {
	return append(userPrefix(u), id...)
}

// Shared keeps web sessions in a store.DB that every instance of a cluster
// shares: a browser signed in on one instance is signed in on all, and a
// session ended on one (sign-out, EndUser) is ended on all. Each session
// the store ends by itself is reported to OnExpire by the one instance
// whose transaction deleted it.
type Shared struct {
	db  store.DB
	now func() time.Time

	mu       sync.Mutex // guards the fields below
	cfg      Config
	onExpire func(Session, string)
	swept    time.Time
}

// NewShared returns the web sessions kept in db, under the limits of cfg
// (this instance's: give every instance the same).
func NewShared(db store.DB, cfg Config) *Shared {
	return &Shared{db: db, now: time.Now, cfg: cfg.withDefaults()}
}

// OnExpire has f called with each session the store ends by itself, and
// why, after the transaction that ended it: once per session in the
// cluster. f must not call the store.
func (s *Shared) OnExpire(f func(sess Session, reason string)) {
	s.mu.Lock()
	s.onExpire = f
	s.mu.Unlock()
}

// SetConfig changes this instance's limits (on reload).
func (s *Shared) SetConfig(cfg Config) {
	s.mu.Lock()
	s.cfg = cfg.withDefaults()
	s.mu.Unlock()
}

// Config returns the limits in force.
func (s *Shared) Config() Config {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cfg
}

// ended is a session the store ended by itself, to report once its
// transaction committed.
type ended struct {
	sess Session
	why  string
}

// report calls the OnExpire callback for each of es.
func (s *Shared) report(es []ended) {
	s.mu.Lock()
	f := s.onExpire
	s.mu.Unlock()
	if f == nil {
		return
	}
	for _, e := range es {
		f(e.sess, e.why)
	}
}

// getRecord reads the session under cookie hash k, or nil.
func getRecord(b store.Bucket, k key) (*record, error) {
	v, err := b.Get(cookieKey(k))
	if err != nil {
		return nil, err
	}
	return decodeRecord(k, v)
}

// decodeRecord is the session of k from its stored value v (nil: none).
func decodeRecord(k key, v []byte) (*record, error) {
	if v == nil {
		return nil, nil
	}
	var r record
	if err := json.Unmarshal(v, &r); err != nil {
		return nil, fmt.Errorf("websession: stored session %x: %w", k[:4], err)
	}
	return &r, nil
}

func putRecord(b store.Bucket, k key, r record) error {
	v, err := json.Marshal(r)
	if err != nil {
		return err
	}
	return b.Put(cookieKey(k), v)
}

// remove deletes the session r under cookie hash k, and its index entries.
func remove(b store.Bucket, k key, r *record) error {
	for _, dk := range [][]byte{cookieKey(k), idKey(r.ID), userKey(r.User, r.ID)} {
		if err := b.Delete(dk); err != nil {
			return err
		}
	}
	return nil
}

// New starts a session for user and returns the cookie value to set.
func (s *Shared) New(user string, src netip.Addr) (string, Session, error) {
	if user == "" || strings.IndexByte(user, 0) >= 0 || len(user) > 1024 {
		return "", Session{}, fmt.Errorf("websession: user name %q: empty, too long or with a NUL", user)
	}
	cfg := s.Config()
	cookie := random(32)
	k := hash(cookie)
	now := s.now()
	id := make([]byte, 8)
	rand.Read(id)
	r := record{ID: hex.EncodeToString(id), User: user, Source: src, Created: now, LastSeen: now}
	var gone []ended
	err := s.db.Update(func(tx store.Tx) error {
		gone = nil
		b := tx.Bucket(bucket)
		var hashes []key
		err := b.ForEach(userPrefix(user), func(_, v []byte) error {
			if len(v) != len(key{}) {
				return errors.New("websession: malformed user index entry")
			}
			hashes = append(hashes, key(v))
			return nil
		})
		if err != nil {
			return err
		}
		type mineT struct {
			k key
			r *record
		}
		var mine []mineT
		for _, h := range hashes {
			o, err := getRecord(b, h)
			if err != nil {
				return err
			}
			if o == nil {
				continue
			}
			if why := cfg.expiry(&Session{Created: o.Created, LastSeen: o.LastSeen}, now); why != "" {
				if err := remove(b, h, o); err != nil {
					return err
				}
				gone = append(gone, ended{o.session(""), why})
				continue
			}
			mine = append(mine, mineT{h, o})
		}
		for len(mine) >= cfg.MaxPerUser {
			oldest := 0
			for i, o := range mine {
				if o.r.Created.Before(mine[oldest].r.Created) {
					oldest = i
				}
			}
			if err := remove(b, mine[oldest].k, mine[oldest].r); err != nil {
				return err
			}
			gone = append(gone, ended{mine[oldest].r.session(""), EndPerUserCap})
			mine = append(mine[:oldest], mine[oldest+1:]...)
		}
		if err := putRecord(b, k, r); err != nil {
			return err
		}
		if err := b.Put(idKey(r.ID), k[:]); err != nil {
			return err
		}
		return b.Put(userKey(user, r.ID), k[:])
	})
	if err != nil {
		return "", Session{}, fmt.Errorf("websession: new session: %w", err)
	}
	s.report(gone)
	// The session is made: a sweep that fails is tried again next time.
	_ = s.sweepEvery(now, cfg)
	return cookie, r.session(cookie), nil
}

// Get returns the live session for a cookie value and marks it used,
// writing LastSeen at most once every TouchEvery.
func (s *Shared) Get(cookie string) (Session, error) {
	if len(cookie) != cookieLen {
		return Session{}, ErrNoSession
	}
	cfg := s.Config()
	k := hash(cookie)
	now := s.now()
	// Every request of a signed-in browser comes here: one key, read by
	// itself (in PostgreSQL one statement, not a transaction).
	v, err := store.Get(s.db, bucket, cookieKey(k))
	if err != nil {
		return Session{}, fmt.Errorf("websession: %w", err)
	}
	r, err := decodeRecord(k, v)
	if err != nil {
		return Session{}, err
	}
	if r == nil {
		return Session{}, ErrNoSession
	}
	why := cfg.expiry(&Session{Created: r.Created, LastSeen: r.LastSeen}, now)
	if why == "" && now.Sub(r.LastSeen) < cfg.touchEvery() {
		sess := r.session(cookie)
		sess.LastSeen = now
		return sess, nil
	}
	// Expired, or due a touch: read it again in a write transaction, in
	// which an expiry is deleted (and so reported by this instance only).
	var gone *ended
	var live bool
	err = s.db.Update(func(tx store.Tx) error {
		gone, live = nil, false
		b := tx.Bucket(bucket)
		var err error
		if r, err = getRecord(b, k); err != nil || r == nil {
			return err
		}
		if why := cfg.expiry(&Session{Created: r.Created, LastSeen: r.LastSeen}, now); why != "" {
			gone = &ended{r.session(""), why}
			return remove(b, k, r)
		}
		live = true
		if r.LastSeen.Before(now) {
			r.LastSeen = now
		}
		return putRecord(b, k, *r)
	})
	if err != nil {
		return Session{}, fmt.Errorf("websession: %w", err)
	}
	if gone != nil {
		s.report([]ended{*gone})
	}
	if !live {
		return Session{}, ErrNoSession
	}
	return r.session(cookie), nil
}

// Alive reports whether the session id is still live, without marking it
// used.
func (s *Shared) Alive(id string) (bool, error) {
	cfg := s.Config()
	now := s.now()
	var r *record
	err := s.db.View(func(tx store.Tx) error {
		r = nil
		b := tx.Bucket(bucket)
		v, err := b.Get(idKey(id))
		if err != nil || len(v) != len(key{}) {
			return err
		}
		r, err = getRecord(b, key(v))
		return err
	})
	if err != nil {
		return false, fmt.Errorf("websession: %w", err)
	}
	return r != nil && cfg.expiry(&Session{Created: r.Created, LastSeen: r.LastSeen}, now) == "", nil
}

// End ends the session with this id, on every instance.
func (s *Shared) End(id string) error {
	if id == "" {
		return nil
	}
	err := s.db.Update(func(tx store.Tx) error {
		b := tx.Bucket(bucket)
		v, err := b.Get(idKey(id))
		if err != nil || len(v) != len(key{}) {
			return err
		}
		k := key(v)
		r, err := getRecord(b, k)
		if err != nil || r == nil {
			return err
		}
		return remove(b, k, r)
	})
	if err != nil {
		return fmt.Errorf("websession: end session: %w", err)
	}
	return nil
}

// EndUser ends every session of user, on every instance, and returns how
// many there were.
func (s *Shared) EndUser(user string) (int, error) {
	n := 0
	err := s.db.Update(func(tx store.Tx) error {
		n = 0
		b := tx.Bucket(bucket)
		var hashes []key
		err := b.ForEach(userPrefix(user), func(_, v []byte) error {
			if len(v) == len(key{}) {
				hashes = append(hashes, key(v))
			}
			return nil
		})
		if err != nil {
			return err
		}
		for _, h := range hashes {
			r, err := getRecord(b, h)
			if err != nil {
				return err
			}
			if r == nil {
				continue
			}
			if err := remove(b, h, r); err != nil {
				return err
			}
			n++
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("websession: end the sessions of %s: %w", user, err)
	}
	return n, nil
}

// Len counts live sessions, of every instance.
func (s *Shared) Len() (int, error) {
	cfg := s.Config()
	now := s.now()
	if err := s.sweepEvery(now, cfg); err != nil {
		return 0, err
	}
	n := 0
	err := s.db.View(func(tx store.Tx) error {
		n = 0
		return tx.Bucket(bucket).ForEach([]byte{'c'}, func(_, v []byte) error {
			var r record
			if err := json.Unmarshal(v, &r); err != nil {
				return fmt.Errorf("websession: stored session: %w", err)
			}
			if cfg.expiry(&Session{Created: r.Created, LastSeen: r.LastSeen}, now) == "" {
				n++
			}
			return nil
		})
	})
	if err != nil {
		return 0, fmt.Errorf("websession: count: %w", err)
	}
	return n, nil
}

// maxSweep bounds the sessions one sweep ends: the rest go in the next.
const maxSweep = 4096

var errEnough = errors.New("enough for one sweep")

// sweepEvery ends the expired sessions, at most once every touch
// interval from this instance (a sweep reads every session), and reports
// each; those whose browser comes back are ended by Get before that.
func (s *Shared) sweepEvery(now time.Time, cfg Config) error {
	s.mu.Lock()
	if now.Sub(s.swept) < cfg.touchEvery() {
		s.mu.Unlock()
		return nil
	}
	s.swept = now
	s.mu.Unlock()
	var gone []ended
	err := s.db.Update(func(tx store.Tx) error {
		gone = nil
		b := tx.Bucket(bucket)
		type old struct {
			k key
			r record
		}
		var olds []old
		err := b.ForEach([]byte{'c'}, func(ck, v []byte) error {
			var r record
			if len(ck) != 1+len(key{}) || json.Unmarshal(v, &r) != nil {
				return fmt.Errorf("websession: malformed session %x", ck)
			}
			if why := cfg.expiry(&Session{Created: r.Created, LastSeen: r.LastSeen}, now); why != "" {
				olds = append(olds, old{key(ck[1:]), r})
				gone = append(gone, ended{r.session(""), why})
				if len(olds) == maxSweep {
					return errEnough
				}
			}
			return nil
		})
		if err != nil && !errors.Is(err, errEnough) {
			return err
		}
		for _, o := range olds {
			if err := remove(b, o.k, &o.r); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		s.mu.Lock()
		s.swept = time.Time{}
		s.mu.Unlock()
		return fmt.Errorf("websession: sweep: %w", err)
	}
	s.report(gone)
	return nil
}

// Export returns an empty list: the sessions are in the shared store,
// where the successor finds them. (A Store, in memory, can import it.)
func (s *Shared) Export() ([]byte, error) { return []byte("[]"), nil }

// Import does nothing and never fails: the successor of a binary upgrade
// shares the predecessor's store, sessions included. A Store's export (the
// predecessor kept its sessions in memory) is dropped: its users sign in
// again.
func (s *Shared) Import([]byte) error { return nil }
