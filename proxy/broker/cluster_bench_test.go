package broker

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"

	"go.uber.org/zap"

	"github.com/bastiond/bastiond/internal/benchlat"
	"github.com/bastiond/bastiond/internal/store"
	"github.com/bastiond/bastiond/internal/store/pgstore/pgstoretest"
	"github.com/bastiond/bastiond/proxy/registry"
)

// BenchmarkClusterOpenEnd is a whole session's setup and teardown on two
// instances of a cluster, as the broker does it: the dial of the target
// (a listener on loopback), the registry's entry before the first byte,
// the live journal's entry, the start and end records synced to each
// instance's audit file, the entry's removal. 200 users at once, taking
// turns at the instances, on one store: bbolt (one file, as one host
// has) and PostgreSQL with a pool per instance; under each of
// benchlat.Loads. p50 and p99 per session, and the store's conflicts.
func BenchmarkClusterOpenEnd(b *testing.B) {
	const users = 200
	for _, be := range pgstoretest.Clusters {
		b.Run(be.Name, func(b *testing.B) {
			dbA, dbB := be.Open(b)
			srv := listen(b, "tcp6", "[::1]:0")
			go func() {
				for c := range srv.accepted {
					c.Close()
				}
			}()
			cfg := Config{Targets: []Target{targetAt("vm1", srv.addrPort())}, Capacity: 1 << 20, PerUser: 1 << 20}
			brokers := []*Broker{benchInstance(b, dbA, "bastion-a", cfg), benchInstance(b, dbB, "bastion-b", cfg)}
			for _, load := range benchlat.Loads {
				b.Run(load.Name, func(b *testing.B) {
					pgstoretest.ReportConflicts(b, func() {
						benchlat.RunPaced(b, users, load.Think, func(u, i int) error {
							s, err := brokers[i%2].Open(context.Background(), tunnelTo(fmt.Sprintf("u%03d", u), "vm1", srv.addrPort().Port()))
							if err != nil {
								return err
							}
							s.End(ReasonClientClosed)
							return nil
						})
					}, dbA, dbB)
				})
			}
		})
	}
}

// benchInstance is one instance of a cluster for a benchmark: its own live
// journal and audit file, the registry on db, its heartbeat running.
func benchInstance(b *testing.B, db store.DB, name string, cfg Config) *Broker {
	b.Helper()
	reg, err := registry.New(registry.Config{DB: db, Instance: name, Logger: zap.NewNop()})
	if err != nil {
		b.Fatal(err)
	}
	dir := b.TempDir()
	br := newBroker(b, cfg, Options{LiveDir: filepath.Join(dir, "live"), AuditFile: filepath.Join(dir, "audit.jsonl"),
		Instance: name, Registry: reg, tuning: quick()})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		reg.Run(ctx, handler{br})
		close(done)
	}()
	b.Cleanup(func() {
		cancel()
		<-done
	})
	return br
}
