package auth

import (
	"context"
	"errors"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.etcd.io/bbolt"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

// clock is a settable time source for tests.
type clock struct{ t time.Time }

func (c *clock) now() time.Time          { return c.t }
func (c *clock) advance(d time.Duration) { c.t = c.t.Add(d) }

func newTestStore(t *testing.T) (*Store, *clock) {
	t.Helper()
	db, err := bbolt.Open(filepath.Join(t.TempDir(), "state.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	s, err := NewStore(db)
	if err != nil {
		t.Fatal(err)
	}
	c := &clock{t: time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)}
	s.now = c.now
	return s, c
}

func newTestAuthenticator(t *testing.T) (*Authenticator, *clock, *observer.ObservedLogs) {
	t.Helper()
	s, c := newTestStore(t)
	core, logs := observer.New(zap.InfoLevel)
	a, err := NewAuthenticator(AuthenticatorConfig{Store: s, Logger: zap.New(core)})
	if err != nil {
		t.Fatal(err)
	}
	return a, c, logs
}

const goodPassword = "correct horse battery"

func TestPasswordHash(t *testing.T) {
	h, err := hashPassword(goodPassword)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(h, "$argon2id$v=19$m=19456,t=2,p=1$") || strings.Contains(h, goodPassword) {
		t.Fatalf("hash %q", h)
	}
	if ok, err := verifyPassword(h, goodPassword); !ok || err != nil {
		t.Errorf("right password: %v %v", ok, err)
	}
	if ok, _ := verifyPassword(h, goodPassword+"x"); ok {
		t.Error("wrong password accepted")
	}
	h2, _ := hashPassword(goodPassword)
	if h2 == h {
		t.Error("two hashes of one password are equal: no salt")
	}
	for _, bad := range []string{"", "$argon2id$", "$argon2i$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA",
		"$argon2id$v=19$m=99999999,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA", "$argon2id$v=19$m=19456,t=2,p=1$!!$aGFzaA"} {
		if _, err := verifyPassword(bad, "x"); err == nil {
			t.Errorf("malformed hash %q accepted", bad)
		}
	}
}

// RFC 6238 appendix B, SHA-1, truncated to six digits as apps show them.
func TestTOTPVectors(t *testing.T) {
	secret := []byte("12345678901234567890")
	for unix, want := range map[int64]string{59: "287082", 1111111109: "081804", 1111111111: "050471",
		1234567890: "005924", 2000000000: "279037", 20000000000: "353130"} {
		if got := totpAt(secret, totpStep(time.Unix(unix, 0))); got != want {
			t.Errorf("T=%d: %s, want %s", unix, got, want)
		}
	}
}

func TestTOTPWindowAndReplay(t *testing.T) {
	secret := []byte("12345678901234567890")
	now := time.Unix(1234567890, 0)
	cur := totpStep(now)
	for _, tc := range []struct {
		name string
		step int64
		last int64
		ok   bool
	}{
		{"current", cur, 0, true},
		{"previous step (clock drift)", cur - 1, 0, true},
		{"next step", cur + 1, 0, true},
		{"two steps old", cur - 2, 0, false},
		{"replayed", cur, cur, false},
		{"older than the last used", cur - 1, cur, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, ok := checkTOTP(secret, totpAt(secret, tc.step), now, tc.last); ok != tc.ok {
				t.Errorf("ok = %v, want %v", ok, tc.ok)
			}
		})
	}
	if _, ok := checkTOTP(secret, "12345", now, 0); ok {
		t.Error("short code accepted")
	}
	if _, ok := checkTOTP(secret, "", now, 0); ok {
		t.Error("empty code accepted")
	}
}

func TestEnrolmentQR(t *testing.T) {
	e := totpEnrolment("bastion.example", "alice", []byte("12345678901234567890"))
	if e.URI != "otpauth://totp/bastion.example:alice?algorithm=SHA1&digits=6&issuer=bastion.example&period=30&secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ" {
		t.Errorf("URI %s", e.URI)
	}
	png, err := e.QRPNG()
	if err != nil || !strings.HasPrefix(string(png), "\x89PNG") {
		t.Errorf("PNG: %v", err)
	}
	txt, err := e.QRText()
	if err != nil || strings.Count(txt, "\n") < 15 {
		t.Errorf("text QR: %v\n%s", err, txt)
	}
}

func TestStoreUsers(t *testing.T) {
	s, _ := newTestStore(t)
	if err := s.AddUser("alice", goodPassword, []string{"ops", "ops"}); err != nil {
		t.Fatal(err)
	}
	if err := s.AddUser("alice", goodPassword, nil); !errors.Is(err, ErrUserExists) {
		t.Errorf("second add: %v", err)
	}
	if err := s.AddUser("Bad Name", goodPassword, nil); !errors.Is(err, ErrBadName) {
		t.Errorf("bad name: %v", err)
	}
	if err := s.AddUser("bob", "short", nil); !errors.Is(err, ErrWeakPassword) {
		t.Errorf("short password: %v", err)
	}
	if err := s.Grant("alice", "audit"); err != nil {
		t.Fatal(err)
	}
	if err := s.Revoke("alice", "ops"); err != nil {
		t.Fatal(err)
	}
	u, err := s.User("alice")
	if err != nil || strings.Join(u.Roles, ",") != "audit" {
		t.Fatalf("roles %v %v", u.Roles, err)
	}
	if _, err := s.User("nobody"); !errors.Is(err, ErrNoUser) {
		t.Errorf("unknown user: %v", err)
	}
	if err := s.SetDisabled("nobody", true); !errors.Is(err, ErrNoUser) {
		t.Errorf("disable unknown: %v", err)
	}
}

func TestLogin(t *testing.T) {
	a, c, logs := newTestAuthenticator(t)
	s := a.Store()
	if err := s.AddUser("alice", goodPassword, nil); err != nil {
		t.Fatal(err)
	}
	src := netip.MustParseAddr("2001:db8::1")
	ctx := context.Background()
	if _, err := a.Login(ctx, "Alice ", goodPassword, "", src); err != nil {
		t.Fatalf("good login: %v", err)
	}
	cases := []struct{ name, user, pw, reason string }{
		{"wrong password", "alice", "wrong password!", "wrong password"},
		{"unknown user", "mallory", goodPassword, "unknown user"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := a.Login(ctx, tc.user, tc.pw, "", src)
			var le *LoginError
			if !errors.As(err, &le) || le.Reason != tc.reason || err.Error() != ErrLoginFailed.Error() {
				t.Fatalf("err %v (%+v)", err, le)
			}
		})
	}
	s.SetDisabled("alice", true)
	if _, err := a.Login(ctx, "alice", goodPassword, "", netip.MustParseAddr("192.0.2.9")); !errors.Is(err, ErrLoginFailed) {
		t.Errorf("disabled user logged in: %v", err)
	}
	for _, e := range logs.All() {
		for _, f := range e.Context {
			if strings.Contains(f.String, "password!") || strings.Contains(f.String, goodPassword) {
				t.Errorf("a password reached the log: %v", e)
			}
		}
	}
	_ = c
}

func TestLoginTOTP(t *testing.T) {
	a, c, _ := newTestAuthenticator(t)
	s := a.Store()
	s.AddUser("alice", goodPassword, nil)
	e, err := s.BeginTOTP("alice", "bastion.example")
	if err != nil {
		t.Fatal(err)
	}
	secret, _ := b32.DecodeString(e.Secret)
	if err := s.ConfirmTOTP("alice", "000000"); !errors.Is(err, ErrBadCode) && totpAt(secret, totpStep(c.t)) != "000000" {
		t.Errorf("wrong confirmation code: %v", err)
	}
	if err := s.ConfirmTOTP("alice", totpAt(secret, totpStep(c.t))); err != nil {
		t.Fatal(err)
	}
	ctx, src := context.Background(), netip.MustParseAddr("192.0.2.1")
	if _, err := a.Login(ctx, "alice", goodPassword, "", src); !errors.Is(err, ErrLoginFailed) {
		t.Error("login without the code passed")
	}
	// The confirmation used this step: the same code is refused, the next one works once.
	if _, err := a.Login(ctx, "alice", goodPassword, totpAt(secret, totpStep(c.t)), src); !errors.Is(err, ErrLoginFailed) {
		t.Error("the enrolment code was accepted again")
	}
	c.advance(30 * time.Second)
	code := totpAt(secret, totpStep(c.t))
	if _, err := a.Login(ctx, "alice", goodPassword, code, src); err != nil {
		t.Fatalf("login with code: %v", err)
	}
	if _, err := a.Login(ctx, "alice", goodPassword, code, src); !errors.Is(err, ErrLoginFailed) {
		t.Error("a code was accepted twice")
	}
}

func TestThrottleAndLockout(t *testing.T) {
	a, c, _ := newTestAuthenticator(t)
	s := a.Store()
	s.AddUser("alice", goodPassword, nil)
	ctx := context.Background()
	attacker := netip.MustParseAddr("2001:db8:bad::1")
	reasons := func(src netip.Addr, pw string) string {
		_, err := a.Login(ctx, "alice", pw, "", src)
		var le *LoginError
		if errors.As(err, &le) {
			return le.Reason
		}
		return "ok"
	}
	// Three free failures, then each wait doubles: 1s, 2s, 4s...
	for i := range 3 {
		if r := reasons(attacker, "guess"); r != "wrong password" {
			t.Fatalf("failure %d: %s", i+1, r)
		}
	}
	if r := reasons(attacker, "guess"); r != "wrong password" {
		t.Fatalf("4th: %s", r)
	}
	if r := reasons(attacker, goodPassword); r != "throttled" {
		t.Fatalf("right password during backoff: %s, want throttled", r)
	}
	// Another address in the same IPv6 /64 shares the wait.
	if r := reasons(netip.MustParseAddr("2001:db8:bad::2"), goodPassword); r != "throttled" {
		t.Fatalf("same /64: %s", r)
	}
	waits := []time.Duration{}
	for range 6 {
		w := a.throttle.wait("alice", attacker, c.t)
		waits = append(waits, w)
		c.advance(w)
		reasons(attacker, "guess")
	}
	for i := 1; i < len(waits); i++ {
		if waits[i] != 2*waits[i-1] {
			t.Errorf("waits %v do not double", waits)
			break
		}
	}
	// Ten failures in a row lock the account, even for the right password
	// from a clean source once the backoff has passed.
	c.advance(a.throttle.wait("alice", attacker, c.t))
	u, _ := s.User("alice")
	if !c.t.Before(u.LockedUntil) {
		t.Fatalf("not locked after %d failures: %v", a.lockAt, u.LockedUntil)
	}
	clean := netip.MustParseAddr("192.0.2.7")
	c.advance(5 * time.Minute)
	if r := reasons(clean, goodPassword); r != "locked" {
		t.Fatalf("locked account: %s", r)
	}
	if err := a.Unlock("alice"); err != nil {
		t.Fatal(err)
	}
	if r := reasons(clean, goodPassword); r != "ok" {
		t.Fatalf("after unlock: %s", r)
	}
	// The lockout also ends by itself.
	for range 10 {
		c.advance(a.throttle.wait("alice", clean, c.t))
		reasons(clean, "guess")
	}
	c.advance(a.lockFor + a.throttle.cfg.MaxDelay)
	if r := reasons(netip.MustParseAddr("192.0.2.8"), goodPassword); r != "ok" {
		t.Fatalf("after the lockout period: %s", r)
	}
}

func TestTokens(t *testing.T) {
	s, c := newTestStore(t)
	s.AddUser("alice", goodPassword, nil)
	s.AddUser("bob", goodPassword, nil)
	secret, tok, err := s.IssueToken("alice", []string{ScopeAPI}, time.Hour, "laptop", "192.0.2.1")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(secret, "bst_"+tok.ID+"_") {
		t.Fatalf("secret %q", secret)
	}
	got, u, err := s.CheckToken(secret)
	if err != nil || u.Name != "alice" || !got.HasScope(ScopeAPI) || got.HasScope(ScopeTunnel) {
		t.Fatalf("check: %v %+v", err, got)
	}
	for name, bad := range map[string]string{
		"empty": "", "no prefix": strings.TrimPrefix(secret, "bst_"),
		"wrong secret": secret[:len(secret)-2] + "AA", "truncated": secret[:len(secret)-1],
	} {
		if _, _, err := s.CheckToken(bad); !errors.Is(err, ErrBadToken) {
			t.Errorf("%s: %v", name, err)
		}
	}
	if err := s.RevokeToken(tok.ID, "bob"); !errors.Is(err, ErrNoToken) {
		t.Errorf("bob revoked alice's token: %v", err)
	}
	s.SetDisabled("alice", true)
	if _, _, err := s.CheckToken(secret); !errors.Is(err, ErrBadToken) {
		t.Error("token of a disabled user accepted")
	}
	s.SetDisabled("alice", false)
	c.advance(time.Hour)
	if _, _, err := s.CheckToken(secret); !errors.Is(err, ErrBadToken) {
		t.Error("expired token accepted")
	}
	if _, _, err := s.IssueToken("alice", nil, MaxTokenTTL+time.Second, "", ""); err == nil {
		t.Error("token beyond the maximum lifetime issued")
	}
	secret2, tok2, _ := s.IssueToken("alice", nil, 0, "", "")
	if err := s.RevokeToken(tok2.ID, "alice"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.CheckToken(secret2); !errors.Is(err, ErrBadToken) {
		t.Error("revoked token accepted")
	}
	if ts, _ := s.Tokens("alice"); len(ts) != 1 || ts[0].Verifier != "" {
		t.Errorf("list: %+v", ts)
	}
}

func FuzzParseToken(f *testing.F) {
	f.Add("bst_0123456789abcdef_" + strings.Repeat("A", 43))
	f.Add("bst__")
	f.Add("")
	f.Fuzz(func(t *testing.T, s string) {
		id, secret, ok := parseToken(s)
		if ok && tokenPrefix+id+"_"+secret != s {
			t.Fatalf("%q parsed as %q %q", s, id, secret)
		}
	})
}

// BenchmarkVerifyPassword is the cost of one sign-in's hashing, which
// bounds logins per second per core.
func BenchmarkVerifyPassword(b *testing.B) {
	h, _ := hashPassword(goodPassword)
	b.ReportAllocs()
	for b.Loop() {
		verifyPassword(h, goodPassword)
	}
}
