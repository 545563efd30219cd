package statedb

import (
	"errors"
	"path/filepath"
	"testing"

	"github.com/bastiond/bastiond/internal/store"
	"github.com/bastiond/bastiond/internal/store/storetest"
)

// TestStore is the store interface's conformance test on bbolt.
func TestStore(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.DB {
		h, err := Open(filepath.Join(t.TempDir(), "state.db"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { h.Close() })
		return h
	})
}

func TestReleaseHandsTheFileOver(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	a, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	put := func(h *Handle, v string) error {
		return h.Update(func(tx store.Tx) error { return tx.Bucket("b").Put([]byte("k"), []byte(v)) })
	}
	get := func(h *Handle) (v string, err error) {
		err = h.View(func(tx store.Tx) error {
			b, err := tx.Bucket("b").Get([]byte("k"))
			v = string(b)
			return err
		})
		return v, err
	}
	if err := put(a, "old"); err != nil {
		t.Fatal(err)
	}

	// A second opener waits for the lock, then says who holds it.
	if _, err := Open(path); err == nil || err.Error() != "state store "+path+" is held by another bastiond" {
		t.Fatalf("second open while held: %v", err)
	}

	if err := a.Release(); err != nil {
		t.Fatal(err)
	}
	if _, err := get(a); !errors.Is(err, ErrReleased) {
		t.Fatalf("view while released: %v, want ErrReleased", err)
	}
	if err := put(a, "x"); !errors.Is(err, ErrReleased) {
		t.Fatalf("update while released: %v, want ErrReleased", err)
	}
	if a.Bolt() != nil {
		t.Fatal("Bolt() while released is not nil")
	}

	b, err := Open(path)
	if err != nil {
		t.Fatalf("open after release: %v", err)
	}
	if v, err := get(b); err != nil || v != "old" {
		t.Fatalf("new holder reads %q, %v", v, err)
	}
	if err := put(b, "new"); err != nil {
		t.Fatal(err)
	}
	b.Close()

	// The old holder takes it back (the new process failed to start) and
	// sees what the new one wrote.
	if err := a.Reopen(); err != nil {
		t.Fatal(err)
	}
	if v, err := get(a); err != nil || v != "new" {
		t.Fatalf("after reopen: %q, %v", v, err)
	}
}
