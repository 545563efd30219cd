package broker

import (
	"context"
	"io"
	"net"
	"testing"
)

// benchRelay pushes b.N chunks of 64 KiB from a user through a relayed
// session to a target that discards them.
func benchRelay(b *testing.B, splice bool) {
	srv := listen(b, "tcp4", "127.0.0.1:0")
	e := newEnv(b, Config{Targets: []Target{targetAt("vm1", srv.addrPort())}})
	s, err := e.b.Open(context.Background(), tunnelTo("alice", "vm1", srv.addrPort().Port()))
	if err != nil {
		b.Fatal(err)
	}
	relaySide, user := clientPair(b, splice)
	done := make(chan struct{})
	go func() { s.Relay(relaySide); close(done) }()
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
	for b.Loop() {
		if _, err := user.Write(buf); err != nil {
			b.Fatal(err)
		}
	}
	user.(*net.TCPConn).CloseWrite()
	<-drained
	user.Close()
	<-done
}

func BenchmarkRelaySplice(b *testing.B)   { benchRelay(b, true) }
func BenchmarkRelayBuffered(b *testing.B) { benchRelay(b, false) }

// BenchmarkOpenEnd is a session's setup and teardown cost: the dial, both
// synced records and the live entry's put and delete. Sessions open and
// end from 8 goroutines at once, which is where group commit pays.
func BenchmarkOpenEnd(b *testing.B) {
	srv := listen(b, "tcp4", "127.0.0.1:0")
	go func() {
		for c := range srv.accepted {
			c.Close()
		}
	}()
	e := newEnv(b, Config{Targets: []Target{targetAt("vm1", srv.addrPort())}, Capacity: 1000, PerUser: 1000})
	b.SetParallelism(4)
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
