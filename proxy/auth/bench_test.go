package auth

import (
	"context"
	"net/netip"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"go.uber.org/zap"
)

// BenchmarkOversizedLogins: what sign-ins with names and passwords of 7 KiB
// (what the form lets through), from a new source each, leave behind in
// the heap, and what each costs. Issue 16, finding 3.
func BenchmarkOversizedLogins(b *testing.B) {
	s, _ := newTestStore(b)
	a, err := NewAuthenticator(AuthenticatorConfig{Store: s, Logger: zap.NewNop()})
	if err != nil {
		b.Fatal(err)
	}
	long := strings.Repeat("x", 7<<10)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	i := 0
	for b.Loop() {
		src := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		// A new string each time, as each request's form is.
		a.Login(context.Background(), long+strconv.Itoa(i), long, "", src)
		i++
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	b.ReportMetric(float64(int64(after.HeapAlloc)-int64(before.HeapAlloc))/float64(i), "heap-B-kept/login")
	runtime.KeepAlive(a)
}
