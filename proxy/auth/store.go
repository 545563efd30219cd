package auth

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"time"

	"github.com/bastiond/bastiond/internal/store"
)

// Errors the store returns; callers branch on them with errors.Is.
var (
	ErrNoUser     = errors.New("no such user")
	ErrUserExists = errors.New("user already exists")
	ErrBadName    = errors.New("a user name is 1 to 64 lower-case letters, digits, '.', '_' or '-', starting with a letter or digit")
)

var userName = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,63}$`)

// User is one local account as stored.
type User struct {
	Name         string `json:"name"`
	PasswordHash string `json:"password_hash"`
	Disabled     bool   `json:"disabled,omitempty"`
	// Roles are roles granted to this user by `bastionctl users grant`, on
	// top of those the configuration binds to the user or its groups.
	Roles []string `json:"roles,omitempty"`
	// TOTPSecret is set once the user has confirmed an enrolment.
	TOTPSecret []byte `json:"totp_secret,omitempty"`
	// TOTPPending is an enrolment waiting for its first code.
	TOTPPending []byte `json:"totp_pending,omitempty"`
	// TOTPLastStep is the last time step accepted, refused afterwards.
	TOTPLastStep int64 `json:"totp_last_step,omitempty"`
	// LockedUntil is set by repeated login failures; an admin clears it
	// with `bastionctl users unlock`.
	LockedUntil time.Time `json:"locked_until,omitzero"`
	// LockedBy are the sources (IPv4 addresses, IPv6 /64s) whose failures
	// caused the lockout: they are refused until it ends, while others get
	// through with the password and a TOTP code.
	LockedBy        []string  `json:"locked_by,omitempty"`
	Created         time.Time `json:"created"`
	PasswordChanged time.Time `json:"password_changed"`
	// WebAuthnID is the user handle the user's passkeys hold: random, made
	// at the first registration.
	WebAuthnID []byte `json:"webauthn_id,omitempty"`
	// Passkeys are the user's WebAuthn credentials.
	Passkeys []Passkey `json:"passkeys,omitempty"`

	// Provider is the single sign-on provider (auth.oidc's name) that
	// vouches for this account, "" for a local account. An SSO account
	// has no password: it signs in only through its provider.
	Provider string `json:"provider,omitempty"`
	// Subject is the provider's stable identifier of the user (sub): a
	// name the provider gives to someone else later does not inherit the
	// account.
	Subject string `json:"subject,omitempty"`
	// Groups are the groups the provider said the user is in, at the last
	// sign-in; roles bind them as oidc-group:PROVIDER/GROUP.
	Groups []string `json:"groups,omitempty"`
	// LastSignIn is when the provider last vouched for the user.
	LastSignIn time.Time `json:"last_sign_in,omitzero"`
}

// SSO reports whether u signs in through a single sign-on provider.
func (u User) SSO() bool { return u.Provider != "" }

// Subjects are the provider-qualified groups of an SSO account
// (PROVIDER/GROUP), which roles bind as oidc-group:PROVIDER/GROUP.
func (u User) Subjects() []string {
	if u.Provider == "" {
		return nil
	}
	out := make([]string, len(u.Groups))
	for i, g := range u.Groups {
		out[i] = u.Provider + "/" + g
	}
	return out
}

// HasTOTP reports whether the user must give a code at login.
func (u User) HasTOTP() bool { return len(u.TOTPSecret) > 0 }

// The store's buckets.
const (
	bucketUsers  = "users"
	bucketTokens = "tokens"
)

// Store keeps accounts and API tokens in the state store (internal/store:
// bbolt on one host, PostgreSQL in a cluster), which it shares with other
// parts of the daemon (each owns its buckets).
type Store struct {
	db  store.DB
	now func() time.Time
	// params are the costs of the password hashes it makes: defaultParams
	// but in tests that want them cheap (newStore).
	params argon2idParams
}

// NewStore is the accounts and tokens in db.
func NewStore(db store.DB) (*Store, error) {
	return newStore(db, defaultParams)
}

// newStore is NewStore making password hashes with the costs p.
func newStore(db store.DB, p argon2idParams) (*Store, error) {
	return &Store{db: db, now: time.Now, params: p}, nil
}

// AddUser creates an account. The password is hashed here and not kept.
func (s *Store) AddUser(name, password string, roles []string) error {
	if !userName.MatchString(name) {
		return fmt.Errorf("auth: %q: %w", name, ErrBadName)
	}
	if err := checkNewPassword(password); err != nil {
		return err
	}
	hash, err := s.hashPassword(password)
	if err != nil {
		return err
	}
	now := s.now().UTC()
	return s.db.Update(func(tx store.Tx) error {
		b := tx.Bucket(bucketUsers)
		if v, err := b.Get([]byte(name)); err != nil || v != nil {
			return cmp.Or(err, fmt.Errorf("auth: %s: %w", name, ErrUserExists))
		}
		return putUser(b, User{Name: name, PasswordHash: hash, Roles: dedupe(roles), Created: now, PasswordChanged: now})
	})
}

// ErrNameTaken is an SSO sign-in whose name belongs to a local account, or
// to a user another provider (or another subject of the same provider)
// vouched for.
var ErrNameTaken = errors.New("auth: the name is another account's")

// ErrDisabled is a sign-in of a disabled account.
var ErrDisabled = errors.New("auth: the account is disabled")

// SignInSSO records that provider vouched for the user called name (its
// subject sub, in groups): it creates the account at the first sign-in
// and updates its groups at each. It returns the account, and the groups
// it had before (nil for a new account).
func (s *Store) SignInSSO(name, provider, sub string, groups []string) (u User, before []string, err error) {
	now := s.now().UTC()
	err = s.db.Update(func(tx store.Tx) error {
		b := tx.Bucket(bucketUsers)
		u, before = User{}, nil
		v, err := b.Get([]byte(name))
		switch {
		case err != nil:
			return err
		case v == nil:
			u = User{Name: name, Provider: provider, Subject: sub, Created: now}
		default:
			if u, err = decodeUser(name, v); err != nil {
				return err
			}
			if u.Provider != provider || u.Subject != sub {
				return ErrNameTaken
			}
			if u.Disabled {
				return ErrDisabled
			}
			before = slices.Clone(u.Groups)
			if before == nil {
				before = []string{}
			}
		}
		u.Groups, u.LastSignIn = slices.Clone(groups), now
		return putUser(b, u)
	})
	return u, before, err
}

// User returns the account called name.
func (s *Store) User(name string) (User, error) {
	v, err := store.Get(s.db, bucketUsers, []byte(name))
	if err != nil {
		return User{}, fmt.Errorf("auth: read user %s: %w", name, err)
	}
	return decodeUser(name, v)
}

// Users returns every account, by name.
func (s *Store) Users() ([]User, error) {
	var us []User
	err := s.db.View(func(tx store.Tx) error {
		us = nil
		return tx.Bucket(bucketUsers).ForEach(nil, func(k, v []byte) error {
			var u User
			if err := json.Unmarshal(v, &u); err != nil {
				return fmt.Errorf("auth: user %q: %w", k, err)
			}
			us = append(us, u)
			return nil
		})
	})
	return us, err
}

// Update applies change to the account called name in one transaction.
func (s *Store) Update(name string, change func(*User) error) error {
	return s.db.Update(func(tx store.Tx) error {
		b := tx.Bucket(bucketUsers)
		u, err := getUser(b, name)
		if err != nil {
			return err
		}
		if err := change(&u); err != nil {
			return err
		}
		return putUser(b, u)
	})
}

// hashPassword returns pw's hash with the store's costs.
func (s *Store) hashPassword(pw string) (string, error) {
	return hashWith(s.params, pw)
}

// SetPassword replaces a password. Web sessions and tokens of the user are
// the caller's to end.
func (s *Store) SetPassword(name, password string) error {
	if err := checkNewPassword(password); err != nil {
		return err
	}
	hash, err := s.hashPassword(password)
	if err != nil {
		return err
	}
	return s.Update(name, func(u *User) error {
		u.PasswordHash = hash
		u.PasswordChanged = s.now().UTC()
		return nil
	})
}

// SetDisabled disables or enables an account.
func (s *Store) SetDisabled(name string, disabled bool) error {
	return s.Update(name, func(u *User) error { u.Disabled = disabled; return nil })
}

// Unlock clears a lockout.
func (s *Store) Unlock(name string) error {
	return s.Update(name, func(u *User) error { u.LockedUntil, u.LockedBy = time.Time{}, nil; return nil })
}

// Grant adds roles to an account; Revoke removes them.
func (s *Store) Grant(name string, roles ...string) error {
	return s.Update(name, func(u *User) error { u.Roles = dedupe(append(u.Roles, roles...)); return nil })
}

// Revoke removes roles granted with Grant.
func (s *Store) Revoke(name string, roles ...string) error {
	return s.Update(name, func(u *User) error {
		u.Roles = slices.DeleteFunc(u.Roles, func(r string) bool { return slices.Contains(roles, r) })
		return nil
	})
}

// DeleteUser removes an account and its tokens.
func (s *Store) DeleteUser(name string) error {
	return s.db.Update(func(tx store.Tx) error {
		b := tx.Bucket(bucketUsers)
		v, err := b.Get([]byte(name))
		if err != nil || v == nil {
			return cmp.Or(err, fmt.Errorf("auth: %s: %w", name, ErrNoUser))
		}
		// An account whose record does not decode is deleted all the same.
		u, _ := decodeUser(name, v)
		if err := b.Delete([]byte(name)); err != nil {
			return err
		}
		if len(u.WebAuthnID) > 0 {
			// Its passkeys name it no more.
			if err := tx.Bucket(bucketWebAuthn).Delete(handleKey(u.WebAuthnID)); err != nil {
				return err
			}
		}
		return deleteTokens(tx, func(t Token) bool { return t.User == name })
	})
}

// BeginTOTP starts an enrolment: a new secret that takes effect once the
// user proves, with ConfirmTOTP, that an app holds it. issuer names the
// bastion in the app.
func (s *Store) BeginTOTP(name, issuer string) (TOTPEnrolment, error) {
	secret, err := newTOTPSecret()
	if err != nil {
		return TOTPEnrolment{}, err
	}
	err = s.Update(name, func(u *User) error { u.TOTPPending = secret; return nil })
	if err != nil {
		return TOTPEnrolment{}, err
	}
	return totpEnrolment(issuer, name, secret), nil
}

// ErrBadCode is returned by ConfirmTOTP for a code that does not match.
var ErrBadCode = errors.New("auth: the code does not match; check the app's clock and try the next code")

// ConfirmTOTP makes a pending enrolment the user's second factor if code
// is current for it.
func (s *Store) ConfirmTOTP(name, code string) error {
	return s.Update(name, func(u *User) error {
		if len(u.TOTPPending) == 0 {
			return errors.New("auth: no enrolment is pending; start one first")
		}
		step, ok := checkTOTP(u.TOTPPending, code, s.now(), 0)
		if !ok {
			return ErrBadCode
		}
		u.TOTPSecret, u.TOTPPending, u.TOTPLastStep = u.TOTPPending, nil, step
		return nil
	})
}

// ResetTOTP removes the second factor (a lost phone).
func (s *Store) ResetTOTP(name string) error {
	return s.Update(name, func(u *User) error {
		u.TOTPSecret, u.TOTPPending, u.TOTPLastStep = nil, nil, 0
		return nil
	})
}

// ResetPasskeys removes every passkey of an account (a lost device) and
// returns how many there were.
func (s *Store) ResetPasskeys(name string) (int, error) {
	var n int
	err := s.Update(name, func(u *User) error {
		n, u.Passkeys = len(u.Passkeys), nil
		return nil
	})
	return n, err
}

func getUser(b store.Bucket, name string) (User, error) {
	v, err := b.Get([]byte(name))
	if err != nil {
		return User{}, fmt.Errorf("auth: read user %s: %w", name, err)
	}
	return decodeUser(name, v)
}

// decodeUser is the account called name from its stored value v (nil:
// there is no such account).
func decodeUser(name string, v []byte) (User, error) {
	if v == nil {
		return User{}, fmt.Errorf("auth: %s: %w", name, ErrNoUser)
	}
	var u User
	if err := json.Unmarshal(v, &u); err != nil {
		return User{}, fmt.Errorf("auth: user %q: %w", name, err)
	}
	return u, nil
}

func putUser(b store.Bucket, u User) error {
	v, err := json.Marshal(u)
	if err != nil {
		return err
	}
	return b.Put([]byte(u.Name), v)
}

func dedupe(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return slices.Compact(s)
}
