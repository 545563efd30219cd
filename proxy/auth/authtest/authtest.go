// Package authtest gives tests an Authenticator over a fresh account
// store (a bbolt file in the test's temporary directory), or over a
// store.DB that several share (the instances of a cluster).
package authtest

import (
	"errors"
	"path/filepath"
	"testing"

	"go.uber.org/zap"

	"github.com/bastiond/bastiond/internal/statedb"
	"github.com/bastiond/bastiond/internal/store"
	"github.com/bastiond/bastiond/proxy/auth"
)

// Authenticator signs in users, each with password, from a new store that
// is closed when the test ends.
func Authenticator(t testing.TB, log *zap.Logger, password string, users ...string) *auth.Authenticator {
	t.Helper()
	db, err := statedb.Open(filepath.Join(t.TempDir(), "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	store, err := auth.NewStore(db)
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range users {
		if err := store.AddUser(u, password, nil); err != nil {
			t.Fatal(err)
		}
	}
	a, err := auth.NewAuthenticator(auth.AuthenticatorConfig{Store: store, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// Shared signs in users, each with password, from the accounts in db,
// counting failures in db (auth.AuthenticatorConfig.SharedThrottle): one
// instance of a cluster on db. The users are added unless they exist.
func Shared(t testing.TB, db store.DB, log *zap.Logger, password string, users ...string) *auth.Authenticator {
	t.Helper()
	s, err := auth.NewStore(db)
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range users {
		if err := s.AddUser(u, password, nil); err != nil && !errors.Is(err, auth.ErrUserExists) {
			t.Fatal(err)
		}
	}
	a, err := auth.NewAuthenticator(auth.AuthenticatorConfig{Store: s, Logger: log, SharedThrottle: true})
	if err != nil {
		t.Fatal(err)
	}
	return a
}
