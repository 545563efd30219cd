package oidc

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"time"

	"github.com/bastiond/bastiond/internal/store"
)

// CLIBucket holds the results of bastionctl's sign-ins, waiting to be
// redeemed.
const CLIBucket = "sso_cli"

// CLITTL is how long a bastionctl sign-in's result waits to be redeemed.
const CLITTL = 5 * time.Minute

// ErrCLICode is a result code that is unknown, used, expired, or shown
// with the wrong verifier.
var ErrCLICode = errors.New("the sign-in code is wrong, used already or expired: run bastionctl login --sso again")

type cliResult struct {
	User      string `json:"user"`
	Provider  string `json:"provider"`
	Challenge string `json:"challenge"`
}

// cliKey is the store key of code: its expiry (the code's first 8 bytes)
// and a hash of the rest, so that the store holds nothing that redeems.
func cliKey(code string) ([]byte, time.Time, bool) {
	raw, err := base64.RawURLEncoding.DecodeString(code)
	if err != nil || len(raw) != 8+24 {
		return nil, time.Time{}, false
	}
	sum := sha256.Sum256(raw[8:])
	key := append(raw[:8:8], sum[:16]...)
	return key, time.Unix(int64(binary.BigEndian.Uint64(raw[:8])), 0), true
}

// IssueCLICode keeps the result of a bastionctl sign-in (user, signed in
// through provider) for the bastionctl that began it, and returns the
// one-time code it redeems the result with, by showing its verifier.
func (s *Set) IssueCLICode(user, provider string, cli CLI) (string, error) {
	raw := binary.BigEndian.AppendUint64(nil, uint64(s.cfg.Now().Add(CLITTL).Unix()))
	var secret [24]byte
	rand.Read(secret[:])
	code := base64.RawURLEncoding.EncodeToString(append(raw, secret[:]...))
	key, _, _ := cliKey(code)
	v, err := json.Marshal(cliResult{User: user, Provider: provider, Challenge: cli.Challenge})
	if err != nil {
		return "", err
	}
	now := uint64(s.cfg.Now().Unix())
	err = s.cfg.DB.Update(func(tx store.Tx) error {
		b := tx.Bucket(CLIBucket)
		if err := sweepExpired(b, now); err != nil {
			return err
		}
		return b.Put(key, v)
	})
	return code, err
}

// RedeemCLICode returns the user and provider of a bastionctl sign-in's
// result, once: the code and the verifier whose challenge began the flow.
// Any mismatch is ErrCLICode, and the code is spent all the same.
func (s *Set) RedeemCLICode(code, verifier string) (user, provider string, err error) {
	key, expires, ok := cliKey(code)
	if !ok {
		return "", "", ErrCLICode
	}
	v, err := store.Take(s.cfg.DB, CLIBucket, key)
	if err != nil {
		return "", "", err
	}
	if v == nil || !s.cfg.Now().Before(expires) {
		return "", "", ErrCLICode
	}
	var r cliResult
	if err := json.Unmarshal(v, &r); err != nil {
		return "", "", ErrCLICode
	}
	sum := sha256.Sum256([]byte(verifier))
	if subtle.ConstantTimeCompare([]byte(base64.RawURLEncoding.EncodeToString(sum[:])), []byte(r.Challenge)) != 1 {
		return "", "", ErrCLICode
	}
	return r.User, r.Provider, nil
}
