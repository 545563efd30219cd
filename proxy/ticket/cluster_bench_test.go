package ticket

import (
	"fmt"
	"testing"

	"github.com/bastiond/bastiond/internal/benchlat"
	"github.com/bastiond/bastiond/internal/store/pgstore/pgstoretest"
)

// BenchmarkClusterIssueRedeem is a connect ticket issued by one instance
// and redeemed by the other, for 200 users at once: bbolt (one file, as
// one host has), and PostgreSQL with a pool per instance. p50 and p99 per
// issue and redemption together.
func BenchmarkClusterIssueRedeem(b *testing.B) {
	const users = 200
	for _, be := range pgstoretest.Clusters {
		b.Run(be.Name, func(b *testing.B) {
			dbA, dbB := be.Open(b)
			a, _ := newShared(dbA)
			c, _ := newShared(dbB)
			inst := []*Shared{a, c}
			for _, load := range benchlat.Loads {
				b.Run(load.Name, func(b *testing.B) {
					pgstoretest.ReportConflicts(b, func() {
						benchlat.RunPaced(b, users, load.Think, func(u, i int) error {
							session := fmt.Sprintf("session-%03d", u)
							v, err := inst[i%2].Issue(Ticket{Session: session, User: "alice", Target: "vm1", Protocol: "ssh", Port: 22})
							if err != nil {
								return err
							}
							_, err = inst[(i+1)%2].Redeem(v, session)
							return err
						})
					}, dbA, dbB)
				})
			}
		})
	}
}
