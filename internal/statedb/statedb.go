// Package statedb is the daemon's state database on one host (users,
// tokens, pinned host keys: one bbolt file), the default backend of
// internal/store, behind a handle that can be let go of and taken back. bbolt locks its file for one process at a time, and during a binary
// upgrade the store has to pass from the old process to the new one while
// the old one still serves its live sessions: the old process releases it,
// the new one opens it, and if the new one fails to start, the old one
// takes it back. Stores hold the Handle, never the *bbolt.DB inside it.
package statedb

import (
	"bytes"
	"errors"
	"fmt"
	"sync"
	"time"

	"go.etcd.io/bbolt"

	"github.com/bastiond/bastiond/internal/store"
)

// ErrReleased is what a transaction gets while the store is released,
// that is handed over to another process.
var ErrReleased = store.ErrReleased

// Handle is the state database of one process.
type Handle struct {
	path string

	mu sync.RWMutex // held to read by transactions, to write by Release and Reopen
	db *bbolt.DB    // nil while released or closed
}

// Open opens the database at path, waiting up to two seconds for a process
// that holds it.
func Open(path string) (*Handle, error) {
	h := &Handle{path: path}
	if err := h.open(); err != nil {
		return nil, err
	}
	return h, nil
}

func (h *Handle) open() error {
	db, err := bbolt.Open(h.path, 0o600, &bbolt.Options{Timeout: 2 * time.Second})
	if errors.Is(err, bbolt.ErrTimeout) {
		return fmt.Errorf("state store %s is held by another bastiond", h.path)
	}
	if err != nil {
		return fmt.Errorf("state store %s: %w", h.path, err)
	}
	h.db = db
	return nil
}

// Path is the database file.
func (h *Handle) Path() string { return h.path }

// View runs fn in a read-only transaction.
func (h *Handle) View(fn func(store.Tx) error) error {
	h.mu.RLock()
	defer h.mu.RUnlock()
	if h.db == nil {
		return ErrReleased
	}
	return h.db.View(func(tx *bbolt.Tx) error { return fn(boltTx{tx}) })
}

// Update runs fn in a read-write transaction, committed and synced when fn
// returns nil. bbolt has one writer at a time: fn runs once.
func (h *Handle) Update(fn func(store.Tx) error) error {
	h.mu.RLock()
	defer h.mu.RUnlock()
	if h.db == nil {
		return ErrReleased
	}
	return h.db.Update(func(tx *bbolt.Tx) error { return fn(boltTx{tx}) })
}

// Bolt is the database itself, for a caller that needs it at start-up
// (before anything can release it); nil while released.
func (h *Handle) Bolt() *bbolt.DB {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return h.db
}

// Release waits for the transactions under way, then closes the file and
// lets go of its lock, for another process to open it. Transactions fail
// with ErrReleased until Reopen.
func (h *Handle) Release() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.db == nil {
		return nil
	}
	err := h.db.Close()
	h.db = nil
	return err
}

// Reopen takes the database back after Release.
func (h *Handle) Reopen() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.db != nil {
		return nil
	}
	return h.open()
}

// Close closes the database for good (Release, without coming back).
func (h *Handle) Close() error { return h.Release() }

// boltTx is a bbolt transaction as a store.Tx: a bucket is created the
// first time a read-write transaction asks for it.
type boltTx struct{ tx *bbolt.Tx }

func (t boltTx) Bucket(name string) store.Bucket {
	if !t.tx.Writable() {
		return boltBucket{b: t.tx.Bucket([]byte(name))}
	}
	b, err := t.tx.CreateBucketIfNotExists([]byte(name))
	return boltBucket{b: b, writable: true, err: err}
}

// boltBucket is a bbolt bucket; b is nil for a bucket that does not exist
// in a read-only transaction (it reads as empty).
type boltBucket struct {
	b        *bbolt.Bucket
	writable bool
	err      error // creating the bucket failed
}

func (b boltBucket) Get(key []byte) ([]byte, error) {
	if b.err != nil || b.b == nil {
		return nil, b.err
	}
	if err := store.CheckKey(key); err != nil {
		return nil, err
	}
	v := b.b.Get(key)
	if v == nil {
		return nil, nil
	}
	return v, nil
}

func (b boltBucket) Put(key, value []byte) error {
	switch {
	case !b.writable:
		return store.ErrReadOnly
	case b.err != nil:
		return b.err
	}
	if err := store.CheckKey(key); err != nil {
		return err
	}
	if value == nil {
		value = []byte{} // bbolt stores nil as empty
	}
	return b.b.Put(key, value)
}

func (b boltBucket) Delete(key []byte) error {
	switch {
	case !b.writable:
		return store.ErrReadOnly
	case b.err != nil:
		return b.err
	}
	if err := store.CheckKey(key); err != nil {
		return err
	}
	return b.b.Delete(key)
}

func (b boltBucket) ForEach(prefix []byte, fn func(k, v []byte) error) error {
	if b.err != nil || b.b == nil {
		return b.err
	}
	c := b.b.Cursor()
	for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
		if v == nil {
			continue // a nested bucket: the store makes none
		}
		if err := fn(k, v); err != nil {
			return err
		}
	}
	return nil
}
