// Package websession keeps the browser sessions of signed-in users. The
// cookie holds 256 random bits; the server keeps only their SHA-256, so a
// memory dump or a debug listing yields nothing that can be replayed. A
// session ends on logout, after an idle period, and after an absolute
// lifetime, whichever comes first. Each session carries its own CSRF token,
// which every state-changing request must echo.
//
// Two implementations of Sessions keep them: Store, in this process's
// memory (one host: handed to the next process of a binary upgrade by
// Export and Import), and Shared, in a store.DB that every instance of a
// cluster shares, so that a browser signed in on one instance is signed in
// on all.
package websession

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"time"
)

// CookieName is the session cookie. The __Host- prefix makes browsers
// refuse it unless it is Secure, has Path=/ and no Domain: no subdomain can
// plant or read it.
const CookieName = "__Host-bastion"

// Config bounds sessions. Zero fields take the defaults.
type Config struct {
	// Idle ends a session unused this long. Default 30m.
	Idle time.Duration
	// Absolute ends a session this long after sign-in. Default 12h.
	Absolute time.Duration
	// MaxPerUser caps one user's sessions; signing in past it ends the
	// oldest. Default 32.
	MaxPerUser int
}

func (c Config) withDefaults() Config {
	if c.Idle == 0 {
		c.Idle = 30 * time.Minute
	}
	if c.Absolute == 0 {
		c.Absolute = 12 * time.Hour
	}
	if c.MaxPerUser == 0 {
		c.MaxPerUser = 32
	}
	return c
}

// Session is one signed-in browser.
type Session struct {
	// ID names the session in logs and binds tickets; it is not the
	// cookie and cannot be used as one.
	ID     string
	User   string
	Source netip.Addr
	// CSRF is the token state-changing requests must carry.
	CSRF     string
	Created  time.Time
	LastSeen time.Time
}

type key [sha256.Size]byte

// ErrNoSession is what Get answers a cookie of no live session.
var ErrNoSession = errors.New("websession: no live session for this cookie")

// Sessions is what the portal needs of a web session store.
type Sessions interface {
	// New starts a session for user, signed in from src, and returns the
	// cookie value to set. Past Config.MaxPerUser, the user's oldest
	// session ends.
	New(user string, src netip.Addr) (cookie string, sess Session, err error)
	// Get returns the live session of a cookie value and marks it used;
	// ErrNoSession when there is none.
	Get(cookie string) (Session, error)
	// Alive reports whether the session id is still live, without
	// marking it used.
	Alive(id string) (bool, error)
	// End ends the session with this id (sign-out).
	End(id string) error
	// EndUser ends every session of user (disabled, password changed)
	// and returns how many there were.
	EndUser(user string) (int, error)
	// Len counts live sessions.
	Len() (int, error)
	// OnExpire has f called with each session the store ends by itself,
	// and why (EndIdle, EndAbsolute, EndPerUserCap): once per session,
	// however many processes share the store.
	OnExpire(f func(sess Session, reason string))
	// SetConfig changes the limits (on reload); Config returns them.
	SetConfig(cfg Config)
	Config() Config
	// Export and Import hand the sessions to the process that takes
	// over from this one in a binary upgrade.
	Export() ([]byte, error)
	Import(b []byte) error
}

var (
	_ Sessions = (*Store)(nil)
	_ Sessions = (*Shared)(nil)
)

// Why the store ended a session by itself: the reason of a
// websession_expired audit event.
const (
	EndIdle       = "idle"         // unused for Config.Idle
	EndAbsolute   = "absolute"     // Config.Absolute after sign-in
	EndPerUserCap = "per_user_cap" // the oldest of Config.MaxPerUser, ended by a new sign-in
)

// Store holds sessions in memory.
type Store struct {
	cfg Config
	now func() time.Time

	mu       sync.Mutex // guards the fields below and LastSeen
	sessions map[key]*Session
	byID     map[string]key
	onExpire func(Session, string)
}

// OnExpire has f called with each session the store ends by itself, and
// why (EndIdle, EndAbsolute, EndPerUserCap): when a request presents its
// cookie after the end, or when a sweep (at each sign-in, count or export)
// finds it. f is called with the store's lock held: it must be quick and
// must not call the store.
func (s *Store) OnExpire(f func(sess Session, reason string)) {
	s.mu.Lock()
	s.onExpire = f
	s.mu.Unlock()
}

// NewStore returns an empty Store.
func NewStore(cfg Config) *Store {
	return &Store{cfg: cfg.withDefaults(), now: time.Now, sessions: map[key]*Session{}, byID: map[string]key{}}
}

// SetConfig changes the limits (on reload); sessions keep their start time.
func (s *Store) SetConfig(cfg Config) {
	s.mu.Lock()
	s.cfg = cfg.withDefaults()
	s.mu.Unlock()
}

// Config returns the limits in force.
func (s *Store) Config() Config {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cfg
}

func random(n int) string {
	b := make([]byte, n)
	rand.Read(b) // never fails (crypto/rand, Go 1.24+)
	return base64.RawURLEncoding.EncodeToString(b)
}

func hash(cookie string) key { return sha256.Sum256([]byte(cookie)) }

// New starts a session for user and returns the cookie value to set. It
// never fails.
func (s *Store) New(user string, src netip.Addr) (string, Session, error) {
	cookie := random(32)
	now := s.now()
	id := make([]byte, 8)
	rand.Read(id)
	sess := &Session{ID: hex.EncodeToString(id), User: user, Source: src, CSRF: random(32), Created: now, LastSeen: now}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.expire(now)
	var mine []*Session
	for _, o := range s.sessions {
		if o.User == user {
			mine = append(mine, o)
		}
	}
	for len(mine) >= s.cfg.MaxPerUser {
		oldest := 0
		for i, o := range mine {
			if o.Created.Before(mine[oldest].Created) {
				oldest = i
			}
		}
		s.ended(mine[oldest], EndPerUserCap)
		mine = append(mine[:oldest], mine[oldest+1:]...)
	}
	k := hash(cookie)
	s.sessions[k] = sess
	s.byID[sess.ID] = k
	return cookie, *sess, nil
}

// cookieLen is the length of a cookie value: 32 bytes in base64url.
const cookieLen = 43

// Get returns the live session for a cookie value and marks it used.
func (s *Store) Get(cookie string) (Session, error) {
	if len(cookie) != cookieLen {
		return Session{}, ErrNoSession
	}
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	sess, ok := s.sessions[hash(cookie)]
	if !ok {
		return Session{}, ErrNoSession
	}
	if why := s.expiry(sess, now); why != "" {
		s.ended(sess, why)
		return Session{}, ErrNoSession
	}
	sess.LastSeen = now
	return *sess, nil
}

// Alive reports whether the session id is still live, without marking it
// used. It never fails.
func (s *Store) Alive(id string) (bool, error) {
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	k, ok := s.byID[id]
	return ok && !s.expired(s.sessions[k], now), nil
}

func (s *Store) expired(sess *Session, now time.Time) bool { return s.expiry(sess, now) != "" }

// expiry is why sess is over at now (EndAbsolute first), or "".
func (s *Store) expiry(sess *Session, now time.Time) string { return s.cfg.expiry(sess, now) }

// expiry is why sess is over at now under c (EndAbsolute first), or "".
func (c Config) expiry(sess *Session, now time.Time) string {
	switch {
	case now.Sub(sess.Created) >= c.Absolute:
		return EndAbsolute
	case now.Sub(sess.LastSeen) >= c.Idle:
		return EndIdle
	}
	return ""
}

// ended removes sess, which the store ended by itself for why; s.mu is held.
func (s *Store) ended(sess *Session, why string) {
	s.remove(sess.ID)
	if s.onExpire != nil {
		s.onExpire(*sess, why)
	}
}

// End ends the session with this id. It never fails.
func (s *Store) End(id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.remove(id)
	return nil
}

// EndUser ends every session of user (disabled, password changed) and
// returns how many there were. It never fails.
func (s *Store) EndUser(user string) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, sess := range s.sessions {
		if sess.User == user {
			s.remove(sess.ID)
			n++
		}
	}
	return n, nil
}

// Len counts live sessions. It never fails.
func (s *Store) Len() (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.expire(s.now())
	return len(s.sessions), nil
}

func (s *Store) remove(id string) {
	if k, ok := s.byID[id]; ok {
		delete(s.sessions, k)
		delete(s.byID, id)
	}
}

func (s *Store) expire(now time.Time) {
	for _, sess := range s.sessions {
		if why := s.expiry(sess, now); why != "" {
			s.ended(sess, why)
		}
	}
}

// exported is a session as Export writes it, under the SHA-256 of its
// cookie: the store never had the cookie itself.
type exported struct {
	Hash []byte
	Session
}

// Export returns the live sessions, for Import in the process that takes
// over from this one. The bytes hold the sessions' CSRF tokens: they are
// secret.
func (s *Store) Export() ([]byte, error) {
	s.mu.Lock()
	s.expire(s.now())
	out := make([]exported, 0, len(s.sessions))
	for k, sess := range s.sessions {
		out = append(out, exported{Hash: k[:], Session: *sess})
	}
	s.mu.Unlock()
	b, err := json.Marshal(out)
	if err != nil {
		return nil, fmt.Errorf("websession: export: %w", err)
	}
	return b, nil
}

// Import adds the sessions Export returned, with their sign-in and
// last-use times: those that this store's limits expire are left out. A
// session with the ID or cookie of one already here replaces it. On an
// error, nothing is added.
func (s *Store) Import(b []byte) error {
	var in []exported
	if err := json.Unmarshal(b, &in); err != nil {
		return fmt.Errorf("websession: import: %w", err)
	}
	for _, e := range in {
		if len(e.Hash) != len(key{}) || e.ID == "" || e.User == "" || e.CSRF == "" {
			return errors.New("websession: import: a session lacks its cookie hash, ID, user or CSRF token")
		}
	}
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, e := range in {
		if s.expired(&e.Session, now) {
			continue
		}
		k := key(e.Hash)
		s.remove(e.ID)
		if old, ok := s.sessions[k]; ok {
			s.remove(old.ID)
		}
		s.sessions[k] = &e.Session
		s.byID[e.ID] = k
	}
	return nil
}

// CheckCSRF compares a presented token with the session's in constant time.
func (sess Session) CheckCSRF(presented string) bool {
	return presented != "" && subtle.ConstantTimeCompare([]byte(presented), []byte(sess.CSRF)) == 1
}
