package sshca

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"

	"golang.org/x/crypto/ssh"

	"github.com/bastiond/bastiond/internal/seal"
	"github.com/bastiond/bastiond/internal/store"
)

// Where a cluster keeps its CA key: sealed, in the state store every
// instance shares.
const (
	sharedBucket  = "secrets"
	sharedKey     = "sshca/ed25519"
	sealedContext = "sshca/ed25519"
)

// SharedConfig configures the CA of a cluster.
type SharedConfig struct {
	// DB is the state store the instances share. Required.
	DB store.DB
	// Seal encrypts the key in DB; every instance needs the same one.
	// Required.
	Seal *seal.Key
	// ServerName is the bastion's name, the comment of its public key.
	// Required.
	ServerName string
	// ImportDir is a state directory whose KeyFile, if there is one and
	// the store holds no key yet, becomes the cluster's key: a single host
	// turned into a cluster keeps its CA, which its machines trust.
	ImportDir string
}

// Origin says where OpenShared found the key.
type Origin string

const (
	FromStore Origin = "store"    // the store held it
	Imported  Origin = "imported" // ImportDir's key file, now in the store
	Created   Origin = "created"  // made now, and put in the store
)

// OpenShared is the CA of a cluster: the key in cfg.DB, sealed with
// cfg.Seal. The first instance to open it puts it there (ImportDir's key,
// or a new one); instances opening at once agree on one key, whichever was
// stored first.
func OpenShared(cfg SharedConfig) (*CA, Origin, error) {
	if cfg.DB == nil || cfg.Seal == nil || cfg.ServerName == "" {
		return nil, "", errors.New("sshca: DB, Seal and ServerName are required")
	}
	priv, err := sharedKeyOf(cfg)
	if err != nil || priv != nil {
		return caOf(priv, cfg.ServerName, FromStore, err)
	}
	// None yet: ours, unless another instance stores one first.
	mine, origin, err := candidate(cfg.ImportDir)
	if err != nil {
		return nil, "", err
	}
	block, err := ssh.MarshalPrivateKey(mine, "bastiond-ca")
	if err != nil {
		return nil, "", fmt.Errorf("sshca: %w", err)
	}
	sealed := cfg.Seal.Seal(sealedContext, pem.EncodeToMemory(block))
	var theirs []byte
	err = cfg.DB.Update(func(tx store.Tx) error {
		b := tx.Bucket(sharedBucket)
		v, err := b.Get([]byte(sharedKey))
		if err != nil || v != nil {
			theirs = bytes.Clone(v)
			return err
		}
		theirs = nil
		return b.Put([]byte(sharedKey), sealed)
	})
	if err != nil {
		return nil, "", fmt.Errorf("sshca: store the CA key: %w", err)
	}
	if theirs != nil {
		priv, err := unseal(cfg.Seal, theirs)
		return caOf(priv, cfg.ServerName, FromStore, err)
	}
	return caOf(mine, cfg.ServerName, origin, nil)
}

// sharedKeyOf is the key in the store, or nil if there is none.
func sharedKeyOf(cfg SharedConfig) (ed25519.PrivateKey, error) {
	var v []byte
	err := cfg.DB.View(func(tx store.Tx) error {
		b, err := tx.Bucket(sharedBucket).Get([]byte(sharedKey))
		v = bytes.Clone(b) // nil stays nil
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("sshca: read the CA key: %w", err)
	}
	if v == nil {
		return nil, nil
	}
	return unseal(cfg.Seal, v)
}

// unseal unseals and parses a stored key.
func unseal(k *seal.Key, v []byte) (ed25519.PrivateKey, error) {
	data, err := k.Open(sealedContext, v)
	if errors.Is(err, seal.ErrWrongKey) {
		return nil, fmt.Errorf("sshca: the cluster's CA key was sealed with another sealing key than this instance's (%w): "+
			"every instance needs the same key file", err)
	}
	if err != nil {
		return nil, fmt.Errorf("sshca: the cluster's CA key: %w", err)
	}
	raw, err := ssh.ParseRawPrivateKey(data)
	if err != nil {
		return nil, fmt.Errorf("sshca: the cluster's CA key does not parse: %w", err)
	}
	priv, ok := raw.(*ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("sshca: the cluster's CA key is a %T, not ed25519", raw)
	}
	return *priv, nil
}

// candidate is the key this instance offers: dir's key file, or a new one.
func candidate(dir string) (ed25519.PrivateKey, Origin, error) {
	if dir != "" {
		priv, err := load(filepath.Join(dir, KeyFile))
		if err == nil {
			return priv, Imported, nil
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return nil, "", err
		}
	}
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, "", fmt.Errorf("sshca: %w", err)
	}
	return priv, Created, nil
}

func caOf(priv ed25519.PrivateKey, serverName string, origin Origin, err error) (*CA, Origin, error) {
	if err != nil {
		return nil, "", err
	}
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		return nil, "", fmt.Errorf("sshca: %w", err)
	}
	return &CA{signer: signer, comment: "bastiond-ca@" + serverName}, origin, nil
}
