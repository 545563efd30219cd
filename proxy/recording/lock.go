package recording

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// A recording being written is locked: its writer holds an exclusive
// flock(2) on the file from its creation to its close, and retention (of
// this process, another process of this host, or another instance sharing
// the directory) never removes a file it cannot lock. The lock goes with the
// writer: a crash releases it, so a recording a crash cut short is no longer
// "being written". On a network filesystem the lock must reach the other
// hosts: NFSv4 (and v3 with lockd) turn flock into the server's byte-range
// locks, which Linux clients do since 2.6.12; CephFS keeps flock locks
// cluster-wide. A filesystem without locks fails Create and CheckDir.

// lockWriting takes f's writer lock, at once or not at all.
func lockWriting(f *os.File) error {
	return flock(f, unix.LOCK_EX|unix.LOCK_NB)
}

func flock(f *os.File, how int) error {
	sc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var ferr error
	if err := sc.Control(func(fd uintptr) {
		for {
			ferr = unix.Flock(int(fd), how)
			if ferr != unix.EINTR {
				return
			}
		}
	}); err != nil {
		return err
	}
	if ferr != nil {
		return &fs.PathError{Op: "flock", Path: f.Name(), Err: ferr}
	}
	return nil
}

// beingWritten reports whether a writer, in any process that shares the
// file's filesystem, holds the lock of the recording at path.
func beingWritten(path string) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	// A shared lock: what a read-only descriptor may take on NFS, and
	// what the writer's exclusive one refuses.
	return errors.Is(flock(f, unix.LOCK_SH|unix.LOCK_NB), unix.EWOULDBLOCK)
}

// CheckDir checks that dir can receive recordings: it exists, is a
// directory, and this process can create a file there, lock it and remove
// it. A recorded role's sessions are refused when their recording cannot be
// written, so the daemon checks its directory at start, and refuses to start
// without one.
func CheckDir(dir string) error {
	fi, err := os.Stat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("recording: %s does not exist (a shared directory must be mounted before bastiond starts)", dir)
	case err != nil:
		return fmt.Errorf("recording: %w", err)
	case !fi.IsDir():
		return fmt.Errorf("recording: %s is not a directory", dir)
	}
	f, err := os.CreateTemp(dir, ".bastiond-check-*")
	if err != nil {
		return fmt.Errorf("recording: %s is not writable by this process (uid %d): %w", dir, os.Getuid(), errors.Unwrap(err))
	}
	defer os.Remove(f.Name())
	defer f.Close()
	if err := lockWriting(f); err != nil {
		return fmt.Errorf("recording: %s does not support file locks (flock), which tell instances sharing it which recordings are being written: %w", dir, errors.Unwrap(err))
	}
	if _, err := f.Write([]byte("bastiond\n")); err != nil {
		return fmt.Errorf("recording: cannot write in %s: %w", dir, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("recording: cannot write in %s: %w", dir, err)
	}
	if !beingWritten(f.Name()) {
		return fmt.Errorf("recording: %s: a file lock taken here is not seen by a second open (the filesystem ignores flock)", filepath.Clean(dir))
	}
	return nil
}
