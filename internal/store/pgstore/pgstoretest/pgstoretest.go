// Package pgstoretest gives the tests of the stores built on internal/store
// an empty PostgreSQL state store, so that what they prove on bbolt they
// prove on the cluster's backend too.
package pgstoretest

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/bastiond/bastiond/internal/pgtest"
	"github.com/bastiond/bastiond/internal/statedb"
	"github.com/bastiond/bastiond/internal/store"
	"github.com/bastiond/bastiond/internal/store/pgstore"
)

// Open starts a throwaway PostgreSQL server for t (internal/pgtest: it
// skips t where none can run) and returns a store on an empty database of
// it, over TLS to 127.0.0.1; everything is closed and removed when t ends.
func Open(t testing.TB) store.DB {
	t.Helper()
	s := pgtest.Start(t)
	return On(t, s, "127.0.0.1", s.NewDatabase(t))
}

// On opens database db of s over host, as an instance of a cluster would:
// two calls on one database are two instances.
func On(t testing.TB, s *pgtest.Server, host, db string) store.DB {
	t.Helper()
	dsn := filepath.Join(t.TempDir(), "db.dsn")
	if err := os.WriteFile(dsn, []byte(s.DSN(host, db)), 0o600); err != nil {
		t.Fatal(err)
	}
	h, err := pgstore.Open(context.Background(), pgstore.Config{DSNFile: dsn, CAFile: s.CAFile})
	if err != nil {
		t.Fatalf("open %s on %s: %v", db, host, err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}

// Backend is a backend of store.DB a test runs on.
type Backend struct {
	Name string
	// Open opens an empty store for t, closed when t ends.
	Open func(t testing.TB) store.DB
}

// Backends are bbolt and PostgreSQL: what the stores built on
// internal/store prove on one, they prove on the other.
var Backends = []Backend{
	{"bbolt", func(t testing.TB) store.DB {
		h, err := statedb.Open(filepath.Join(t.TempDir(), "state.db"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { h.Close() })
		return h
	}},
	{"postgres", Open},
}

// Conflicts sums the conflicts (transactions rolled back and run again) of
// the PostgreSQL stores among dbs; other backends have none.
func Conflicts(dbs ...store.DB) uint64 {
	var n uint64
	seen := map[*pgstore.DB]bool{}
	for _, db := range dbs {
		if p, ok := db.(*pgstore.DB); ok && !seen[p] {
			seen[p] = true
			n += p.Stats().Conflicts
		}
	}
	return n
}

// ReportConflicts runs op, a benchmark's timed loop over dbs, and reports
// the conflicts it caused per operation ("conflicts/op"): where a
// PostgreSQL store's latency tail comes from.
func ReportConflicts(b *testing.B, op func(), dbs ...store.DB) {
	b.Helper()
	before := Conflicts(dbs...)
	op()
	b.ReportMetric(float64(Conflicts(dbs...)-before)/float64(b.N), "conflicts/op")
}

// Cluster is a store the instances of a cluster share in a test.
type Cluster struct {
	Name string
	// Open returns two instances' handles on one empty store, closed when
	// t ends.
	Open func(t testing.TB) (store.DB, store.DB)
}

// Clusters are bbolt (one handle for both instances: one file, what a
// single host has) and PostgreSQL (a connection pool per instance, as two
// processes have, one over 127.0.0.1 and one over ::1, on one database).
var Clusters = []Cluster{
	{"bbolt", func(t testing.TB) (store.DB, store.DB) { db := Backends[0].Open(t); return db, db }},
	{"postgres", func(t testing.TB) (store.DB, store.DB) {
		s := pgtest.Start(t)
		db := s.NewDatabase(t)
		return On(t, s, "127.0.0.1", db), On(t, s, "::1", db)
	}},
}
