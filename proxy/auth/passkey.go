package auth

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/go-webauthn/webauthn/protocol"
	"github.com/go-webauthn/webauthn/webauthn"
	"go.uber.org/zap"

	"github.com/bastiond/bastiond/internal/audit"
	"github.com/bastiond/bastiond/internal/source"
	"github.com/bastiond/bastiond/internal/store"
)

// Passkeys (WebAuthn credentials) of local accounts. The bastion is the
// relying party: its ID is the server name, its origin https://SERVER_NAME
// (with the port the browser shows). Every ceremony requires user
// verification (a PIN or a fingerprint on the authenticator), so that a
// passkey alone is two factors; attestation is not asked for ("none").
//
// A ceremony's state (its challenge) is kept in the accounts' database,
// where every instance of a cluster sees it: a ceremony begun on one
// instance may finish on another. It is taken, read and removed in one
// step, when it finishes, so that a challenge answers once; it expires
// after CeremonyTTL.

// Passkey is one WebAuthn credential of a local account.
type Passkey struct {
	// ID is the credential's ID, as the authenticator made it.
	ID []byte `json:"id"`
	// PublicKey is the credential's public key (COSE).
	PublicKey []byte `json:"public_key"`
	// Name is the user's name for it ("YubiKey", "laptop").
	Name string `json:"name"`
	// SignCount is the authenticator's signature counter at the last
	// sign-in: the next must exceed it (when either is nonzero), or the
	// credential was copied.
	SignCount uint32 `json:"sign_count"`
	// AAGUID names the authenticator's model (zero with attestation none
	// on most).
	AAGUID     []byte   `json:"aaguid,omitempty"`
	Transports []string `json:"transports,omitempty"`
	// BackupEligible and BackupState are the authenticator's flags: a
	// synced passkey is eligible for backup; the flag may not change.
	BackupEligible    bool   `json:"backup_eligible,omitempty"`
	BackupState       bool   `json:"backup_state,omitempty"`
	AttestationType   string `json:"attestation_type,omitempty"`
	AttestationFormat string `json:"attestation_format,omitempty"`
	// Created is when it was registered, LastUsed its last sign-in.
	Created  time.Time `json:"created"`
	LastUsed time.Time `json:"last_used,omitzero"`
}

// IDString is the passkey's ID, base64url: how forms name it.
func (p Passkey) IDString() string { return base64.RawURLEncoding.EncodeToString(p.ID) }

// HasPasskeys reports whether the user has registered a passkey.
func (u User) HasPasskeys() bool { return len(u.Passkeys) > 0 }

// MFA is the second factor local users give after their password
// (access.mfa).
type MFA string

// The second factors.
const (
	MFATOTP     MFA = "totp"     // a TOTP code (the default)
	MFAWebAuthn MFA = "webauthn" // a passkey
	MFAAny      MFA = "any"      // either
)

// ParseMFA checks s, "" being MFATOTP.
func ParseMFA(s string) (MFA, error) {
	switch m := MFA(s); m {
	case "":
		return MFATOTP, nil
	case MFATOTP, MFAWebAuthn, MFAAny:
		return m, nil
	}
	return "", fmt.Errorf("auth: mfa %q is not one of totp, webauthn, any", s)
}

func (m MFA) totp() bool    { return m == MFATOTP || m == MFAAny || m == "" }
func (m MFA) passkey() bool { return m == MFAWebAuthn || m == MFAAny }

// CeremonyTTL is how long a begun ceremony may take to finish.
const CeremonyTTL = 5 * time.Minute

// Limits of a passkey's name and of a ceremony's answer.
const (
	MaxPasskeyName = 64
	MaxPasskeys    = 16
	// MaxCeremonyBody bounds the JSON a browser sends back.
	MaxCeremonyBody = 64 << 10
)

// bucketWebAuthn holds the ceremonies and the user handles' index:
//
//	'c' + SHA-256(ceremony ID) -> the ceremony, JSON
//	'h' + user handle           -> the user's name
//
// A stored ceremony cannot be finished by whoever reads the database:
// its ID is not there.
const bucketWebAuthn = "webauthn"

// The kinds of ceremonies.
const (
	kindRegister = "register" // a signed-in user adds a passkey
	kindSignIn   = "signin"   // a passkey alone signs in (discoverable)
	kindSecond   = "second"   // a passkey after the password
	kindProof    = "proof"    // a signed-in user proves it again
)

// ceremony is a begun ceremony as stored.
type ceremony struct {
	Kind string `json:"kind"`
	// User is whose ceremony it is (none for kindSignIn).
	User string `json:"user,omitempty"`
	// Binding is what the finishing request must present: the web
	// session's or the sign-in form's token, hashed.
	Binding []byte `json:"binding"`
	// Origin is the browser's origin the ceremony began for.
	Origin string `json:"origin"`
	// Held is how the account was held up when its password was right
	// (kindSecond): "", throttled or locked.
	Held    string               `json:"held,omitempty"`
	Expires time.Time            `json:"expires"`
	Data    webauthn.SessionData `json:"data"`
}

// RP is the relying party as the browser sees it.
type RP struct {
	// ID is the bastion's server name.
	ID string
	// Origin is https://ID, with the port when not 443.
	Origin string
}

func (rp RP) webauthn() (*webauthn.WebAuthn, error) {
	if rp.ID == "" || !strings.HasPrefix(rp.Origin, "https://") {
		return nil, errors.New("auth: a passkey ceremony needs the server name and an https origin")
	}
	return webauthn.New(&webauthn.Config{
		RPID: rp.ID, RPDisplayName: "Bastion " + rp.ID, RPOrigins: []string{rp.Origin},
		AttestationPreference: protocol.PreferNoAttestation,
		AuthenticatorSelection: protocol.AuthenticatorSelection{
			ResidentKey:      protocol.ResidentKeyRequirementPreferred,
			UserVerification: protocol.VerificationRequired,
		},
		Timeouts: webauthn.TimeoutsConfig{
			Login:        webauthn.TimeoutConfig{Timeout: CeremonyTTL, TimeoutUVD: CeremonyTTL},
			Registration: webauthn.TimeoutConfig{Timeout: CeremonyTTL, TimeoutUVD: CeremonyTTL},
		},
	})
}

// Challenge is a begun ceremony: ID names it when it finishes, Options
// are what the browser passes to navigator.credentials.create or .get
// ({"publicKey": ...}).
type Challenge struct {
	ID      string          `json:"ceremony"`
	Options json.RawMessage `json:"options"`
}

// waUser is an account as the WebAuthn library sees it.
type waUser struct{ u User }

func (w waUser) WebAuthnID() []byte          { return w.u.WebAuthnID }
func (w waUser) WebAuthnName() string        { return w.u.Name }
func (w waUser) WebAuthnDisplayName() string { return w.u.Name }
func (w waUser) WebAuthnCredentials() []webauthn.Credential {
	cs := make([]webauthn.Credential, len(w.u.Passkeys))
	for i, p := range w.u.Passkeys {
		ts := make([]protocol.AuthenticatorTransport, len(p.Transports))
		for j, t := range p.Transports {
			ts[j] = protocol.AuthenticatorTransport(t)
		}
		cs[i] = webauthn.Credential{ID: p.ID, PublicKey: p.PublicKey, Transport: ts,
			AttestationType: p.AttestationType, AttestationFormat: p.AttestationFormat,
			Flags:         webauthn.CredentialFlags{UserPresent: true, UserVerified: true, BackupEligible: p.BackupEligible, BackupState: p.BackupState},
			Authenticator: webauthn.Authenticator{AAGUID: p.AAGUID, SignCount: p.SignCount}}
	}
	return cs
}

func hashBinding(b string) []byte { h := sha256.Sum256([]byte(b)); return h[:] }

func ceremonyKey(id string) []byte {
	h := sha256.Sum256([]byte(id))
	return append([]byte{'c'}, h[:]...)
}

func handleKey(h []byte) []byte { return append([]byte{'h'}, h...) }

// sealedPrefix marks the ID of a ceremony kept in the browser: the
// ceremony itself, sealed.
const sealedPrefix = "s."

// maxCeremonyID bounds a ceremony's ID as a request brings it.
const maxCeremonyID = 4096

// begin stores c under a new ID and returns the challenge. A passkey
// sign-in (kindSignIn), which anyone with the sign-in form may begin, is
// not stored: its ID is the ceremony, sealed (CeremonyKey), so that a
// stranger beginning them by the thousand writes nothing; taking it
// records its use (take).
func (a *Authenticator) begin(c ceremony, options any) (Challenge, error) {
	opts, err := json.Marshal(options)
	if err != nil {
		return Challenge{}, fmt.Errorf("auth: passkey options: %w", err)
	}
	now := a.now()
	c.Expires = now.Add(CeremonyTTL)
	v, err := json.Marshal(c)
	if err != nil {
		return Challenge{}, fmt.Errorf("auth: passkey ceremony: %w", err)
	}
	if c.Kind == kindSignIn {
		nonce := make([]byte, a.sealer.NonceSize())
		rand.Read(nonce)
		sealed := a.sealer.Seal(nonce, nonce, v, []byte(bucketWebAuthn))
		return Challenge{ID: sealedPrefix + base64.RawURLEncoding.EncodeToString(sealed), Options: opts}, nil
	}
	var b [32]byte
	rand.Read(b[:])
	id := base64.RawURLEncoding.EncodeToString(b[:])
	err = a.store.db.Update(func(tx store.Tx) error { return tx.Bucket(bucketWebAuthn).Put(ceremonyKey(id), v) })
	if err != nil {
		return Challenge{}, fmt.Errorf("auth: store a passkey ceremony: %w", err)
	}
	a.sweepCeremonies(now)
	return Challenge{ID: id, Options: opts}, nil
}

// errCeremony is a ceremony that is not there (never begun, finished
// already, expired) or not this browser's, or of another kind.
var errCeremony = errors.New("auth: no such passkey ceremony: it expired or was used already; start again")

// take takes the ceremony id: it is gone afterwards, whatever the outcome.
func (a *Authenticator) take(id, binding string, kinds ...string) (ceremony, error) {
	if rest, ok := strings.CutPrefix(id, sealedPrefix); ok && len(id) <= maxCeremonyID {
		return a.takeSealed(rest, binding, kinds)
	}
	if id == "" || len(id) > 64 {
		return ceremony{}, errCeremony
	}
	v, err := store.Take(a.store.db, bucketWebAuthn, ceremonyKey(id))
	if err != nil {
		return ceremony{}, fmt.Errorf("auth: read a passkey ceremony: %w", err)
	}
	if v == nil {
		return ceremony{}, errCeremony
	}
	var c ceremony
	if err := json.Unmarshal(v, &c); err != nil {
		return ceremony{}, fmt.Errorf("auth: stored passkey ceremony: %w", err)
	}
	if !slices.Contains(kinds, c.Kind) || !bytes.Equal(c.Binding, hashBinding(binding)) || !a.now().Before(c.Expires) {
		return ceremony{}, errCeremony
	}
	return c, nil
}

// takeSealed opens a ceremony kept in the browser and records its use
// until it expires ('u' + SHA-256 of the sealed bytes -> expiry), so that
// it is taken once, on any instance, as a stored one is.
func (a *Authenticator) takeSealed(sealed, binding string, kinds []string) (ceremony, error) {
	raw, err := base64.RawURLEncoding.DecodeString(sealed)
	n := a.sealer.NonceSize()
	if err != nil || len(raw) < n+a.sealer.Overhead() {
		return ceremony{}, errCeremony
	}
	v, err := a.sealer.Open(nil, raw[:n], raw[n:], []byte(bucketWebAuthn))
	if err != nil {
		return ceremony{}, errCeremony
	}
	var c ceremony
	if err := json.Unmarshal(v, &c); err != nil {
		return ceremony{}, errCeremony
	}
	if !slices.Contains(kinds, c.Kind) || !bytes.Equal(c.Binding, hashBinding(binding)) || !a.now().Before(c.Expires) {
		return ceremony{}, errCeremony
	}
	sum := sha256.Sum256(raw)
	key := append([]byte{'u'}, sum[:]...)
	until, _ := c.Expires.MarshalText()
	used := false
	err = a.store.db.Update(func(tx store.Tx) error {
		b := tx.Bucket(bucketWebAuthn)
		old, err := b.Get(key)
		if used = old != nil; used || err != nil {
			return err
		}
		return b.Put(key, until)
	})
	if err != nil {
		return ceremony{}, fmt.Errorf("auth: record a passkey ceremony's use: %w", err)
	}
	if used {
		return ceremony{}, errCeremony
	}
	return c, nil
}

// sweepCeremonies removes the expired ceremonies (begun and never
// finished) and fresh proofs, at most once a minute.
func (a *Authenticator) sweepCeremonies(now time.Time) {
	a.sweepMu.Lock()
	if now.Sub(a.swept) < time.Minute && !a.swept.After(now) {
		a.sweepMu.Unlock()
		return
	}
	a.swept = now
	a.sweepMu.Unlock()
	var old [][]byte
	err := a.store.db.View(func(tx store.Tx) error {
		old = nil
		b := tx.Bucket(bucketWebAuthn)
		err := b.ForEach([]byte{'c'}, func(k, v []byte) error {
			var c struct {
				Expires time.Time `json:"expires"`
			}
			if json.Unmarshal(v, &c) != nil || !now.Before(c.Expires) {
				old = append(old, bytes.Clone(k))
			}
			return nil
		})
		if err != nil {
			return err
		}
		// The fresh proofs of web sessions (MarkFresh), and the uses of
		// ceremonies kept in browsers (takeSealed), too.
		for _, prefix := range []byte{'f', 'u'} {
			err := b.ForEach([]byte{prefix}, func(k, v []byte) error {
				var until time.Time
				if until.UnmarshalText(v) != nil || !now.Before(until) {
					old = append(old, bytes.Clone(k))
				}
				return nil
			})
			if err != nil {
				return err
			}
		}
		return nil
	})
	for _, k := range old {
		if err == nil {
			_, err = store.Take(a.store.db, bucketWebAuthn, k)
		}
	}
	if err != nil {
		a.log.Warn("cannot remove expired passkey ceremonies", zap.Error(err))
	}
}

// BeginPasskeyRegistration begins adding a passkey to the local account
// user, whose web session binding must finish it.
func (a *Authenticator) BeginPasskeyRegistration(rp RP, user, binding string) (Challenge, error) {
	w, err := rp.webauthn()
	if err != nil {
		return Challenge{}, err
	}
	var u User
	err = a.store.db.Update(func(tx store.Tx) error {
		b := tx.Bucket(bucketUsers)
		var err error
		if u, err = getUser(b, user); err != nil {
			return err
		}
		switch {
		case u.SSO():
			return errors.New("auth: an account of a single sign-on provider has no passkeys here")
		case len(u.Passkeys) >= MaxPasskeys:
			return fmt.Errorf("auth: an account has at most %d passkeys: remove one first", MaxPasskeys)
		case len(u.WebAuthnID) > 0:
			return nil
		}
		// The user handle the authenticator keeps: random, so that it
		// says nothing about the account.
		u.WebAuthnID = make([]byte, 32)
		rand.Read(u.WebAuthnID)
		if err := tx.Bucket(bucketWebAuthn).Put(handleKey(u.WebAuthnID), []byte(u.Name)); err != nil {
			return err
		}
		return putUser(b, u)
	})
	if err != nil {
		return Challenge{}, err
	}
	wu := waUser{u}
	creation, data, err := w.BeginRegistration(wu, webauthn.WithExclusions(webauthn.Credentials(wu.WebAuthnCredentials()).CredentialDescriptors()))
	if err != nil {
		return Challenge{}, fmt.Errorf("auth: begin a passkey registration: %w", err)
	}
	return a.begin(ceremony{Kind: kindRegister, User: user, Binding: hashBinding(binding), Origin: rp.Origin, Data: *data}, creation)
}

// FinishPasskeyRegistration adds the passkey the browser made (body, the
// PublicKeyCredential as JSON) to user's account, named name.
func (a *Authenticator) FinishPasskeyRegistration(rp RP, id, binding, user, name string, body []byte, src netip.Addr) (Passkey, error) {
	name = strings.TrimSpace(name)
	if name == "" || utf8.RuneCountInString(name) > MaxPasskeyName || !utf8.ValidString(name) || strings.ContainsFunc(name, isControl) {
		return Passkey{}, fmt.Errorf("auth: a passkey's name is 1 to %d characters, none of them control characters", MaxPasskeyName)
	}
	c, err := a.take(id, binding, kindRegister)
	if err != nil {
		return Passkey{}, err
	}
	if c.User != user || c.Origin != rp.Origin {
		return Passkey{}, errCeremony
	}
	w, err := rp.webauthn()
	if err != nil {
		return Passkey{}, err
	}
	parsed, err := protocol.ParseCredentialCreationResponseBytes(body)
	if err != nil {
		return Passkey{}, fmt.Errorf("auth: the new passkey is malformed: %w", describe(err))
	}
	u, err := a.store.User(user)
	if err != nil {
		return Passkey{}, err
	}
	cred, err := w.CreateCredential(waUser{u}, c.Data, parsed)
	if err != nil {
		return Passkey{}, fmt.Errorf("auth: the new passkey is refused: %w", describe(err))
	}
	now := a.now().UTC()
	p := Passkey{ID: cred.ID, PublicKey: cred.PublicKey, Name: name, SignCount: cred.Authenticator.SignCount,
		AAGUID: cred.Authenticator.AAGUID, BackupEligible: cred.Flags.BackupEligible, BackupState: cred.Flags.BackupState,
		AttestationType: cred.AttestationType, AttestationFormat: cred.AttestationFormat, Created: now}
	for _, t := range cred.Transport {
		p.Transports = append(p.Transports, string(t))
	}
	err = a.store.Update(user, func(u *User) error {
		if slices.ContainsFunc(u.Passkeys, func(q Passkey) bool { return bytes.Equal(q.ID, p.ID) }) {
			return errors.New("auth: this passkey is registered already")
		}
		if len(u.Passkeys) >= MaxPasskeys {
			return fmt.Errorf("auth: an account has at most %d passkeys: remove one first", MaxPasskeys)
		}
		u.Passkeys = append(u.Passkeys, p)
		return nil
	})
	if err != nil {
		return Passkey{}, err
	}
	a.log.Info("passkey added", zap.String("user", user), zap.String("passkey", p.IDString()), zap.String("name", p.Name))
	a.emit(src, audit.Event{Event: audit.PasskeyAdded, Actor: user, User: user, Detail: fmt.Sprintf("passkey %q (%s)", p.Name, p.IDString())})
	return p, nil
}

func isControl(r rune) bool { return r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) }

// describe is err with the library's details, which its Error leaves out.
func describe(err error) error {
	var pe *protocol.Error
	if errors.As(err, &pe) && pe.Details != "" {
		return fmt.Errorf("%s: %s", pe.Type, pe.Details)
	}
	return err
}

// RemovePasskey removes the passkey id (IDString) of user.
func (a *Authenticator) RemovePasskey(user, id, actor string, src netip.Addr) error {
	var gone Passkey
	err := a.store.Update(user, func(u *User) error {
		i := slices.IndexFunc(u.Passkeys, func(p Passkey) bool { return p.IDString() == id })
		if i < 0 {
			return fmt.Errorf("auth: %s has no passkey %s", user, id)
		}
		gone = u.Passkeys[i]
		u.Passkeys = slices.Delete(u.Passkeys, i, i+1)
		return nil
	})
	if err != nil {
		return err
	}
	a.log.Info("passkey removed", zap.String("user", user), zap.String("passkey", id), zap.String("by", actor))
	a.emit(src, audit.Event{Event: audit.PasskeyRemoved, Actor: actor, User: user, Detail: fmt.Sprintf("passkey %q (%s)", gone.Name, id)})
	return nil
}

// RenamePasskey names the passkey id (IDString) of user anew.
func (a *Authenticator) RenamePasskey(user, id, name string) error {
	name = strings.TrimSpace(name)
	if name == "" || utf8.RuneCountInString(name) > MaxPasskeyName || !utf8.ValidString(name) || strings.ContainsFunc(name, isControl) {
		return fmt.Errorf("auth: a passkey's name is 1 to %d characters, none of them control characters", MaxPasskeyName)
	}
	return a.store.Update(user, func(u *User) error {
		i := slices.IndexFunc(u.Passkeys, func(p Passkey) bool { return p.IDString() == id })
		if i < 0 {
			return fmt.Errorf("auth: %s has no passkey %s", user, id)
		}
		u.Passkeys[i].Name = name
		return nil
	})
}

// BeginPasskeySignIn begins a sign-in with a passkey alone: the browser
// offers the passkeys it holds for this bastion, and no name is typed.
// binding is the sign-in form's token.
func (a *Authenticator) BeginPasskeySignIn(rp RP, binding string) (Challenge, error) {
	w, err := rp.webauthn()
	if err != nil {
		return Challenge{}, err
	}
	assertion, data, err := w.BeginDiscoverableLogin(webauthn.WithUserVerification(protocol.VerificationRequired))
	if err != nil {
		return Challenge{}, fmt.Errorf("auth: begin a passkey sign-in: %w", err)
	}
	return a.begin(ceremony{Kind: kindSignIn, Binding: hashBinding(binding), Origin: rp.Origin, Data: *data}, assertion)
}

// PasskeyNeeded is SignIn's answer to a right password whose second
// factor is a passkey: BeginPasskeySecondFactor takes it on.
type PasskeyNeeded struct {
	User string
	held string
	// right is set by SignIn only: a PasskeyNeeded made elsewhere begins
	// nothing.
	right bool
}

func (e *PasskeyNeeded) Error() string {
	return "auth: the password is right; confirm with a passkey to sign in"
}

// BeginPasskeySecondFactor begins the passkey ceremony after a right
// password (pn, from SignIn), bound to the sign-in form's token.
func (a *Authenticator) BeginPasskeySecondFactor(rp RP, pn *PasskeyNeeded, binding string) (Challenge, error) {
	if pn == nil || !pn.right {
		return Challenge{}, errors.New("auth: a second factor follows a right password only")
	}
	return a.beginFor(rp, kindSecond, pn.User, pn.held, binding)
}

// BeginPasskeyProof begins a ceremony in which the signed-in user proves
// again to hold a passkey (before changing a second factor).
func (a *Authenticator) BeginPasskeyProof(rp RP, user, binding string) (Challenge, error) {
	return a.beginFor(rp, kindProof, user, "", binding)
}

func (a *Authenticator) beginFor(rp RP, kind, user, held, binding string) (Challenge, error) {
	w, err := rp.webauthn()
	if err != nil {
		return Challenge{}, err
	}
	u, err := a.store.User(user)
	if err != nil {
		return Challenge{}, err
	}
	if !u.HasPasskeys() {
		return Challenge{}, fmt.Errorf("auth: %s has no passkey", user)
	}
	assertion, data, err := w.BeginLogin(waUser{u}, webauthn.WithUserVerification(protocol.VerificationRequired))
	if err != nil {
		return Challenge{}, fmt.Errorf("auth: begin a passkey ceremony: %w", err)
	}
	return a.begin(ceremony{Kind: kind, User: user, Held: held, Binding: hashBinding(binding), Origin: rp.Origin, Data: *data}, assertion)
}

// FinishPasskeySignIn checks the browser's answer (body) to the sign-in
// ceremony id: a passkey alone (BeginPasskeySignIn) or after the password
// (BeginPasskeySecondFactor). Any failure is a *LoginError, counted
// against the source and the account as a wrong password is; a source
// that failed too often is refused unchecked.
func (a *Authenticator) FinishPasskeySignIn(rp RP, id, binding string, body []byte, src netip.Addr) (User, error) {
	now := a.now()
	if err := a.sourceHeld("", src, now); err != nil {
		return User{}, err
	}
	c, err := a.take(id, binding, kindSignIn, kindSecond)
	if err != nil {
		if !errors.Is(err, errCeremony) {
			return User{}, a.unavailable("", src, err)
		}
		return User{}, a.failed("", src, now, "passkey ceremony expired, replayed or unknown", "passkey_challenge", false)
	}
	u, err := a.assert(rp, c, body, src, now)
	if err != nil {
		return User{}, err
	}
	if err := a.throttle.succeed(u.Name, src); err != nil {
		a.log.Warn("signed in, but the account's failures could not be cleared", zap.String("user", u.Name), zap.Error(err))
	}
	ev := audit.Event{Event: audit.SigninSucceeded, Actor: u.Name, User: u.Name, Reason: "passkey"}
	if c.Kind == kindSecond {
		ev.Reason = "password_passkey"
	}
	held := c.Held
	if c.Kind == kindSignIn && now.Before(u.LockedUntil) {
		held = "locked"
	}
	if held != "" {
		a.count("ok_while_" + held)
		ev.Detail = "signed in with a passkey while the account was " + held + " by failures from other sources"
	} else {
		a.count("ok")
	}
	a.emit(src, ev)
	return u, nil
}

// FinishPasskeyProof checks the answer of user to the proof ceremony id.
// A failure counts as a failed sign-in.
func (a *Authenticator) FinishPasskeyProof(rp RP, id, binding, user string, body []byte, src netip.Addr) error {
	now := a.now()
	if err := a.sourceHeld(user, src, now); err != nil {
		return err
	}
	c, err := a.take(id, binding, kindProof)
	if err == nil && c.User != user {
		err = errCeremony
	}
	if err != nil {
		if !errors.Is(err, errCeremony) {
			return a.unavailable(user, src, err)
		}
		return a.failed(user, src, now, "passkey ceremony expired, replayed or unknown", "passkey_challenge", true)
	}
	if _, err := a.assert(rp, c, body, src, now); err != nil {
		return err
	}
	a.emit(src, audit.Event{Event: audit.SigninSucceeded, Actor: user, User: user, Reason: "proof_passkey",
		Detail: "proved again, with a passkey, to change a second factor"})
	return nil
}

// sourceHeld refuses, unchecked, an attempt from a source that failed
// too often (Login's rule), or one whose throttle cannot be read; name is
// the account the attempt is for, if known.
func (a *Authenticator) sourceHeld(name string, src netip.Addr, now time.Time) error {
	w, err := a.throttle.sourceWait(src, now)
	if err != nil {
		return a.unavailable(name, src, err)
	}
	if w <= 0 {
		return nil
	}
	a.count("throttled")
	a.log.Info("passkey or proof refused: throttled", zap.String("user", name), zap.Stringer("source", src), zap.Duration("wait", w))
	until := now.Add(w).UTC()
	a.emit(src, audit.Event{Event: audit.SigninThrottled, Actor: audit.ActorAnonymous, User: name, Reason: "source", Until: &until,
		Detail: "this source failed too often: its attempts are refused unchecked until its backoff ends"})
	return &LoginError{Reason: "throttled"}
}

// errCloned is an assertion whose signature counter did not advance.
var errCloned = errors.New("auth: the passkey's signature counter did not advance: the credential may be cloned")

// assert checks an assertion (body) against the ceremony c and records the
// passkey's use, or counts the failure.
func (a *Authenticator) assert(rp RP, c ceremony, body []byte, src netip.Addr, now time.Time) (User, error) {
	w, err := rp.webauthn()
	if err != nil {
		return User{}, err
	}
	if len(body) > MaxCeremonyBody {
		return User{}, a.failed(c.User, src, now, "passkey answer too long", "passkey_invalid", c.User != "")
	}
	parsed, perr := protocol.ParseCredentialRequestResponseBytes(body)
	if perr != nil {
		a.log.Info("passkey answer malformed", zap.Stringer("source", src), zap.Error(describe(perr)))
		return User{}, a.failed(c.User, src, now, "passkey answer malformed", "passkey_invalid", c.User != "")
	}
	name := c.User
	if c.Kind == kindSignIn {
		h := parsed.Response.UserHandle
		if len(h) == 0 || len(h) > 64 {
			return User{}, a.failed("", src, now, "passkey without a user handle", "passkey_unknown", false)
		}
		v, err := store.Get(a.store.db, bucketWebAuthn, handleKey(h))
		if err != nil {
			return User{}, a.unavailable("", src, err)
		}
		if v == nil {
			return User{}, a.failed("", src, now, "passkey of no account", "passkey_unknown", false)
		}
		name = string(v)
	}
	u, err := a.store.User(name)
	switch {
	case errors.Is(err, ErrNoUser):
		return User{}, a.failed("", src, now, "passkey of a deleted account", "passkey_unknown", false)
	case errors.Is(err, store.ErrUnavailable):
		return User{}, a.unavailable(name, src, err)
	case err != nil:
		a.log.Error("passkey sign-in: stored account unreadable", zap.String("user", name), zap.Error(err))
		return User{}, a.failed(name, src, now, "unreadable account", "unreadable_account", false)
	}
	i := slices.IndexFunc(u.Passkeys, func(p Passkey) bool { return bytes.Equal(p.ID, parsed.RawID) })
	if i < 0 || u.SSO() {
		// Not one of this account's: removed, or another account's.
		return User{}, a.failed(name, src, now, "passkey not registered to this account", "passkey_unknown", true)
	}
	if u.Disabled {
		return User{}, a.failed(name, src, now, "disabled", "disabled", false)
	}
	if now.Before(u.LockedUntil) && slices.Contains(u.LockedBy, source.Of(src).String()) {
		return User{}, a.refused(name, src, "locked", "the source that caused the lockout", u.LockedUntil)
	}
	if c.Kind == kindSignIn {
		_, _, err := w.ValidatePasskeyLogin(func(_, _ []byte) (webauthn.User, error) { return waUser{u}, nil }, c.Data, parsed)
		if err != nil {
			a.log.Info("passkey refused", zap.String("user", name), zap.Stringer("source", src), zap.Error(describe(err)))
			return User{}, a.failed(name, src, now, "passkey assertion refused", "passkey_invalid", true)
		}
	} else if _, err := w.ValidateLogin(waUser{u}, c.Data, parsed); err != nil {
		a.log.Info("passkey refused", zap.String("user", name), zap.Stringer("source", src), zap.Error(describe(err)))
		return User{}, a.failed(name, src, now, "passkey assertion refused", "passkey_invalid", true)
	}
	// The counter is compared with the stored one in the transaction that
	// stores the new one: of two copies of a credential racing, one wins.
	count := parsed.Response.AuthenticatorData.Counter
	var stored uint32
	err = a.store.Update(name, func(u *User) error {
		i := slices.IndexFunc(u.Passkeys, func(p Passkey) bool { return bytes.Equal(p.ID, parsed.RawID) })
		if i < 0 {
			return errCeremony
		}
		p := &u.Passkeys[i]
		stored = p.SignCount
		if count <= p.SignCount && (count != 0 || p.SignCount != 0) {
			return errCloned
		}
		p.SignCount, p.LastUsed = count, now.UTC()
		return nil
	})
	switch {
	case errors.Is(err, errCloned):
		a.log.Warn("passkey flagged: its signature counter did not advance, the credential may be cloned",
			zap.String("user", name), zap.String("passkey", u.Passkeys[i].IDString()), zap.String("name", u.Passkeys[i].Name),
			zap.Uint32("counter", count), zap.Uint32("stored_counter", stored), zap.Stringer("source", src))
		return User{}, a.failed(name, src, now, "passkey counter did not advance (cloned?)", "passkey_cloned", true)
	case errors.Is(err, errCeremony):
		return User{}, a.failed(name, src, now, "passkey removed meanwhile", "passkey_unknown", true)
	case err != nil:
		return User{}, a.unavailable(name, src, err)
	}
	return a.store.User(name)
}

// ProvePassword checks the password of user, signed in already, who
// proves it again before changing a second factor: a failure counts as a
// failed sign-in, and a throttled source is refused unchecked.
func (a *Authenticator) ProvePassword(ctx context.Context, user, password string, src netip.Addr) error {
	now := a.now()
	if len(password) > MaxPasswordLen {
		return a.failed(user, src, now, "password too long", "bad_password", true)
	}
	if err := a.sourceHeld(user, src, now); err != nil {
		return err
	}
	u, err := a.store.User(user)
	if err != nil {
		if errors.Is(err, store.ErrUnavailable) {
			return a.unavailable(user, src, err)
		}
		return a.failed(user, src, now, "account unreadable or gone", "unreadable_account", false)
	}
	select {
	case a.hashing <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	ok, herr := verifyPassword(u.PasswordHash, password)
	<-a.hashing
	if herr != nil || !ok || u.SSO() {
		return a.failed(user, src, now, "wrong password", "bad_password", true)
	}
	a.emit(src, audit.Event{Event: audit.SigninSucceeded, Actor: user, User: user, Reason: "proof_password",
		Detail: "proved again, with the password, to change a second factor"})
	return nil
}

// FreshFor is how long a proof (a sign-in, or the password or a passkey
// given again) lets a web session change its user's second factors.
const FreshFor = 5 * time.Minute

func freshKey(binding string) []byte { return append([]byte{'f'}, hashBinding(binding)...) }

// MarkFresh records that the web session binding proved its user now.
func (a *Authenticator) MarkFresh(binding string) error {
	v, _ := a.now().Add(FreshFor).UTC().MarshalText()
	return a.store.db.Update(func(tx store.Tx) error { return tx.Bucket(bucketWebAuthn).Put(freshKey(binding), v) })
}

// Fresh reports whether the web session binding proved its user within
// FreshFor.
func (a *Authenticator) Fresh(binding string) (bool, error) {
	v, err := store.Get(a.store.db, bucketWebAuthn, freshKey(binding))
	if err != nil || v == nil {
		return false, err
	}
	var until time.Time
	if err := until.UnmarshalText(v); err != nil {
		return false, nil
	}
	if !a.now().Before(until) {
		// Gone stale: removed, so that proofs do not pile up.
		_, err := store.Take(a.store.db, bucketWebAuthn, freshKey(binding))
		return false, err
	}
	return true, nil
}

// PendingTOTP is the enrolment of user waiting for its first code, if any.
func (s *Store) PendingTOTP(name, issuer string) (TOTPEnrolment, bool, error) {
	u, err := s.User(name)
	if err != nil || len(u.TOTPPending) == 0 {
		return TOTPEnrolment{}, false, err
	}
	return totpEnrolment(issuer, name, u.TOTPPending), true, nil
}
