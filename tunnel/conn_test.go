package tunnel_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/bastiond/bastiond/api/tunnelwire"
	"github.com/bastiond/bastiond/tunnel"
	"github.com/bastiond/bastiond/tunnel/tunneltest"
)

type closeWriter interface{ CloseWrite() error }

// wsPair is a WebSocket over loopback HTTP: the server's end through
// NewWSConn, and the client's raw WebSocket (dialled with opts).
func wsPair(t *testing.T, opts *websocket.DialOptions) (net.Conn, *websocket.Conn) {
	t.Helper()
	conns := make(chan net.Conn, 1)
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := websocket.Accept(w, r, tunnel.AcceptOptions())
		if err != nil {
			t.Error(err)
			return
		}
		conns <- tunnel.NewWSConn(context.Background(), ws, nil, nil)
	}))
	t.Cleanup(hs.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if opts == nil {
		opts = &websocket.DialOptions{Subprotocols: []string{tunnelwire.Subprotocol}}
	}
	cws, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(hs.URL, "http")+tunnelwire.WebSocketPath, opts)
	if err != nil {
		t.Fatal(err)
	}
	cws.SetReadLimit(tunnel.MaxWSMessage)
	t.Cleanup(func() { cws.CloseNow() })
	srv := <-conns
	t.Cleanup(func() { srv.Close() })
	return srv, cws
}

// wsConnPair is both ends of a WebSocket as tunnel conns.
func wsConnPair(t *testing.T) (client, server net.Conn) {
	t.Helper()
	srv, cws := wsPair(t, nil)
	cl := tunnel.NewWSConn(context.Background(), cws, nil, nil)
	t.Cleanup(func() { cl.Close() })
	return cl, srv
}

// pairs are both ends of each kind of conn: a QUIC stream and a
// WebSocket, through the client and the test server.
func pairs(t *testing.T) map[string]func(t *testing.T) (client, server net.Conn) {
	return map[string]func(t *testing.T) (net.Conn, net.Conn){
		"websocket": wsConnPair,
		"quic": func(t *testing.T) (net.Conn, net.Conn) {
			return dialPair(t, "quic")
		},
		"websocket via the client": func(t *testing.T) (net.Conn, net.Conn) {
			return dialPair(t, "tcp")
		},
	}
}

// dialPair is a tunnel through the client and the server's end of it.
func dialPair(t *testing.T, transport string) (net.Conn, net.Conn) {
	t.Helper()
	conns := make(chan net.Conn, 1)
	release := make(chan struct{})
	s := tunneltest.New(t, tunneltest.Config{Handler: func(c net.Conn, req tunnelwire.Request) {
		tunnelwire.WriteResponse(c, tunnelwire.Response{Status: tunnelwire.StatusOK, Message: "s1"})
		conns <- c
		<-release
	}})
	t.Cleanup(func() { close(release) })
	cl := newClient(t, s, transport)
	conn := dial(t, cl, "vm1", 22)
	return conn, <-conns
}

func TestConnHalfClose(t *testing.T) {
	for name, pair := range pairs(t) {
		t.Run(name, func(t *testing.T) {
			client, server := pair(t)
			// The client ends its direction first; the server still
			// writes after that, then ends its own.
			if _, err := client.Write([]byte("hello")); err != nil {
				t.Fatal(err)
			}
			if err := client.(closeWriter).CloseWrite(); err != nil {
				t.Fatal(err)
			}
			if _, err := client.Write([]byte("late")); err == nil {
				t.Error("a Write after CloseWrite succeeded")
			}
			got, err := io.ReadAll(server)
			if err != nil || string(got) != "hello" {
				t.Fatalf("server read %q, %v", got, err)
			}
			if _, err := server.Write([]byte("world")); err != nil {
				t.Fatal(err)
			}
			server.(closeWriter).CloseWrite()
			got, err = io.ReadAll(client)
			if err != nil || string(got) != "world" {
				t.Fatalf("client read %q, %v", got, err)
			}
			// Reading on after the end gives the end again.
			if n, err := client.Read(make([]byte, 10)); n != 0 || err != io.EOF {
				t.Fatalf("read after EOF: %d, %v", n, err)
			}
		})
	}
}

// TestConnExactBytes: many writes of odd sizes, one of them larger than a
// WebSocket message, arrive exactly; an empty Write sends nothing (it must
// not end the stream).
func TestConnExactBytes(t *testing.T) {
	for name, pair := range pairs(t) {
		t.Run(name, func(t *testing.T) {
			client, server := pair(t)
			var sent bytes.Buffer
			done := make(chan error, 1)
			go func() {
				for i, size := range []int{1, 0, 7, 4096, 0, 65537, 3 << 20, 13} {
					p := bytes.Repeat([]byte{byte(i + 1)}, size)
					sent.Write(p)
					if n, err := client.Write(p); n != size || err != nil {
						done <- err
						return
					}
				}
				done <- client.(closeWriter).CloseWrite()
			}()
			got, err := io.ReadAll(server)
			if err != nil {
				t.Fatal(err)
			}
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, sent.Bytes()) {
				t.Fatalf("got %d bytes, sent %d, or they differ", len(got), sent.Len())
			}
		})
	}
}

func TestConnDeadlines(t *testing.T) {
	for name, pair := range pairs(t) {
		t.Run(name, func(t *testing.T) {
			t.Run("a deadline set while idle fails Reads until it is moved", func(t *testing.T) {
				client, server := pair(t)
				server.SetReadDeadline(time.Now().Add(-time.Second))
				if _, err := server.Read(make([]byte, 1)); !errors.Is(err, os.ErrDeadlineExceeded) {
					t.Fatalf("read past the deadline: %v", err)
				}
				server.SetReadDeadline(time.Time{})
				client.Write([]byte("x"))
				if _, err := io.ReadFull(server, make([]byte, 1)); err != nil {
					t.Fatalf("read after clearing the deadline: %v", err)
				}
			})
			t.Run("a deadline ends a blocked Read", func(t *testing.T) {
				_, server := pair(t)
				server.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
				_, err := server.Read(make([]byte, 1))
				var ne net.Error
				if !errors.As(err, &ne) || !ne.Timeout() {
					t.Fatalf("blocked read: %v, want a timeout", err)
				}
			})
			t.Run("a deadline moved away does not fire", func(t *testing.T) {
				client, server := pair(t)
				server.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
				server.SetReadDeadline(time.Time{})
				time.Sleep(60 * time.Millisecond)
				client.Write([]byte("x"))
				if _, err := io.ReadFull(server, make([]byte, 1)); err != nil {
					t.Fatalf("read: %v", err)
				}
			})
		})
	}
}

// TestConnCloseUnblocks: Close ends a blocked Read and a Write blocked by
// a peer that does not read.
func TestConnCloseUnblocks(t *testing.T) {
	for name, pair := range pairs(t) {
		t.Run(name, func(t *testing.T) {
			client, _ := pair(t)
			readErr := make(chan error, 1)
			go func() {
				_, err := client.Read(make([]byte, 1))
				readErr <- err
			}()
			writeErr := make(chan error, 1)
			go func() {
				big := make([]byte, 1<<20)
				for {
					if _, err := client.Write(big); err != nil {
						writeErr <- err
						return
					}
				}
			}()
			time.Sleep(100 * time.Millisecond)
			client.Close()
			if err := <-writeErr; err == nil {
				t.Error("the blocked Write returned no error")
			}
			if err := <-readErr; err == nil || err == io.EOF {
				t.Errorf("the blocked Read returned %v, want an error", err)
			}
		})
	}
}

// TestConnCutIsNotEOF: a peer that closes without ending its stream has
// cut it: Read fails, it does not report a clean end.
func TestConnCutIsNotEOF(t *testing.T) {
	for name, pair := range pairs(t) {
		if name != "websocket" {
			continue // a QUIC Close sends the FIN: a clean end
		}
		t.Run(name, func(t *testing.T) {
			client, server := pair(t)
			client.Write([]byte("part"))
			client.Close()
			got, err := io.ReadAll(server)
			if string(got) != "part" || !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Fatalf("read %q, %v; want the data, then io.ErrUnexpectedEOF", got, err)
			}
		})
	}
}

func TestWSConnRefusesBadMessages(t *testing.T) {
	ctx := context.Background()
	for _, c := range []struct {
		name string
		opts *websocket.DialOptions
		send func(ws *websocket.Conn) error
		want string
	}{
		{"text message", nil, func(ws *websocket.Conn) error { return ws.Write(ctx, websocket.MessageText, []byte("BTUN")) }, "text message"},
		{"message over the limit", nil, func(ws *websocket.Conn) error {
			return ws.Write(ctx, websocket.MessageBinary, make([]byte, tunnel.MaxWSMessage+1))
		}, "read limited"},
		{"no subprotocol", &websocket.DialOptions{}, func(ws *websocket.Conn) error {
			return ws.Write(ctx, websocket.MessageBinary, []byte("BTUN"))
		}, "subprotocol must be bastion-tunnel.v1"},
	} {
		t.Run(c.name, func(t *testing.T) {
			server, cws := wsPair(t, c.opts)
			go c.send(cws)
			go cws.Read(ctx) // answer the close
			_, err := io.ReadAll(server)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v, want an error mentioning %q", err, c.want)
			}
		})
	}
	t.Run("no subprotocol is a bad request", func(t *testing.T) {
		server, _ := wsPair(t, &websocket.DialOptions{})
		_, err := tunnelwire.ReadRequest(server)
		var pe *tunnelwire.ProtocolError
		if !errors.As(err, &pe) || pe.Status != tunnelwire.StatusBadRequest {
			t.Fatalf("got %v, want a bad-request tunnelwire.ProtocolError", err)
		}
	})
}

func TestWSConnAddrs(t *testing.T) {
	srv, _ := wsPair(t, nil)
	if srv.LocalAddr() == nil || srv.RemoteAddr() == nil {
		t.Fatal("nil address")
	}
	client, server := dialPair(t, "tcp")
	if client.RemoteAddr().String() != server.LocalAddr().String() || client.LocalAddr().String() != server.RemoteAddr().String() {
		t.Fatalf("client %v -> %v, server %v <- %v", client.LocalAddr(), client.RemoteAddr(), server.LocalAddr(), server.RemoteAddr())
	}
}
