package auth

import (
	"context"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/bastiond/bastiond/internal/benchlat"
	"github.com/bastiond/bastiond/internal/store/pgstore/pgstoretest"
)

// BenchmarkClusterSignIn is a sign-in of one of 200 users at once, taking
// turns at two instances on one store, password hashing at its cheapest
// (argon2id is the same on every backend; this is what the store adds):
// bbolt, and PostgreSQL with a pool per instance; under each of
// benchlat.Loads. p50 and p99 per sign-in.
func BenchmarkClusterSignIn(b *testing.B) {
	const users = 200
	for _, be := range clusterBackends {
		b.Run(be.Name, func(b *testing.B) {
			dbA, dbB := be.Open(b)
			as, _ := instancesOn(b, dbA, dbB)
			for u := range users {
				if err := as[0].Store().AddUser(fmt.Sprintf("u%03d", u), goodPassword, nil); err != nil {
					b.Fatal(err)
				}
			}
			for _, load := range benchlat.Loads {
				b.Run(load.Name, func(b *testing.B) {
					pgstoretest.ReportConflicts(b, func() {
						benchlat.RunPaced(b, users, load.Think, func(u, i int) error {
							src := netip.AddrFrom4([4]byte{198, 51, byte(u >> 8), byte(u)})
							_, err := as[i%2].Login(context.Background(), fmt.Sprintf("u%03d", u), goodPassword, "", src)
							return err
						})
					}, dbA, dbB)
				})
			}
		})
	}
}

// BenchmarkClusterSignInHashed is what a user waits for a sign-in, the
// password hashed as bastiond hashes it (argon2id, 19 MiB, two passes):
// 20 users signing in about once a second each, taking turns at two
// instances, on bbolt and on PostgreSQL. p50 and p99 per sign-in.
func BenchmarkClusterSignInHashed(b *testing.B) {
	const users = 20
	for _, be := range clusterBackends {
		b.Run(be.Name, func(b *testing.B) {
			dbA, dbB := be.Open(b)
			as, _ := instancesCosting(b, defaultParams, dbA, dbB)
			for u := range users {
				if err := as[0].Store().AddUser(fmt.Sprintf("u%03d", u), goodPassword, nil); err != nil {
					b.Fatal(err)
				}
			}
			benchlat.RunPaced(b, users, time.Second, func(u, i int) error {
				src := netip.AddrFrom4([4]byte{198, 51, byte(u >> 8), byte(u)})
				_, err := as[i%2].Login(context.Background(), fmt.Sprintf("u%03d", u), goodPassword, "", src)
				return err
			})
		})
	}
}
