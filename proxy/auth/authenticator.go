package auth

import (
	"context"
	"errors"
	"net/netip"
	"runtime"
	"strings"
	"time"

	"go.uber.org/zap"
)

// ErrLoginFailed is the one answer to every failed login.
var ErrLoginFailed = errors.New("sign-in failed: check the user name, password and code, or wait a moment and try again")

// LoginError is a failed login. Its message is ErrLoginFailed's, whatever
// the reason; Reason is for the daemon's own log only.
type LoginError struct {
	Reason string // unknown user, wrong password, wrong code, disabled, locked, throttled
}

func (e *LoginError) Error() string { return ErrLoginFailed.Error() }

// Is makes errors.Is(err, ErrLoginFailed) true.
func (e *LoginError) Is(target error) bool { return target == ErrLoginFailed }

// AuthenticatorConfig configures an Authenticator.
type AuthenticatorConfig struct {
	// Store holds the accounts. Required.
	Store *Store
	// Logger records failures with their reason. Required.
	Logger   *zap.Logger
	Throttle ThrottleConfig
	// MaxHashing bounds concurrent password hashes (each takes about
	// 19 MiB for its duration). Default 2 per CPU.
	MaxHashing int
}

// Authenticator checks logins.
type Authenticator struct {
	store    *Store
	log      *zap.Logger
	throttle *throttle
	lockFor  time.Duration
	lockAt   int
	hashing  chan struct{}
	// dummyHash is verified for unknown users, so that they cost what a
	// known user costs.
	dummyHash string
	now       func() time.Time
}

// NewAuthenticator returns an Authenticator.
func NewAuthenticator(cfg AuthenticatorConfig) (*Authenticator, error) {
	if cfg.Store == nil || cfg.Logger == nil {
		return nil, errors.New("auth: Store and Logger are required")
	}
	if cfg.MaxHashing == 0 {
		cfg.MaxHashing = 2 * runtime.GOMAXPROCS(0)
	}
	dummy, err := hashPassword("this is not anyone's password")
	if err != nil {
		return nil, err
	}
	th := newThrottle(cfg.Throttle)
	return &Authenticator{
		store:     cfg.Store,
		log:       cfg.Logger,
		throttle:  th,
		lockFor:   th.cfg.LockFor,
		lockAt:    th.cfg.LockAfter,
		hashing:   make(chan struct{}, cfg.MaxHashing),
		dummyHash: dummy,
		now:       cfg.Store.now,
	}, nil
}

// Store returns the account store.
func (a *Authenticator) Store() *Store { return a.store }

// Login checks a user name, password and (for users enrolled in TOTP) code
// presented from src. Any failure is a *LoginError.
func (a *Authenticator) Login(ctx context.Context, name, password, code string, src netip.Addr) (User, error) {
	name = strings.ToLower(strings.TrimSpace(name))
	now := a.now()
	if len(name) > 64 || len(password) > MaxPasswordLen {
		return User{}, a.failed(name, src, now, "oversized input", false)
	}
	if w := a.throttle.wait(name, src, now); w > 0 {
		a.log.Info("login refused: throttled", zap.String("user", name), zap.Stringer("source", src), zap.Duration("wait", w))
		return User{}, &LoginError{Reason: "throttled"}
	}
	select {
	case a.hashing <- struct{}{}:
	case <-ctx.Done():
		return User{}, ctx.Err()
	}
	u, err := a.store.User(name)
	known := err == nil
	hash := a.dummyHash
	if known {
		hash = u.PasswordHash
	}
	ok, herr := verifyPassword(hash, password)
	<-a.hashing
	switch {
	case !known:
		return User{}, a.failed(name, src, now, "unknown user", false)
	case herr != nil:
		a.log.Error("login: stored hash unreadable", zap.String("user", name), zap.Error(herr))
		return User{}, a.failed(name, src, now, "unreadable hash", true)
	case !ok:
		return User{}, a.failed(name, src, now, "wrong password", true)
	case u.Disabled:
		return User{}, a.failed(name, src, now, "disabled", false)
	case now.Before(u.LockedUntil):
		return User{}, a.failed(name, src, now, "locked", false)
	}
	if u.HasTOTP() {
		if err := a.useCode(name, code, now); err != nil {
			return User{}, a.failed(name, src, now, "wrong code", true)
		}
	}
	a.throttle.succeed(name)
	return u, nil
}

// useCode accepts a TOTP code once: the step is recorded in the same
// transaction that checks it, so two logins racing with one code cannot
// both pass.
func (a *Authenticator) useCode(name, code string, now time.Time) error {
	return a.store.Update(name, func(u *User) error {
		step, ok := checkTOTP(u.TOTPSecret, code, now, u.TOTPLastStep)
		if !ok {
			return ErrBadCode
		}
		u.TOTPLastStep = step
		return nil
	})
}

// failed counts a failure, locks the account when it has failed too often
// in a row (lockable: the account exists), logs the reason and returns the
// generic error.
func (a *Authenticator) failed(name string, src netip.Addr, now time.Time, reason string, lockable bool) error {
	n := a.throttle.fail(name, src, now)
	fields := []zap.Field{zap.String("user", name), zap.Stringer("source", src), zap.String("reason", reason), zap.Int("failures", n)}
	if lockable && n >= a.lockAt {
		until := now.Add(a.lockFor).UTC()
		err := a.store.Update(name, func(u *User) error {
			if u.LockedUntil.Before(until) {
				u.LockedUntil = until
			}
			return nil
		})
		if err == nil {
			fields = append(fields, zap.Time("locked_until", until))
		}
	}
	a.log.Info("login failed", fields...)
	return &LoginError{Reason: reason}
}

// Unlock clears an account's lockout and its failure count.
func (a *Authenticator) Unlock(name string) error {
	if err := a.store.Unlock(name); err != nil {
		return err
	}
	a.throttle.reset(name)
	return nil
}
