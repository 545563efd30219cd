package auth

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"golang.org/x/crypto/argon2"
)

// argon2idParams are the cost parameters of a hash. New hashes use
// defaultParams (a Store's params); stored hashes carry their own, so the
// defaults can be raised without invalidating existing passwords.
type argon2idParams struct {
	memory  uint32 // KiB
	time    uint32
	threads uint8
}

// defaultParams follow OWASP's argon2id recommendation (19 MiB, two passes,
// one lane): about 25 ms on one core. Logins are hashed under a
// concurrency limit, so a flood cannot make the daemon allocate without bound.
var defaultParams = argon2idParams{memory: 19 * 1024, time: 2, threads: 1}

const (
	saltLen = 16
	keyLen  = 32
	// MinPasswordLen and MaxPasswordLen bound new passwords (in characters
	// and bytes): long enough to resist guessing, short enough to hash cheaply.
	MinPasswordLen = 12
	MaxPasswordLen = 1024
)

// ErrWeakPassword is returned for a new password outside the bounds.
var ErrWeakPassword = fmt.Errorf("auth: a password needs %d to %d characters", MinPasswordLen, MaxPasswordLen)

func checkNewPassword(pw string) error {
	if utf8.RuneCountInString(pw) < MinPasswordLen || len(pw) > MaxPasswordLen || !utf8.ValidString(pw) {
		return ErrWeakPassword
	}
	return nil
}

// hashWith returns pw's argon2id hash with the costs p in the PHC string
// format: $argon2id$v=19$m=19456,t=2,p=1$SALT$HASH.
func hashWith(p argon2idParams, pw string) (string, error) {
	salt := make([]byte, saltLen)
	if _, err := rand.Read(salt); err != nil {
		return "", err
	}
	key := argon2.IDKey([]byte(pw), salt, p.time, p.memory, p.threads, keyLen)
	b64 := base64.RawStdEncoding
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s",
		argon2.Version, p.memory, p.time, p.threads, b64.EncodeToString(salt), b64.EncodeToString(key)), nil
}

var errBadHash = errors.New("auth: stored password hash is malformed")

// verifyPassword reports whether pw matches the PHC-encoded hash, comparing
// in constant time.
func verifyPassword(encoded, pw string) (bool, error) {
	parts := strings.Split(encoded, "$")
	if len(parts) != 6 || parts[0] != "" || parts[1] != "argon2id" {
		return false, errBadHash
	}
	var version int
	if _, err := fmt.Sscanf(parts[2], "v=%d", &version); err != nil || version != argon2.Version {
		return false, errBadHash
	}
	var p argon2idParams
	if _, err := fmt.Sscanf(parts[3], "m=%d,t=%d,p=%d", &p.memory, &p.time, &p.threads); err != nil ||
		p.memory == 0 || p.memory > 1<<21 || p.time == 0 || p.time > 16 || p.threads == 0 {
		return false, errBadHash
	}
	b64 := base64.RawStdEncoding
	salt, err1 := b64.DecodeString(parts[4])
	want, err2 := b64.DecodeString(parts[5])
	if err1 != nil || err2 != nil || len(salt) < 8 || len(want) < 16 || len(want) > 64 {
		return false, errBadHash
	}
	got := argon2.IDKey([]byte(pw), salt, p.time, p.memory, p.threads, uint32(len(want)))
	return subtle.ConstantTimeCompare(got, want) == 1, nil
}
