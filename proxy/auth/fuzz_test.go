package auth

import (
	"context"
	"net/netip"
	"strings"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/bastiond/bastiond/proxy/auth/passkeytest"
)

// FuzzLogin: whatever a stranger sends (names, passwords and codes at and
// past their limits, control characters, any source), only alice's
// password signs in, and only as alice; the throttle's tables stay within
// their bound; and what breaks the name rules or the limits reaches no
// table and no log line.
func FuzzLogin(f *testing.F) {
	for _, seed := range []struct {
		user, password, code string
		src                  []byte
	}{
		{"alice", goodPassword, "", []byte{192, 0, 2, 1}},
		{" Alice ", goodPassword, "", []byte{0x20, 0x01, 0x0d, 0xb8, 15: 1}},
		{"alice", "wrong", "123456", []byte{192, 0, 2, 1}},
		{strings.Repeat("a", 64), "x", "", []byte{192, 0, 2, 2}},
		{strings.Repeat("a", 65), "x", "", []byte{192, 0, 2, 2}},
		{"", goodPassword, "", nil},
		{"alice", strings.Repeat("p", MaxPasswordLen), "", []byte{192, 0, 2, 3}},
		{"alice", strings.Repeat("p", MaxPasswordLen+1), "", []byte{192, 0, 2, 3}},
		{"alice", goodPassword, strings.Repeat("1", maxCodeLen+1), []byte{192, 0, 2, 4}},
		{"alice\x1b[2J", goodPassword, "", []byte{192, 0, 2, 5}},
		{"ali\u202ece", goodPassword, "", []byte{192, 0, 2, 5}},
		{"alice\x00", goodPassword, "", []byte{192, 0, 2, 5}},
		{"-alice", goodPassword, "", []byte{192, 0, 2, 5}},
	} {
		f.Add(seed.user, seed.password, seed.code, seed.src)
	}
	// Cheap hashes: the fuzzer is after the logic, not argon2's cost.
	s, _ := newTestStoreCosting(f, argon2idParams{memory: 64, time: 1, threads: 1})
	core, logs := observer.New(zapcore.DebugLevel)
	a, err := NewAuthenticator(AuthenticatorConfig{Store: s, Logger: zap.New(core), Throttle: ThrottleConfig{MaxEntries: 16}})
	if err != nil {
		f.Fatal(err)
	}
	if err := s.AddUser("alice", goodPassword, nil); err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, user, password, code string, src []byte) {
		addr, _ := netip.AddrFromSlice(src)
		logs.TakeAll()
		u, err := a.Login(context.Background(), user, password, code, addr)
		if err == nil && (u.Name != "alice" || password != goodPassword) {
			t.Fatalf("signed in as %q with %q", u.Name, password)
		}
		if st := a.Stats(); st.Sources > 16 || st.Users > 16 || st.Pairs > 16 {
			t.Fatalf("tables past their bound: %+v", st)
		}
		name := strings.ToLower(strings.TrimSpace(user))
		if userName.MatchString(name) && len(password) <= MaxPasswordLen && len(code) <= maxCodeLen {
			return
		}
		for _, e := range logs.All() {
			for _, fld := range e.Context {
				if name != "" && fld.String == name || password != "" && strings.Contains(fld.String, password) {
					t.Fatalf("malformed input in the log: %s %v", e.Message, fld)
				}
			}
		}
	})
}

// FuzzPasskeyAnswer: an answer to a passkey sign-in with bytes replaced
// anywhere (at pos, by b) never panics, and if it signs in, it signs alice
// in and advances her passkey's counter: no answer passes twice.
func FuzzPasskeyAnswer(f *testing.F) {
	f.Add(uint16(0), []byte{})
	f.Add(uint16(10), []byte("x"))
	f.Add(uint16(100), []byte(`"}`))
	f.Add(uint16(200), []byte{0})
	s, _ := newTestStoreCosting(f, argon2idParams{memory: 64, time: 1, threads: 1})
	a, err := NewAuthenticator(AuthenticatorConfig{Store: s, Logger: zap.NewNop(), Throttle: ThrottleConfig{FreeFailures: 1 << 30, LockAfter: 1 << 30}})
	if err != nil {
		f.Fatal(err)
	}
	if err := s.AddUser("alice", goodPassword, nil); err != nil {
		f.Fatal(err)
	}
	reg, err := a.BeginPasskeyRegistration(testRP, "alice", "session-1")
	if err != nil {
		f.Fatal(err)
	}
	answer, cred, err := passkeytest.Create(reg.Options, testRP.Origin)
	if err != nil {
		f.Fatal(err)
	}
	if _, err := a.FinishPasskeyRegistration(testRP, reg.ID, "session-1", "alice", "key", answer, testSrcs[0]); err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, pos uint16, b []byte) {
		ch, err := a.BeginPasskeySignIn(testRP, "form-1")
		if err != nil {
			t.Fatal(err)
		}
		body, err := cred.Get(ch.Options, testRP.Origin)
		if err != nil {
			t.Fatal(err)
		}
		if p := int(pos); p < len(body) {
			body = append(body[:p:p], append(b, body[min(len(body), p+len(b)):]...)...)
		}
		u, err := a.FinishPasskeySignIn(testRP, ch.ID, "form-1", body, testSrcs[0])
		if err != nil {
			return
		}
		if u.Name != "alice" || u.Passkeys[0].SignCount != cred.Counter {
			t.Fatalf("signed in as %q, counter %d, want %d", u.Name, u.Passkeys[0].SignCount, cred.Counter)
		}
		if _, err := a.FinishPasskeySignIn(testRP, ch.ID, "form-1", body, testSrcs[0]); err == nil {
			t.Fatal("the answer passed twice")
		}
	})
}
