// Package passkeytest is a software WebAuthn authenticator for tests: it
// answers the options a bastion's ceremony begins with as a browser and a
// platform authenticator would (attestation "none", ES256 keys), so that
// the server side of registration and sign-in can be driven without a
// browser, and bent (another origin, another RP ID, no user verification,
// a counter that goes back) to see it refused.
package passkeytest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"

	"github.com/go-webauthn/webauthn/protocol/webauthncbor"
	"github.com/go-webauthn/webauthn/protocol/webauthncose"
)

var b64 = base64.RawURLEncoding

// Credential is one passkey the authenticator made.
type Credential struct {
	ID         []byte
	Key        *ecdsa.PrivateKey
	UserHandle []byte
	// RPID is the relying party it signs for: the one it was made for,
	// unless a test changes it.
	RPID string
	// Counter is the signature counter; each assertion adds one first.
	Counter uint32
	// NoUV leaves out the user-verified flag.
	NoUV bool
}

// IDString is the credential's ID, base64url.
func (c *Credential) IDString() string { return b64.EncodeToString(c.ID) }

// options is the part of a ceremony's options an authenticator reads.
type options struct {
	PublicKey struct {
		Challenge string `json:"challenge"`
		RP        struct {
			ID string `json:"id"`
		} `json:"rp"`
		RPID string `json:"rpId"`
		User struct {
			ID string `json:"id"`
		} `json:"user"`
	} `json:"publicKey"`
}

func clientData(typ, challenge, origin string) []byte {
	b, _ := json.Marshal(map[string]any{"type": typ, "challenge": challenge, "origin": origin, "crossOrigin": false})
	return b
}

func authData(rpID string, flags byte, counter uint32, attested []byte) []byte {
	h := sha256.Sum256([]byte(rpID))
	d := append(h[:], flags)
	d = binary.BigEndian.AppendUint32(d, counter)
	return append(d, attested...)
}

const (
	flagUP = 0x01
	flagUV = 0x04
	flagAT = 0x40
)

// Create answers a registration's options (JSON, {"publicKey": ...}) from
// origin: the PublicKeyCredential as JSON, and the credential made.
func Create(opts []byte, origin string) ([]byte, *Credential, error) {
	var o options
	if err := json.Unmarshal(opts, &o); err != nil {
		return nil, nil, fmt.Errorf("passkeytest: options: %w", err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	handle, err := b64.DecodeString(o.PublicKey.User.ID)
	if err != nil {
		return nil, nil, fmt.Errorf("passkeytest: user.id: %w", err)
	}
	c := &Credential{ID: make([]byte, 16), Key: key, UserHandle: handle, RPID: o.PublicKey.RP.ID}
	rand.Read(c.ID)
	pub, err := key.PublicKey.ECDH()
	if err != nil {
		return nil, nil, err
	}
	raw := pub.Bytes() // 0x04 || X || Y
	cose, err := webauthncbor.Marshal(webauthncose.EC2PublicKeyData{
		PublicKeyData: webauthncose.PublicKeyData{KeyType: int64(webauthncose.EllipticKey), Algorithm: int64(webauthncose.AlgES256)},
		Curve:         1, XCoord: raw[1:33], YCoord: raw[33:],
	})
	if err != nil {
		return nil, nil, err
	}
	attested := make([]byte, 16) // AAGUID zero
	attested = binary.BigEndian.AppendUint16(attested, uint16(len(c.ID)))
	attested = append(append(attested, c.ID...), cose...)
	flags := byte(flagUP | flagUV | flagAT)
	att, err := webauthncbor.Marshal(map[string]any{"fmt": "none", "attStmt": map[string]any{}, "authData": authData(c.RPID, flags, 0, attested)})
	if err != nil {
		return nil, nil, err
	}
	body, err := json.Marshal(map[string]any{
		"id": b64.EncodeToString(c.ID), "rawId": b64.EncodeToString(c.ID), "type": "public-key",
		"response": map[string]any{
			"clientDataJSON":    b64.EncodeToString(clientData("webauthn.create", o.PublicKey.Challenge, origin)),
			"attestationObject": b64.EncodeToString(att),
			"transports":        []string{"internal"},
		},
	})
	return body, c, err
}

// Get answers a sign-in's options from origin with c: the
// PublicKeyCredential as JSON. The counter goes up by one first.
func (c *Credential) Get(opts []byte, origin string) ([]byte, error) {
	var o options
	if err := json.Unmarshal(opts, &o); err != nil {
		return nil, fmt.Errorf("passkeytest: options: %w", err)
	}
	c.Counter++
	flags := byte(flagUP | flagUV)
	if c.NoUV {
		flags = flagUP
	}
	ad := authData(c.RPID, flags, c.Counter, nil)
	cd := clientData("webauthn.get", o.PublicKey.Challenge, origin)
	h := sha256.Sum256(cd)
	digest := sha256.Sum256(append(append([]byte{}, ad...), h[:]...))
	sig, err := ecdsa.SignASN1(rand.Reader, c.Key, digest[:])
	if err != nil {
		return nil, err
	}
	return json.Marshal(map[string]any{
		"id": b64.EncodeToString(c.ID), "rawId": b64.EncodeToString(c.ID), "type": "public-key",
		"response": map[string]any{
			"clientDataJSON": b64.EncodeToString(cd), "authenticatorData": b64.EncodeToString(ad),
			"signature": b64.EncodeToString(sig), "userHandle": b64.EncodeToString(c.UserHandle),
		},
	})
}
