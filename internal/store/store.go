// Package store is the interface to bastiond's durable state: accounts,
// API tokens, pinned host keys and whatever else must outlive a process or
// be shared by the instances of a cluster. Its model is bbolt's, which the
// state began in: named buckets of keys and values, ordered by key bytes,
// read and written in transactions.
//
// Two backends implement it: internal/statedb (one bbolt file, the
// default: a single host needs nothing else) and a PostgreSQL database,
// which every instance of a cluster shares. The stores built on it (users,
// tokens, host keys...) see no difference but one: a transaction may run
// more than once (below).
package store

import "errors"

// DB is a transactional store of buckets.
type DB interface {
	// View runs fn in a read-only transaction: fn sees one consistent
	// snapshot, and a Put or Delete fails with ErrReadOnly.
	View(fn func(Tx) error) error
	// Update runs fn in a read-write transaction, committed (and durable)
	// when fn returns nil, rolled back when it returns an error, which
	// Update returns. Transactions are serializable: their effect is that
	// of running them one at a time. A backend that detects a conflict with
	// a concurrent transaction rolls back and runs fn again, so fn must have
	// no effect outside tx except setting variables it sets on every run.
	Update(fn func(Tx) error) error
}

// Tx is one transaction.
type Tx interface {
	// Bucket is the bucket called name, empty until something is put in
	// it; buckets need no creating.
	Bucket(name string) Bucket
}

// Bucket is a set of keys, each with a value, in key order (bytewise).
// Keys are 1 to 4096 bytes; values may be empty.
type Bucket interface {
	// Get returns the value of key, or nil (and no error) when there is
	// none. The value is valid until the transaction ends.
	Get(key []byte) ([]byte, error)
	// Put sets the value of key.
	Put(key, value []byte) error
	// Delete removes key; removing a key that does not exist is no error.
	Delete(key []byte) error
	// ForEach calls fn for each key with prefix (all of them for an empty
	// prefix), in key order, stopping at fn's first error, which it
	// returns. fn must not change the bucket.
	ForEach(prefix []byte, fn func(k, v []byte) error) error
}

var (
	// ErrReadOnly is what Put and Delete return in a View transaction.
	ErrReadOnly = errors.New("store: write in a read-only transaction")
	// ErrReleased is what a transaction gets while this process has
	// handed the store over to another one (a binary upgrade).
	ErrReleased = errors.New("state store handed over to the new bastiond process")
	// ErrUnavailable wraps the failures of a store that cannot be reached
	// (a database down or unreachable): nothing was changed, and the same
	// call may succeed later.
	ErrUnavailable = errors.New("state store unavailable")
	// ErrKey is what a key outside 1 to 4096 bytes gets.
	ErrKey = errors.New("store: a key is 1 to 4096 bytes")
)

// MaxKey is the longest key, in bytes.
const MaxKey = 4096

// CheckKey returns ErrKey for a key that is empty or longer than MaxKey.
func CheckKey(key []byte) error {
	if len(key) == 0 || len(key) > MaxKey {
		return ErrKey
	}
	return nil
}

// Taker is a store that takes a key by itself: reads and removes it in one
// atomic statement, outside any transaction (PostgreSQL's DELETE ...
// RETURNING), so that concurrent takes of other keys never conflict with it.
type Taker interface {
	Take(bucket string, key []byte) ([]byte, error)
}

// Take reads key's value in bucket and removes the key, atomically: of the
// takes of one key racing, on any instance, one gets the value and the
// others nil. nil and no error: there was no such key.
func Take(db DB, bucket string, key []byte) ([]byte, error) {
	if t, ok := db.(Taker); ok {
		return t.Take(bucket, key)
	}
	var v []byte
	err := db.Update(func(tx Tx) error {
		v = nil
		b := tx.Bucket(bucket)
		got, err := b.Get(key)
		if err != nil || got == nil {
			return err
		}
		v = append([]byte{}, got...)
		return b.Delete(key)
	})
	return v, err
}

// Getter is a store that reads one key by itself, in one statement outside
// any transaction (PostgreSQL: one round trip instead of a transaction's
// two or three). A single key's value is atomic on its own; reading two
// keys as of one moment still needs a View.
type Getter interface {
	Get(bucket string, key []byte) ([]byte, error)
}

// Get returns key's value in bucket as of now, or nil (and no error) when
// there is none: the backend's own Getter, or a View.
func Get(db DB, bucket string, key []byte) ([]byte, error) {
	if g, ok := db.(Getter); ok {
		return g.Get(bucket, key)
	}
	var v []byte
	err := db.View(func(tx Tx) error {
		v = nil
		got, err := tx.Bucket(bucket).Get(key)
		if err != nil || got == nil {
			return err
		}
		v = append([]byte{}, got...)
		return nil
	})
	return v, err
}
