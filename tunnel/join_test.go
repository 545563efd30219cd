package tunnel_test

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bastiond/bastiond/tunnel"
)

// tcpPair is both ends of a loopback TCP connection.
func tcpPair(t *testing.T) (net.Conn, net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	a, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	b, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}

type joinResult struct {
	aToB, bToA int64
	err        error
}

// TestJoin relays between a local TCP connection and each kind of tunnel
// conn, as bastionctl tunnel does: the bytes arrive exactly and the
// counts are exact; the user's end of stream reaches the server, which
// still answers after it.
func TestJoin(t *testing.T) {
	cases := pairs(t)
	cases["tcp"] = tcpPair
	for name, pair := range cases {
		t.Run(name, func(t *testing.T) {
			user, local := tcpPair(t)
			client, server := pair(t)
			done := make(chan joinResult, 1)
			go func() {
				var r joinResult
				r.aToB, r.bToA, r.err = tunnel.Join(local, client)
				done <- r
			}()
			up := make([]byte, 3<<20+5)
			down := make([]byte, 2<<20+11)
			rnd := rand.NewChaCha8([32]byte{1})
			rnd.Read(up)
			rnd.Read(down)

			go func() {
				user.Write(up)
				user.(closeWriter).CloseWrite()
			}()
			got, err := io.ReadAll(server)
			if err != nil || !bytes.Equal(got, up) {
				t.Fatalf("server read %d bytes (%v), want %d", len(got), err, len(up))
			}
			// The server answers after the client's end of stream.
			if _, err := server.Write(down); err != nil {
				t.Fatal(err)
			}
			server.(closeWriter).CloseWrite()
			got, err = io.ReadAll(user)
			if err != nil || !bytes.Equal(got, down) {
				t.Fatalf("user read %d bytes (%v), want %d", len(got), err, len(down))
			}
			select {
			case r := <-done:
				if r.err != nil || r.aToB != int64(len(up)) || r.bToA != int64(len(down)) {
					t.Errorf("Join = %d, %d, %v; want %d, %d, nil", r.aToB, r.bToA, r.err, len(up), len(down))
				}
			case <-time.After(10 * time.Second):
				t.Fatal("Join did not return after both ends of stream")
			}
		})
	}
}

// TestJoinWithoutCloseWrite: a side that cannot half-close is closed at
// its end of stream, which is no error.
func TestJoinWithoutCloseWrite(t *testing.T) {
	p, a := net.Pipe()
	user, b := tcpPair(t)
	done := make(chan joinResult, 1)
	go func() {
		var r joinResult
		r.aToB, r.bToA, r.err = tunnel.Join(a, b)
		done <- r
	}()
	user.Write([]byte("hello"))
	user.(closeWriter).CloseWrite()
	got, err := io.ReadAll(p)
	if err != nil || string(got) != "hello" {
		t.Fatalf("read %q, %v", got, err)
	}
	r := <-done
	if r.err != nil || r.bToA != 5 {
		t.Errorf("Join = %d, %d, %v; want 5 bytes from b and no error", r.aToB, r.bToA, r.err)
	}
}

// TestJoinError: a side that fails ends both directions and the error is
// returned.
func TestJoinError(t *testing.T) {
	user, a := tcpPair(t)
	client, server := wsConnPair(t)
	done := make(chan joinResult, 1)
	go func() {
		var r joinResult
		r.aToB, r.bToA, r.err = tunnel.Join(a, client)
		done <- r
	}()
	user.Write([]byte("x"))
	if _, err := io.ReadFull(server, make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	server.Close() // cut, without an end of stream
	select {
	case r := <-done:
		if r.err == nil {
			t.Error("Join returned no error for a cut tunnel")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Join did not return after a cut")
	}
	// The user's side was closed too.
	user.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadAll(user); err != nil {
		t.Errorf("user read: %v", err)
	}
}

// endThenReset joins a local TCP client (user's end returned) to pair's
// client end, has the user send "auth" and end its stream, the server
// answer "welcome", and the user reset (SO_LINGER 0) once it read it.
func endThenReset(t *testing.T, pair func(*testing.T) (net.Conn, net.Conn), run int) (server net.Conn, done <-chan joinResult) {
	t.Helper()
	user, server, results := startJoin(t, pair)
	user.Write([]byte("auth"))
	user.(closeWriter).CloseWrite()
	if got, err := io.ReadAll(server); err != nil || string(got) != "auth" {
		t.Fatalf("run %d: server read %q, %v", run, got, err)
	}
	server.Write([]byte("welcome"))
	io.ReadFull(user, make([]byte, 7))
	user.(*net.TCPConn).SetLinger(0)
	user.Close()
	return server, results
}

// startJoin joins a local TCP client to pair's client end: it returns the
// user's end of the local connection, pair's server end, and Join's
// result to come.
func startJoin(t *testing.T, pair func(*testing.T) (net.Conn, net.Conn)) (user, server net.Conn, done <-chan joinResult) {
	user, local := tcpPair(t)
	client, server := pair(t)
	results := make(chan joinResult, 1)
	go func() {
		var r joinResult
		r.aToB, r.bToA, r.err = tunnel.Join(local, client)
		results <- r
	}()
	return user, server, results
}

// wantNormalEnd waits for Join's result, which must be a normal end.
func wantNormalEnd(t *testing.T, done <-chan joinResult, run int) {
	t.Helper()
	select {
	case r := <-done:
		if r.err != nil {
			t.Fatalf("run %d: Join = %v, want a normal end", run, r.err)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("run %d: Join did not return", run)
	}
}

// TestJoinEndThenReset: a local client that ends its stream and then
// closes without reading the rest (xfreerdp +auth-only) ended normally:
// Join returns no error, and the server's writes fail as a closed peer
// (syscall.EPIPE), which the bastion records as a normal end. A local
// client that resets without ending its stream is still an error.
func TestJoinEndThenReset(t *testing.T) {
	cases := pairs(t)
	cases["tcp"] = tcpPair
	for name, pair := range cases {
		t.Run(name, func(t *testing.T) {
			runs := 20
			if strings.Contains(name, "websocket") {
				// The server below reads nothing after the end of stream,
				// so the client's close handshake waits out the library's
				// 5 s before its TCP connection closes.
				runs = 2
			}
			for i := range runs {
				server, done := endThenReset(t, pair, i)
				server.SetWriteDeadline(time.Now().Add(10 * time.Second))
				var werr error
				for werr == nil {
					_, werr = server.Write(make([]byte, 32<<10))
				}
				if name != "tcp" && !errors.Is(werr, syscall.EPIPE) && !errors.Is(werr, syscall.ECONNRESET) {
					t.Errorf("run %d: the server's write failed with %v, want a closed peer (EPIPE or ECONNRESET)", i, werr)
				}
				wantNormalEnd(t, done, i)
			}

			// The user ended its stream and reset; then the server ends
			// its own: the half-close toward the reset user fails with
			// ENOTCONN, which is that same normal end (xfreerdp
			// +auth-only through bastionctl tunnel does this).
			for i := range 5 {
				server, done := endThenReset(t, pair, i)
				time.Sleep(20 * time.Millisecond) // the reset reaches local's socket
				if cw, ok := server.(closeWriter); ok {
					cw.CloseWrite()
				} else {
					server.Close()
				}
				wantNormalEnd(t, done, i)
				server.Close()
			}

			// A reset before its end of stream is an error.
			user, server, done := startJoin(t, pair)
			server.Write([]byte("hello"))
			io.ReadFull(user, make([]byte, 5))
			user.(*net.TCPConn).SetLinger(0)
			user.Close()
			select {
			case r := <-done:
				if r.err == nil {
					t.Error("Join returned no error for a client that reset mid-stream")
				}
			case <-time.After(10 * time.Second):
				t.Fatal("Join did not return after a reset")
			}
		})
	}
}
