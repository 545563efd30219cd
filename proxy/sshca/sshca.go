// Package sshca is the bastion's SSH user certificate authority. For a
// target with ssh_certificates, the browser SSH relay logs in with a fresh
// key and a certificate this CA signs for the one login and a few minutes:
// the user types no secret, and the machine trusts the CA through sshd's
// TrustedUserCAKeys. The CA key is made on first use and kept in the state
// directory (Open), or, in a cluster, in the state store every instance
// shares, sealed with a key the database never sees (OpenShared); its
// public half is what `bastionctl ca show` prints.
package sshca

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/binary"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"
)

// KeyFile is the CA's private key in the state directory.
const KeyFile = "ssh_ca_ed25519"

// DefaultValidity is how long a certificate is valid when Sign is given 0:
// long enough to log in, too short to be worth stealing.
const DefaultValidity = 5 * time.Minute

// clockSkew is how far before now a certificate is already valid, so that
// a machine whose clock is a little behind accepts it.
const clockSkew = time.Minute

// Config configures a CA.
type Config struct {
	// Dir is the state directory that holds KeyFile; it is created (0700)
	// if missing. Required.
	Dir string
	// ServerName is the bastion's name, the comment of its public key.
	// Required.
	ServerName string
}

// CA signs user certificates.
type CA struct {
	signer  ssh.Signer
	comment string
}

// Open loads the CA key from cfg.Dir, or makes one there on first use. A
// key file that others may read, or that is not an ed25519 key in OpenSSH
// format, is an error: it is never replaced silently, because every machine
// that trusts the CA would stop accepting its certificates.
func Open(cfg Config) (*CA, error) {
	if cfg.Dir == "" || cfg.ServerName == "" {
		return nil, errors.New("sshca: Dir and ServerName are required")
	}
	path := filepath.Join(cfg.Dir, KeyFile)
	priv, err := load(path)
	if errors.Is(err, fs.ErrNotExist) {
		priv, err = create(cfg.Dir, path)
	}
	if err != nil {
		return nil, err
	}
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		return nil, fmt.Errorf("sshca: %s: %w", path, err)
	}
	return &CA{signer: signer, comment: "bastiond-ca@" + cfg.ServerName}, nil
}

func load(path string) (ed25519.PrivateKey, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("sshca: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("sshca: %w", err)
	}
	if mode := fi.Mode(); !mode.IsRegular() || mode.Perm()&0o077 != 0 {
		return nil, fmt.Errorf("sshca: %s has mode %s: the CA key must be a file only its owner can read; "+
			"run `chmod 600 %s` if nobody else has read it, or remove it to make a new CA (every machine must then trust the new one)",
			path, mode, path)
	}
	data, err := io.ReadAll(f)
	if err != nil {
		return nil, fmt.Errorf("sshca: %w", err)
	}
	raw, err := ssh.ParseRawPrivateKey(data)
	if err != nil {
		return nil, fmt.Errorf("sshca: %s is not an OpenSSH private key (%v): restore it from a backup, "+
			"or remove it to make a new CA (every machine must then trust the new one)", path, err)
	}
	priv, ok := raw.(*ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("sshca: %s holds a %T, not an ed25519 key: restore it from a backup, or remove it to make a new CA", path, raw)
	}
	return *priv, nil
}

// create makes a CA key and writes it to path, atomically and without ever
// replacing a file that is there.
func create(dir, path string) (ed25519.PrivateKey, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("sshca: %w", err)
	}
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("sshca: %w", err)
	}
	block, err := ssh.MarshalPrivateKey(priv, "bastiond-ca")
	if err != nil {
		return nil, fmt.Errorf("sshca: %w", err)
	}
	tmp, err := os.CreateTemp(dir, KeyFile+".*") // mode 0600
	if err != nil {
		return nil, fmt.Errorf("sshca: %w", err)
	}
	defer os.Remove(tmp.Name())
	_, err = tmp.Write(pem.EncodeToMemory(block))
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Link(tmp.Name(), path)
	}
	if err != nil {
		return nil, fmt.Errorf("sshca: write %s: %w", path, err)
	}
	return priv, nil
}

// PublicKey is the CA's public key as an authorized_keys line, with the
// comment bastiond-ca@SERVERNAME: the line a machine's TrustedUserCAKeys
// file holds.
func (c *CA) PublicKey() string {
	line := strings.TrimSuffix(string(ssh.MarshalAuthorizedKey(c.signer.PublicKey())), "\n")
	return line + " " + c.comment
}

// Sign makes a fresh key and a user certificate for it that lets login in,
// valid from a minute ago for validity (DefaultValidity if 0), that allows
// a PTY and nothing else: no agent, port or X11 forwarding. keyID is what
// the machine's sshd logs, e.g. "bastiond:alice:SESSIONID". The key never
// leaves memory.
func (c *CA) Sign(login, keyID string, validity time.Duration) (ssh.Signer, error) {
	if login == "" {
		return nil, errors.New("sshca: sign: no login")
	}
	if validity <= 0 {
		validity = DefaultValidity
	}
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("sshca: sign: %w", err)
	}
	key, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		return nil, fmt.Errorf("sshca: sign: %w", err)
	}
	sshPub, err := ssh.NewPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("sshca: sign: %w", err)
	}
	var serial [8]byte
	if _, err := rand.Read(serial[:]); err != nil {
		return nil, fmt.Errorf("sshca: sign: %w", err)
	}
	now := time.Now()
	cert := &ssh.Certificate{
		Key:             sshPub,
		Serial:          binary.BigEndian.Uint64(serial[:]),
		CertType:        ssh.UserCert,
		KeyId:           keyID,
		ValidPrincipals: []string{login},
		ValidAfter:      uint64(now.Add(-clockSkew).Unix()),
		ValidBefore:     uint64(now.Add(validity).Unix()),
		Permissions:     ssh.Permissions{Extensions: map[string]string{"permit-pty": ""}},
	}
	if err := cert.SignCert(rand.Reader, c.signer); err != nil {
		return nil, fmt.Errorf("sshca: sign: %w", err)
	}
	return ssh.NewCertSigner(cert, key)
}
