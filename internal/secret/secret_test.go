package secret

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestRead(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "secret")
	os.WriteFile(p, []byte("s3cret\n"), 0o600)
	if b, err := Read(p); err != nil || string(b) != "s3cret\n" {
		t.Fatalf("%q %v", b, err)
	}
	for _, mode := range []os.FileMode{0o640, 0o604} {
		os.Chmod(p, mode)
		if _, err := Read(p); err == nil || !strings.Contains(err.Error(), "chmod 600") {
			t.Errorf("mode %o: %v", mode, err)
		}
	}
	if _, err := Read(filepath.Join(dir, "none")); !os.IsNotExist(err) {
		t.Errorf("missing file: %v", err)
	}
	t.Setenv("CREDENTIALS_DIRECTORY", dir)
	os.WriteFile(filepath.Join(dir, "db"), []byte("from-systemd"), 0o644) // systemd sets the credential's mode
	if b, err := Read("credential:db"); err != nil || string(b) != "from-systemd" {
		t.Errorf("credential: %q %v", b, err)
	}
	for _, bad := range []string{"credential:", "credential:../secret"} {
		if _, err := Read(bad); err == nil {
			t.Errorf("%s read", bad)
		}
	}
	t.Setenv("CREDENTIALS_DIRECTORY", "")
	if _, err := Read("credential:db"); err == nil || !strings.Contains(err.Error(), "LoadCredential=db") {
		t.Errorf("no credentials directory: %v", err)
	}
}
