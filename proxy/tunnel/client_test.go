package tunnel

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"math/big"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/quic-go/quic-go"
)

func testCert(t *testing.T) tls.Certificate {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), DNSNames: []string{"bastion.test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// echoServer answers tunnel requests on QUIC and WebSocket: target
// "refuse" gets StatusCapacity; any other gets OK, then everything it
// receives back, then its end of stream.
type echoServer struct {
	quic, tcp string
}

func serveEcho(c net.Conn) {
	defer c.Close()
	req, err := ReadRequest(c)
	if err != nil {
		return
	}
	if req.Target == "refuse" {
		WriteResponse(c, Response{StatusCapacity, "bastion at capacity"})
		c.(interface{ CloseWrite() error }).CloseWrite()
		io.Copy(io.Discard, c)
		return
	}
	WriteResponse(c, Response{StatusOK, "sess-" + req.Target})
	io.Copy(c, c)
	c.(interface{ CloseWrite() error }).CloseWrite()
}

func startEcho(t *testing.T, host string, withQUIC bool) *echoServer {
	t.Helper()
	cert := testCert(t)
	e := &echoServer{}
	if withQUIC {
		ql, err := quic.ListenAddr(net.JoinHostPort(host, "0"), &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{ALPN}}, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ql.Close() })
		e.quic = ql.Addr().String()
		go func() {
			for {
				qc, err := ql.Accept(context.Background())
				if err != nil {
					return
				}
				go func() {
					for {
						s, err := qc.AcceptStream(context.Background())
						if err != nil {
							return
						}
						go serveEcho(NewStreamConn(qc, s))
					}
				}()
			}
		}()
	}
	ln, err := tls.Listen("tcp", net.JoinHostPort(host, "0"), &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"http/1.1"}})
	if err != nil {
		t.Fatal(err)
	}
	e.tcp = ln.Addr().String()
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != WebSocketPath || r.Header.Get("Origin") != "" {
			http.NotFound(w, r)
			return
		}
		ws, err := websocket.Accept(w, r, AcceptOptions())
		if err != nil {
			return
		}
		serveEcho(NewWSConn(context.Background(), ws, nil, nil))
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return e
}

func newTestClient(t *testing.T, addr, transport string) *Client {
	t.Helper()
	c, err := NewClient(ClientConfig{Server: "bastion.test", Address: addr, TLS: &tls.Config{InsecureSkipVerify: true},
		Token: "bst_test", Transport: transport, FallbackDelay: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func dialCtx(t *testing.T, c *Client, target string) (*Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return c.Dial(ctx, target, 22)
}

// exchange sends n bytes, half-closes, and reads the echo to its end.
func exchange(t *testing.T, conn *Conn, n int) {
	t.Helper()
	data := make([]byte, n)
	rand.Read(data)
	go func() {
		conn.Write(data)
		conn.CloseWrite()
	}()
	got, err := io.ReadAll(conn)
	if err != nil || !bytes.Equal(got, data) {
		t.Errorf("echo: %d bytes back of %d (%v)", len(got), n, err)
	}
	conn.Close()
}

func TestClient(t *testing.T) {
	for _, host := range []string{"127.0.0.1", "::1"} {
		e := startEcho(t, host, true)
		for _, c := range []struct {
			name, addr, transport, want string
		}{
			{"quic", e.quic, "quic", "quic"},
			{"tcp", e.tcp, "tcp", "websocket"},
			{"auto falls back when nothing answers on UDP", e.tcp, "auto", "websocket"},
		} {
			t.Run(host+"/"+c.name, func(t *testing.T) {
				cl := newTestClient(t, c.addr, c.transport)
				conn, err := dialCtx(t, cl, "vm1")
				if err != nil {
					t.Fatal(err)
				}
				if conn.SessionID() != "sess-vm1" || cl.Transport() != c.want {
					t.Errorf("session %q via %q", conn.SessionID(), cl.Transport())
				}
				exchange(t, conn, 3<<20+5)
				_, err = dialCtx(t, cl, "refuse")
				var te *Error
				if !errors.As(err, &te) || te.Status != StatusCapacity || err.Error() != "bastion refused the tunnel to refuse:22: bastion at capacity" {
					t.Errorf("refusal: %v", err)
				}
			})
		}
	}
	t.Run("auto prefers QUIC", func(t *testing.T) {
		e := startEcho(t, "127.0.0.1", true)
		cl := newTestClient(t, e.quic, "auto")
		conn, err := dialCtx(t, cl, "vm1")
		if err != nil {
			t.Fatal(err)
		}
		conn.Close()
		if cl.Transport() != "quic" {
			t.Errorf("transport %q", cl.Transport())
		}
	})
	t.Run("neither answers", func(t *testing.T) {
		ln, _ := net.Listen("tcp", "127.0.0.1:0")
		addr := ln.Addr().String()
		ln.Close()
		cl := newTestClient(t, addr, "auto")
		_, err := dialCtx(t, cl, "vm1")
		if err == nil || !strings.Contains(err.Error(), "QUIC:") || !strings.Contains(err.Error(), "TLS:") {
			t.Errorf("error must name both transports: %v", err)
		}
	})
}

// TestClientConcurrentDials shares one QUIC connection among many tunnels.
func TestClientConcurrentDials(t *testing.T) {
	e := startEcho(t, "127.0.0.1", true)
	cl := newTestClient(t, e.quic, "quic")
	var wg sync.WaitGroup
	for range 50 {
		wg.Go(func() {
			conn, err := dialCtx(t, cl, "vm1")
			if err != nil {
				t.Error(err)
				return
			}
			exchange(t, conn, 64<<10)
		})
	}
	wg.Wait()
}

// TestJoin: bytes and half-closes cross both ways.
func TestJoin(t *testing.T) {
	a1, a2 := tcpPair(t)
	b1, b2 := tcpPair(t)
	done := make(chan [2]int64)
	go func() {
		x, y, _ := Join(a2, b1)
		done <- [2]int64{x, y}
	}()
	go func() {
		a1.Write(make([]byte, 100000))
		a1.(*net.TCPConn).CloseWrite()
	}()
	n, _ := io.Copy(io.Discard, b2)
	b2.Write([]byte("reply"))
	b2.(*net.TCPConn).CloseWrite()
	back, _ := io.ReadAll(a1)
	got := <-done
	if n != 100000 || string(back) != "reply" || got != [2]int64{100000, 5} {
		t.Errorf("a->b %d, back %q, counts %v", n, back, got)
	}
}

func tcpPair(t *testing.T) (net.Conn, net.Conn) {
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
