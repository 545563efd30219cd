package broker_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/bastiond/bastiond/proxy"
	"github.com/bastiond/bastiond/proxy/access"
	"github.com/bastiond/bastiond/proxy/auth"
	"github.com/bastiond/bastiond/proxy/auth/authtest"
	"github.com/bastiond/bastiond/proxy/broker"
	"github.com/bastiond/bastiond/proxy/certs"
	"github.com/bastiond/bastiond/tunnel"
)

// The tunnel's CPU per byte on the bastion, without the lab: a real
// proxy.Server with its broker in this process, and in a child process
// (this test binary again, TestTunnelCPUClient) the real tunnel client
// that uploads through it and the TCP sink the broker relays to. Only the
// server's work is in this process, so its getrusage(RUSAGE_SELF) is the
// bastion's CPU, and `go test -cpuprofile` profiles only the server.

const (
	cpuServerName = "bastion.test"
	cpuClientEnv  = "BASTIOND_TUNNEL_CPU_CLIENT" // set in the child: server address, transport, token, port, bytes
)

// BenchmarkTunnelCPU moves 256 MiB (BASTIOND_TUNNEL_CPU_MIB) through a
// tunnel over TLS (WebSocket) and over QUIC, on IPv4 and IPv6 loopback, up
// (the client sends, as a bulk scp or ssh upload does) and down (the
// target sends, as a desktop does), and reports the server's CPU per GiB
// relayed, and the child's (client and target together).
func BenchmarkTunnelCPU(b *testing.B) {
	size := int64(256 << 20)
	if s := os.Getenv("BASTIOND_TUNNEL_CPU_MIB"); s != "" {
		mib, err := strconv.Atoi(s)
		if err != nil || mib <= 0 {
			b.Fatalf("BASTIOND_TUNNEL_CPU_MIB=%q: want a positive number of MiB", s)
		}
		size = int64(mib) << 20
	}
	for _, dir := range []string{"up", "down"} {
		for _, fam := range []struct{ name, network, host string }{{"ipv4", "4", "127.0.0.1"}, {"ipv6", "6", "::1"}} {
			for _, transport := range []string{"tcp", "quic"} {
				name := "tls"
				if transport == "quic" {
					name = "quic"
				}
				b.Run(dir+"/"+name+"/"+fam.name, func(b *testing.B) {
					env := newCPUEnv(b, fam.network, fam.host)
					b.SetBytes(size)
					// Only the transfers are timed: relay starts and stops the
					// timer around each.
					b.StopTimer()
					b.ResetTimer()
					var server, client time.Duration
					var calls ioCalls
					for range b.N {
						s, c, n := env.relay(b, dir, transport, size)
						server += s
						client += c
						calls.reads += n.reads
						calls.writes += n.writes
					}
					gib := float64(size*int64(b.N)) / (1 << 30)
					b.ReportMetric(server.Seconds()/gib, "server-cpu-s/GiB")
					b.ReportMetric(client.Seconds()/gib, "client+sink-cpu-s/GiB")
					// read(2) and write(2) (and sendmsg) calls of the server per
					// MiB; recvmmsg, quic-go's read, is not counted.
					b.ReportMetric(float64(calls.reads)/gib/1024, "server-reads/MiB")
					b.ReportMetric(float64(calls.writes)/gib/1024, "server-writes/MiB")
				})
			}
		}
	}
}

type cpuEnv struct {
	tcp, udp string   // the server's TLS and QUIC addresses
	sink     *os.File // the sink's listening socket, passed to the child
	port     uint16
	token    string
}

func newCPUEnv(b *testing.B, network, host string) *cpuEnv {
	b.Helper()
	log := zap.NewNop()
	ln, err := net.Listen("tcp"+network, net.JoinHostPort(host, "0"))
	if err != nil {
		b.Skipf("no %s loopback: %v", host, err)
	}
	sinkFile, err := ln.(*net.TCPListener).File()
	if err != nil {
		b.Fatal(err)
	}
	ln.Close() // the file holds the socket
	b.Cleanup(func() { sinkFile.Close() })
	port := uint16(netip.MustParseAddrPort(ln.Addr().String()).Port())
	addr := netip.MustParseAddr(host)

	br, err := broker.NewLoopbackForTest(broker.Config{Logger: log, Targets: []broker.Target{{Name: "sink", Addresses: []netip.Addr{addr}, Tunnel: []uint16{port}}}},
		broker.Options{LiveDir: filepath.Join(b.TempDir(), "live"), AuditFile: filepath.Join(b.TempDir(), "audit.jsonl")})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { br.Close(context.Background()) })
	store := &certs.Store{}
	if err := store.Load(certs.Config{SelfSigned: true, ServerName: cpuServerName, Dir: b.TempDir()}); err != nil {
		b.Fatal(err)
	}
	policy := access.New(cpuServerName, []access.Target{{Name: "sink", Tunnel: []uint16{port}}}, nil,
		[]access.Role{{Name: "bench", Subjects: []string{"user:alice"}, Targets: []string{"sink"}, Protocols: []string{access.Tunnel}}})
	a := authtest.Authenticator(b, log, "correct horse battery", "alice")
	s, err := proxy.New(proxy.Config{Logger: log, ServerName: cpuServerName, Certs: store, Access: policy, Broker: br}, a)
	if err != nil {
		b.Fatal(err)
	}
	tl, err := net.Listen("tcp"+network, net.JoinHostPort(host, "0"))
	if err != nil {
		b.Fatal(err)
	}
	pc, err := net.ListenPacket("udp"+network, net.JoinHostPort(host, "0"))
	if err != nil {
		b.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve([]net.Listener{tl}, []net.PacketConn{pc}) }()
	b.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s.Shutdown(ctx)
		br.Drain()
		s.Close()
		if err := <-done; err != nil {
			b.Errorf("Serve: %v", err)
		}
	})
	token, _, err := a.Store().IssueToken("alice", []string{auth.ScopeTunnel}, time.Hour, "bench", "")
	if err != nil {
		b.Fatal(err)
	}
	return &cpuEnv{tcp: tl.Addr().String(), udp: pc.LocalAddr().String(), sink: sinkFile, port: port, token: token}
}

// relay runs the child that moves size bytes through a tunnel over
// transport ("tcp" or "quic"), dir "up" from the client to the target or
// "down" back, and returns the CPU this process (the server) and the
// child spent meanwhile, and the server's reads and writes.
func (e *cpuEnv) relay(b *testing.B, dir, transport string, size int64) (server, client time.Duration, calls ioCalls) {
	b.Helper()
	addr := e.udp
	if transport == "tcp" {
		addr = e.tcp
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestTunnelCPUClient$", "-test.count=1")
	cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%s %s %s %s %d %d", cpuClientEnv, dir, addr, transport, e.token, e.port, size))
	cmd.ExtraFiles = []*os.File{e.sink}
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	// The child says when its tunnel is open, so that the handshake and
	// the process's start are not counted.
	lines := bufio.NewScanner(out)
	if !lines.Scan() || lines.Text() != "open" {
		cmd.Wait()
		b.Fatalf("tunnel client: %q, want open", lines.Text())
	}
	before, callsBefore := cpuSelf(), ioCallsSelf()
	b.StartTimer()
	if !lines.Scan() {
		cmd.Wait()
		b.Fatal("tunnel client ended without reporting")
	}
	b.StopTimer()
	server = cpuSelf() - before
	calls = ioCallsSelf()
	calls.reads -= callsBefore.reads
	calls.writes -= callsBefore.writes
	got := lines.Text()
	io.Copy(io.Discard, out)
	if err := cmd.Wait(); err != nil {
		b.Fatalf("tunnel client: %v (%s)", err, got)
	}
	var sunk int64
	var childCPU time.Duration
	if _, err := fmt.Sscanf(got, "received %d cpu %d", &sunk, &childCPU); err != nil || sunk != size {
		b.Fatalf("tunnel client reported %q, want %d bytes received", got, size)
	}
	return server, childCPU, calls
}

// ioCalls counts a process's read and write system calls.
type ioCalls struct{ reads, writes int64 }

// ioCallsSelf is this process's syscr and syscw from /proc/self/io.
func ioCallsSelf() ioCalls {
	var c ioCalls
	f, err := os.Open("/proc/self/io")
	if err != nil {
		return c
	}
	defer f.Close()
	lines := bufio.NewScanner(f)
	for lines.Scan() {
		var name string
		var v int64
		if _, err := fmt.Sscanf(lines.Text(), "%s %d", &name, &v); err != nil {
			continue
		}
		switch name {
		case "syscr:":
			c.reads = v
		case "syscw:":
			c.writes = v
		}
	}
	return c
}

func cpuSelf() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// TestTunnelCPUClient is BenchmarkTunnelCPU's child: it does nothing
// unless started by it. It opens the tunnel and says "open"; then either
// the client writes and the target (the listener on fd 3) reads, or the
// reverse; once the reading side has read everything, it says how much
// and the CPU it spent from "open" on.
func TestTunnelCPUClient(t *testing.T) {
	spec := os.Getenv(cpuClientEnv)
	if spec == "" {
		t.Skip("run by BenchmarkTunnelCPU only")
	}
	var dir, addr, transport, token string
	var port uint16
	var size int64
	if _, err := fmt.Sscanf(spec, "%s %s %s %s %d %d", &dir, &addr, &transport, &token, &port, &size); err != nil {
		t.Fatalf("%s=%q: %v", cpuClientEnv, spec, err)
	}
	ln, err := net.FileListener(os.NewFile(3, "target"))
	if err != nil {
		t.Fatal(err)
	}
	target := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			t.Error(err)
		}
		target <- c
	}()
	c, err := tunnel.NewClient(tunnel.ClientConfig{Server: cpuServerName, Address: addr, TLS: &tls.Config{InsecureSkipVerify: true},
		Token: token, Transport: transport})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, err := c.Dial(ctx, "sink", port)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	tc := <-target
	if tc == nil {
		return
	}
	defer tc.Close()
	before := cpuSelf()
	fmt.Println("open")
	src, dst := net.Conn(conn), tc
	if dir == "down" {
		src, dst = tc, conn
	}
	got := make(chan int64, 1)
	go func() {
		n, _ := io.Copy(io.Discard, dst)
		got <- n
	}()
	buf := make([]byte, 256<<10)
	for left := size; left > 0; {
		n, err := src.Write(buf[:min(left, int64(len(buf)))])
		if err != nil {
			t.Fatal(err)
		}
		left -= int64(n)
	}
	src.(interface{ CloseWrite() error }).CloseWrite()
	n := <-got
	fmt.Printf("received %d cpu %d\n", n, cpuSelf()-before)
}
