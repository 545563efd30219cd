package proxy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/bastiond/bastiond/proxy/gate/gatetest"
)

// BenchmarkQUICFlood measures what QUIC connections that never
// authenticate cost the server: 300 connections, each opening 32 streams
// that send the first bytes of a tunnel request and never the rest, from
// one source address, and from 50 (127.0.0.1 to 127.0.0.50). The clients
// run in another process, so that only the server is measured: heap and
// goroutine stacks in use, goroutines, and the process's RSS, before the
// flood and while it holds (before any handshake timeout).
func BenchmarkQUICFlood(b *testing.B) {
	const conns, streams = 300, 32
	for _, c := range []struct {
		name    string
		sources int
	}{{"one-source", 1}, {"many-sources", 50}} {
		b.Run(c.name, func(b *testing.B) {
			var r floodCost
			for range b.N {
				r = quicFloodCost(b, c.sources, conns, streams)
			}
			b.ReportMetric(float64(r.accepted), "conns")
			b.ReportMetric(float64(r.waiting), "streams")
			b.ReportMetric(float64(r.goroutines), "goroutines")
			b.ReportMetric(float64(r.mem)/(1<<20), "MiB-heap+stacks")
			b.ReportMetric(float64(r.rss)/(1<<20), "MiB-RSS")
		})
	}
}

type floodCost struct {
	accepted, waiting int   // what the clients saw accepted and waiting
	goroutines        int   // more than before the flood
	mem, rss          int64 // more than before the flood
}

func quicFloodCost(b *testing.B, sources, conns, streams int) floodCost {
	s := newTestServer(b, Config{HandshakeTimeout: time.Minute})
	pc := gatetest.LoopbackUDP(b, "udp4")
	done := make(chan error, 1)
	go func() { done <- s.Serve(nil, []net.PacketConn{pc}) }()
	defer func() {
		s.Close()
		<-done
	}()
	memBefore, rssBefore, gBefore := memInUse(), processRSS(b), runtime.NumGoroutine()
	cmd := exec.Command(os.Args[0], "-test.run=^TestQUICFloodClients$")
	cmd.Env = append(os.Environ(), "QUIC_FLOOD_ADDR="+pc.LocalAddr().String(), "QUIC_FLOOD_SOURCES="+strconv.Itoa(sources),
		"QUIC_FLOOD_CONNS="+strconv.Itoa(conns), "QUIC_FLOOD_STREAMS="+strconv.Itoa(streams))
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() {
		stdin.Close()
		cmd.Wait()
	}()
	line, err := bufio.NewReader(stdout).ReadString('\n')
	var r floodCost
	if _, serr := fmt.Sscanf(line, "ready %d %d", &r.accepted, &r.waiting); err != nil || serr != nil {
		b.Fatalf("client process: %q, %v", line, err)
	}
	r.mem, r.rss, r.goroutines = int64(memInUse())-int64(memBefore), processRSS(b)-rssBefore, runtime.NumGoroutine()-gBefore
	b.Logf("%d sources, %d connections tried, %d streams each: %d accepted, %d streams waiting; server: +%d goroutines, +%.1f MiB heap and stacks, +%.1f MiB RSS",
		sources, conns, streams, r.accepted, r.waiting, r.goroutines, float64(r.mem)/(1<<20), float64(r.rss)/(1<<20))
	return r
}

// memInUse is the heap and stacks in use, after collections that also
// shrink the stacks of goroutines that grew them once.
func memInUse() uint64 {
	for range 3 {
		runtime.GC()
	}
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse + m.StackInuse
}

// processRSS is this process's resident memory, once the runtime has
// given back to the kernel what it can.
func processRSS(tb testing.TB) int64 {
	debug.FreeOSMemory()
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		tb.Skipf("no /proc: %v", err)
	}
	for line := range strings.SplitSeq(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// TestQUICFloodClients is the client process of BenchmarkQUICFlood: it
// opens the connections and their streams, waits a moment for the
// server's refusals, prints "ready ACCEPTED WAITING" and holds everything
// until its standard input ends.
func TestQUICFloodClients(t *testing.T) {
	addr := os.Getenv("QUIC_FLOOD_ADDR")
	if addr == "" {
		t.Skip("the client process of BenchmarkQUICFlood")
	}
	sources, _ := strconv.Atoi(os.Getenv("QUIC_FLOOD_SOURCES"))
	conns, _ := strconv.Atoi(os.Getenv("QUIC_FLOOD_CONNS"))
	streams, _ := strconv.Atoi(os.Getenv("QUIC_FLOOD_STREAMS"))
	raddr, err := net.ResolveUDPAddr("udp4", addr)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	accepted, waiting := 0, 0
	var all []*quic.Stream
	var wg sync.WaitGroup
	sem := make(chan struct{}, 16)
	for i := range conns {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			pc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, byte(1+i%sources))})
			if err != nil {
				t.Error(err)
				return
			}
			tr := &quic.Transport{Conn: pc}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			conn, err := tr.Dial(ctx, raddr, gatetest.TunnelTLS(testName), &quic.Config{Versions: []quic.Version{quic.Version1}, KeepAlivePeriod: 10 * time.Second})
			if err != nil {
				return // refused
			}
			var strs []*quic.Stream
			for range streams {
				sctx, scancel := context.WithTimeout(ctx, time.Second)
				str, err := conn.OpenStreamSync(sctx)
				scancel()
				if err != nil {
					break // no more stream credit
				}
				str.Write([]byte("BTU"))
				strs = append(strs, str)
			}
			mu.Lock()
			accepted++
			all = append(all, strs...)
			mu.Unlock()
		})
	}
	wg.Wait()
	// The refusals of streams come at once; count those still open.
	deadline := time.Now().Add(time.Second)
	var rwg sync.WaitGroup
	for _, str := range all {
		rwg.Go(func() {
			str.SetReadDeadline(deadline)
			_, err := io.Copy(io.Discard, str)
			var ne net.Error
			if err != nil && errors.As(err, &ne) && ne.Timeout() {
				mu.Lock()
				waiting++
				mu.Unlock()
			}
		})
	}
	rwg.Wait()
	fmt.Printf("ready %d %d\n", accepted, waiting)
	io.Copy(io.Discard, os.Stdin)
}
