package sshca

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"golang.org/x/crypto/ssh"

	"github.com/bastiond/bastiond/internal/seal"
	"github.com/bastiond/bastiond/internal/statedb"
	"github.com/bastiond/bastiond/internal/store"
)

func sharedDB(t *testing.T) store.DB {
	t.Helper()
	db, err := statedb.Open(filepath.Join(t.TempDir(), "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func sealKey(t *testing.T, b byte) *seal.Key {
	t.Helper()
	k, err := seal.NewKey(bytes.Repeat([]byte{b}, seal.KeySize))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestSharedCAIsOneKeyForEveryInstance(t *testing.T) {
	db, key := sharedDB(t), sealKey(t, 1)
	cfg := SharedConfig{DB: db, Seal: key, ServerName: "bastion.lab.example"}
	// Instances starting at once agree on one key.
	const n = 6
	lines := make([]string, n)
	origins := make([]Origin, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			ca, origin, err := OpenShared(cfg)
			if err != nil {
				t.Error(err)
				return
			}
			lines[i], origins[i] = ca.PublicKey(), origin
		})
	}
	wg.Wait()
	created := 0
	for i := range n {
		if lines[i] != lines[0] {
			t.Fatalf("instance %d has CA %q, instance 0 %q", i, lines[i], lines[0])
		}
		if origins[i] == Created {
			created++
		}
	}
	if created != 1 {
		t.Errorf("%d instances say they created the key (%v), want 1", created, origins)
	}
	// The store holds it sealed, not the private key in clear.
	db.View(func(tx store.Tx) error {
		v, _ := tx.Bucket(sharedBucket).Get([]byte(sharedKey))
		if v == nil || bytes.Contains(v, []byte("PRIVATE KEY")) || bytes.Contains(v, []byte("openssh-key-v1")) {
			t.Errorf("the stored CA key is missing or in clear: %q", v)
		}
		return nil
	})
	ca, origin, err := OpenShared(cfg)
	if err != nil || origin != FromStore || ca.PublicKey() != lines[0] {
		t.Fatalf("reopened: %v, %s, %v", ca, origin, err)
	}
	// A certificate signed by one instance is the CA's.
	signer, err := ca.Sign("lab", "bastiond:alice:1", 0)
	if err != nil {
		t.Fatal(err)
	}
	if cert := certOf(t, signer); !bytes.Equal(cert.SignatureKey.Marshal(), ca.signer.PublicKey().Marshal()) {
		t.Error("the certificate is not signed by the shared CA")
	}
}

func TestSharedCAImportsTheSingleHostKey(t *testing.T) {
	dir := t.TempDir()
	single := open(t, dir).PublicKey()
	db := sharedDB(t)
	ca, origin, err := OpenShared(SharedConfig{DB: db, Seal: sealKey(t, 1), ServerName: "bastion.lab.example", ImportDir: dir})
	if err != nil || origin != Imported || ca.PublicKey() != single {
		t.Fatalf("imported: origin %s, key %q, %v; want the single host's %q", origin, ca.PublicKey(), err, single)
	}
	// Another instance with another local key gets the cluster's.
	other := t.TempDir()
	open(t, other)
	ca, origin, err = OpenShared(SharedConfig{DB: db, Seal: sealKey(t, 1), ServerName: "bastion.lab.example", ImportDir: other})
	if err != nil || origin != FromStore || ca.PublicKey() != single {
		t.Fatalf("second instance: origin %s, %v; want the cluster's key", origin, err)
	}
}

func TestSharedCARefuses(t *testing.T) {
	db := sharedDB(t)
	if _, _, err := OpenShared(SharedConfig{DB: db, Seal: sealKey(t, 1), ServerName: "b"}); err != nil {
		t.Fatal(err)
	}
	_, _, err := OpenShared(SharedConfig{DB: db, Seal: sealKey(t, 2), ServerName: "b"})
	if !errors.Is(err, seal.ErrWrongKey) || !strings.Contains(err.Error(), "every instance needs the same key file") {
		t.Errorf("another sealing key: %v", err)
	}
	// A key file others may read is not imported.
	dir := t.TempDir()
	open(t, dir)
	chmod(t, filepath.Join(dir, KeyFile), 0o644)
	_, _, err = OpenShared(SharedConfig{DB: sharedDB(t), Seal: sealKey(t, 1), ServerName: "b", ImportDir: dir})
	if err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Errorf("a readable key file to import: %v", err)
	}
	if _, _, err := OpenShared(SharedConfig{DB: db, ServerName: "b"}); err == nil {
		t.Error("no sealing key: no error")
	}
}

func certOf(t *testing.T, s ssh.Signer) *ssh.Certificate {
	t.Helper()
	cert, ok := s.PublicKey().(*ssh.Certificate)
	if !ok {
		t.Fatalf("the signer's key is a %T, not a certificate", s.PublicKey())
	}
	return cert
}

func chmod(t *testing.T, path string, mode os.FileMode) {
	t.Helper()
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
}
