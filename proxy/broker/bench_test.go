package broker

import (
	"context"
	"io"
	"net"
	"runtime"
	"testing"
	"time"
)

// benchRelay pushes 64 KiB writes from a user through a relayed session to
// a target that discards them.
func benchRelay(b *testing.B, client string) {
	srv := listen(b, "tcp4", "127.0.0.1:0")
	e := newEnv(b, Config{Targets: []Target{targetAt("vm1", srv.addrPort())}})
	s, user, done := relayed(b, e, srv, "alice", client)
	target := srv.next(b)
	drained := make(chan int64)
	go func() {
		n, _ := io.Copy(io.Discard, target)
		target.Close()
		drained <- n
	}()
	buf := make([]byte, 64<<10)
	b.SetBytes(int64(len(buf)))
	b.ReportAllocs()
	var sent int64
	for b.Loop() {
		if _, err := user.Write(buf); err != nil {
			b.Fatal(err)
		}
		sent += int64(len(buf))
	}
	user.(*net.TCPConn).CloseWrite()
	if n := <-drained; n != sent {
		b.Fatalf("target got %d bytes, sent %d", n, sent)
	}
	user.Close()
	<-done
	if up := s.Info().BytesUp; up != sent {
		b.Fatalf("counted %d bytes, sent %d", up, sent)
	}
}

// BenchmarkRelaySplice: both ends are TCP sockets; the kernel moves the
// bytes (splice(2)).
func BenchmarkRelaySplice(b *testing.B) { benchRelay(b, clientTCP) }

// BenchmarkRelayBuffered: the client is not a socket to the relay (as a
// QUIC stream or a WebSocket is not); bytes go through pooled buffers.
func BenchmarkRelayBuffered(b *testing.B) { benchRelay(b, clientOpaque) }

// BenchmarkOpenEnd is a session's setup and teardown cost: the dial, both
// synced records and the live entry's put and delete, on a temp dir.
// Sessions open and end from several goroutines at once, which is where
// group commit pays.
func BenchmarkOpenEnd(b *testing.B) {
	srv := listen(b, "tcp4", "127.0.0.1:0")
	go func() {
		for c := range srv.accepted {
			c.Close()
		}
	}()
	e := newEnv(b, Config{Targets: []Target{targetAt("vm1", srv.addrPort())}, Capacity: 1 << 20, PerUser: 1 << 20})
	b.ReportAllocs()
	b.SetParallelism(16)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			s, err := e.b.Open(context.Background(), tunnelTo("alice", "vm1", srv.addrPort().Port()))
			if err != nil {
				b.Error(err)
				return
			}
			s.End(ReasonClientClosed)
		}
	})
}

// BenchmarkIdleSessions measures what an idle relayed session costs the
// process: heap and goroutine stacks per session after a GC, with 1,000
// sessions open. The figure includes the test's own ends (the user's and
// the target's sockets, in the same process), so it is an upper bound of
// the broker's share.
func BenchmarkIdleSessions(b *testing.B) {
	for _, client := range []string{clientTCP, clientOpaque} {
		b.Run(client, func(b *testing.B) {
			const n = 1000
			srv := listen(b, "tcp4", "127.0.0.1:0")
			e := newEnv(b, Config{Targets: []Target{targetAt("vm1", srv.addrPort())}, Capacity: 2 * n, PerUser: 2 * n})
			var perSession float64
			for b.Loop() {
				before := memInUse()
				var dones []chan struct{}
				var conns []net.Conn
				for range n {
					_, u, done := relayed(b, e, srv, "alice", client)
					target := srv.next(b)
					conns = append(conns, u, target)
					// One exchange each way, so that every direction has
					// taken (and given back) its buffers once.
					u.Write([]byte("ping"))
					io.ReadFull(target, make([]byte, 4))
					target.Write([]byte("pong"))
					io.ReadFull(u, make([]byte, 4))
					dones = append(dones, done)
				}
				time.Sleep(100 * time.Millisecond)
				perSession = float64(memInUse()-before) / n
				e.b.EndWhere(func(Info) bool { return true }, ReasonShutdown)
				for _, d := range dones {
					<-d
				}
				for _, c := range conns {
					c.Close()
				}
			}
			b.ReportMetric(perSession, "B/session")
			b.ReportMetric(0, "ns/op")
		})
	}
}

func memInUse() int64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapInuse + m.StackInuse)
}
