package auth

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/bastiond/bastiond/internal/audit"
	"github.com/bastiond/bastiond/internal/store"
	"github.com/bastiond/bastiond/internal/store/pgstore/pgstoretest"
	"github.com/bastiond/bastiond/proxy/auth/passkeytest"
)

var (
	testRP   = RP{ID: "bastion.example", Origin: "https://bastion.example"}
	testSrcs = []netip.Addr{netip.MustParseAddr("192.0.2.7"), netip.MustParseAddr("2001:db8::7")}
)

// registered is alice with a passkey made by the software authenticator,
// on a with its clock; the sink holds no event yet.
func registered(t *testing.T, a *Authenticator, sink *capture, src netip.Addr) *passkeytest.Credential {
	t.Helper()
	if _, err := a.store.User("alice"); errors.Is(err, ErrNoUser) {
		if err := a.store.AddUser("alice", goodPassword, nil); err != nil {
			t.Fatal(err)
		}
	}
	ch, err := a.BeginPasskeyRegistration(testRP, "alice", "session-1")
	if err != nil {
		t.Fatal(err)
	}
	body, cred, err := passkeytest.Create(ch.Options, testRP.Origin)
	if err != nil {
		t.Fatal(err)
	}
	p, err := a.FinishPasskeyRegistration(testRP, ch.ID, "session-1", "alice", "laptop", body, src)
	if err != nil {
		t.Fatal(err)
	}
	if p.Name != "laptop" || string(p.ID) != string(cred.ID) {
		t.Fatalf("registered %+v", p)
	}
	checkEvents(t, sink.Take(), want{event: audit.PasskeyAdded, actor: "alice", source: src.String(), user: "alice"})
	return cred
}

// signIn runs a passkey-alone sign-in with cred from origin.
func signIn(t *testing.T, a *Authenticator, cred *passkeytest.Credential, origin string, src netip.Addr) (User, error) {
	t.Helper()
	ch, err := a.BeginPasskeySignIn(testRP, "form-1")
	if err != nil {
		t.Fatal(err)
	}
	body, err := cred.Get(ch.Options, origin)
	if err != nil {
		t.Fatal(err)
	}
	return a.FinishPasskeySignIn(testRP, ch.ID, "form-1", body, src)
}

func TestPasskeyRegisterAndSignIn(t *testing.T) {
	for _, src := range testSrcs {
		t.Run(src.String(), func(t *testing.T) {
			a, c, sink := newAuditedAuthenticator(t)
			cred := registered(t, a, sink, src)
			for i := range 2 {
				c.advance(time.Minute)
				u, err := signIn(t, a, cred, testRP.Origin, src)
				if err != nil {
					t.Fatalf("sign-in %d: %v", i, err)
				}
				if u.Name != "alice" || u.Passkeys[0].SignCount != cred.Counter || !u.Passkeys[0].LastUsed.Equal(c.now()) {
					t.Fatalf("sign-in %d: %s, passkey %+v", i, u.Name, u.Passkeys[0])
				}
				checkEvents(t, sink.Take(), want{event: audit.SigninSucceeded, actor: "alice", source: src.String(), user: "alice", reason: "passkey"})
			}
			if err := a.RemovePasskey("alice", cred.IDString(), "alice", src); err != nil {
				t.Fatal(err)
			}
			checkEvents(t, sink.Take(), want{event: audit.PasskeyRemoved, actor: "alice", source: src.String(), user: "alice"})
			if _, err := signIn(t, a, cred, testRP.Origin, src); !errors.Is(err, ErrLoginFailed) {
				t.Fatalf("removed passkey: %v, want refused", err)
			}
			checkEvents(t, sink.Take(), want{event: audit.SigninFailed, actor: "alice", source: src.String(), user: "alice", reason: "passkey_unknown"})
		})
	}
}

// TestPasskeyRefused bends one thing of a good ceremony at a time.
func TestPasskeyRefused(t *testing.T) {
	tests := []struct {
		name   string
		bend   func(t *testing.T, a *Authenticator, c *clock, cred *passkeytest.Credential, ch *Challenge, body *[]byte)
		reason string
		actor  string // "" for anonymous
	}{
		{"wrong origin", func(t *testing.T, a *Authenticator, _ *clock, cred *passkeytest.Credential, ch *Challenge, body *[]byte) {
			*body = get(t, cred, ch, "https://evil.example")
		}, "passkey_invalid", "alice"},
		{"origin with another port", func(t *testing.T, a *Authenticator, _ *clock, cred *passkeytest.Credential, ch *Challenge, body *[]byte) {
			*body = get(t, cred, ch, "https://bastion.example:8443")
		}, "passkey_invalid", "alice"},
		{"wrong RP ID", func(t *testing.T, a *Authenticator, _ *clock, cred *passkeytest.Credential, ch *Challenge, body *[]byte) {
			cred.RPID = "evil.example"
			*body = get(t, cred, ch, testRP.Origin)
		}, "passkey_invalid", "alice"},
		{"no user verification", func(t *testing.T, a *Authenticator, _ *clock, cred *passkeytest.Credential, ch *Challenge, body *[]byte) {
			cred.NoUV = true
			*body = get(t, cred, ch, testRP.Origin)
		}, "passkey_invalid", "alice"},
		{"counter not increasing", func(t *testing.T, a *Authenticator, _ *clock, cred *passkeytest.Credential, ch *Challenge, body *[]byte) {
			cred.Counter-- // the copy signs with the counter the original used
			*body = get(t, cred, ch, testRP.Origin)
		}, "passkey_cloned", "alice"},
		{"expired challenge", func(t *testing.T, a *Authenticator, c *clock, cred *passkeytest.Credential, ch *Challenge, body *[]byte) {
			*body = get(t, cred, ch, testRP.Origin)
			c.advance(CeremonyTTL)
		}, "passkey_challenge", ""},
		{"replayed challenge", func(t *testing.T, a *Authenticator, _ *clock, cred *passkeytest.Credential, ch *Challenge, body *[]byte) {
			*body = get(t, cred, ch, testRP.Origin)
			if _, err := a.FinishPasskeySignIn(testRP, ch.ID, "form-1", *body, testSrcs[0]); err != nil {
				t.Fatalf("first answer: %v", err)
			}
		}, "passkey_challenge", ""},
		{"another browser's ceremony", func(t *testing.T, a *Authenticator, _ *clock, cred *passkeytest.Credential, ch *Challenge, body *[]byte) {
			*body = get(t, cred, ch, testRP.Origin)
			other, err := a.BeginPasskeySignIn(testRP, "form-2")
			if err != nil {
				t.Fatal(err)
			}
			ch.ID = other.ID
		}, "passkey_challenge", ""},
		{"unknown credential", func(t *testing.T, a *Authenticator, _ *clock, cred *passkeytest.Credential, ch *Challenge, body *[]byte) {
			cred.ID = []byte("not a registered credential")
			*body = get(t, cred, ch, testRP.Origin)
		}, "passkey_unknown", "alice"},
		{"user handle of no account", func(t *testing.T, a *Authenticator, _ *clock, cred *passkeytest.Credential, ch *Challenge, body *[]byte) {
			cred.UserHandle = []byte("nobody's handle")
			*body = get(t, cred, ch, testRP.Origin)
		}, "passkey_unknown", ""},
		{"another user's passkey", func(t *testing.T, a *Authenticator, _ *clock, cred *passkeytest.Credential, ch *Challenge, body *[]byte) {
			// bob's passkey presented with alice's user handle.
			bob := registeredOther(t, a, "bob")
			bob.UserHandle = cred.UserHandle
			*body = get(t, bob, ch, testRP.Origin)
		}, "passkey_unknown", "alice"},
		{"malformed answer", func(t *testing.T, a *Authenticator, _ *clock, cred *passkeytest.Credential, ch *Challenge, body *[]byte) {
			*body = []byte(`{"id": "x", "type": "public-key", "response": {}}`)
		}, "passkey_invalid", ""},
	}
	for _, tt := range tests {
		for _, src := range testSrcs {
			t.Run(tt.name+"/"+src.String(), func(t *testing.T) {
				a, c, sink := newAuditedAuthenticator(t)
				cred := registered(t, a, sink, src)
				if _, err := signIn(t, a, cred, testRP.Origin, src); err != nil { // the counter is 1 now
					t.Fatal(err)
				}
				ch, err := a.BeginPasskeySignIn(testRP, "form-1")
				if err != nil {
					t.Fatal(err)
				}
				var body []byte
				tt.bend(t, a, c, cred, &ch, &body)
				sink.Take()
				before, _ := a.store.User("alice")
				_, err = a.FinishPasskeySignIn(testRP, ch.ID, "form-1", body, src)
				if !errors.Is(err, ErrLoginFailed) {
					t.Fatalf("%v, want a failed sign-in", err)
				}
				actor, user := tt.actor, tt.actor
				if actor == "" {
					actor = audit.ActorAnonymous
				}
				checkEvents(t, sink.Take(), want{event: audit.SigninFailed, actor: actor, source: src.String(), user: user, reason: tt.reason})
				after, _ := a.store.User("alice")
				if after.Passkeys[0].SignCount != before.Passkeys[0].SignCount {
					t.Errorf("the stored counter moved from %d to %d on a refused sign-in", before.Passkeys[0].SignCount, after.Passkeys[0].SignCount)
				}
				// A failure counts against the source, as a wrong password does.
				if n := a.throttle.stats().Sources; n != 1 {
					t.Errorf("sources counted: %d, want 1", n)
				}
			})
		}
	}
}

// registeredOther gives name a passkey on a, without checking events.
func registeredOther(t *testing.T, a *Authenticator, name string) *passkeytest.Credential {
	t.Helper()
	if err := a.store.AddUser(name, goodPassword, nil); err != nil {
		t.Fatal(err)
	}
	ch, err := a.BeginPasskeyRegistration(testRP, name, "session-"+name)
	if err != nil {
		t.Fatal(err)
	}
	body, cred, err := passkeytest.Create(ch.Options, testRP.Origin)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.FinishPasskeyRegistration(testRP, ch.ID, "session-"+name, name, "key", body, testSrcs[0]); err != nil {
		t.Fatal(err)
	}
	return cred
}

func get(t *testing.T, cred *passkeytest.Credential, ch *Challenge, origin string) []byte {
	t.Helper()
	b, err := cred.Get(ch.Options, origin)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestPasskeyClonedLogged(t *testing.T) {
	s, _ := newTestStore(t)
	core, logs := observer.New(zap.InfoLevel)
	sink := &capture{}
	a, err := NewAuthenticator(AuthenticatorConfig{Store: s, Logger: zap.New(core), Audit: sink})
	if err != nil {
		t.Fatal(err)
	}
	cred := registered(t, a, sink, testSrcs[1])
	clone := *cred
	if _, err := signIn(t, a, cred, testRP.Origin, testSrcs[1]); err != nil {
		t.Fatal(err, logs.All())
	}
	if _, err := signIn(t, a, &clone, testRP.Origin, testSrcs[1]); !errors.Is(err, ErrLoginFailed) {
		t.Fatalf("the clone: %v, want refused", err)
	}
	flagged := logs.FilterMessageSnippet("passkey flagged").All()
	if len(flagged) != 1 || flagged[0].ContextMap()["passkey"] != cred.IDString() {
		t.Fatalf("log: %v, want the passkey flagged", logs.All())
	}
}

func TestPasskeyRegistrationRefused(t *testing.T) {
	tests := []struct {
		name   string
		origin string
		user   string
		bind   string
		pname  string
		bend   func(a *Authenticator, c *clock)
	}{
		{name: "wrong origin", origin: "https://evil.example", user: "alice", bind: "session-1", pname: "k"},
		{name: "another session", origin: testRP.Origin, user: "alice", bind: "session-2", pname: "k"},
		{name: "another user", origin: testRP.Origin, user: "bob", bind: "session-1", pname: "k"},
		{name: "expired", origin: testRP.Origin, user: "alice", bind: "session-1", pname: "k", bend: func(_ *Authenticator, c *clock) { c.advance(CeremonyTTL) }},
		{name: "no name", origin: testRP.Origin, user: "alice", bind: "session-1", pname: " "},
		{name: "control characters in the name", origin: testRP.Origin, user: "alice", bind: "session-1", pname: "a\nb"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, c, sink := newAuditedAuthenticator(t)
			for _, n := range []string{"alice", "bob"} {
				if err := a.store.AddUser(n, goodPassword, nil); err != nil {
					t.Fatal(err)
				}
			}
			ch, err := a.BeginPasskeyRegistration(testRP, "alice", "session-1")
			if err != nil {
				t.Fatal(err)
			}
			body, _, err := passkeytest.Create(ch.Options, tt.origin)
			if err != nil {
				t.Fatal(err)
			}
			if tt.bend != nil {
				tt.bend(a, c)
			}
			if _, err := a.FinishPasskeyRegistration(testRP, ch.ID, tt.bind, tt.user, tt.pname, body, testSrcs[0]); err == nil {
				t.Fatal("registered, want refused")
			}
			u, _ := a.store.User("alice")
			if len(u.Passkeys) != 0 || len(sink.Take()) != 0 {
				t.Fatalf("passkeys %v after a refused registration", u.Passkeys)
			}
		})
	}
	t.Run("sso account", func(t *testing.T) {
		a, _, _ := newAuditedAuthenticator(t)
		if err := a.store.AddUser("carol", goodPassword, nil); err != nil {
			t.Fatal(err)
		}
		a.store.Update("carol", func(u *User) error { u.Provider = "lab"; return nil })
		if _, err := a.BeginPasskeyRegistration(testRP, "carol", "s"); err == nil {
			t.Fatal("an SSO account may register a passkey, want refused")
		}
	})
}

// TestPasskeyMFA: the second factor after the password, per access.mfa.
func TestPasskeyMFA(t *testing.T) {
	ctx := context.Background()
	for _, src := range testSrcs {
		t.Run(src.String(), func(t *testing.T) {
			a, c, sink := newAuditedAuthenticator(t)
			cred := registered(t, a, sink, src)

			// webauthn: the password alone is not enough, and a ceremony follows.
			_, err := a.SignIn(ctx, "alice", goodPassword, "", src, MFAWebAuthn)
			var pn *PasskeyNeeded
			if !errors.As(err, &pn) || pn.User != "alice" {
				t.Fatalf("password under mfa webauthn: %v, want a passkey needed", err)
			}
			if es := sink.Take(); len(es) != 0 {
				t.Fatalf("events before the second factor: %+v", es)
			}
			ch, err := a.BeginPasskeySecondFactor(testRP, pn, "form-1")
			if err != nil {
				t.Fatal(err)
			}
			// The second factor skipped: the ceremony of a passkey alone
			// does not finish the one after the password, nor the other way.
			alone, err := a.BeginPasskeySignIn(testRP, "form-1")
			if err != nil {
				t.Fatal(err)
			}
			u, err := a.FinishPasskeySignIn(testRP, ch.ID, "form-1", get(t, cred, &ch, testRP.Origin), src)
			if err != nil || u.Name != "alice" {
				t.Fatalf("second factor: %v", err)
			}
			checkEvents(t, sink.Take(), want{event: audit.SigninSucceeded, actor: "alice", source: src.String(), user: "alice", reason: "password_passkey"})
			if _, err := a.FinishPasskeySignIn(testRP, ch.ID, "form-1", get(t, cred, &ch, testRP.Origin), src); !errors.Is(err, ErrLoginFailed) {
				t.Fatalf("the second factor's challenge answered twice: %v", err)
			}
			sink.Take()
			if _, err := a.FinishPasskeySignIn(testRP, alone.ID, "form-1", get(t, cred, &alone, testRP.Origin), src); err != nil {
				t.Fatalf("passkey alone: %v", err)
			}
			sink.Take()

			// webauthn: a TOTP code is no second factor.
			enrolTOTP(t, a.store, c, "alice")
			c.advance(time.Minute)
			_, err = a.SignIn(ctx, "alice", goodPassword, totpAt(mustSecret(t, a), totpStep(c.now())), src, MFAWebAuthn)
			if !errors.As(err, &pn) {
				t.Fatalf("code under mfa webauthn: %v, want a passkey needed", err)
			}
			// any: the code passes, and without a code the passkey is asked.
			c.advance(time.Minute)
			if _, err := a.SignIn(ctx, "alice", goodPassword, totpAt(mustSecret(t, a), totpStep(c.now())), src, MFAAny); err != nil {
				t.Fatalf("code under mfa any: %v", err)
			}
			checkEvents(t, sink.Take(), want{event: audit.SigninSucceeded, actor: "alice", source: src.String(), user: "alice", reason: "password_totp"})
			if _, err := a.SignIn(ctx, "alice", goodPassword, "", src, MFAAny); !errors.As(err, &pn) {
				t.Fatalf("no code under mfa any: %v, want a passkey needed", err)
			}
			// totp: the code passes; the passkey is not asked after a password.
			c.advance(time.Minute)
			if _, err := a.SignIn(ctx, "alice", goodPassword, totpAt(mustSecret(t, a), totpStep(c.now())), src, MFATOTP); err != nil {
				t.Fatalf("code under mfa totp: %v", err)
			}
			sink.Take()

			// totp, with passkeys but no TOTP: the password alone is refused.
			if err := a.store.ResetTOTP("alice"); err != nil {
				t.Fatal(err)
			}
			if _, err := a.SignIn(ctx, "alice", goodPassword, "", src, MFATOTP); !errors.Is(err, ErrLoginFailed) {
				t.Fatalf("password alone of a passkey user under mfa totp: %v, want refused", err)
			}
			checkEvents(t, sink.Take(), want{event: audit.SigninFailed, actor: "alice", source: src.String(), user: "alice", reason: "second_factor_refused"})
			// A wrong password never reaches the passkey.
			if _, err := a.SignIn(ctx, "alice", "wrong password!", "", src, MFAWebAuthn); !errors.Is(err, ErrLoginFailed) || errors.As(err, &pn) {
				t.Fatalf("wrong password under mfa webauthn: %v", err)
			}
			checkEvents(t, sink.Take(), want{event: audit.SigninFailed, actor: "alice", source: src.String(), user: "alice", reason: "bad_password"})
		})
	}
}

func mustSecret(t *testing.T, a *Authenticator) []byte {
	t.Helper()
	u, err := a.store.User("alice")
	if err != nil || len(u.TOTPSecret) == 0 {
		t.Fatalf("no TOTP secret: %v", err)
	}
	return u.TOTPSecret
}

// TestPasskeyThrottledSource: a source that failed too often is refused
// unchecked, the right passkey too.
func TestPasskeyThrottledSource(t *testing.T) {
	for _, src := range testSrcs {
		t.Run(src.String(), func(t *testing.T) {
			a, _, sink := newAuditedAuthenticator(t)
			cred := registered(t, a, sink, src)
			for i := 0; i < 100 && sourceWait(t, a, src) == 0; i++ {
				a.SignIn(context.Background(), "nobody", "wrong password!", "", src, MFATOTP)
			}
			sink.Take()
			if _, err := signIn(t, a, cred, testRP.Origin, src); !errors.Is(err, ErrLoginFailed) {
				t.Fatalf("%v, want throttled", err)
			}
			checkEvents(t, sink.Take(), want{event: audit.SigninThrottled, actor: audit.ActorAnonymous, source: src.String(), reason: "source", until: true})
			u, _ := a.store.User("alice")
			if u.Passkeys[0].SignCount != 0 {
				t.Fatal("a throttled sign-in was checked")
			}
		})
	}
}

// TestPasskeyCeremonyAcrossInstances: a ceremony begun on one instance
// finishes on another, once.
func TestPasskeyCeremonyAcrossInstances(t *testing.T) {
	for _, cl := range pgstoretest.Clusters {
		t.Run(cl.Name, func(t *testing.T) {
			db1, db2 := cl.Open(t)
			var as []*Authenticator
			var sinks []*capture
			// The instances share the key that seals passkey sign-ins.
			key := make([]byte, 32)
			rand.Read(key)
			for i, db := range [](func() (*Store, *clock)){
				func() (*Store, *clock) { return newTestStoreOn(t, db1, cheap) },
				func() (*Store, *clock) { return newTestStoreOn(t, db2, cheap) },
			} {
				s, _ := db()
				sink := &capture{}
				a, err := NewAuthenticator(AuthenticatorConfig{Store: s, Logger: zap.NewNop(), Audit: sink, SharedThrottle: true, CeremonyKey: key})
				if err != nil {
					t.Fatal(i, err)
				}
				as, sinks = append(as, a), append(sinks, sink)
			}
			cred := registered(t, as[0], sinks[0], testSrcs[0])
			ch, err := as[0].BeginPasskeySignIn(testRP, "form-1")
			if err != nil {
				t.Fatal(err)
			}
			body := get(t, cred, &ch, testRP.Origin)
			if _, err := as[1].FinishPasskeySignIn(testRP, ch.ID, "form-1", body, testSrcs[1]); err != nil {
				t.Fatalf("finished on the other instance: %v", err)
			}
			if _, err := as[0].FinishPasskeySignIn(testRP, ch.ID, "form-1", body, testSrcs[0]); !errors.Is(err, ErrLoginFailed) {
				t.Fatalf("replayed on the first instance: %v, want refused", err)
			}
			checkEvents(t, sinks[0].Take(), want{event: audit.SigninFailed, actor: audit.ActorAnonymous, source: testSrcs[0].String(), reason: "passkey_challenge"})
		})
	}
}

// TestCeremonyStoredWithoutItsID: a ceremony a signed-in user begins is
// stored without its ID; a passkey sign-in, which a stranger may begin at
// will, is not stored at all (its ID is the ceremony, sealed), nor does
// beginning a thousand of them write anything.
func TestCeremonyStoredWithoutItsID(t *testing.T) {
	a, _, sink := newAuditedAuthenticator(t)
	registered(t, a, sink, testSrcs[0])
	countStored := func() int {
		n := 0
		a.store.db.View(func(tx store.Tx) error {
			return tx.Bucket(bucketWebAuthn).ForEach([]byte{'c'}, func(_, _ []byte) error { n++; return nil })
		})
		return n
	}
	before := countStored()
	for i := range 1000 {
		if _, err := a.BeginPasskeySignIn(testRP, fmt.Sprintf("form-%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	if n := countStored(); n != before {
		t.Fatalf("1000 passkey sign-ins begun stored %d ceremonies", n-before)
	}
	ch, err := a.BeginPasskeySignIn(testRP, "form-1")
	if err != nil {
		t.Fatal(err)
	}
	var opts struct {
		PublicKey struct {
			UserVerification string `json:"userVerification"`
			RPID             string `json:"rpId"`
		} `json:"publicKey"`
	}
	if err := json.Unmarshal(ch.Options, &opts); err != nil || opts.PublicKey.UserVerification != "required" || opts.PublicKey.RPID != testRP.ID {
		t.Fatalf("options %s: %v", ch.Options, err)
	}
	if !strings.HasPrefix(ch.ID, sealedPrefix) || strings.Contains(ch.ID, "form-1") {
		t.Fatalf("a passkey sign-in's ID %q is not its ceremony, sealed", ch.ID)
	}
	proof, err := a.BeginPasskeyProof(testRP, "alice", "session-1")
	if err != nil {
		t.Fatal(err)
	}
	v, err := storeGet(a, ceremonyKey(proof.ID))
	if err != nil || v == nil {
		t.Fatalf("proof ceremony not stored: %v", err)
	}
	if containsBytes(v, []byte(proof.ID)) {
		t.Fatal("the stored ceremony holds its ID")
	}
}

func storeGet(a *Authenticator, k []byte) ([]byte, error) {
	return store.Get(a.store.db, bucketWebAuthn, k)
}

func containsBytes(b, sub []byte) bool { return bytes.Contains(b, sub) }

// TestDeleteUserForgetsHandle: a deleted account's passkeys name no
// account, not even a new one of the same name.
func TestDeleteUserForgetsHandle(t *testing.T) {
	a, _, sink := newAuditedAuthenticator(t)
	cred := registered(t, a, sink, testSrcs[0])
	if err := a.store.DeleteUser("alice"); err != nil {
		t.Fatal(err)
	}
	if v, err := storeGet(a, handleKey(cred.UserHandle)); err != nil || v != nil {
		t.Fatalf("the handle index keeps %q (%v)", v, err)
	}
	if err := a.store.AddUser("alice", goodPassword, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := signIn(t, a, cred, testRP.Origin, testSrcs[0]); !errors.Is(err, ErrLoginFailed) {
		t.Fatalf("a deleted account's passkey: %v", err)
	}
	checkEvents(t, sink.Take(), want{event: audit.SigninFailed, actor: audit.ActorAnonymous, source: testSrcs[0].String(), reason: "passkey_unknown"})
}

// TestPasskeyProof: a signed-in user proves itself again with a passkey;
// the ceremony is its session's, and answers once.
func TestPasskeyProof(t *testing.T) {
	for _, src := range testSrcs {
		t.Run(src.String(), func(t *testing.T) {
			a, _, sink := newAuditedAuthenticator(t)
			cred := registered(t, a, sink, src)
			bob := registeredOther(t, a, "bob")
			sink.Take()
			ch, err := a.BeginPasskeyProof(testRP, "alice", "session-1")
			if err != nil {
				t.Fatal(err)
			}
			body := get(t, cred, &ch, testRP.Origin)
			if err := a.FinishPasskeyProof(testRP, ch.ID, "session-1", "alice", body, src); err != nil {
				t.Fatalf("proof: %v", err)
			}
			checkEvents(t, sink.Take(), want{event: audit.SigninSucceeded, actor: "alice", source: src.String(), user: "alice", reason: "proof_passkey"})
			if err := a.FinishPasskeyProof(testRP, ch.ID, "session-1", "alice", body, src); !errors.Is(err, ErrLoginFailed) {
				t.Fatalf("proof answered twice: %v", err)
			}
			sink.Take()
			// bob's passkey does not prove alice.
			ch, err = a.BeginPasskeyProof(testRP, "alice", "session-1")
			if err != nil {
				t.Fatal(err)
			}
			if err := a.FinishPasskeyProof(testRP, ch.ID, "session-1", "alice", get(t, bob, &ch, testRP.Origin), src); !errors.Is(err, ErrLoginFailed) {
				t.Fatalf("bob's passkey proves alice: %v", err)
			}
			checkEvents(t, sink.Take(), want{event: audit.SigninFailed, actor: "alice", source: src.String(), user: "alice", reason: "passkey_unknown"})
		})
	}
}

// TestResetPasskeys: an admin removes every passkey (a lost device).
func TestResetPasskeys(t *testing.T) {
	a, _, sink := newAuditedAuthenticator(t)
	cred := registered(t, a, sink, testSrcs[0])
	if n, err := a.store.ResetPasskeys("alice"); err != nil || n != 1 {
		t.Fatalf("reset: %d, %v", n, err)
	}
	if _, err := signIn(t, a, cred, testRP.Origin, testSrcs[1]); !errors.Is(err, ErrLoginFailed) {
		t.Fatalf("a reset passkey: %v", err)
	}
	if _, err := a.store.ResetPasskeys("nobody"); !errors.Is(err, ErrNoUser) {
		t.Fatalf("reset of no account: %v", err)
	}
}
