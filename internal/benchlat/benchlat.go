// Package benchlat times the operations of a benchmark one by one, done by
// many users at once, and reports their latency at the 50th and 99th
// percentiles besides Go's mean: what a user waits, not only what the
// machine spends.
package benchlat

import (
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Run does op b.N times, from users goroutines at once (user is which one,
// i the operation's number), and reports "p50-us" and "p99-us". An error
// fails the benchmark.
func Run(b *testing.B, users int, op func(user, i int) error) {
	b.Helper()
	lat := make([]time.Duration, b.N)
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, users)
	b.ResetTimer()
	for u := range users {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= b.N {
					return
				}
				start := time.Now()
				if err := op(u, i); err != nil {
					errs <- err
					return
				}
				lat[i] = time.Since(start)
			}
		})
	}
	wg.Wait()
	b.StopTimer()
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
	slices.Sort(lat)
	b.ReportMetric(float64(Quantile(lat, 0.50).Microseconds()), "p50-us")
	b.ReportMetric(float64(Quantile(lat, 0.99).Microseconds()), "p99-us")
}

// Quantile is the q-quantile (0 < q <= 1) of sorted, by the nearest rank.
func Quantile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(q*float64(len(sorted))+0.5) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}
