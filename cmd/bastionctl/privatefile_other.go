//go:build !windows

package main

import "os"

// createPrivate creates (or truncates) the file at path so that only its
// owner can read it: mode 0600.
func createPrivate(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, err
	}
	// A file that existed keeps its mode through O_CREATE: set it.
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}
