package tunnel_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/bastiond/bastiond/api/tunnelwire"
	"github.com/bastiond/bastiond/tunnel"
	"github.com/bastiond/bastiond/tunnel/tunneltest"
)

// BenchmarkIdleServerMemory measures what an idle tunnel costs the server
// (heap and goroutine stacks): the tunnel conn as the server holds it
// while its relay waits on it, a goroutine blocked in Read with a 2 KiB
// buffer, as package broker's relay reads an idle client. The clients
// run in another process, so that only the server is measured. The
// target's side of a session (its TCP conn, the other direction's
// goroutine) is not included.
func BenchmarkIdleServerMemory(b *testing.B) {
	const n = 2000
	for _, transport := range []string{"tcp", "quic"} {
		b.Run(transport, func(b *testing.B) {
			var perSession float64
			for range b.N {
				perSession = idleServerMemory(b, transport, n)
			}
			b.ReportMetric(perSession, "B/session")
		})
	}
}

func idleServerMemory(b *testing.B, transport string, n int) float64 {
	var open sync.WaitGroup
	open.Add(n)
	s := tunneltest.New(b, tunneltest.Config{Handler: func(c net.Conn, req tunnelwire.Request) {
		tunnelwire.WriteResponse(c, tunnelwire.Response{Status: tunnelwire.StatusOK, Message: "idle"})
		open.Done()
		buf := make([]byte, 2<<10)
		c.Read(buf)
	}})
	ca := filepath.Join(b.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, s.CertPEM, 0o600); err != nil {
		b.Fatal(err)
	}
	before := memInUse()
	cmd := exec.Command(os.Args[0], "-test.run=^TestIdleTunnelClients$")
	cmd.Env = append(os.Environ(), "TUNNEL_IDLE_ADDR="+s.Addr, "TUNNEL_IDLE_CA="+ca,
		"TUNNEL_IDLE_TRANSPORT="+transport, "TUNNEL_IDLE_N="+strconv.Itoa(n))
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
	if err != nil || line != "ready\n" {
		b.Fatalf("client process: %q, %v", line, err)
	}
	open.Wait()
	time.Sleep(200 * time.Millisecond) // let the last answers leave
	after := memInUse()
	if p := os.Getenv("TUNNEL_IDLE_HEAPPROFILE"); p != "" {
		f, err := os.Create(p + "." + transport)
		if err == nil {
			pprof.WriteHeapProfile(f)
			f.Close()
		}
	}
	b.Logf("%s: %d idle sessions: %.1f KiB each (heap and stacks)", transport, n, float64(after-before)/float64(n)/1024)
	return float64(after-before) / float64(n)
}

// memInUse is the heap and stacks in use. The collections also shrink
// the stacks of goroutines that grew them once (in a TLS handshake) and
// use little now, as a long-running server's would.
func memInUse() uint64 {
	for range 5 {
		runtime.GC()
	}
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	if os.Getenv("TUNNEL_IDLE_VERBOSE") != "" {
		fmt.Fprintf(os.Stderr, "heap %d KiB, stacks %d KiB, goroutines %d\n", m.HeapInuse>>10, m.StackInuse>>10, runtime.NumGoroutine())
	}
	return m.HeapInuse + m.StackInuse
}

// TestIdleTunnelClients is the client process of
// BenchmarkIdleServerMemory: it opens the tunnels, says "ready" and holds
// them until its standard input ends.
func TestIdleTunnelClients(t *testing.T) {
	addr := os.Getenv("TUNNEL_IDLE_ADDR")
	if addr == "" {
		t.Skip("the client process of BenchmarkIdleServerMemory")
	}
	n, _ := strconv.Atoi(os.Getenv("TUNNEL_IDLE_N"))
	pem, err := os.ReadFile(os.Getenv("TUNNEL_IDLE_CA"))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	cl, err := tunnel.NewClient(tunnel.ClientConfig{Server: tunneltest.Name, Address: addr, TLS: &tls.Config{RootCAs: pool},
		Token: testToken, Transport: os.Getenv("TUNNEL_IDLE_TRANSPORT")})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var mu sync.Mutex
	var conns []net.Conn
	var wg sync.WaitGroup
	sem := make(chan struct{}, 32)
	for range n {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			c, err := cl.Dial(ctx, "vm1", 22)
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	fmt.Println("ready")
	io.Copy(io.Discard, os.Stdin)
	for _, c := range conns {
		c.Close()
	}
}
