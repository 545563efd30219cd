// Package benchlat times the operations of a benchmark one by one, done by
// many users at once, and reports their latency at the 50th and 99th
// percentiles besides Go's mean: what a user waits, not only what the
// machine spends.
package benchlat

import (
	"math/rand/v2"
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
	RunPaced(b, users, 0, op)
}

// RunPaced is Run with users who think between operations: each waits a
// random time, exponentially distributed with mean think, after each
// operation (and before its first, so that they do not start together).
// Run's users, who never wait, keep the machine saturated: what they time
// is mostly their queue, the number of users over the throughput. Paced
// users offer users/think operations a second; below the throughput, what
// they time is the operation and the queueing that load causes.
func RunPaced(b *testing.B, users int, think time.Duration, op func(user, i int) error) {
	b.Helper()
	pause := func() {
		if think > 0 {
			time.Sleep(time.Duration(rand.ExpFloat64() * float64(think)))
		}
	}
	lat := make([]time.Duration, b.N)
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, users)
	b.ResetTimer()
	for u := range users {
		wg.Go(func() {
			for {
				pause()
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

// Load is how a benchmark's users behave.
type Load struct {
	Name  string
	Think time.Duration // RunPaced's mean think time; 0 never waits (Run)
}

// Loads are the two a latency is reported under: users who never wait
// (the machine saturated: the latency is mostly queueing, and the ratio of
// two backends' latencies that of their throughputs) and users who think
// a second on average between operations (200 users then offer 200
// operations a second, a heavy load for a bastion but below what either
// backend does: the latency is the operation's own, with the queueing
// such a load causes).
var Loads = []Load{{"saturated", 0}, {"paced", time.Second}}
