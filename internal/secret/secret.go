// Package secret reads a secret the configuration names: a file only its
// owner may read, or a systemd credential (credential:NAME, the file
// $CREDENTIALS_DIRECTORY/NAME that LoadCredential= or
// LoadCredentialEncrypted= in the unit provides).
package secret

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// CredentialPrefix introduces a systemd credential's name.
const CredentialPrefix = "credential:"

// Read returns the contents of the secret at path (a file, or
// credential:NAME). A file that its group or others may read is refused:
// the error says how to mend it.
func Read(path string) ([]byte, error) {
	if name, ok := strings.CutPrefix(path, CredentialPrefix); ok {
		dir := os.Getenv("CREDENTIALS_DIRECTORY")
		if dir == "" {
			return nil, fmt.Errorf("%s: no systemd credentials here ($CREDENTIALS_DIRECTORY is not set: give the unit LoadCredential=%s:/path/to/file)", path, name)
		}
		if name == "" || strings.ContainsRune(name, '/') {
			return nil, fmt.Errorf("%s: a credential's name is not empty and has no /", path)
		}
		return os.ReadFile(filepath.Join(dir, name))
	}
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("%s has mode %s: a secret must be readable by its owner only (chmod 600)", path, fi.Mode().Perm())
	}
	return os.ReadFile(path)
}
