package registry

import (
	"fmt"
	"testing"

	"github.com/bastiond/bastiond/internal/benchlat"
	"github.com/bastiond/bastiond/internal/store/pgstore/pgstoretest"
)

var clusterStores = pgstoretest.Clusters

// BenchmarkClusterSessionEntry is what the registry adds to a session's
// life, its entry written (with its user's count checked) before the first
// byte and removed after the end record, for 200 users opening sessions at once on two instances, under
// each of benchlat.Loads. p50 and p99 per session (entry and removal).
func BenchmarkClusterSessionEntry(b *testing.B) {
	const users = 200
	for _, cs := range clusterStores {
		b.Run(cs.Name, func(b *testing.B) {
			dbA, dbB := cs.Open(b)
			regs := []*Registry{instance(b, dbA, "bastion-a", nil), instance(b, dbB, "bastion-b", nil)}
			for n, load := range benchlat.Loads {
				b.Run(load.Name, func(b *testing.B) {
					pgstoretest.ReportConflicts(b, func() {
						benchlat.RunPaced(b, users, load.Think, func(u, i int) error {
							r := regs[i%2]
							id := fmt.Sprintf("%d-%012x", n, i)
							s := session(id, "192.0.2.10:50000")
							s.User = fmt.Sprintf("user%d", u) // counted against limits.sessions_per_user's default
							if err := r.Add("journal-1", s, 10); err != nil {
								return err
							}
							return r.Remove([]string{id})
						})
					}, dbA, dbB)
				})
			}
		})
	}
}

// BenchmarkClusterList10k is BenchmarkList10k on both stores: `bastionctl
// sessions` over 10,000 live sessions of two instances.
func BenchmarkClusterList10k(b *testing.B) {
	for _, cs := range clusterStores {
		b.Run(cs.Name, func(b *testing.B) {
			dbA, dbB := cs.Open(b)
			regs := []*Registry{instance(b, dbA, "bastion-a", nil), instance(b, dbB, "bastion-b", nil)}
			for i := range 10000 {
				if err := regs[i%2].Add("journal-1", session(fmt.Sprintf("%012x", i), "[2001:db8::10]:50000"), 0); err != nil {
					b.Fatal(err)
				}
			}
			b.ResetTimer()
			for b.Loop() {
				list, err := regs[1].List()
				if err != nil || len(list) != 10000 {
					b.Fatal(len(list), err)
				}
			}
		})
	}
}
