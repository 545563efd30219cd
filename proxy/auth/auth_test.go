package auth

import (
	"context"
	"errors"
	"net/netip"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/bastiond/bastiond/internal/source"
	"github.com/bastiond/bastiond/internal/statedb"
	"github.com/bastiond/bastiond/internal/store"
)

// clock is a settable time source for tests.
type clock struct{ t time.Time }

func (c *clock) now() time.Time          { return c.t }
func (c *clock) advance(d time.Duration) { c.t = c.t.Add(d) }

func newTestStore(t testing.TB) (*Store, *clock) {
	t.Helper()
	return newTestStoreCosting(t, defaultParams)
}

// newTestStoreCosting is newTestStore making password hashes with the
// costs p.
func newTestStoreCosting(t testing.TB, p argon2idParams) (*Store, *clock) {
	t.Helper()
	return newTestStoreOn(t, openDB(t), p)
}

// openDB opens an empty state store for a test: bbolt. (Set to another
// backend of store.DB, it runs the tests of the accounts, tokens and the
// shared throttle on it.)
var openDB = func(t testing.TB) store.DB {
	db, err := statedb.Open(filepath.Join(t.TempDir(), "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// newTestStoreOn is the accounts in db, making password hashes with the
// costs p, on a clock of their own.
func newTestStoreOn(t testing.TB, db store.DB, p argon2idParams) (*Store, *clock) {
	t.Helper()
	s, err := newStore(db, p)
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

// newTestAuthenticatorOn is newTestAuthenticator with the shared throttle
// (in the store) when shared is true.
func newTestAuthenticatorOn(t *testing.T, shared bool) (*Authenticator, *clock, *observer.ObservedLogs) {
	t.Helper()
	s, c := newTestStore(t)
	core, logs := observer.New(zap.InfoLevel)
	a, err := NewAuthenticator(AuthenticatorConfig{Store: s, Logger: zap.New(core), SharedThrottle: shared})
	if err != nil {
		t.Fatal(err)
	}
	return a, c, logs
}

// forEachThrottle runs f as a subtest with each throttle: the memory one
// and the shared one (in the store).
func forEachThrottle(t *testing.T, f func(t *testing.T, shared bool)) {
	for _, tc := range []struct {
		name   string
		shared bool
	}{{"memory", false}, {"shared", true}} {
		t.Run(tc.name, func(t *testing.T) { f(t, tc.shared) })
	}
}

// sourceWait is how long src waits now at a.
func sourceWait(t testing.TB, a *Authenticator, src netip.Addr) time.Duration {
	t.Helper()
	w, err := a.throttle.sourceWait(src, a.now())
	if err != nil {
		t.Fatal(err)
	}
	return w
}

// userWait is how long the account name is held up now at a.
func userWait(t testing.TB, a *Authenticator, name string) time.Duration {
	t.Helper()
	w, err := a.throttle.userWait(name, a.now())
	if err != nil {
		t.Fatal(err)
	}
	return w
}

const goodPassword = "correct horse battery"

func TestPasswordHash(t *testing.T) {
	s, _ := newTestStore(t)
	h, err := s.hashPassword(goodPassword)
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
	h2, _ := s.hashPassword(goodPassword)
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

// loginReason returns the reason a login failed, or "ok".
func loginReason(a *Authenticator, user, pw, code string, src netip.Addr) string {
	_, err := a.Login(context.Background(), user, pw, code, src)
	var le *LoginError
	if errors.As(err, &le) {
		return le.Reason
	}
	if err != nil {
		return err.Error()
	}
	return "ok"
}

func TestThrottleAndLockout(t *testing.T) { forEachThrottle(t, testThrottleAndLockout) }

func testThrottleAndLockout(t *testing.T, shared bool) {
	a, c, _ := newTestAuthenticatorOn(t, shared)
	s := a.Store()
	s.AddUser("alice", goodPassword, nil)
	attacker := netip.MustParseAddr("2001:db8:bad::1")
	reasons := func(src netip.Addr, pw string) string { return loginReason(a, "alice", pw, "", src) }
	// Three free failures, then each wait doubles: 1s, 2s, 4s...
	for i := range 4 {
		if r := reasons(attacker, "guess"); r != "wrong password" {
			t.Fatalf("failure %d: %s", i+1, r)
		}
	}
	if r := reasons(attacker, goodPassword); r != "throttled" {
		t.Fatalf("right password during backoff: %s, want throttled", r)
	}
	// Another address in the same IPv6 /64 shares the wait.
	if r := reasons(netip.MustParseAddr("2001:db8:bad::2"), goodPassword); r != "throttled" {
		t.Fatalf("same /64: %s", r)
	}
	// From another source, the right password is refused while the
	// account's own backoff runs, and that is not a failure.
	if r := reasons(netip.MustParseAddr("192.0.2.6"), goodPassword); r != "throttled" {
		t.Fatalf("right password from elsewhere during the account's backoff: %s", r)
	}
	waits := []time.Duration{}
	for range 5 {
		w := sourceWait(t, a, attacker)
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
	// Ten failures in a row from one source lock the account: the right
	// password from a clean source is refused, without a code.
	c.advance(sourceWait(t, a, attacker))
	reasons(attacker, "guess")
	u, _ := s.User("alice")
	if !c.t.Before(u.LockedUntil) || !slices.Equal(u.LockedBy, []string{"2001:db8:bad::/64"}) {
		t.Fatalf("not locked by the attacker's /64 after %d failures: %v %v", a.lockAt, u.LockedUntil, u.LockedBy)
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
	if u, _ := s.User("alice"); !u.LockedUntil.IsZero() || u.LockedBy != nil {
		t.Errorf("unlock left %v %v", u.LockedUntil, u.LockedBy)
	}
	// The lockout also ends by itself, and one failure after it does not
	// lock again: the count restarted when the lock began.
	for range 10 {
		c.advance(sourceWait(t, a, clean))
		reasons(clean, "guess")
	}
	if u, _ := s.User("alice"); !c.t.Before(u.LockedUntil) {
		t.Fatal("not locked after ten failures from 192.0.2.7")
	}
	c.advance(a.lockFor + a.tcfg.MaxDelay)
	reasons(clean, "guess")
	if u, _ := s.User("alice"); c.t.Before(u.LockedUntil) {
		t.Fatal("one failure after a lockout locked the account again")
	}
	c.advance(a.tcfg.MaxDelay)
	if r := reasons(netip.MustParseAddr("192.0.2.8"), goodPassword); r != "ok" {
		t.Fatalf("after the lockout period: %s", r)
	}
}

// Failures of one account from many sources, one each, hold the account
// up but never lock it; and the right password and code get through the
// hold, where the password alone does not.
func TestLockoutIsPerSource(t *testing.T) { forEachThrottle(t, testLockoutIsPerSource) }

func testLockoutIsPerSource(t *testing.T, shared bool) {
	a, c, logs := newTestAuthenticatorOn(t, shared)
	s := a.Store()
	s.AddUser("alice", goodPassword, nil)
	s.AddUser("bob", goodPassword, nil)
	secret := enrolTOTP(t, s, c, "bob")
	for _, user := range []string{"alice", "bob"} {
		for i := range 2 * a.lockAt {
			src := netip.AddrFrom4([4]byte{198, 51, 100, byte(i)})
			if r := loginReason(a, user, "guess", "", src); r != "wrong password" {
				t.Fatalf("%s: guess %d from %s: %s", user, i, src, r)
			}
		}
		if u, _ := s.User(user); !u.LockedUntil.IsZero() {
			t.Fatalf("%s: locked by failures from %d sources, one each", user, 2*a.lockAt)
		}
	}
	fresh := netip.MustParseAddr("2001:db8:900d::1")
	if r := loginReason(a, "alice", goodPassword, "", fresh); r != "throttled" {
		t.Fatalf("alice's password alone during the account's backoff: %s", r)
	}
	c.advance(30 * time.Second)
	if r := loginReason(a, "bob", goodPassword, totpAt(secret, totpStep(c.t)), fresh); r != "ok" {
		t.Fatalf("bob's password and code during the account's backoff: %s", r)
	}
	// A lock caused by one source: that source is refused even with the
	// code, another gets through with password and code only.
	locker := netip.MustParseAddr("2001:db8:bad:1::1")
	for range a.lockAt {
		c.advance(sourceWait(t, a, locker))
		loginReason(a, "bob", "guess", "", locker)
	}
	if u, _ := s.User("bob"); !c.t.Before(u.LockedUntil) {
		t.Fatal("bob not locked after ten failures from one /64")
	}
	c.advance(a.tcfg.MaxDelay)
	c.advance(30 * time.Second)
	if r := loginReason(a, "bob", goodPassword, totpAt(secret, totpStep(c.t)), netip.MustParseAddr("2001:db8:bad:1::99")); r != "locked" {
		t.Fatalf("the locking /64 with password and code: %s", r)
	}
	if r := loginReason(a, "bob", goodPassword, "", fresh); r != "wrong code" {
		t.Fatalf("bob's password without a code during the lock: %s", r)
	}
	c.advance(30 * time.Second)
	if r := loginReason(a, "bob", goodPassword, totpAt(secret, totpStep(c.t)), fresh); r != "ok" {
		t.Fatalf("bob's password and code during a lock others caused: %s", r)
	}
	if n := logs.FilterMessage("account locked").Len(); n != 1 {
		t.Errorf("%d \"account locked\" log entries, want 1", n)
	}
	if n := testutil.ToFloat64(a.outcomes.WithLabelValues("ok_while_locked")); n != 1 {
		t.Errorf("ok_while_locked = %v, want 1", n)
	}
}

// Input that no account can have is refused before it reaches a table or
// a log line, whatever its size.
func TestMalformedInputIsNotKept(t *testing.T) {
	a, _, logs := newTestAuthenticator(t)
	a.Store().AddUser("alice", goodPassword, nil)
	long := strings.Repeat("x", 16<<10)
	for i, tc := range []struct{ name, user, pw, code string }{
		{"long name", long, goodPassword, ""},
		{"name one over", strings.Repeat("a", 65), goodPassword, ""},
		{"empty name", "", goodPassword, ""},
		{"control characters", "alice\x1b[2J", goodPassword, ""},
		{"not a name", "alice bob", goodPassword, ""},
		{"long password", "alice", long, ""},
		{"password one over", "alice", strings.Repeat("p", MaxPasswordLen+1), ""},
		{"long code", "alice", goodPassword, long},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 0, 0, byte(i), 0, 0, 0, 0, 0, 0, 0, 0, 1})
			if r := loginReason(a, tc.user, tc.pw, tc.code, src); r != "malformed input" {
				t.Fatalf("reason %s", r)
			}
		})
	}
	if st := a.Stats(); st.Sources+st.Users+st.Pairs != 0 {
		t.Errorf("malformed input reached the tables: %+v", st)
	}
	for _, e := range logs.All() {
		for _, f := range e.Context {
			if strings.Contains(f.String, "xxxx") || strings.Contains(f.String, "\x1b") || strings.Contains(f.String, "pppp") {
				t.Errorf("malformed input reached the log: %s %v", e.Message, f)
			}
		}
	}
	// Names within the rules still work, as typed.
	if r := loginReason(a, "  Alice", goodPassword, "", netip.MustParseAddr("192.0.2.1")); r != "ok" {
		t.Errorf("alice: %s", r)
	}
	if r := loginReason(a, strings.Repeat("a", 64), "guess", "", netip.MustParseAddr("192.0.2.1")); r != "unknown user" {
		t.Errorf("a 64-character name: %s", r)
	}
}

// Full tables make room by forgetting the entries that mattered least
// recently: a flood of new sources and names pushes out only older
// entries, a guesser's record in backoff stays, the accounts' failures
// keep being counted, and a newcomer with the right password gets in.
func TestThrottleTablesEvict(t *testing.T) {
	s, c := newTestStore(t)
	a, err := NewAuthenticator(AuthenticatorConfig{Store: s, Logger: zap.NewNop(), Throttle: ThrottleConfig{MaxEntries: 8}})
	if err != nil {
		t.Fatal(err)
	}
	s.AddUser("alice", goodPassword, nil)
	s.AddUser("admin", goodPassword, nil)
	guesser := netip.MustParseAddr("203.0.113.66")
	for range 4 {
		c.advance(sourceWait(t, a, guesser))
		loginReason(a, "admin", "guess", "", guesser)
	}
	// The flood: one failure each from 40 sources of a /48, half with
	// unknown names, half against alice.
	for i := range 40 {
		src := netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 0xf1, 0x00, 0, byte(i), 15: 1})
		user := "alice"
		if i%2 == 0 {
			user = "nobody" + strconv.Itoa(i)
		}
		loginReason(a, user, "guess", "", src)
	}
	st := a.Stats()
	if st.Sources != 8 || st.SourceEvictions != 33 || st.Pairs != 8 || st.PairEvictions == 0 || st.Users != 2 {
		t.Errorf("stats %+v, want 8 sources (33 forgotten), 8 pairs (some forgotten), 2 accounts", st)
	}
	if w := sourceWait(t, a, guesser); w == 0 {
		t.Error("the guesser's record was forgotten to make room for the flood")
	}
	if n := a.throttle.(*throttle).pairs.m[pair{"admin", source.Of(guesser)}]; n == nil || n.n != 4 {
		t.Errorf("the guesser's count against admin: %+v, want 4", n)
	}
	// alice's failures were counted throughout: her account is held up.
	if w := userWait(t, a, "alice"); w == 0 {
		t.Error("alice's failures were not counted while the tables were full")
	}
	c.advance(a.tcfg.MaxDelay)
	if r := loginReason(a, "alice", goodPassword, "", netip.MustParseAddr("192.0.2.200")); r != "ok" {
		t.Errorf("a newcomer with the right password, tables full: %s", r)
	}

	// Two guessers taking turns at the full table each keep their record
	// and meet their backoff: a newcomer is not the next to be forgotten.
	// The table is full of sources with two failures each, older ones.
	for i := range 8 {
		for range 2 {
			loginReason(a, "nobody", "guess", "", netip.AddrFrom4([4]byte{198, 51, 100, byte(100 + i)}))
		}
	}
	c.advance(time.Second)
	guessers := []netip.Addr{netip.MustParseAddr("203.0.113.70"), netip.MustParseAddr("2001:db8:70::1")}
	for range 5 {
		for _, g := range guessers {
			loginReason(a, "nobody", "guess", "", g)
		}
		c.advance(time.Second)
	}
	for _, g := range guessers {
		if r := loginReason(a, "nobody", "guess", "", g); r != "throttled" {
			t.Errorf("guesser %s, after 5 failures taking turns with another at a full table: %s, want throttled", g, r)
		}
	}
}

func enrolTOTP(t *testing.T, s *Store, c *clock, name string) []byte {
	t.Helper()
	e, err := s.BeginTOTP(name, "bastion.example")
	if err != nil {
		t.Fatal(err)
	}
	secret, _ := b32.DecodeString(e.Secret)
	if err := s.ConfirmTOTP(name, totpAt(secret, totpStep(c.t))); err != nil {
		t.Fatal(err)
	}
	return secret
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
	s, _ := newTestStore(b)
	h, _ := s.hashPassword(goodPassword)
	b.ReportAllocs()
	for b.Loop() {
		verifyPassword(h, goodPassword)
	}
}
