package e2e

import (
	"context"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
)

// BenchmarkQUICFloodDaemon floods the lab's bastiond (default limits) with
// QUIC connections that never authenticate, each opening streams that send
// the first bytes of a tunnel request and never the rest: 300 connections
// of 32 streams, from one IPv4 address and from 50. It reports, for each,
// what the daemon holds once the flood is in place (before any handshake
// timeout): connections and streams the bastion left open, and its
// goroutines and RSS over those before the flood; and how long a real
// user's sign-in (the median of 5) and tunnel take meanwhile.
func BenchmarkQUICFloodDaemon(b *testing.B) {
	NeedLab(b)
	const conns, streams = 300, 32
	d := StartDaemonWith(b, ViaFDs, func(dir string) string { return TunnelConfig(dir, TunnelAccess("")) })
	AddLabUsers(b, d, "alice")
	pub4 := LabValue(b, "BASTION_PUB4")
	user := TunnelClient(b, LoginAs(b, "alice", pub4), pub4, "quic")
	// signIn is the median time of 5 sign-ins.
	signIn := func() time.Duration {
		var times []time.Duration
		for range 5 {
			start := time.Now()
			if code, page := NewWebUser(b, pub4).SignIn("alice", TunnelPassword, ""); code != 303 {
				b.Fatalf("sign in: %d\n%s", code, page)
			}
			times = append(times, time.Since(start))
		}
		slices.Sort(times)
		return times[len(times)/2]
	}
	tunnelTime := func() time.Duration {
		start := time.Now()
		c, err := Dial(b, user, "vm1", 22)
		if err != nil {
			b.Fatalf("the user's tunnel: %v", err)
		}
		c.Close()
		return time.Since(start)
	}
	tunnelTime()
	idleSignIn, idleTunnel := signIn(), tunnelTime()
	var many []netip.Addr
	for i := range 50 {
		many = append(many, netip.AddrFrom4([4]byte{203, 0, 113, byte(150 + i)}))
	}
	AddClientAddrs(b, many)
	for _, c := range []struct {
		name string
		from []netip.Addr
	}{{"one-source", many[:1]}, {"50-sources", many}} {
		b.Run(c.name, func(b *testing.B) {
			for range b.N {
				goroutines0, rss0 := Metric(b, "go_goroutines"), d.RSS()
				var mu sync.Mutex
				var open []*quic.Conn
				var all []*quic.Stream
				var wg sync.WaitGroup
				sem := make(chan struct{}, 16)
				for i := range conns {
					sem <- struct{}{}
					wg.Go(func() {
						defer func() { <-sem }()
						conn, err := DialQUICFrom(b, c.from[i%len(c.from)], pub4)
						if err != nil {
							return // refused
						}
						var strs []*quic.Stream
						for range streams {
							if s := stalledStreamWithin(conn, time.Second); s != nil {
								strs = append(strs, s)
							}
						}
						mu.Lock()
						open = append(open, conn)
						all = append(all, strs...)
						mu.Unlock()
					})
				}
				wg.Wait()
				ends := StreamEnds(all, time.Second)
				waiting := strings.Count(strings.Join(ends, " "), "open")
				goroutines, rss := Metric(b, "go_goroutines"), d.RSS()
				// What the daemon spends on the flood once it is in place.
				cpu0 := cpuOf(b, d.Cmd.Process.Pid)
				time.Sleep(2 * time.Second)
				busy := (cpuOf(b, d.Cmd.Process.Pid) - cpu0) / 2
				floodSignIn, floodTunnel := signIn(), tunnelTime()
				b.ReportMetric(float64(len(open)), "conns")
				b.ReportMetric(float64(waiting), "streams")
				b.ReportMetric(goroutines-goroutines0, "goroutines")
				b.ReportMetric(float64(rss-rss0)/(1<<20), "MiB-RSS")
				b.ReportMetric(float64(floodSignIn.Milliseconds()), "ms-signin")
				b.ReportMetric(float64(floodTunnel.Milliseconds()), "ms-tunnel")
				b.ReportMetric(float64(busy.Milliseconds()), "ms-cpu/s")
				b.Logf("%s: %d connections tried, %d streams each: %d open, %d streams waiting; bastiond +%v goroutines (%v), RSS %d -> %d MiB; "+
					"daemon CPU %s/s while the flood holds; sign-in %s (idle %s), tunnel %s (idle %s)", c.name, conns, streams, len(open), waiting, goroutines-goroutines0, goroutines,
					rss0>>20, rss>>20, busy, floodSignIn.Round(time.Millisecond), idleSignIn.Round(time.Millisecond),
					floodTunnel.Round(time.Millisecond), idleTunnel.Round(time.Millisecond))
				for _, conn := range open {
					conn.CloseWithError(0, "")
				}
				waitQUICDrained(b, goroutines0)
			}
		})
	}
}

// stalledStreamWithin opens a stream on conn and sends the first bytes of
// a request, or returns nil if the bastion gives no stream credit within
// limit.
func stalledStreamWithin(conn *quic.Conn, limit time.Duration) *quic.Stream {
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	str, err := conn.OpenStreamSync(ctx)
	if err != nil {
		return nil
	}
	str.Write([]byte("BTU"))
	return str
}

// waitQUICDrained waits, up to 30 s, for the daemon's goroutines to come
// back to about what they were before a flood.
func waitQUICDrained(b *testing.B, goroutines float64) {
	for end := time.Now().Add(30 * time.Second); time.Now().Before(end); time.Sleep(200 * time.Millisecond) {
		if Metric(b, "go_goroutines") <= goroutines+10 {
			return
		}
	}
	b.Logf("bastiond still has %v goroutines 30 s after the flood (%v before)", Metric(b, "go_goroutines"), goroutines)
}
