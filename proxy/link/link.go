// Package link keeps shareable links: an admin issues one for a target, a
// protocol and a login, valid for a time and a number of uses, and whoever
// opens it gets that one session without a bastion account (they still
// authenticate to the machine itself).
//
// A link's secret is 256 random bits, shown once in its URL; the store
// keeps only its SHA-256, so what is stored cannot be opened. Links live in
// a store.DB (bbolt on one host, PostgreSQL in a cluster), and a use is
// spent in one serializable transaction: of the instances racing for a
// link's last use, exactly one gets it.
package link

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/bastiond/bastiond/internal/store"
)

// bucket holds the links. Its keys:
//
//	'i' + ID                  -> the Link, JSON
//	'h' + SHA-256(secret)     -> its ID
//
// Neither holds a secret.
const bucket = "links"

// UserPrefix is what the user of a link's sessions is called: "link:" and
// the link's ID. No account can be called that (a ':' breaks the name
// rule), so a link's sessions can never pass for an account's.
const UserPrefix = "link:"

// User is the user name of the sessions of link id.
func User(id string) string { return UserPrefix + id }

// IDOf returns the link ID of a session user name, and whether it is one.
func IDOf(user string) (string, bool) {
	id, ok := strings.CutPrefix(user, UserPrefix)
	return id, ok && validID.MatchString(id)
}

// Link is one shareable link as stored.
type Link struct {
	// ID names the link in lists, records and events; it is public and
	// opens nothing.
	ID       string `json:"id"`
	Target   string `json:"target"`
	Protocol string `json:"protocol"`
	Login    string `json:"login"`
	// CreatedBy is the admin who issued it (the admin socket's actor).
	CreatedBy string    `json:"created_by"`
	Created   time.Time `json:"created"`
	Expires   time.Time `json:"expires"`
	// Uses is how many sessions it may open; Spent how many it opened.
	Uses    int       `json:"uses"`
	Spent   int       `json:"spent"`
	Revoked time.Time `json:"revoked,omitzero"`
}

// States of a link, and the reasons of its refusals.
const (
	StateActive  = "active"
	StateExpired = "expired"
	StateRevoked = "revoked"
	StateUsedUp  = "used_up"
	// Unknown is a secret of no link (never issued, or removed).
	Unknown = "unknown"
)

// State is what l is at now: active, or why it opens nothing.
func (l Link) State(now time.Time) string {
	switch {
	case !l.Revoked.IsZero():
		return StateRevoked
	case !now.Before(l.Expires):
		return StateExpired
	case l.Spent >= l.Uses:
		return StateUsedUp
	}
	return StateActive
}

// Left is how many uses l has left.
func (l Link) Left() int { return max(l.Uses-l.Spent, 0) }

// Refused is a link that opens nothing, and why (a State, or Unknown).
type Refused struct {
	Reason string
	// Link is the refused link; its ID is empty for Unknown.
	Link Link
}

func (e *Refused) Error() string {
	if e.Link.ID == "" {
		return "link: no such link"
	}
	return "link " + e.Link.ID + ": " + strings.ReplaceAll(e.Reason, "_", " ")
}

// ErrInvalid marks what cannot be a link (Create): the error says why.
var ErrInvalid = errors.New("link: invalid")

type invalidError struct{ msg string }

func (e *invalidError) Error() string        { return e.msg }
func (e *invalidError) Is(target error) bool { return target == ErrInvalid }

func invalid(format string, args ...any) error { return &invalidError{fmt.Sprintf(format, args...)} }

// ErrNoLink is a revoke or a lookup of an ID of no link.
var ErrNoLink = errors.New("link: no such link")

// Limits of a new link.
const (
	// MaxLogin bounds a login name.
	MaxLogin = 64
	// MaxUses bounds the uses of one link, whatever the configuration.
	MaxUses = 10000
)

var (
	validID    = regexp.MustCompile(`^[0-9a-f]{16}$`)
	validLogin = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.@-]*$`)
)

// secretLen is the length of a secret as text: 32 bytes, base64url.
const secretLen = 43

// Store keeps links in a store.DB.
type Store struct {
	db  store.DB
	now func() time.Time
}

// NewStore returns the links kept in db.
func NewStore(db store.DB) *Store { return &Store{db: db, now: time.Now} }

// New is what an admin asks for.
type New struct {
	Target, Protocol, Login, CreatedBy string
	Valid                              time.Duration
	Uses                               int
}

// Create stores a new link and returns it with its secret, which is not
// kept: it is shown once.
func (s *Store) Create(n New) (Link, string, error) {
	switch {
	case n.Target == "":
		return Link{}, "", invalid("link: a target is required")
	case n.Protocol != "ssh" && n.Protocol != "rdp":
		return Link{}, "", invalid("link: protocol %q: ssh or rdp", n.Protocol)
	case len(n.Login) > MaxLogin || !validLogin.MatchString(n.Login):
		return Link{}, "", invalid("link: login %q: 1 to %d letters, digits, '_', '.', '@' or '-', not starting with '.', '@' or '-'", n.Login, MaxLogin)
	case n.Valid <= 0:
		return Link{}, "", invalid("link: the validity must be positive")
	case n.Uses < 1 || n.Uses > MaxUses:
		return Link{}, "", invalid("link: uses: 1 to %d", MaxUses)
	}
	var b [8]byte
	rand.Read(b[:])
	var sec [32]byte
	rand.Read(sec[:])
	secret := base64.RawURLEncoding.EncodeToString(sec[:])
	now := s.now().UTC()
	l := Link{ID: hex.EncodeToString(b[:]), Target: n.Target, Protocol: n.Protocol, Login: n.Login, CreatedBy: n.CreatedBy,
		Created: now, Expires: now.Add(n.Valid), Uses: n.Uses}
	rec, err := json.Marshal(l)
	if err != nil {
		return Link{}, "", err
	}
	h := hash(secret)
	err = s.db.Update(func(tx store.Tx) error {
		bk := tx.Bucket(bucket)
		if err := bk.Put(idKey(l.ID), rec); err != nil {
			return err
		}
		return bk.Put(hashKey(h), []byte(l.ID))
	})
	if err != nil {
		return Link{}, "", fmt.Errorf("link: create: %w", err)
	}
	return l, secret, nil
}

func hash(secret string) [sha256.Size]byte { return sha256.Sum256([]byte(secret)) }

func idKey(id string) []byte { return append([]byte{'i'}, id...) }

func hashKey(h [sha256.Size]byte) []byte { return append([]byte{'h'}, h[:]...) }

// Plausible reports whether v has the shape of a secret (no store lookup).
func Plausible(v string) bool {
	if len(v) != secretLen {
		return false
	}
	_, err := base64.RawURLEncoding.DecodeString(v)
	return err == nil
}

// byHash reads the link of secret in b; nil and no error: none.
func byHash(b store.Bucket, secret string) (*Link, error) {
	id, err := b.Get(hashKey(hash(secret)))
	if err != nil || id == nil {
		return nil, err
	}
	return byID(b, string(id))
}

func byID(b store.Bucket, id string) (*Link, error) {
	rec, err := b.Get(idKey(id))
	if err != nil || rec == nil {
		return nil, err
	}
	var l Link
	if err := json.Unmarshal(rec, &l); err != nil {
		return nil, fmt.Errorf("link: stored link %s: %w", id, err)
	}
	return &l, nil
}

// Peek returns the link of secret if it would open a session now, without
// spending a use: a *Refused says why not. A malformed secret is Unknown.
func (s *Store) Peek(secret string) (Link, error) {
	if !Plausible(secret) {
		return Link{}, &Refused{Reason: Unknown}
	}
	var l *Link
	err := s.db.View(func(tx store.Tx) error {
		var err error
		l, err = byHash(tx.Bucket(bucket), secret)
		return err
	})
	if err != nil {
		return Link{}, fmt.Errorf("link: %w", err)
	}
	if l == nil {
		return Link{}, &Refused{Reason: Unknown}
	}
	if st := l.State(s.now()); st != StateActive {
		return Link{}, &Refused{Reason: st, Link: *l}
	}
	return *l, nil
}

// Spend uses one of the uses of the link of secret, in one transaction:
// of the spends racing for its last use, on any instance, one gets it and
// the others a *Refused (used_up). It returns the link as spent.
func (s *Store) Spend(secret string) (Link, error) {
	if !Plausible(secret) {
		return Link{}, &Refused{Reason: Unknown}
	}
	now := s.now()
	var l *Link
	var refused string
	err := s.db.Update(func(tx store.Tx) error {
		l, refused = nil, ""
		b := tx.Bucket(bucket)
		var err error
		if l, err = byHash(b, secret); err != nil || l == nil {
			return err
		}
		if refused = l.State(now); refused != StateActive {
			return nil
		}
		l.Spent++
		rec, err := json.Marshal(l)
		if err != nil {
			return err
		}
		return b.Put(idKey(l.ID), rec)
	})
	switch {
	case err != nil:
		return Link{}, fmt.Errorf("link: spend: %w", err)
	case l == nil:
		return Link{}, &Refused{Reason: Unknown}
	case refused != StateActive:
		return Link{}, &Refused{Reason: refused, Link: *l}
	}
	return *l, nil
}

// Get returns the link id, whatever its state; ErrNoLink when there is none.
func (s *Store) Get(id string) (Link, error) {
	if !validID.MatchString(id) {
		return Link{}, ErrNoLink
	}
	var l *Link
	err := s.db.View(func(tx store.Tx) error {
		var err error
		l, err = byID(tx.Bucket(bucket), id)
		return err
	})
	if err != nil {
		return Link{}, fmt.Errorf("link: %w", err)
	}
	if l == nil {
		return Link{}, ErrNoLink
	}
	return *l, nil
}

// Revoke revokes link id and returns it: it opens nothing from now on, on
// any instance. Revoking a revoked link changes nothing.
func (s *Store) Revoke(id string) (Link, error) {
	if !validID.MatchString(id) {
		return Link{}, ErrNoLink
	}
	now := s.now().UTC()
	var l *Link
	err := s.db.Update(func(tx store.Tx) error {
		b := tx.Bucket(bucket)
		var err error
		if l, err = byID(b, id); err != nil || l == nil {
			return err
		}
		if !l.Revoked.IsZero() {
			return nil
		}
		l.Revoked = now
		rec, err := json.Marshal(l)
		if err != nil {
			return err
		}
		return b.Put(idKey(id), rec)
	})
	if err != nil {
		return Link{}, fmt.Errorf("link: revoke: %w", err)
	}
	if l == nil {
		return Link{}, ErrNoLink
	}
	return *l, nil
}

// List returns every link, the newest first.
func (s *Store) List() ([]Link, error) {
	var ls []Link
	err := s.db.View(func(tx store.Tx) error {
		ls = nil
		return tx.Bucket(bucket).ForEach([]byte{'i'}, func(_, v []byte) error {
			var l Link
			if err := json.Unmarshal(v, &l); err != nil {
				return fmt.Errorf("stored link: %w", err)
			}
			ls = append(ls, l)
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("link: list: %w", err)
	}
	slices.SortFunc(ls, func(a, b Link) int { return b.Created.Compare(a.Created) })
	return ls, nil
}

// Prune removes the links that expired, or were revoked, before cutoff,
// and returns how many. Their secrets' index entries go with them:
// a removed link's URL is then Unknown.
func (s *Store) Prune(before time.Time) (int, error) {
	n := 0
	err := s.db.Update(func(tx store.Tx) error {
		n = 0
		b := tx.Bucket(bucket)
		gone := map[string]bool{}
		err := b.ForEach([]byte{'i'}, func(_, v []byte) error {
			var l Link
			if err := json.Unmarshal(v, &l); err != nil {
				return fmt.Errorf("stored link: %w", err)
			}
			if l.Expires.Before(before) || (!l.Revoked.IsZero() && l.Revoked.Before(before)) {
				gone[l.ID] = true
			}
			return nil
		})
		if err != nil || len(gone) == 0 {
			return err
		}
		var hs [][]byte
		err = b.ForEach([]byte{'h'}, func(k, v []byte) error {
			if gone[string(v)] {
				hs = append(hs, append([]byte{}, k...))
			}
			return nil
		})
		if err != nil {
			return err
		}
		for _, k := range hs {
			if err := b.Delete(k); err != nil {
				return err
			}
		}
		for id := range gone {
			if err := b.Delete(idKey(id)); err != nil {
				return err
			}
		}
		n = len(gone)
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("link: prune: %w", err)
	}
	return n, nil
}
