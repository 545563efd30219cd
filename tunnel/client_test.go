package tunnel_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bastiond/bastiond/api/tunnelwire"
	"github.com/bastiond/bastiond/tunnel"
	"github.com/bastiond/bastiond/tunnel/tunneltest"
)

const testToken = "bst_0123456789abcdef_secret"

func newClient(t testing.TB, s *tunneltest.Server, transport string, opt ...func(*tunnel.ClientConfig)) *tunnel.Client {
	t.Helper()
	cfg := tunnel.ClientConfig{Server: tunneltest.Name, Address: s.Addr, TLS: s.TLS, Token: testToken, Transport: transport,
		Logf: func(format string, args ...any) { t.Logf("client: "+format, args...) }}
	for _, o := range opt {
		o(&cfg)
	}
	c, err := tunnel.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// longFallback gives auto mode a long fallback delay, for tests that
// expect QUIC to carry the tunnel: on a loaded machine a loopback QUIC
// handshake may take longer than the default 50 ms, and TLS would then
// rightly win the race (TestDialRace tests the race itself).
func longFallback(c *tunnel.ClientConfig) { c.FallbackDelay = 10 * time.Second }

func dial(t testing.TB, c *tunnel.Client, target string, port uint16) net.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := c.Dial(ctx, target, port)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// echo sends n random bytes through conn, which the server echoes, and
// checks that exactly they come back, then the end.
func echo(t testing.TB, conn net.Conn, n int) {
	t.Helper()
	data := make([]byte, n)
	rand.Read(data)
	werr := make(chan error, 1)
	go func() {
		// Odd-sized writes, so that message and frame boundaries fall
		// anywhere.
		p := data
		for len(p) > 0 {
			k := min(len(p), 100_003)
			if _, err := conn.Write(p[:k]); err != nil {
				werr <- err
				return
			}
			p = p[k:]
		}
		werr <- conn.(*tunnel.Conn).CloseWrite()
	}()
	conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	got, err := io.ReadAll(conn)
	if err != nil {
		t.Fatalf("read: %v after %d bytes", err, len(got))
	}
	if err := <-werr; err != nil {
		t.Fatalf("write: %v", err)
	}
	if !bytes.Equal(got, data) {
		t.Fatalf("echoed %d bytes, sent %d, or they differ", len(got), n)
	}
}

func TestDial(t *testing.T) {
	for _, network := range []string{"4", "6"} {
		s := tunneltest.New(t, tunneltest.Config{Network: network})
		for _, c := range []struct{ transport, via string }{{"quic", "quic"}, {"tcp", "websocket"}, {"auto", "quic"}} {
			t.Run(fmt.Sprintf("ipv%s/%s", network, c.transport), func(t *testing.T) {
				cl := newClient(t, s, c.transport, longFallback)
				conn := dial(t, cl, "vm1", 3389)
				tc := conn.(*tunnel.Conn)
				if tc.SessionID() != tunneltest.SessionID || tc.Transport() != c.via || cl.Transport() != c.via {
					t.Errorf("session %q via %q (client says %q), want %q via %q", tc.SessionID(), tc.Transport(), cl.Transport(), tunneltest.SessionID, c.via)
				}
				if !strings.Contains(conn.RemoteAddr().String(), s.Addr) && conn.RemoteAddr().String() != s.Addr {
					t.Errorf("remote address %v, want %v", conn.RemoteAddr(), s.Addr)
				}
				echo(t, conn, 5<<20+17)
			})
		}
	}
}

// TestDialFallback: with UDP blocked, auto mode takes the WebSocket, and
// says so only through the logger.
func TestDialFallback(t *testing.T) {
	s := tunneltest.New(t, tunneltest.Config{NoQUIC: true})
	var mu sync.Mutex
	var logs []string
	cl := newClient(t, s, "auto", func(c *tunnel.ClientConfig) {
		c.Logf = func(format string, args ...any) {
			mu.Lock()
			defer mu.Unlock()
			logs = append(logs, fmt.Sprintf(format, args...))
		}
	})
	for i := range 3 {
		conn := dial(t, cl, "vm1", 22)
		if cl.Transport() != "websocket" || conn.(*tunnel.Conn).Transport() != "websocket" {
			t.Fatalf("dial %d used %q, want websocket", i, cl.Transport())
		}
		echo(t, conn, 100<<10)
	}
	if got := s.WebSockets.Load(); got != 3 {
		t.Errorf("%d WebSockets, want 3", got)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(logs) == 0 || !strings.Contains(strings.Join(logs, "\n"), "TLS on TCP") {
		t.Errorf("logged %q, want a word on the fallback", logs)
	}
}

// TestDialSkipsQUICAfterFailure: once QUIC has failed, Dials go straight
// to TLS, and after QUICRetry they try QUIC again.
func TestDialSkipsQUICAfterFailure(t *testing.T) {
	s := tunneltest.New(t, tunneltest.Config{RefuseQUIC: true})
	cl := newClient(t, s, "auto", func(c *tunnel.ClientConfig) {
		c.QUICRetry = time.Second
		c.FallbackDelay = 10 * time.Second // only a QUIC failure starts TLS
	})
	step := func(name string, wantQUIC bool) {
		t.Helper()
		before := s.UDPPackets.Load()
		conn := dial(t, cl, "vm1", 22)
		conn.Close()
		if cl.Transport() != "websocket" {
			t.Fatalf("%s: via %s", name, cl.Transport())
		}
		if tried := s.UDPPackets.Load() > before; tried != wantQUIC {
			t.Fatalf("%s: QUIC tried: %v, want %v", name, tried, wantQUIC)
		}
	}
	step("first dial", true)
	step("right after", false)
	time.Sleep(1200 * time.Millisecond)
	step("after QUICRetry", true)
}

func TestDialConcurrentSharesQUIC(t *testing.T) {
	s := tunneltest.New(t, tunneltest.Config{})
	cl := newClient(t, s, "quic")
	var wg sync.WaitGroup
	for range 50 {
		wg.Go(func() {
			conn := dial(t, cl, "vm1", 22)
			echo(t, conn, 64<<10)
		})
	}
	wg.Wait()
	if q, st := s.QUICConns.Load(), s.Streams.Load(); q != 1 || st != 50 {
		t.Errorf("%d QUIC connections and %d streams, want 1 and 50", q, st)
	}
}

// TestDialRedialsQUIC: when the bastion drops the QUIC connection (a
// restart), the next Dial makes a new one.
func TestDialRedialsQUIC(t *testing.T) {
	s := tunneltest.New(t, tunneltest.Config{})
	for _, transport := range []string{"quic", "auto"} {
		t.Run(transport, func(t *testing.T) {
			cl := newClient(t, s, transport, longFallback)
			before := s.QUICConns.Load()
			conn := dial(t, cl, "vm1", 22)
			echo(t, conn, 1000)
			s.CloseQUIC()
			// The old tunnel dies with its connection.
			conn.SetReadDeadline(time.Now().Add(5 * time.Second))
			if _, err := conn.Read(make([]byte, 1)); err == nil {
				t.Fatal("the tunnel outlived its QUIC connection")
			}
			conn = dial(t, cl, "vm1", 22)
			echo(t, conn, 1000)
			if got := s.QUICConns.Load() - before; got != 2 || cl.Transport() != "quic" {
				t.Errorf("%d QUIC connections via %s, want 2 via quic", got, cl.Transport())
			}
		})
	}
}

func TestDialRefused(t *testing.T) {
	s := tunneltest.New(t, tunneltest.Config{Handler: func(c net.Conn, req tunnelwire.Request) {
		switch req.Target {
		case "full":
			tunneltest.Refuse(c, tunnelwire.StatusCapacity, "bastion at capacity")
		case "future":
			c.SetWriteDeadline(time.Now().Add(5 * time.Second))
			tunnelwire.WriteResponse(c, tunnelwire.Response{Status: tunnelwire.StatusUnsupportedVersion, Message: "version 1 is not supported", Version: 2})
		case "silent":
			tunneltest.Refuse(c, tunnelwire.StatusUnauthorized, "")
		default:
			tunneltest.Refuse(c, tunnelwire.StatusDenied, req.Token+" may not open tunnels to "+req.Target)
		}
	}})
	for _, transport := range []string{"quic", "tcp"} {
		cl := newClient(t, s, transport)
		for _, c := range []struct {
			target string
			status tunnelwire.Status
			msg    string
		}{
			{"full", tunnelwire.StatusCapacity, "bastion refused the tunnel to full:3389: bastion at capacity"},
			{"vm2", tunnelwire.StatusDenied, "bastion refused the tunnel to vm2:3389: " + testToken + " may not open tunnels to vm2"},
			{"future", tunnelwire.StatusUnsupportedVersion, "version 2 and this bastionctl only version 1: upgrade bastionctl"},
			{"silent", tunnelwire.StatusUnauthorized, "run bastionctl login"},
		} {
			t.Run(transport+"/"+c.target, func(t *testing.T) {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				conn, err := cl.Dial(ctx, c.target, 3389)
				var te *tunnelwire.Error
				if conn != nil || !errors.As(err, &te) || te.Status != c.status || !strings.Contains(err.Error(), c.msg) {
					t.Fatalf("got %v, %v; want %v mentioning %q", conn, err, c.status, c.msg)
				}
			})
		}
	}
}

func TestDialUnreachable(t *testing.T) {
	// A port with nothing on it, UDP or TCP.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close()
	untrusted := tunneltest.New(t, tunneltest.Config{})
	for _, c := range []struct {
		name, server, addr, transport string
		roots                         *tls.Config
		want                          []string
	}{
		{"nothing listens", tunneltest.Name, dead, "auto", nil, []string{"cannot reach bastion.test: QUIC: timeout: no recent network activity; TLS: connection refused"}},
		{"nothing listens on TCP", tunneltest.Name, dead, "tcp", nil, []string{"cannot reach bastion.test over TLS: connection refused"}},
		{"untrusted certificate", tunneltest.Name, untrusted.Addr, "auto", &tls.Config{}, []string{"cannot reach bastion.test: QUIC: ", "certificate", "; TLS: ", "certificate"}},
		{"another name", "other.test", untrusted.Addr, "quic", nil, []string{"cannot reach other.test over QUIC: ", "certificate is valid for bastion.test"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			roots := c.roots
			if roots == nil {
				roots = untrusted.TLS
			}
			cl, err := tunnel.NewClient(tunnel.ClientConfig{Server: c.server, Address: c.addr, TLS: roots, Token: testToken, Transport: c.transport})
			if err != nil {
				t.Fatal(err)
			}
			defer cl.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			_, err = cl.Dial(ctx, "vm1", 22)
			var re *tunnel.ReachError
			if !errors.As(err, &re) {
				t.Fatalf("got %v, want a ReachError", err)
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("%q does not mention %q", err, w)
				}
			}
		})
	}
}

func TestDialBadRequest(t *testing.T) {
	s := tunneltest.New(t, tunneltest.Config{})
	cl := newClient(t, s, "quic")
	_, err := cl.Dial(context.Background(), "VM1", 22)
	var pe *tunnelwire.ProtocolError
	if !errors.As(err, &pe) || !strings.Contains(err.Error(), `"VM1" is not a target name`) {
		t.Fatalf("got %v", err)
	}
	if s.Streams.Load() != 0 {
		t.Errorf("an invalid request was sent")
	}
}

// TestDialContext: a Dial ends with its context, also while waiting for
// the bastion's answer.
func TestDialContext(t *testing.T) {
	s := tunneltest.New(t, tunneltest.Config{Handler: func(c net.Conn, req tunnelwire.Request) {
		// A target that does not answer: wait for the client to give up.
		c.Read(make([]byte, 1))
	}})
	for _, transport := range []string{"quic", "tcp"} {
		t.Run(transport, func(t *testing.T) {
			cl := newClient(t, s, transport)
			ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
			defer cancel()
			_, err := cl.Dial(ctx, "vm1", 22)
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("got %v, want the context's deadline", err)
			}
		})
	}
}

// TestServerHalfClosesFirst: the target ends its direction first (a
// server that says goodbye), then the client still sends.
func TestServerHalfClosesFirst(t *testing.T) {
	got := make(chan int64, 2)
	s := tunneltest.New(t, tunneltest.Config{Handler: func(c net.Conn, req tunnelwire.Request) {
		tunnelwire.WriteResponse(c, tunnelwire.Response{Status: tunnelwire.StatusOK, Message: "s"})
		c.Write([]byte("bye"))
		c.(closeWriter).CloseWrite()
		n, _ := io.Copy(io.Discard, c)
		got <- n
	}})
	for _, transport := range []string{"quic", "tcp"} {
		t.Run(transport, func(t *testing.T) {
			conn := dial(t, newClient(t, s, transport), "vm1", 22)
			b, err := io.ReadAll(conn)
			if err != nil || string(b) != "bye" {
				t.Fatalf("read %q, %v", b, err)
			}
			const n = 3<<20 + 5
			if _, err := conn.Write(make([]byte, n)); err != nil {
				t.Fatal(err)
			}
			conn.(*tunnel.Conn).CloseWrite()
			if m := <-got; m != n {
				t.Fatalf("the server read %d bytes, want %d", m, n)
			}
		})
	}
}

func TestConnect(t *testing.T) {
	for _, c := range []struct {
		noQUIC          bool
		transport, want string
	}{{false, "auto", "quic"}, {true, "auto", "websocket"}, {false, "tcp", "websocket"}} {
		t.Run(fmt.Sprint(c), func(t *testing.T) {
			s := tunneltest.New(t, tunneltest.Config{NoQUIC: c.noQUIC})
			cl := newClient(t, s, c.transport, longFallback)
			via, err := cl.Connect(context.Background())
			if err != nil || via != c.want {
				t.Fatalf("Connect: %q, %v; want %q", via, err, c.want)
			}
			if c.want == "quic" {
				dial(t, cl, "vm1", 22)
				if s.QUICConns.Load() != 1 {
					t.Errorf("Dial did not use the connection Connect made")
				}
			}
		})
	}
}

func TestNewClient(t *testing.T) {
	for _, c := range []struct {
		name string
		cfg  tunnel.ClientConfig
		want string
	}{
		{"no server", tunnel.ClientConfig{Token: "t"}, "Server is required"},
		{"no token", tunnel.ClientConfig{Server: "b"}, "Token is required"},
		{"bad token", tunnel.ClientConfig{Server: "b", Token: "a b"}, "printable"},
		{"bad transport", tunnel.ClientConfig{Server: "b", Token: "t", Transport: "udp"}, `transport "udp"`},
		{"address without port", tunnel.ClientConfig{Server: "b", Token: "t", Address: "192.0.2.1"}, "missing port"},
	} {
		t.Run(c.name, func(t *testing.T) {
			if _, err := tunnel.NewClient(c.cfg); err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v, want an error mentioning %q", err, c.want)
			}
		})
	}
}

// TestClientLeaksNothing: after Close (of the client and the server) no
// goroutine is left, also with a QUIC handshake still under way.
func TestClientLeaksNothing(t *testing.T) {
	before := runtime.NumGoroutine()
	func() {
		s := tunneltest.New(t, tunneltest.Config{})
		blocked := tunneltest.New(t, tunneltest.Config{NoQUIC: true})
		for _, transport := range []string{"quic", "tcp", "auto"} {
			cl := newClient(t, s, transport)
			conn := dial(t, cl, "vm1", 22)
			echo(t, conn, 10000)
			conn.Close()
			cl.Close()
		}
		// UDP blocked: the QUIC handshake is still trying when the
		// client closes.
		cl := newClient(t, blocked, "auto")
		conn := dial(t, cl, "vm1", 22)
		echo(t, conn, 10000)
		conn.Close()
		cl.Close()
		s.Close()
		blocked.Close()
	}()
	var after int
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if after = runtime.NumGoroutine(); after <= before {
			return
		}
	}
	buf := make([]byte, 1<<20)
	t.Errorf("%d goroutines before, %d after:\n%s", before, after, buf[:runtime.Stack(buf, true)])
}

// TestDialRace: auto mode races QUIC and TLS. QUIC that answers within
// FallbackDelay carries the tunnel and TLS is never tried; QUIC that never
// answers (UDP dropped silently, which no error reveals) costs
// FallbackDelay, not the QUIC handshake's limit: TLS starts then and
// carries the tunnel, and the client remembers UDP as blocked.
func TestDialRace(t *testing.T) {
	for _, network := range []string{"4", "6"} {
		t.Run("ipv"+network+"/quic within the delay", func(t *testing.T) {
			s := tunneltest.New(t, tunneltest.Config{Network: network})
			cl := newClient(t, s, "auto", func(c *tunnel.ClientConfig) { c.FallbackDelay = 5 * time.Second })
			for range 3 {
				echo(t, dial(t, cl, "vm1", 22), 1000)
			}
			if cl.Transport() != "quic" || s.TCPConns.Load() != 0 || s.QUICConns.Load() != 1 {
				t.Errorf("via %s, %d TCP and %d QUIC connections, want quic, 0 and 1",
					cl.Transport(), s.TCPConns.Load(), s.QUICConns.Load())
			}
		})
		t.Run("ipv"+network+"/quic blackholed", func(t *testing.T) {
			s := tunneltest.New(t, tunneltest.Config{Network: network, BlackholeQUIC: true})
			var mu sync.Mutex
			var logs, notes []string
			cl := newClient(t, s, "auto", func(c *tunnel.ClientConfig) {
				c.FallbackDelay = 100 * time.Millisecond
				c.Logf = func(format string, args ...any) {
					mu.Lock()
					defer mu.Unlock()
					logs = append(logs, fmt.Sprintf(format, args...))
				}
				c.NoteQUIC = func(blocked bool) {
					mu.Lock()
					defer mu.Unlock()
					notes = append(notes, fmt.Sprint(blocked))
				}
			})
			// Far below the QUIC handshake's limit (15s): only the race
			// gets the tunnel through in time.
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			conn, err := cl.Dial(ctx, "vm1", 22)
			if err != nil {
				t.Fatalf("dial with UDP blackholed: %v", err)
			}
			echo(t, conn, 1000)
			if cl.Transport() != "websocket" || s.UDPPackets.Load() == 0 {
				t.Errorf("via %s after %d datagrams, want websocket after QUIC was tried", cl.Transport(), s.UDPPackets.Load())
			}
			cl.Close()
			mu.Lock()
			defer mu.Unlock()
			if all := strings.Join(logs, "\n"); !strings.Contains(all, "no QUIC answer") || !strings.Contains(all, "trying TLS on TCP too") {
				t.Errorf("logged %q, want the race's fallback said", logs)
			}
			if len(notes) != 1 || notes[0] != "true" {
				t.Errorf("NoteQUIC told %v, want [true] (UDP blocked, for the next run)", notes)
			}
		})
	}
}
