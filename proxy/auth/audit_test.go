package auth

import (
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/bastiond/bastiond/internal/audit"
)

type capture = audit.Capture

func newAuditedAuthenticator(t *testing.T) (*Authenticator, *clock, *capture) {
	t.Helper()
	return newAuditedAuthenticatorOn(t, false)
}

// newAuditedAuthenticatorOn is newAuditedAuthenticator with the shared
// throttle when shared is true.
func newAuditedAuthenticatorOn(t *testing.T, shared bool) (*Authenticator, *clock, *capture) {
	t.Helper()
	s, c := newTestStore(t)
	sink := &capture{}
	a, err := NewAuthenticator(AuthenticatorConfig{Store: s, Logger: zap.NewNop(), Audit: sink, SharedThrottle: shared})
	if err != nil {
		t.Fatal(err)
	}
	return a, c, sink
}

// want is the part of an event a test checks.
type want struct {
	event, actor, source, user, reason string
	until                              bool // Until is set
}

func checkEvents(t *testing.T, got []audit.Event, wants ...want) {
	t.Helper()
	if len(got) != len(wants) {
		t.Fatalf("%d events, want %d: %+v", len(got), len(wants), got)
	}
	for i, w := range wants {
		e := got[i]
		if e.Event != w.event || e.Actor != w.actor || e.Source != w.source || e.User != w.user || e.Reason != w.reason ||
			(e.Until != nil) != w.until {
			t.Errorf("event %d: %s actor %q source %q user %q reason %q until %v, want %+v",
				i, e.Event, e.Actor, e.Source, e.User, e.Reason, e.Until, w)
		}
	}
}

// noSecret fails if any marshalled event holds one of secrets.
func noSecret(t *testing.T, es []audit.Event, secrets ...string) {
	t.Helper()
	for _, e := range es {
		line := string(audit.Marshal(e))
		for _, s := range secrets {
			if s != "" && strings.Contains(line, s) {
				t.Errorf("a secret (%q) is in the audit line %s", s, line)
			}
		}
	}
}

func TestLoginAuditEvents(t *testing.T) {
	for _, tc := range []struct {
		name string
		src  netip.Addr
	}{
		{"ipv4", netip.MustParseAddr("192.0.2.10")},
		{"ipv6", netip.MustParseAddr("2001:db8:1::10")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, _, sink := newAuditedAuthenticator(t)
			a.Store().AddUser("alice", goodPassword, nil)
			a.Store().AddUser("dora", goodPassword, nil)
			a.Store().SetDisabled("dora", true)
			ctx, src, ip := context.Background(), tc.src, tc.src.String()
			var all []audit.Event
			step := func(name, user, pw, code string, wants ...want) {
				t.Helper()
				a.Login(ctx, user, pw, code, src)
				got := sink.Take()
				all = append(all, got...)
				t.Run(name, func(t *testing.T) { checkEvents(t, got, wants...) })
			}
			step("succeeded", "Alice", goodPassword, "",
				want{event: audit.SigninSucceeded, actor: "alice", source: ip, user: "alice", reason: "password"})
			step("bad password", "alice", "wrong password!", "",
				want{event: audit.SigninFailed, actor: "alice", source: ip, user: "alice", reason: "bad_password"})
			step("unknown user", "mallory", "mallory's guess", "",
				want{event: audit.SigninFailed, actor: audit.ActorAnonymous, source: ip, user: "mallory", reason: "unknown_user"})
			step("disabled", "dora", goodPassword, "",
				want{event: audit.SigninFailed, actor: "dora", source: ip, user: "dora", reason: "disabled"})
			// Refused before any check: no typed value is kept, not even
			// the name.
			step("malformed name", "x\x00' OR 1=1 --", "typed in the wrong field", "",
				want{event: audit.SigninRefused, actor: audit.ActorAnonymous, source: ip, reason: "malformed"})
			step("password too long", "alice", strings.Repeat("p", MaxPasswordLen+1), "",
				want{event: audit.SigninRefused, actor: audit.ActorAnonymous, source: ip, reason: "malformed"})
			noSecret(t, all, goodPassword, "wrong password!", "mallory's guess", "typed in the wrong field", "OR 1=1", strings.Repeat("p", 64))
			for _, e := range all {
				if e.Event == audit.SigninRefused && !strings.Contains(e.Detail, "rule") && !strings.Contains(e.Detail, "too long") {
					t.Errorf("signin_refused does not say what broke which rule: %q", e.Detail)
				}
			}
		})
	}
}

func TestLoginAuditTOTP(t *testing.T) {
	a, c, sink := newAuditedAuthenticator(t)
	s := a.Store()
	s.AddUser("alice", goodPassword, nil)
	e, err := s.BeginTOTP("alice", "bastion.example")
	if err != nil {
		t.Fatal(err)
	}
	secret, _ := b32.DecodeString(e.Secret)
	if err := s.ConfirmTOTP("alice", totpAt(secret, totpStep(c.t))); err != nil {
		t.Fatal(err)
	}
	ctx, src := context.Background(), netip.MustParseAddr("2001:db8:2::7")
	ip := src.String()
	var all []audit.Event
	login := func(code string) []audit.Event {
		a.Login(ctx, "alice", goodPassword, code, src)
		got := sink.Take()
		all = append(all, got...)
		return got
	}
	used := totpAt(secret, totpStep(c.t)) // the enrolment took this step
	checkEvents(t, login(used), want{event: audit.SigninFailed, actor: "alice", source: ip, user: "alice", reason: "code_reused"})
	c.advance(30 * time.Second)
	code := totpAt(secret, totpStep(c.t))
	wrong := "000000"
	if code == wrong {
		wrong = "111111"
	}
	checkEvents(t, login(wrong), want{event: audit.SigninFailed, actor: "alice", source: ip, user: "alice", reason: "bad_code"})
	checkEvents(t, login(code), want{event: audit.SigninSucceeded, actor: "alice", source: ip, user: "alice", reason: "password_totp"})
	checkEvents(t, login(code), want{event: audit.SigninFailed, actor: "alice", source: ip, user: "alice", reason: "code_reused"})
	noSecret(t, all, goodPassword, code, used, wrong, e.Secret)
}

func TestLoginAuditThrottleAndLockout(t *testing.T) {
	forEachThrottle(t, testLoginAuditThrottleAndLockout)
}

func testLoginAuditThrottleAndLockout(t *testing.T, shared bool) {
	a, c, sink := newAuditedAuthenticatorOn(t, shared)
	s := a.Store()
	s.AddUser("alice", goodPassword, nil)
	ctx := context.Background()
	attacker := netip.MustParseAddr("2001:db8:bad::1")
	bad := want{event: audit.SigninFailed, actor: "alice", source: attacker.String(), user: "alice", reason: "bad_password"}
	for range a.tcfg.FreeFailures + 1 {
		a.Login(ctx, "alice", "guess one", "", attacker)
	}
	checkEvents(t, sink.Take(), bad, bad, bad, bad)

	// The source waits: refused unchecked, without looking the name up.
	a.Login(ctx, "alice", goodPassword, "", attacker)
	got := sink.Take()
	checkEvents(t, got, want{event: audit.SigninThrottled, actor: audit.ActorAnonymous, source: attacker.String(),
		user: "alice", reason: "source", until: true})
	if w := sourceWait(t, a, attacker); !got[0].Until.Equal(c.t.Add(w)) {
		t.Errorf("until %v, want now + %v", got[0].Until, w)
	}

	// The account waits too: its right password from elsewhere, without a
	// code, is held up.
	other := netip.MustParseAddr("192.0.2.6")
	a.Login(ctx, "alice", goodPassword, "", other)
	checkEvents(t, sink.Take(), want{event: audit.SigninThrottled, actor: "alice", source: other.String(),
		user: "alice", reason: "user", until: true})

	// LockAfter failures in a row from one source lock the account.
	for range a.lockAt - a.tcfg.FreeFailures - 1 {
		c.advance(sourceWait(t, a, attacker))
		a.Login(ctx, "alice", "guess two", "", attacker)
	}
	got = sink.Take()
	last := got[len(got)-1]
	checkEvents(t, got[len(got)-2:], bad, want{event: audit.AccountLocked, actor: audit.ActorDaemon,
		source: attacker.String(), user: "alice", until: true})
	u, _ := s.User("alice")
	if !last.Until.Equal(u.LockedUntil) || !strings.Contains(last.Detail, "2001:db8:bad::/64") {
		t.Errorf("account_locked until %v detail %q, want %v and the guesser's /64", last.Until, last.Detail, u.LockedUntil)
	}

	// The guesser's source is refused even with the right password: a
	// failure, reason locked.
	c.advance(sourceWait(t, a, attacker))
	a.Login(ctx, "alice", goodPassword, "", attacker)
	checkEvents(t, sink.Take(), want{event: audit.SigninFailed, actor: "alice", source: attacker.String(),
		user: "alice", reason: "locked", until: true})
	// Elsewhere, the password alone does not pass while the lock holds.
	fresh := netip.MustParseAddr("198.51.100.1")
	a.Login(ctx, "alice", goodPassword, "", fresh)
	checkEvents(t, sink.Take(), want{event: audit.SigninFailed, actor: "alice", source: fresh.String(),
		user: "alice", reason: "locked", until: true})
}

func TestLoginAuditMarshalled(t *testing.T) {
	a, _, sink := newAuditedAuthenticator(t)
	a.Store().AddUser("alice", goodPassword, nil)
	a.Login(context.Background(), "alice", "not the password", "", netip.MustParseAddr("::ffff:192.0.2.44"))
	es := sink.Take()
	if len(es) != 1 {
		t.Fatalf("%d events", len(es))
	}
	line := string(audit.Marshal(es[0]))
	// An IPv4-mapped IPv6 address is written as the IPv4 address.
	for _, part := range []string{`"event":"signin_failed"`, `"actor":"alice"`, `"source":"192.0.2.44"`, `"user":"alice"`, `"reason":"bad_password"`} {
		if !strings.Contains(line, part) {
			t.Errorf("%s lacks %s", line, part)
		}
	}
	if strings.Contains(line, "not the password") {
		t.Errorf("the password is in %s", line)
	}
	t.Log(line)
}

func TestCheckTokenReasons(t *testing.T) {
	s, c := newTestStore(t)
	s.AddUser("alice", goodPassword, nil)
	secret, tok, err := s.IssueToken("alice", nil, time.Hour, "", "192.0.2.1")
	if err != nil {
		t.Fatal(err)
	}
	id, sec, _ := parseToken(secret)
	other := strings.Repeat("A", len(sec))
	for _, tc := range []struct {
		name, presented, reason, id string
	}{
		{"malformed", "bst_nope", TokenMalformed, ""},
		{"unknown", tokenPrefix + "0123456789abcdef_" + sec, TokenUnknown, ""},
		{"bad secret", tokenPrefix + id + "_" + other, TokenBadSecret, tok.ID},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := s.CheckToken(tc.presented)
			te, ok := err.(*TokenError)
			if !ok || te.Reason != tc.reason || te.ID != tc.id || err.Error() != ErrBadToken.Error() {
				t.Fatalf("err %v (%+v), want reason %s", err, te, tc.reason)
			}
		})
	}
	c.advance(2 * time.Hour)
	if _, _, err := s.CheckToken(secret); err.(*TokenError).Reason != TokenExpired {
		t.Errorf("expired token: %v", err)
	}
	c.advance(-2 * time.Hour)
	s.SetDisabled("alice", true)
	if _, _, err := s.CheckToken(secret); err.(*TokenError).Reason != TokenUserDisabled {
		t.Errorf("disabled user's token: %v", err)
	}
}
