package link

import (
	"testing"
	"time"

	"github.com/bastiond/bastiond/internal/store/pgstore/pgstoretest"
)

// BenchmarkSpend is one use of a link: one serializable transaction that
// reads and rewrites it (bbolt: an fsync; PostgreSQL: a round trip or two).
func BenchmarkSpend(b *testing.B) {
	for _, be := range pgstoretest.Backends {
		b.Run(be.Name, func(b *testing.B) {
			s := NewStore(be.Open(b))
			var secret string
			for i := 0; b.Loop(); i++ {
				if i%MaxUses == 0 {
					b.StopTimer()
					_, v, err := s.Create(New{Target: "vm1", Protocol: "ssh", Login: "a", Valid: time.Hour, Uses: MaxUses})
					if err != nil {
						b.Fatal(err)
					}
					secret = v
					b.StartTimer()
				}
				if _, err := s.Spend(secret); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
