package auth

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/bastiond/bastiond/internal/audit"
	"github.com/bastiond/bastiond/internal/store"
)

// SourceWait is how long src waits before its next attempt: the single
// sign-on's answers and bastionctl's result codes go through the backoff
// of the sources that failed too often, as the password form does. A
// throttled source's attempt is refused unchecked, with the audit event.
func (a *Authenticator) SourceWait(src netip.Addr, via string) (time.Duration, error) {
	now := a.now()
	w, err := a.throttle.sourceWait(src, now)
	if err != nil {
		return 0, a.unavailable("", src, err)
	}
	if w > 0 {
		a.count("throttled")
		until := now.Add(w).UTC()
		a.emit(src, audit.Event{Event: audit.SigninThrottled, Actor: audit.ActorAnonymous, Reason: "source", Until: &until, Via: via,
			Detail: "this source failed too often: its attempts are refused unchecked until its backoff ends"})
	}
	return w, nil
}

// SSOFailed records a refused single sign-on attempt from src (reason is
// the class, detail what was wrong, never a secret): an audit event, and,
// when counted, a failure of the source in the throttle, like a wrong
// password for a name that is no account (a provider that cannot be
// reached is no failure of the one signing in). provider is the
// provider's name, if known.
func (a *Authenticator) SSOFailed(src netip.Addr, provider, user, reason, detail string, counted bool) {
	a.count("failed")
	if counted {
		if _, err := a.throttle.fail("", src, false, a.now()); err != nil {
			a.log.Error("single sign-on refused, and the failure could not be counted", zap.Stringer("source", src), zap.Error(err))
		}
	}
	a.log.Info("single sign-on refused", zap.String("provider", provider), zap.String("user", user), zap.Stringer("source", src),
		zap.String("reason", reason), zap.String("detail", detail))
	if provider != "" {
		detail = "provider " + provider + ": " + detail
	}
	a.emit(src, audit.Event{Event: audit.SigninFailed, Actor: audit.ActorAnonymous, User: user, Reason: reason, Via: "sso", Detail: detail})
}

// SSOIdentity is who a single sign-on provider vouched for.
type SSOIdentity struct {
	Provider, Subject, Name string
	Groups                  []string
}

// SignInSSO signs in the user a provider vouched for, from src: it creates
// their account at the first sign-in and records their groups at each.
// lost reports that groups they had are gone (the caller ends the
// sessions those gave). Failures are audit events and count against the
// source: a name that is a local account's or another subject's, a
// disabled account.
func (a *Authenticator) SignInSSO(id SSOIdentity, src netip.Addr) (u User, lost bool, err error) {
	u, before, err := a.store.SignInSSO(id.Name, id.Provider, id.Subject, id.Groups)
	switch {
	case errors.Is(err, ErrNameTaken):
		a.SSOFailed(src, id.Provider, id.Name, "sso_name_taken",
			"the name is a local account's, or another user's of a provider (the provider's sub differs): not signed in", true)
		return User{}, false, &LoginError{Reason: "name taken"}
	case errors.Is(err, ErrDisabled):
		a.SSOFailed(src, id.Provider, id.Name, "disabled", "the account is disabled", true)
		return User{}, false, &LoginError{Reason: "disabled"}
	case errors.Is(err, store.ErrUnavailable) || errors.Is(err, store.ErrReleased):
		return User{}, false, a.unavailable(id.Name, src, err)
	case err != nil:
		a.log.Error("single sign-on: the account cannot be written", zap.String("user", id.Name), zap.Error(err))
		return User{}, false, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	if err := a.throttle.succeed(u.Name, src); err != nil {
		a.log.Warn("signed in, but the account's failures could not be cleared", zap.String("user", u.Name), zap.Error(err))
	}
	for _, g := range before {
		if !slices.Contains(u.Groups, g) {
			lost = true
		}
	}
	a.count("sso_ok")
	detail := "through " + id.Provider + " (subject " + id.Subject + ")"
	if before == nil {
		detail += ", first sign-in: account created"
	}
	if len(u.Groups) > 0 {
		detail += "; groups: " + strings.Join(u.Groups, ", ")
	} else {
		detail += "; no groups"
	}
	a.emit(src, audit.Event{Event: audit.SigninSucceeded, Actor: u.Name, User: u.Name, Reason: "sso", Via: "sso", Detail: detail})
	return u, lost, nil
}
