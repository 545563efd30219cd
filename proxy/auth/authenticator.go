package auth

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"errors"
	"fmt"
	"net/netip"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/bastiond/bastiond/internal/audit"

	"github.com/bastiond/bastiond/internal/source"
	"github.com/bastiond/bastiond/internal/store"
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
	// SharedThrottle counts the failed sign-ins in Store's database, where
	// every instance of a cluster on it sees them: failures taking turns
	// at the instances add up to the backoff and lockout of one. false
	// (one host) counts them in this process's memory.
	SharedThrottle bool
	// Audit receives the sign-in events (succeeded, failed, throttled,
	// refused, account locked). Default audit.Discard.
	Audit audit.Sink
	// CeremonyKey (32 bytes) seals the passkey sign-ins a stranger may
	// begin, which are kept in the browser rather than in the store (so
	// that beginning them writes nothing): the same on every instance of a
	// cluster. Default: a key of this process's own.
	CeremonyKey []byte
	// MaxHashing bounds concurrent password hashes (each takes about
	// 19 MiB for its duration). Default 2 per CPU.
	MaxHashing int
}

// Authenticator checks logins.
type Authenticator struct {
	store    *Store
	log      *zap.Logger
	audit    audit.Sink
	throttle throttler
	tcfg     ThrottleConfig // the throttle's, defaults filled
	lockFor  time.Duration
	lockAt   int
	hashing  chan struct{}
	// dummyHash is verified for unknown users, so that they cost what a
	// known user costs: it is made with the store's costs.
	dummyHash string
	now       func() time.Time

	outcomes *prometheus.CounterVec
	lockouts atomic.Uint64

	// sealer seals the ceremonies of passkey sign-ins (CeremonyKey).
	sealer  cipher.AEAD
	sweepMu sync.Mutex // guards swept: the last sweep of passkey ceremonies
	swept   time.Time
}

// NewAuthenticator returns an Authenticator.
func NewAuthenticator(cfg AuthenticatorConfig) (*Authenticator, error) {
	if cfg.Store == nil || cfg.Logger == nil {
		return nil, errors.New("auth: Store and Logger are required")
	}
	if cfg.MaxHashing == 0 {
		cfg.MaxHashing = 2 * runtime.GOMAXPROCS(0)
	}
	dummy, err := cfg.Store.hashPassword("this is not anyone's password")
	if err != nil {
		return nil, err
	}
	if cfg.Audit == nil {
		cfg.Audit = audit.Discard
	}
	tcfg := cfg.Throttle.withDefaults()
	var th throttler = newThrottle(tcfg)
	if cfg.SharedThrottle {
		th = newSharedThrottle(cfg.Store.db, tcfg)
	}
	key := cfg.CeremonyKey
	if key == nil {
		key = make([]byte, 32)
		rand.Read(key)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("auth: CeremonyKey: %w", err)
	}
	sealer, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	return &Authenticator{
		sealer:    sealer,
		store:     cfg.Store,
		log:       cfg.Logger,
		audit:     cfg.Audit,
		throttle:  th,
		tcfg:      tcfg,
		lockFor:   tcfg.LockFor,
		lockAt:    tcfg.LockAfter,
		hashing:   make(chan struct{}, cfg.MaxHashing),
		dummyHash: dummy,
		now:       cfg.Store.now,
		outcomes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "bastiond_signins_total",
			Help: "Sign-in attempts by outcome: ok, sso_ok (through a single sign-on provider), ok_while_throttled and ok_while_locked (password and code through a hold others caused), failed, throttled, locked, malformed, unavailable (a cluster's database unreachable)."},
			[]string{"outcome"}),
	}, nil
}

func (a *Authenticator) count(outcome string) { a.outcomes.WithLabelValues(outcome).Inc() }

// Stats returns the sizes of the throttle's tables and their evictions.
func (a *Authenticator) Stats() ThrottleStats { return a.throttle.stats() }

var (
	tableEntriesDesc = prometheus.NewDesc("bastiond_signin_throttle_entries",
		"Entries in the sign-in throttle's tables: per source (IPv4 address, IPv6 /64), per account, per account and source.", []string{"table"}, nil)
	tableEvictionsDesc = prometheus.NewDesc("bastiond_signin_throttle_evictions_total",
		"Entries a full sign-in throttle table forgot to make room (the one that mattered least recently).", []string{"table"}, nil)
	lockoutsDesc = prometheus.NewDesc("bastiond_account_lockouts_total",
		"Accounts locked by failures in a row from one source.", nil, nil)
)

var _ prometheus.Collector = (*Authenticator)(nil)

// Describe implements prometheus.Collector.
func (a *Authenticator) Describe(ch chan<- *prometheus.Desc) {
	a.outcomes.Describe(ch)
	ch <- tableEntriesDesc
	ch <- tableEvictionsDesc
	ch <- lockoutsDesc
}

// Collect implements prometheus.Collector.
func (a *Authenticator) Collect(ch chan<- prometheus.Metric) {
	a.outcomes.Collect(ch)
	st := a.throttle.stats()
	for _, t := range []struct {
		name    string
		entries int
		evicted uint64
	}{{"sources", st.Sources, st.SourceEvictions}, {"users", st.Users, st.UserEvictions}, {"pairs", st.Pairs, st.PairEvictions}} {
		ch <- prometheus.MustNewConstMetric(tableEntriesDesc, prometheus.GaugeValue, float64(t.entries), t.name)
		ch <- prometheus.MustNewConstMetric(tableEvictionsDesc, prometheus.CounterValue, float64(t.evicted), t.name)
	}
	ch <- prometheus.MustNewConstMetric(lockoutsDesc, prometheus.CounterValue, float64(a.lockouts.Load()))
}

// Store returns the account store.
func (a *Authenticator) Store() *Store { return a.store }

// Limits of the sign-in form's fields. Input past them, or a name that
// breaks the name rules, is refused before it reaches a table or a log
// line: no account can have such a name, and no secret is that long.
const maxCodeLen = 16 // six digits, with the spaces some apps show

// Login checks a user name, password and (for users enrolled in TOTP) code
// presented from src. Any failure is a *LoginError.
//
// The model, against guessing and against being locked out by a stranger:
//   - A source (an IPv4 address, an IPv6 /64) that failed FreeFailures
//     times waits twice as long after each further failure; its attempts
//     are refused unchecked meanwhile. A source holds up only itself.
//   - An existing account that failed FreeFailures times, from wherever,
//     is held up the same way: while it waits, the right password is
//     refused, so that guesses spread over many sources learn nothing. The
//     right password with the right TOTP code gets through: a second
//     factor is what a guesser does not have.
//   - LockAfter failures in a row of one account from one source lock the
//     account for LockFor. The source that caused the lock is refused
//     whatever it sends; another source gets through with the right
//     password and code (not with the password alone).
//   - Every attempt that is not refused unchecked costs one password hash,
//     and costs the same for known and unknown names, so that the timing
//     tells nothing about which accounts exist or are held up.
func (a *Authenticator) Login(ctx context.Context, name, password, code string, src netip.Addr) (User, error) {
	return a.SignIn(ctx, name, password, code, src, MFATOTP)
}

// SignIn is Login where mfa says which second factor follows the
// password. A user who holds a second factor (a TOTP secret or a passkey)
// must give one of the kinds mfa accepts: a TOTP code (totp, any), or a
// passkey (webauthn, any), for which SignIn answers a *PasskeyNeeded once
// the password is right, and BeginPasskeySecondFactor goes on. A user with
// no second factor of an accepted kind but one of another kind is refused
// (second_factor_refused): the password alone never passes for an account
// that has a second factor.
func (a *Authenticator) SignIn(ctx context.Context, name, password, code string, src netip.Addr, mfa MFA) (User, error) {
	name = strings.ToLower(strings.TrimSpace(name))
	now := a.now()
	if !userName.MatchString(name) || len(password) > MaxPasswordLen || len(code) > maxCodeLen {
		a.count("malformed")
		a.log.Info("login refused: malformed input", zap.Stringer("source", src),
			zap.Int("user_bytes", len(name)), zap.Int("password_bytes", len(password)), zap.Int("code_bytes", len(code)))
		// Nothing typed is recorded, only which field broke which rule.
		a.emit(src, audit.Event{Event: audit.SigninRefused, Actor: audit.ActorAnonymous, Reason: "malformed",
			Detail: malformed(name, password, code)})
		return User{}, &LoginError{Reason: "malformed input"}
	}
	w, err := a.throttle.sourceWait(src, now)
	if err != nil {
		return User{}, a.unavailable(name, src, err)
	}
	if w > 0 {
		a.count("throttled")
		a.log.Info("login refused: throttled", zap.String("user", name), zap.Stringer("source", src), zap.Duration("wait", w))
		until := now.Add(w).UTC()
		// Refused unchecked: whether the name is an account is not looked
		// up, so the actor is unknown; the name passed the name rule.
		a.emit(src, audit.Event{Event: audit.SigninThrottled, Actor: audit.ActorAnonymous, User: name, Reason: "source", Until: &until,
			Detail: "this source failed too often: its attempts are refused unchecked until its backoff ends"})
		return User{}, &LoginError{Reason: "throttled"}
	}
	// The account is read before the wait for a hashing slot, not while
	// holding one: in a cluster the read is a round trip to the database,
	// and the slots bound the hashes' memory, not the reads.
	u, err := a.store.User(name)
	if err == nil && u.SSO() {
		// An SSO account has no password: to the form it is as unknown
		// as a name that is no account.
		err = ErrNoUser
	}
	known := err == nil
	select {
	case a.hashing <- struct{}{}:
	case <-ctx.Done():
		return User{}, ctx.Err()
	}
	hash := a.dummyHash
	if known {
		hash = u.PasswordHash
	}
	ok, herr := verifyPassword(hash, password)
	<-a.hashing
	switch {
	case !known && (errors.Is(err, store.ErrUnavailable) || errors.Is(err, store.ErrReleased)):
		// Not an unknown user: a database that cannot be reached (a
		// cluster's), or a store handed over to the new process of an
		// upgrade, which is no failure of the one signing in.
		return User{}, a.unavailable(name, src, err)
	case !known && !errors.Is(err, ErrNoUser):
		// The account is there but cannot be read: not an unknown user
		// either, and no lockout can be written to it.
		a.log.Error("login: stored account unreadable", zap.String("user", name), zap.Error(err))
		return User{}, a.failed(name, src, now, "unreadable account", "unreadable_account", false)
	case !known:
		return User{}, a.failed(name, src, now, "unknown user", "unknown_user", false)
	case herr != nil:
		a.log.Error("login: stored hash unreadable", zap.String("user", name), zap.Error(herr))
		return User{}, a.failed(name, src, now, "unreadable hash", "unreadable_hash", true)
	case !ok:
		return User{}, a.failed(name, src, now, "wrong password", "bad_password", true)
	case u.Disabled:
		return User{}, a.failed(name, src, now, "disabled", "disabled", false)
	}
	// The password is right. What holds the account up now is refused
	// without counting a failure: it is not a guess that failed.
	lockedHere := now.Before(u.LockedUntil) && slices.Contains(u.LockedBy, source.Of(src).String())
	if lockedHere {
		return User{}, a.refused(name, src, "locked", "the source that caused the lockout", u.LockedUntil)
	}
	held, heldUntil := "", time.Time{}
	switch {
	case now.Before(u.LockedUntil):
		held, heldUntil = "locked", u.LockedUntil
	default:
		w, err := a.throttle.userWait(name, now)
		if err != nil {
			return User{}, a.unavailable(name, src, err)
		}
		if w > 0 {
			held, heldUntil = "throttled", now.Add(w)
		}
	}
	if held != "" && !u.HasTOTP() && !u.HasPasskeys() {
		return User{}, a.refused(name, src, held, "the password alone does not pass while the account is held up", heldUntil)
	}
	totp, passkey := u.HasTOTP() && mfa.totp(), u.HasPasskeys() && mfa.passkey()
	switch {
	case passkey && (code == "" || !totp):
		// The password is right; the passkey's ceremony decides.
		return User{}, &PasskeyNeeded{User: name, held: held, right: true}
	case !totp && (u.HasTOTP() || u.HasPasskeys()):
		return User{}, a.failed(name, src, now, "second factor not accepted by access.mfa", "second_factor_refused", false)
	}
	method := "password"
	if totp {
		if err := a.useCode(name, code, now); err != nil {
			class := "bad_code"
			if errors.Is(err, errCodeReused) {
				class = "code_reused"
			}
			return User{}, a.failed(name, src, now, "wrong code", class, true)
		}
		method = "password_totp"
	}
	if err := a.throttle.succeed(name, src); err != nil {
		// Signed in all the same: what stays counted is the account's
		// own failures, which its next sign-in clears.
		a.log.Warn("signed in, but the account's failures could not be cleared", zap.String("user", name), zap.Error(err))
	}
	ev := audit.Event{Event: audit.SigninSucceeded, Actor: name, User: name, Reason: method}
	if held != "" {
		a.count("ok_while_" + held)
		a.log.Warn("signed in with password and code while the account was held up by other sources' failures",
			zap.String("user", name), zap.Stringer("source", src), zap.String("held", held), zap.Time("locked_until", u.LockedUntil))
		ev.Detail = "signed in with password and code while the account was " + held + " by failures from other sources"
	} else {
		a.count("ok")
	}
	a.emit(src, ev)
	return u, nil
}

// unavailable refuses a sign-in that cannot be checked: the accounts'
// or the shared throttle's database is unreachable. The error is not a LoginError: the
// caller tells the user to try again later rather than that the sign-in
// failed.
func (a *Authenticator) unavailable(name string, src netip.Addr, err error) error {
	a.count("unavailable")
	a.log.Error("login refused: the state store is unavailable", zap.String("user", name), zap.Stringer("source", src), zap.Error(err))
	a.emit(src, audit.Event{Event: audit.SigninRefused, Actor: audit.ActorAnonymous, User: name, Reason: "unavailable",
		Detail: "the database of the accounts or of the sign-in throttle cannot be reached: the attempt was not checked"})
	return fmt.Errorf("%w: %w", ErrUnavailable, err)
}

// ErrUnavailable is a sign-in that could not be checked because the
// state it needs cannot be reached (a cluster's database is down).
var ErrUnavailable = errors.New("sign-in unavailable: the bastion cannot reach its database, try again in a moment")

// refused is a failed login of the right password: logged and counted as
// an outcome, not as a failure. In the audit trail, a lockout's refusal is
// a signin_failed (reason locked), the hold of an account that failed too
// often a signin_throttled (reason user); until is when the hold ends.
func (a *Authenticator) refused(name string, src netip.Addr, reason, why string, until time.Time) error {
	a.count(reason)
	a.log.Info("login refused: "+reason, zap.String("user", name), zap.Stringer("source", src), zap.String("why", why))
	until = until.UTC()
	ev := audit.Event{Event: audit.SigninFailed, Actor: name, User: name, Reason: "locked", Until: &until, Detail: why}
	if reason == "throttled" {
		ev.Event, ev.Reason = audit.SigninThrottled, "user"
	}
	a.emit(src, ev)
	return &LoginError{Reason: reason}
}

// emit sends e, from src, to the audit trail.
func (a *Authenticator) emit(src netip.Addr, e audit.Event) {
	e.Source = audit.ActorAnonymous
	if src.IsValid() {
		e.Source = src.Unmap().String()
	}
	a.audit.Audit(e)
}

// malformed names what breaks the sign-in form's rules, without a byte of
// what was typed.
func malformed(name, password, code string) string {
	var what []string
	if !userName.MatchString(name) {
		what = append(what, "the user name breaks the name rule")
	}
	if len(password) > MaxPasswordLen {
		what = append(what, "the password is too long")
	}
	if len(code) > maxCodeLen {
		what = append(what, "the code is too long")
	}
	return strings.Join(what, "; ")
}

// errCodeReused is a TOTP code that matched a step already used.
var errCodeReused = errors.New("auth: the code was used already")

// useCode accepts a TOTP code once: the step is recorded in the same
// transaction that checks it, so two logins racing with one code cannot
// both pass.
func (a *Authenticator) useCode(name, code string, now time.Time) error {
	return a.store.Update(name, func(u *User) error {
		step, ok, reused := matchTOTP(u.TOTPSecret, code, now, u.TOTPLastStep)
		switch {
		case reused:
			return errCodeReused
		case !ok:
			return ErrBadCode
		}
		u.TOTPLastStep = step
		return nil
	})
}

// failed counts a failure from src, locks the account when it has failed
// LockAfter times in a row from that source (lockable: the account
// exists), logs the reason and returns the generic error. class is the
// reason in the audit trail.
func (a *Authenticator) failed(name string, src netip.Addr, now time.Time, reason, class string, lockable bool) error {
	a.count("failed")
	n, err := a.throttle.fail(name, src, lockable, now)
	if err != nil {
		a.log.Error("login failed, and the failure could not be counted", zap.String("user", name), zap.Stringer("source", src), zap.Error(err))
	}
	fields := []zap.Field{zap.String("user", name), zap.Stringer("source", src), zap.String("reason", reason), zap.Int("failures", n)}
	ev := audit.Event{Event: audit.SigninFailed, Actor: name, User: name, Reason: class}
	if class == "unknown_user" || name == "" {
		// The name passed the name rule (or the sign-in was refused
		// before this, as malformed); it is no account, so nobody acted.
		ev.Actor = audit.ActorAnonymous
	}
	if name == "" {
		// A passkey that names no account: nothing to lock.
		lockable = false
	}
	if n > 0 {
		ev.Detail = fmt.Sprintf("failures in a row of this account from this source: %d", n)
	}
	a.emit(src, ev)
	if lockable && n >= a.lockAt {
		until, by := now.Add(a.lockFor).UTC(), source.Of(src).String()
		err := a.store.Update(name, func(u *User) error {
			if !now.Before(u.LockedUntil) {
				u.LockedBy = nil
			}
			if u.LockedUntil.Before(until) {
				u.LockedUntil = until
			}
			if !slices.Contains(u.LockedBy, by) {
				u.LockedBy = append(u.LockedBy, by)
				if len(u.LockedBy) > maxLockedBy {
					u.LockedBy = u.LockedBy[len(u.LockedBy)-maxLockedBy:]
				}
			}
			return nil
		})
		if err == nil {
			if err := a.throttle.locked(name, src); err != nil {
				a.log.Error("account locked, but its failure count could not be restarted", zap.String("user", name), zap.Error(err))
			}
			a.lockouts.Add(1)
			a.log.Warn("account locked", append(fields, zap.Time("locked_until", until), zap.String("locked_by", by))...)
			// The daemon locks the account; the source is the guesser's.
			a.emit(src, audit.Event{Event: audit.AccountLocked, Actor: audit.ActorDaemon, User: name, Until: &until,
				Detail: fmt.Sprintf("%d failures in a row from %s: refused from there until the lock ends; "+
					"elsewhere the password passes only with a TOTP code", n, by)})
			return &LoginError{Reason: reason}
		}
		a.log.Error("login: cannot record a lockout", zap.String("user", name), zap.Error(err))
	}
	a.log.Info("login failed", fields...)
	return &LoginError{Reason: reason}
}

// maxLockedBy bounds the sources a lockout remembers as its cause.
const maxLockedBy = 16

// Unlock clears an account's lockout and its failure count.
func (a *Authenticator) Unlock(name string) error {
	if err := a.store.Unlock(name); err != nil {
		return err
	}
	return a.throttle.reset(name)
}
