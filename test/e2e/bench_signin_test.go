package e2e

import (
	"net/http"
	"net/netip"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
)

// BenchmarkSigninFlood measures what issue 16's sign-in flood costs the
// daemon: 3,000 sign-ins with 7 KiB names and passwords (what the form
// lets through), from 1,500 IPv4 addresses (of the benchmarking range 198.19.0.0/16) and 1,500 IPv6 /64s, while a
// real user signs in now and then. It reports the daemon's RSS and log
// growth and the user's sign-in time, idle and under the flood.
func BenchmarkSigninFlood(b *testing.B) {
	NeedLab(b)
	d := StartDaemon(b, ViaFDs, "firewall: {conn_rate: 1000}\n")
	b.Cleanup(func() { InBastion(b, BinPath("bastiond"), "-cleanup") })
	AddLabUsers(b, d, "alice")
	RouteSources(b, netip.MustParsePrefix("198.19.0.0/21"), netip.MustParsePrefix("2001:db8:f100::/48"))
	pub4, pub6 := LabValue(b, "BASTION_PUB4"), LabValue(b, "BASTION_PUB6")
	signIn := func() time.Duration {
		start := time.Now()
		if code, _ := NewWebUser(b, pub4).SignIn("alice", TunnelPassword, ""); code != 303 {
			b.Fatalf("alice: %d", code)
		}
		return time.Since(start)
	}
	median := func(ds []time.Duration) time.Duration {
		sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
		return ds[len(ds)/2]
	}
	var idle []time.Duration
	for range 5 {
		idle = append(idle, signIn())
	}
	rssIdle, logIdle := rssOf(b, d.Cmd.Process.Pid), len(d.Log.String())

	const n = 3000
	long := strings.Repeat("x", 7<<10)
	work := make(chan int)
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				src, bastion := netip.AddrFrom4([4]byte{198, 19, byte(i / 2 / 250), byte(1 + i/2%250)}), pub4
				if i%2 == 1 {
					src, bastion = netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 0xf1, 0x00, byte(i >> 8), byte(i), 15: 1}), pub6
				}
				u := NewWebUserFrom(b, bastion, src)
				u.TrySignIn(long+string(rune('a'+i%26)), long, "")
				// What is measured is the sign-in's cost, not that of
				// 3,000 idle connections (the flood tests have those).
				u.c.Transport.(*http.Transport).CloseIdleConnections()
			}
		}()
	}
	start := time.Now()
	done := make(chan struct{})
	var flooded []time.Duration
	go func() {
		defer close(done)
		for i := 0; i < n; i++ {
			work <- i
		}
		close(work)
		wg.Wait()
	}()
	for waiting := true; waiting; {
		select {
		case <-done:
			waiting = false
		case <-time.After(500 * time.Millisecond):
			flooded = append(flooded, signIn())
		}
	}
	took := time.Since(start)
	rssFlood, logFlood := rssOf(b, d.Cmd.Process.Pid), len(d.Log.String())
	b.ReportMetric(float64(rssIdle)/(1<<20), "MiB-RSS-idle")
	b.ReportMetric(float64(rssFlood)/(1<<20), "MiB-RSS-flood")
	b.ReportMetric(float64(logFlood-logIdle)/(1<<20), "MiB-log-flood")
	b.ReportMetric(float64(median(idle).Microseconds())/1000, "ms-signin-idle")
	b.ReportMetric(float64(median(flooded).Microseconds())/1000, "ms-signin-flood")
	b.Logf("%d oversized sign-ins in %s: bastiond RSS %d -> %d MiB, log +%d KiB; alice signs in in %s idle, %s under the flood (median of %d)",
		n, took.Round(100*time.Millisecond), rssIdle>>20, rssFlood>>20, (logFlood-logIdle)>>10,
		median(idle).Round(time.Millisecond), median(flooded).Round(time.Millisecond), len(flooded))
}
