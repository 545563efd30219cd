package auth

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/bastiond/bastiond/internal/store"
)

// API token scopes.
const (
	// ScopeAPI lets a token list targets and ask for connect tickets.
	ScopeAPI = "api"
	// ScopeTunnel lets a token open native tunnels.
	ScopeTunnel = "tunnel"
)

// Token lifetimes: what `bastionctl login` gets unless it asks, and the most
// it may ask for.
const (
	DefaultTokenTTL = 12 * time.Hour
	MaxTokenTTL     = 30 * 24 * time.Hour
)

// ErrBadToken is the one error for a token that is malformed, unknown,
// expired, revoked or whose user is disabled.
var ErrBadToken = errors.New("auth: the token is not valid; run bastionctl login")

// Token is an API token as listed; its secret is shown once, at issue, and
// only its SHA-256 is stored.
type Token struct {
	ID       string    `json:"id"`
	User     string    `json:"user"`
	Scopes   []string  `json:"scopes"`
	Comment  string    `json:"comment,omitempty"`
	Created  time.Time `json:"created"`
	Expires  time.Time `json:"expires"`
	Source   string    `json:"source,omitempty"` // the address it was issued to
	Verifier string    `json:"verifier"`         // hex SHA-256 of the secret part
}

// HasScope reports whether t carries scope.
func (t Token) HasScope(scope string) bool { return slices.Contains(t.Scopes, scope) }

// MaxTokenComment is the most characters a token's comment may hold.
const MaxTokenComment = 200

// ErrUserDisabled is IssueToken's refusal of a disabled account.
var ErrUserDisabled = errors.New("the account is disabled")

// ErrBadComment marks a token comment that IssueToken refuses.
var ErrBadComment = errors.New("auth: token comment refused")

// CheckTokenComment refuses a comment that is not valid UTF-8, is longer
// than MaxTokenComment characters, or holds a control character (Unicode
// category Cc: C0, DEL, C1) or a bidirectional override or isolate
// (U+202A-U+202E, U+2066-U+2069). Comments are shown to admins in
// terminals, where such characters rewrite what is on the screen.
func CheckTokenComment(comment string) error {
	if !utf8.ValidString(comment) {
		return fmt.Errorf("%w: not valid UTF-8", ErrBadComment)
	}
	if n := utf8.RuneCountInString(comment); n > MaxTokenComment {
		return fmt.Errorf("%w: %d characters, at most %d", ErrBadComment, n, MaxTokenComment)
	}
	for i, r := range comment {
		if unicode.Is(unicode.Cc, r) || isBidiControl(r) {
			return fmt.Errorf("%w: control character %U at byte %d", ErrBadComment, r, i)
		}
	}
	return nil
}

// isBidiControl reports whether r is a bidirectional embedding, override
// or isolate: characters that reorder the text around them.
func isBidiControl(r rune) bool {
	return r >= '\u202a' && r <= '\u202e' || r >= '\u2066' && r <= '\u2069'
}

// tokenPrefix marks bastiond tokens, so that secret scanners can find leaked ones.
const tokenPrefix = "bst_"

// IssueToken creates a token for user and returns its secret (the only time
// it exists in clear) with its record. It refuses a comment that
// CheckTokenComment refuses, and a disabled user: `users disable` revokes
// the user's tokens, and none may be issued after it.
func (s *Store) IssueToken(user string, scopes []string, ttl time.Duration, comment, source string) (string, Token, error) {
	if err := CheckTokenComment(comment); err != nil {
		return "", Token{}, err
	}
	if ttl <= 0 {
		ttl = DefaultTokenTTL
	}
	if ttl > MaxTokenTTL {
		return "", Token{}, fmt.Errorf("auth: a token lives at most %s", MaxTokenTTL)
	}
	if len(scopes) == 0 {
		scopes = []string{ScopeAPI, ScopeTunnel}
	}
	for _, sc := range scopes {
		if sc != ScopeAPI && sc != ScopeTunnel {
			return "", Token{}, fmt.Errorf("auth: %q is not a token scope (api, tunnel)", sc)
		}
	}
	var id [8]byte
	var secret [32]byte
	if _, err := rand.Read(id[:]); err != nil {
		return "", Token{}, err
	}
	if _, err := rand.Read(secret[:]); err != nil {
		return "", Token{}, err
	}
	sec := base64.RawURLEncoding.EncodeToString(secret[:])
	now := s.now().UTC()
	t := Token{
		ID:       hex.EncodeToString(id[:]),
		User:     user,
		Scopes:   dedupe(scopes),
		Comment:  comment,
		Created:  now,
		Expires:  now.Add(ttl),
		Source:   source,
		Verifier: verifier(sec),
	}
	err := s.db.Update(func(tx store.Tx) error {
		u, err := getUser(tx.Bucket(bucketUsers), user)
		if err != nil {
			return err
		}
		if u.Disabled {
			return fmt.Errorf("auth: issue a token to %s: %w", user, ErrUserDisabled)
		}
		v, err := json.Marshal(t)
		if err != nil {
			return err
		}
		return tx.Bucket(bucketTokens).Put([]byte(t.ID), v)
	})
	if err != nil {
		return "", Token{}, err
	}
	return tokenPrefix + t.ID + "_" + sec, t, nil
}

func verifier(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:])
}

// parseToken splits "bst_ID_SECRET".
func parseToken(s string) (id, secret string, ok bool) {
	rest, ok := strings.CutPrefix(s, tokenPrefix)
	if !ok {
		return "", "", false
	}
	id, secret, ok = strings.Cut(rest, "_")
	if !ok || len(id) != 16 || len(secret) != 43 {
		return "", "", false
	}
	if _, err := hex.DecodeString(id); err != nil {
		return "", "", false
	}
	if _, err := base64.RawURLEncoding.DecodeString(secret); err != nil {
		return "", "", false
	}
	return id, secret, true
}

// Why a presented token is refused: TokenError.Reason, the reason of a
// token_refused audit event.
const (
	TokenMalformed    = "malformed"     // not bst_ID_SECRET
	TokenUnknown      = "unknown"       // no such token: never issued, revoked or pruned
	TokenBadSecret    = "bad_secret"    // the ID of a token with another secret
	TokenExpired      = "expired"       // past its expiry
	TokenUserDisabled = "user_disabled" // its user is disabled or gone
)

// TokenError is a refused token: errors.Is(err, ErrBadToken), with the
// same message whatever the reason, which is for the audit trail and
// the log. ID and User are set once the token's record was found (an ID is
// not a secret).
type TokenError struct {
	Reason string
	ID     string
	User   string
}

func (e *TokenError) Error() string { return ErrBadToken.Error() }

// Is makes errors.Is(err, ErrBadToken) true.
func (e *TokenError) Is(target error) bool { return target == ErrBadToken }

// CheckToken returns the token and its user for a presented secret, or a
// *TokenError (errors.Is(err, ErrBadToken)), or the store's error if it
// could not be read.
func (s *Store) CheckToken(presented string) (Token, User, error) {
	id, secret, ok := parseToken(presented)
	if !ok {
		return Token{}, User{}, &TokenError{Reason: TokenMalformed}
	}
	var t Token
	var u User
	found := false
	err := s.db.View(func(tx store.Tx) error {
		v, err := tx.Bucket(bucketTokens).Get([]byte(id))
		if err != nil {
			return err
		}
		if v == nil || json.Unmarshal(v, &t) != nil {
			return ErrBadToken
		}
		found = true
		u, err = getUser(tx.Bucket(bucketUsers), t.User)
		return err
	})
	switch {
	case err != nil && !errors.Is(err, ErrBadToken) && !errors.Is(err, ErrNoUser):
		// The store could not be read (handed over to a new process
		// during an upgrade, or a database down): not the token's fault.
		if errors.Is(err, store.ErrUnavailable) {
			return Token{}, User{}, fmt.Errorf("%w: check a token: %w", ErrUnavailable, err)
		}
		return Token{}, User{}, fmt.Errorf("auth: check a token: %w", err)
	case !found:
		return Token{}, User{}, &TokenError{Reason: TokenUnknown}
	case subtle.ConstantTimeCompare([]byte(verifier(secret)), []byte(t.Verifier)) != 1:
		return Token{}, User{}, &TokenError{Reason: TokenBadSecret, ID: t.ID, User: t.User}
	case err != nil || u.Disabled:
		return Token{}, User{}, &TokenError{Reason: TokenUserDisabled, ID: t.ID, User: t.User}
	case !s.now().Before(t.Expires):
		return Token{}, User{}, &TokenError{Reason: TokenExpired, ID: t.ID, User: t.User}
	}
	return t, u, nil
}

// Tokens lists the tokens of user, or every token for "".
func (s *Store) Tokens(user string) ([]Token, error) {
	var ts []Token
	err := s.db.View(func(tx store.Tx) error {
		ts = nil
		return tx.Bucket(bucketTokens).ForEach(nil, func(_, v []byte) error {
			var t Token
			if err := json.Unmarshal(v, &t); err != nil {
				return err
			}
			if user == "" || t.User == user {
				t.Verifier = ""
				ts = append(ts, t)
			}
			return nil
		})
	})
	slices.SortFunc(ts, func(a, b Token) int { return a.Created.Compare(b.Created) })
	return ts, err
}

// ErrNoToken is returned when revoking a token that does not exist (or,
// for a user revoking, is not theirs).
var ErrNoToken = errors.New("no such token")

// RevokeToken deletes the token id; with user non-empty, only if it is theirs.
func (s *Store) RevokeToken(id, user string) error {
	return s.db.Update(func(tx store.Tx) error {
		b := tx.Bucket(bucketTokens)
		v, err := b.Get([]byte(id))
		if err != nil {
			return err
		}
		var t Token
		if v == nil || json.Unmarshal(v, &t) != nil || (user != "" && t.User != user) {
			return fmt.Errorf("auth: token %s: %w", id, ErrNoToken)
		}
		return b.Delete([]byte(id))
	})
}

// RevokeTokens deletes every token of user and returns how many there were.
func (s *Store) RevokeTokens(user string) (int, error) {
	n := 0
	err := s.db.Update(func(tx store.Tx) error {
		n = 0
		return deleteTokens(tx, func(t Token) bool {
			if t.User == user {
				n++
				return true
			}
			return false
		})
	})
	return n, err
}

// PruneTokens deletes expired tokens.
func (s *Store) PruneTokens() error {
	now := s.now()
	return s.db.Update(func(tx store.Tx) error {
		return deleteTokens(tx, func(t Token) bool { return !now.Before(t.Expires) })
	})
}

func deleteTokens(tx store.Tx, match func(Token) bool) error {
	b := tx.Bucket(bucketTokens)
	var doomed [][]byte
	err := b.ForEach(nil, func(k, v []byte) error {
		var t Token
		if json.Unmarshal(v, &t) != nil || match(t) {
			doomed = append(doomed, slices.Clone(k))
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, k := range doomed {
		if err := b.Delete(k); err != nil {
			return err
		}
	}
	return nil
}
