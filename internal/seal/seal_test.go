package seal

import (
	"bytes"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func writeKey(t *testing.T, text string, mode os.FileMode) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "seal.key")
	if err := os.WriteFile(path, []byte(text), mode); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestSealOpen(t *testing.T) {
	k, err := Load(writeKey(t, Generate(), 0o600))
	if err != nil {
		t.Fatal(err)
	}
	secret := []byte("-----BEGIN OPENSSH PRIVATE KEY-----")
	v := k.Seal("sshca/ed25519", secret)
	if bytes.Contains(v, secret) || bytes.Contains(v, []byte("OPENSSH")) {
		t.Fatalf("the sealed value shows the secret: %s", v)
	}
	got, err := k.Open("sshca/ed25519", v)
	if err != nil || !bytes.Equal(got, secret) {
		t.Fatalf("Open: %q, %v", got, err)
	}
	if v2 := k.Seal("sshca/ed25519", secret); bytes.Equal(v, v2) {
		t.Fatal("two seals of one value are equal: the nonce is not fresh")
	}
	if _, err := k.Open("other/use", v); err == nil {
		t.Fatal("a value sealed for one use opens for another")
	}
	tampered := bytes.Replace(v, []byte(`"data":"`), []byte(`"data":"A`), 1)
	if _, err := k.Open("sshca/ed25519", tampered); err == nil {
		t.Fatal("an altered value opens")
	}
	other, err := NewKey(bytes.Repeat([]byte{7}, KeySize))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := other.Open("sshca/ed25519", v); !errors.Is(err, ErrWrongKey) || !strings.Contains(err.Error(), k.ID()) {
		t.Fatalf("another key: %v, want ErrWrongKey naming %s", err, k.ID())
	}
}

func TestLoad(t *testing.T) {
	raw := bytes.Repeat([]byte{0xab}, KeySize)
	hexKey, err := Load(writeKey(t, hex.EncodeToString(raw)+"\n", 0o400))
	if err != nil {
		t.Fatalf("a hex key: %v", err)
	}
	b64Key, err := NewKey(raw)
	if err != nil || hexKey.ID() != b64Key.ID() {
		t.Fatalf("one key in hex and raw has two IDs: %s, %s (%v)", hexKey.ID(), b64Key.ID(), err)
	}
	for name, c := range map[string]struct {
		text string
		mode os.FileMode
		want string
	}{
		"readable by others": {Generate(), 0o644, "readable by its owner only"},
		"short":              {"c2hvcnQ=\n", 0o600, "not 32 bytes"},
		"garbage":            {"not a key at all", 0o600, "not 32 bytes"},
	} {
		if _, err := Load(writeKey(t, c.text, c.mode)); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want an error saying %q", name, err, c.want)
		}
	}
	if _, err := Load(filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Error("a missing file loads")
	}
}

func TestLoadCredential(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "bastiond-seal"), []byte(Generate()), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv("CREDENTIALS_DIRECTORY", "")
	if _, err := Load("credential:bastiond-seal"); err == nil || !strings.Contains(err.Error(), "LoadCredential=") {
		t.Fatalf("no credentials directory: %v", err)
	}
	// systemd makes the directory and its files readable by the service
	// only: the mode check is the file system's there.
	t.Setenv("CREDENTIALS_DIRECTORY", dir)
	if _, err := Load("credential:bastiond-seal"); err != nil {
		t.Fatalf("a credential: %v", err)
	}
}
