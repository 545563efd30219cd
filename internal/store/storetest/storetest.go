// Package storetest is the conformance test of store.DB: every backend
// runs it, so that the stores built on the interface behave the same on
// bbolt and on PostgreSQL.
package storetest

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/bastiond/bastiond/internal/store"
)

// Run runs the conformance tests, each on a fresh, empty database that
// open returns.
func Run(t *testing.T, open func(t *testing.T) store.DB) {
	tests := []struct {
		name string
		f    func(*testing.T, store.DB)
	}{
		{"GetPutDelete", testGetPutDelete},
		{"Order", testOrder},
		{"Prefix", testPrefix},
		{"BucketsApart", testBucketsApart},
		{"Rollback", testRollback},
		{"ReadOnlyView", testReadOnlyView},
		{"ReadYourWrites", testReadYourWrites},
		{"Keys", testKeys},
		{"ForEachStops", testForEachStops},
		{"Serializable", testSerializable},
		{"OnceOnly", testOnceOnly},
		{"Take", testTake},
		{"Get", testGet},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.f(t, open(t)) })
	}
}

func get(t *testing.T, db store.DB, bucket, key string) []byte {
	t.Helper()
	var v []byte
	err := db.View(func(tx store.Tx) error {
		b, err := tx.Bucket(bucket).Get([]byte(key))
		v = bytes.Clone(b)
		return err
	})
	if err != nil {
		t.Fatalf("get %s/%s: %v", bucket, key, err)
	}
	return v
}

func put(t *testing.T, db store.DB, bucket, key, value string) {
	t.Helper()
	if err := db.Update(func(tx store.Tx) error { return tx.Bucket(bucket).Put([]byte(key), []byte(value)) }); err != nil {
		t.Fatalf("put %s/%s: %v", bucket, key, err)
	}
}

func keys(t *testing.T, db store.DB, bucket, prefix string) []string {
	t.Helper()
	var ks []string
	err := db.View(func(tx store.Tx) error {
		return tx.Bucket(bucket).ForEach([]byte(prefix), func(k, v []byte) error {
			ks = append(ks, string(k)+"="+string(v))
			return nil
		})
	})
	if err != nil {
		t.Fatalf("keys of %s/%s: %v", bucket, prefix, err)
	}
	return ks
}

func testGetPutDelete(t *testing.T, db store.DB) {
	if v := get(t, db, "users", "alice"); v != nil {
		t.Fatalf("a key never put: %q, want nil", v)
	}
	put(t, db, "users", "alice", "one")
	put(t, db, "users", "alice", "two")
	if v := get(t, db, "users", "alice"); string(v) != "two" {
		t.Fatalf("got %q, want the last value put", v)
	}
	put(t, db, "users", "empty", "")
	if v := get(t, db, "users", "empty"); v == nil || len(v) != 0 {
		t.Fatalf("an empty value reads back as %q (nil: %v), want empty and not nil", v, v == nil)
	}
	err := db.Update(func(tx store.Tx) error {
		b := tx.Bucket("users")
		if err := b.Delete([]byte("alice")); err != nil {
			return err
		}
		return b.Delete([]byte("nobody"))
	})
	if err != nil {
		t.Fatalf("delete: %v", err)
	}
	if v := get(t, db, "users", "alice"); v != nil {
		t.Fatalf("a deleted key reads %q", v)
	}
}

func testOrder(t *testing.T, db store.DB) {
	// Bytewise order, whatever the encoding: 0x00 and 0xff, a prefix
	// before its extensions, upper case before lower.
	in := []string{"b", "a\xff", "a", "\x00", "a\x00", "B", "ab", "\xff\xfe"}
	err := db.Update(func(tx store.Tx) error {
		for _, k := range in {
			if err := tx.Bucket("o").Put([]byte(k), []byte{1}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"\x00=\x01", "B=\x01", "a=\x01", "a\x00=\x01", "ab=\x01", "a\xff=\x01", "b=\x01", "\xff\xfe=\x01"}
	if got := keys(t, db, "o", ""); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("order %q, want %q", got, want)
	}
}

func testPrefix(t *testing.T, db store.DB) {
	for _, k := range []string{"vm1/ssh/a", "vm1/ssh/b", "vm1/rdp/a", "vm10/ssh/a", "vm2/ssh/a", "vm1", "vm1/\xff"} {
		put(t, db, "host_keys", k, "x")
	}
	want := []string{"vm1/rdp/a=x", "vm1/ssh/a=x", "vm1/ssh/b=x", "vm1/\xff=x"}
	if got := keys(t, db, "host_keys", "vm1/"); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("prefix vm1/: %q, want %q", got, want)
	}
	// A prefix ending in 0xff has no simple upper bound.
	put(t, db, "p", "\xff\xff", "a")
	put(t, db, "p", "\xff\xff\x00", "b")
	put(t, db, "p", "\xff\xfe", "c")
	if got := keys(t, db, "p", "\xff\xff"); fmt.Sprint(got) != fmt.Sprint([]string{"\xff\xff=a", "\xff\xff\x00=b"}) {
		t.Fatalf("prefix ff ff: %q", got)
	}
	if got := keys(t, db, "host_keys", "nothing"); len(got) != 0 {
		t.Fatalf("a prefix no key has: %q", got)
	}
}

func testBucketsApart(t *testing.T, db store.DB) {
	put(t, db, "users", "k", "user")
	put(t, db, "tokens", "k", "token")
	if v := get(t, db, "users", "k"); string(v) != "user" {
		t.Fatalf("users/k = %q", v)
	}
	if got := keys(t, db, "never", ""); len(got) != 0 {
		t.Fatalf("a bucket nothing was put in lists %q", got)
	}
	// A bucket whose name is another's prefix is still another bucket.
	put(t, db, "user", "k", "prefix")
	if got := keys(t, db, "users", ""); fmt.Sprint(got) != "[k=user]" {
		t.Fatalf("users: %q", got)
	}
}

func testRollback(t *testing.T, db store.DB) {
	put(t, db, "b", "kept", "old")
	boom := errors.New("boom")
	err := db.Update(func(tx store.Tx) error {
		b := tx.Bucket("b")
		if err := b.Put([]byte("kept"), []byte("new")); err != nil {
			return err
		}
		if err := b.Put([]byte("added"), []byte("x")); err != nil {
			return err
		}
		if err := b.Delete([]byte("kept")); err != nil {
			return err
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("Update returned %v, want fn's error", err)
	}
	if got := keys(t, db, "b", ""); fmt.Sprint(got) != "[kept=old]" {
		t.Fatalf("after a rolled-back transaction: %q, want [kept=old]", got)
	}
}

func testReadOnlyView(t *testing.T, db store.DB) {
	err := db.View(func(tx store.Tx) error {
		if err := tx.Bucket("b").Put([]byte("k"), []byte("v")); !errors.Is(err, store.ErrReadOnly) {
			return fmt.Errorf("Put in View: %v, want ErrReadOnly", err)
		}
		if err := tx.Bucket("b").Delete([]byte("k")); !errors.Is(err, store.ErrReadOnly) {
			return fmt.Errorf("Delete in View: %v, want ErrReadOnly", err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if v := get(t, db, "b", "k"); v != nil {
		t.Fatalf("a View wrote %q", v)
	}
}

func testReadYourWrites(t *testing.T, db store.DB) {
	err := db.Update(func(tx store.Tx) error {
		b := tx.Bucket("b")
		if err := b.Put([]byte("k1"), []byte("v1")); err != nil {
			return err
		}
		if v, err := b.Get([]byte("k1")); err != nil || string(v) != "v1" {
			return fmt.Errorf("own write reads %q, %v", v, err)
		}
		n := 0
		if err := b.ForEach(nil, func(k, v []byte) error { n++; return nil }); err != nil || n != 1 {
			return fmt.Errorf("ForEach after own write: %d keys, %v", n, err)
		}
		if err := b.Delete([]byte("k1")); err != nil {
			return err
		}
		if v, err := b.Get([]byte("k1")); err != nil || v != nil {
			return fmt.Errorf("own delete reads %q, %v", v, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func testKeys(t *testing.T, db store.DB) {
	long := bytes.Repeat([]byte{'k'}, store.MaxKey)
	err := db.Update(func(tx store.Tx) error {
		b := tx.Bucket("b")
		if err := b.Put(nil, []byte("v")); !errors.Is(err, store.ErrKey) {
			return fmt.Errorf("empty key: %v, want ErrKey", err)
		}
		if err := b.Put(append(long, 'k'), []byte("v")); !errors.Is(err, store.ErrKey) {
			return fmt.Errorf("key of %d bytes: %v, want ErrKey", store.MaxKey+1, err)
		}
		return b.Put(long, bytes.Repeat([]byte{0}, 1<<20))
	})
	if err != nil {
		t.Fatal(err)
	}
	if v := get(t, db, "b", string(long)); len(v) != 1<<20 {
		t.Fatalf("a 1 MiB value under the longest key reads back as %d bytes", len(v))
	}
}

func testForEachStops(t *testing.T, db store.DB) {
	for _, k := range []string{"a", "b", "c"} {
		put(t, db, "b", k, k)
	}
	stop := errors.New("stop")
	var seen []string
	err := db.View(func(tx store.Tx) error {
		return tx.Bucket("b").ForEach(nil, func(k, v []byte) error {
			seen = append(seen, string(k))
			if string(k) == "b" {
				return stop
			}
			return nil
		})
	})
	if !errors.Is(err, stop) || fmt.Sprint(seen) != "[a b]" {
		t.Fatalf("ForEach returned %v after %q, want fn's error after [a b]", err, seen)
	}
}

// testSerializable has transactions read a counter and write it back plus
// one, at once from many goroutines: under serializable transactions none
// of the increments is lost.
func testSerializable(t *testing.T, db store.DB) {
	const workers, each = 8, 25
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for range workers {
		wg.Go(func() {
			for range each {
				err := db.Update(func(tx store.Tx) error {
					b := tx.Bucket("counters")
					v, err := b.Get([]byte("n"))
					if err != nil {
						return err
					}
					var n uint64
					if v != nil {
						n = binary.BigEndian.Uint64(v)
					}
					return b.Put([]byte("n"), binary.BigEndian.AppendUint64(nil, n+1))
				})
				if err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("an increment failed: %v", err)
	}
	if n := binary.BigEndian.Uint64(get(t, db, "counters", "n")); n != workers*each {
		t.Fatalf("counter %d after %d increments: lost updates", n, workers*each)
	}
}

// testOnceOnly is a ticket's redemption: many transactions at once each
// take a key if it is still there; exactly one gets it.
func testOnceOnly(t *testing.T, db store.DB) {
	const rounds, racers = 20, 6
	for r := range rounds {
		key := []byte(fmt.Sprintf("ticket-%d", r))
		if err := db.Update(func(tx store.Tx) error { return tx.Bucket("tickets").Put(key, []byte("valid")) }); err != nil {
			t.Fatal(err)
		}
		var mu sync.Mutex
		won := 0
		var wg sync.WaitGroup
		for range racers {
			wg.Go(func() {
				var got bool
				err := db.Update(func(tx store.Tx) error {
					got = false
					b := tx.Bucket("tickets")
					v, err := b.Get(key)
					if err != nil || v == nil {
						return err
					}
					got = true
					return b.Delete(key)
				})
				if err != nil {
					t.Errorf("redeem: %v", err)
					return
				}
				if got {
					mu.Lock()
					won++
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		if won != 1 {
			t.Fatalf("round %d: %d of %d concurrent redemptions got the ticket, want exactly 1", r, won, racers)
		}
	}
}

// testTake is store.Take, the backend's own or the transaction it falls
// back to: a missing key gives nil; a taken key is gone; of many takes of
// one key at once, exactly one gets its value.
func testTake(t *testing.T, db store.DB) {
	if v, err := store.Take(db, "tickets", []byte("none")); err != nil || v != nil {
		t.Fatalf("take of a missing key: %q, %v", v, err)
	}
	put(t, db, "tickets", "empty", "")
	if v, err := store.Take(db, "tickets", []byte("empty")); err != nil || v == nil || len(v) != 0 {
		t.Fatalf("take of an empty value: %q (nil: %v), %v", v, v == nil, err)
	}
	if _, err := store.Take(db, "tickets", nil); !errors.Is(err, store.ErrKey) {
		t.Fatalf("take of an empty key: %v, want ErrKey", err)
	}
	for r := range 20 {
		key := fmt.Sprintf("ticket-%d", r)
		put(t, db, "tickets", key, "valid")
		put(t, db, "other", key, "kept")
		var mu sync.Mutex
		won := 0
		var wg sync.WaitGroup
		for range 6 {
			wg.Go(func() {
				v, err := store.Take(db, "tickets", []byte(key))
				if err != nil {
					t.Errorf("take: %v", err)
					return
				}
				if v != nil {
					if string(v) != "valid" {
						t.Errorf("take returned %q", v)
					}
					mu.Lock()
					won++
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		if won != 1 {
			t.Fatalf("round %d: %d of 6 concurrent takes got the key, want exactly 1", r, won)
		}
		if v := get(t, db, "tickets", key); v != nil {
			t.Fatalf("a taken key is still there: %q", v)
		}
		if v := get(t, db, "other", key); string(v) != "kept" {
			t.Fatalf("take removed the key from another bucket: %q", v)
		}
	}
}

// testGet is store.Get, the backend's own or the View it falls back to: a
// missing key gives nil, an empty value a non-nil empty slice, a key of
// another bucket nothing, a bad key ErrKey; and it sees what was
// committed last, the value being the caller's to keep.
func testGet(t *testing.T, db store.DB) {
	if v, err := store.Get(db, "users", []byte("none")); err != nil || v != nil {
		t.Fatalf("get of a missing key: %q, %v", v, err)
	}
	put(t, db, "users", "empty", "")
	if v, err := store.Get(db, "users", []byte("empty")); err != nil || v == nil || len(v) != 0 {
		t.Fatalf("get of an empty value: %q (nil: %v), %v", v, v == nil, err)
	}
	if _, err := store.Get(db, "users", nil); !errors.Is(err, store.ErrKey) {
		t.Fatalf("get of an empty key: %v, want ErrKey", err)
	}
	put(t, db, "other", "alice", "other's")
	put(t, db, "users", "alice", "first")
	v, err := store.Get(db, "users", []byte("alice"))
	if err != nil || string(v) != "first" {
		t.Fatalf("get: %q, %v; want first", v, err)
	}
	put(t, db, "users", "alice", "second")
	if string(v) != "first" {
		t.Fatalf("a value got changed under its reader: %q", v)
	}
	if v, err := store.Get(db, "users", []byte("alice")); err != nil || string(v) != "second" {
		t.Fatalf("get after an update: %q, %v; want second", v, err)
	}
	long := bytes.Repeat([]byte{0xff}, store.MaxKey)
	put(t, db, "users", string(long), "long")
	if v, err := store.Get(db, "users", long); err != nil || string(v) != "long" {
		t.Fatalf("get of a %d-byte key: %q, %v", len(long), v, err)
	}
}
