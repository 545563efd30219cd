// Package seal encrypts the secrets bastiond keeps in a shared database (the
// SSH CA's private key) with a key the database never sees: AES-256-GCM
// under a 32-byte key read from a file or a systemd credential. A sealed
// value names its key by a short fingerprint, so that an instance given
// another key says so instead of failing to decrypt.
package seal

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/bastiond/bastiond/internal/secret"
)

// KeySize is the length of a sealing key, in bytes.
const KeySize = 32

// Key is a sealing key.
type Key struct {
	aead cipher.AEAD
	id   string
}

// ID is the key's fingerprint: the first 8 bytes of the SHA-256 of
// "bastiond seal key" and the key, in hex. It identifies the key without
// revealing anything of it.
func (k *Key) ID() string { return k.id }

// NewKey makes a Key of raw, which must be KeySize bytes.
func NewKey(raw []byte) (*Key, error) {
	if len(raw) != KeySize {
		return nil, fmt.Errorf("seal: a key is %d bytes, not %d", KeySize, len(raw))
	}
	block, err := aes.NewCipher(raw)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(append([]byte("bastiond seal key\x00"), raw...))
	return &Key{aead: aead, id: hex.EncodeToString(sum[:8])}, nil
}

// Generate returns a new key's text, as a key file holds it: 32 random
// bytes in base64, and a newline.
func Generate() string {
	raw := make([]byte, KeySize)
	rand.Read(raw) // never fails (crypto/rand, Go 1.24+)
	return base64.StdEncoding.EncodeToString(raw) + "\n"
}

// Load reads a key from path: 32 bytes in base64 (what Generate writes) or
// in hex, surrounding white space ignored. A file that others may read is
// refused. A path of the form "credential:NAME" is the systemd credential
// NAME ($CREDENTIALS_DIRECTORY/NAME, from LoadCredential= or
// LoadCredentialEncrypted= in the unit).
func Load(path string) (*Key, error) {
	data, err := secret.Read(path)
	if err != nil {
		return nil, fmt.Errorf("seal: %w", err)
	}
	text := strings.TrimSpace(string(data))
	raw, err := base64.StdEncoding.DecodeString(text)
	if err != nil || len(raw) != KeySize {
		if h, herr := hex.DecodeString(text); herr == nil && len(h) == KeySize {
			raw, err = h, nil
		} else {
			err = errors.New("not 32 bytes in base64 or hex")
		}
	}
	if err != nil {
		return nil, fmt.Errorf("seal: %s: %v (make one with `head -c 32 /dev/urandom | base64`)", path, err)
	}
	return NewKey(raw)
}

// sealed is a sealed value as stored.
type sealed struct {
	Version int    `json:"v"`
	KeyID   string `json:"key_id"`
	Nonce   []byte `json:"nonce"`
	Data    []byte `json:"data"`
}

// ErrWrongKey is what Open returns for a value sealed with another key.
var ErrWrongKey = errors.New("seal: sealed with another key")

// Seal encrypts plaintext, bound to context (what the value is, e.g.
// "sshca/ed25519": a sealed value moved to another use does not open).
func (k *Key) Seal(context string, plaintext []byte) []byte {
	nonce := make([]byte, k.aead.NonceSize())
	rand.Read(nonce)
	b, _ := json.Marshal(sealed{Version: 1, KeyID: k.id, Nonce: nonce, Data: k.aead.Seal(nil, nonce, plaintext, aad(context, k.id))})
	return b
}

// Open decrypts what Seal returned for the same context.
func (k *Key) Open(context string, value []byte) ([]byte, error) {
	var s sealed
	if err := json.Unmarshal(value, &s); err != nil || s.Version != 1 || len(s.Nonce) != k.aead.NonceSize() {
		return nil, errors.New("seal: not a sealed value")
	}
	if s.KeyID != k.id {
		return nil, fmt.Errorf("%w: the value's key is %s, this key is %s", ErrWrongKey, s.KeyID, k.id)
	}
	plain, err := k.aead.Open(nil, s.Nonce, s.Data, aad(context, k.id))
	if err != nil {
		return nil, fmt.Errorf("seal: %s: the value does not authenticate (altered, or sealed for another use)", context)
	}
	return plain, nil
}

func aad(context, keyID string) []byte {
	return []byte("bastiond sealed v1\x00" + context + "\x00" + keyID)
}
