package registry

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/bastiond/bastiond/api/admin"
	"github.com/bastiond/bastiond/internal/store"
)

// TestInstanceNameInUse: a second bastion configured with a running
// instance's name is refused at start (CheckName) with who holds it, and
// if both run anyway each is told (Config.Conflict); an upgrade's
// successor (same lineage) and a restart after a crash (a heartbeat no
// longer written) are not refused. On bbolt and PostgreSQL.
func TestInstanceNameInUse(t *testing.T) {
	for _, cs := range clusterStores {
		t.Run(cs.Name, func(t *testing.T) {
			dbA, dbB := cs.Open(t)
			var mu sync.Mutex
			conflicts := map[string][]Heartbeat{} // lineage -> what it was told
			open := func(db store.DB, lineage string, pid int) *Registry {
				t.Helper()
				r, err := New(Config{DB: db, Instance: "a", Logger: zap.NewNop(), Beat: 100 * time.Millisecond, Dead: 300 * time.Millisecond,
					Poll: 20 * time.Millisecond, Version: "test", PID: pid, Lineage: lineage,
					Conflict: func(o Heartbeat) {
						mu.Lock()
						defer mu.Unlock()
						conflicts[lineage] = append(conflicts[lineage], o)
					}})
				if err != nil {
					t.Fatal(err)
				}
				return r
			}
			run := func(r *Registry) (stop func()) {
				ctx, cancel := context.WithCancel(context.Background())
				done := make(chan struct{})
				go func() {
					r.Run(ctx, newHandler("a", r, map[string][]string{}, nil))
					close(done)
				}()
				return func() { cancel(); <-done }
			}
			check := func(r *Registry) error {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				return r.CheckName(ctx)
			}

			first := open(dbA, "line-1", 101)
			if err := check(first); err != nil {
				t.Fatalf("the first of its name: %v", err)
			}
			stopFirst := run(first)
			defer stopFirst()
			waitFor(t, "the first heartbeat", func() bool { hb, _ := first.ownHeartbeat(); return hb != nil })

			var inUse *NameInUseError
			if err := check(open(dbB, "line-2", 202)); !errors.As(err, &inUse) || inUse.Other.PID != 101 || inUse.Other.Lineage != "line-1" {
				t.Fatalf("another bastion under the running instance's name: %v, want a NameInUseError naming pid 101", err)
			}
			if err := check(open(dbB, "line-1", 303)); err != nil {
				t.Fatalf("an upgrade's successor (same lineage): %v", err)
			}

			// Both run anyway (they started at once): each is told.
			stopSecond := run(open(dbB, "line-2", 202))
			waitFor(t, "both told of the other", func() bool {
				mu.Lock()
				defer mu.Unlock()
				return len(conflicts["line-1"]) > 0 && len(conflicts["line-2"]) > 0
			})
			stopSecond()
			mu.Lock()
			if o := conflicts["line-1"][0]; o.PID != 202 || o.Lineage != "line-2" {
				t.Errorf("the first was told of %+v, want pid 202", o)
			}
			mu.Unlock()
			stopFirst()

			// A crash: the heartbeat stays, written no more. The next
			// start, of another lineage, waits and goes on.
			crashed := open(dbA, "line-3", 404)
			if err := crashed.heartbeat(time.Now(), admin.Load{}); err != nil {
				t.Fatal(err)
			}
			if err := check(open(dbB, "line-4", 505)); err != nil {
				t.Fatalf("a start after a crash: %v", err)
			}
		})
	}
}

// waitFor polls cond for up to 10 s; a bound on a loop, not a timing
// assertion.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting for %s", what)
		}
	}
}
