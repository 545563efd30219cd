package pgstore

import (
	"fmt"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/bastiond/bastiond/internal/pgtest"
	"github.com/bastiond/bastiond/internal/statedb"
	"github.com/bastiond/bastiond/internal/store"
)

// BenchmarkGetPut compares the two backends side by side, on the same
// operations: a Put in its own Update, a Get in its own View, and a
// ticket's redemption (Get then Delete in one Update), one at a time and
// from parallel goroutines (-cpu sets how many). PostgreSQL is the
// throwaway server of internal/pgtest on loopback, over TLS, with fsync and
// synchronous_commit on, as bbolt syncs every commit.
func BenchmarkGetPut(b *testing.B) {
	s := pgtest.Start(b, pgtest.Options{Durable: true})
	backends := []struct {
		name string
		open func(b *testing.B) store.DB
	}{
		{"bbolt", func(b *testing.B) store.DB {
			h, err := statedb.Open(filepath.Join(b.TempDir(), "state.db"))
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { h.Close() })
			return h
		}},
		{"postgres", func(b *testing.B) store.DB { return open(b, s, "127.0.0.1", s.NewDatabase(b)) }},
	}
	value := make([]byte, 300) // about a user record
	ops := []struct {
		name string
		op   func(db store.DB, i int64) error
	}{
		{"Put", func(db store.DB, i int64) error {
			return db.Update(func(tx store.Tx) error { return tx.Bucket("users").Put(fmt.Appendf(nil, "user-%d", i%1000), value) })
		}},
		{"Get", func(db store.DB, i int64) error {
			return db.View(func(tx store.Tx) error {
				_, err := tx.Bucket("users").Get(fmt.Appendf(nil, "user-%d", i%1000))
				return err
			})
		}},
		{"Redeem", func(db store.DB, i int64) error {
			key := fmt.Appendf(nil, "ticket-%d", i)
			if err := db.Update(func(tx store.Tx) error { return tx.Bucket("tickets").Put(key, value[:64]) }); err != nil {
				return err
			}
			return db.Update(func(tx store.Tx) error {
				bk := tx.Bucket("tickets")
				if v, err := bk.Get(key); err != nil || v == nil {
					return fmt.Errorf("ticket %d: %q, %v", i, v, err)
				}
				return bk.Delete(key)
			})
		}},
	}
	for _, be := range backends {
		db := be.open(b)
		for i := range int64(1000) {
			if err := ops[0].op(db, i); err != nil {
				b.Fatal(err)
			}
		}
		for _, op := range ops {
			b.Run(op.name+"/"+be.name, func(b *testing.B) {
				var i int64
				for b.Loop() {
					if err := op.op(db, i); err != nil {
						b.Fatal(err)
					}
					i++
				}
			})
			b.Run(op.name+"Parallel/"+be.name, func(b *testing.B) {
				var n atomic.Int64
				n.Store(1 << 40)
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						if err := op.op(db, n.Add(1)); err != nil {
							b.Error(err)
							return
						}
					}
				})
			})
		}
	}
}
