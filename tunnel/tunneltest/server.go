// Package tunneltest runs a tunnel server for tests: the tunnel protocol
// on QUIC and on a WebSocket over TLS, on one loopback port (UDP and TCP),
// with a self-signed certificate. Handlers decide the answers; Echo is the
// usual one.
package tunneltest

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/quic-go/quic-go"

	"github.com/bastiond/bastiond/api/tunnelwire"
	"github.com/bastiond/bastiond/internal/testcert"
	"github.com/bastiond/bastiond/tunnel"
)

// Name is the server name in the test certificate.
const Name = "bastion.test"

// Handler serves one tunnel request. It answers with tunnelwire.WriteResponse
// and, after StatusOK, relays; the server closes c when it returns.
type Handler func(c net.Conn, req tunnelwire.Request)

// Config configures a Server.
type Config struct {
	// Network is "4" (127.0.0.1, the default) or "6" (::1).
	Network string
	// NoQUIC leaves the UDP port closed, as when UDP is blocked.
	NoQUIC bool
	// RefuseQUIC makes every QUIC handshake fail at once (the listener
	// offers another ALPN).
	RefuseQUIC bool
	// BlackholeQUIC receives (and counts) datagrams and never answers, as
	// when a firewall drops UDP silently: no QUIC handshake ever ends.
	BlackholeQUIC bool
	// Handler serves requests. Default: Echo.
	Handler Handler
}

// Server is a running test server. Its fields are read-only.
type Server struct {
	// Addr is host:port of both the QUIC and the TLS listeners.
	Addr string
	// TLS is a client configuration that trusts the server's certificate.
	TLS *tls.Config
	// CertPEM is the server's (self-signed) certificate.
	CertPEM []byte
	// QUICConns counts the QUIC connections accepted, Streams the tunnel
	// streams on them, WebSockets the WebSocket tunnels and UDPPackets the
	// datagrams received. TCPConns counts the TCP connections accepted,
	// TLS handshake or not.
	QUICConns, Streams, WebSockets, UDPPackets, TCPConns atomic.Int64

	cfg     Config
	ql      *quic.Listener
	hs      *http.Server
	wg      sync.WaitGroup
	mu      sync.Mutex // guards conns and closed
	conns   map[io.Closer]bool
	closed  bool
	udpConn net.PacketConn
}

// New starts a server, stopped at the end of the test.
func New(t testing.TB, cfg Config) *Server {
	t.Helper()
	if cfg.Handler == nil {
		cfg.Handler = Echo
	}
	host := "127.0.0.1"
	if cfg.Network == "6" {
		host = "::1"
	}
	cert, pool := selfSigned(t)
	s := &Server{cfg: cfg, conns: map[io.Closer]bool{}, TLS: &tls.Config{RootCAs: pool},
		CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Certificate[0]})}
	ln, pc := listen(t, host, !cfg.NoQUIC)
	s.Addr = ln.Addr().String()

	switch {
	case pc != nil && cfg.BlackholeQUIC:
		s.udpConn = pc
		s.wg.Go(func() {
			b := make([]byte, 2048)
			for {
				if _, _, err := pc.ReadFrom(b); err != nil {
					return
				}
				s.UDPPackets.Add(1)
			}
		})
	case pc != nil:
		s.udpConn = pc
		alpn := tunnelwire.ALPN
		if cfg.RefuseQUIC {
			alpn = "something-else"
		}
		ql, err := quic.Listen(countingPacketConn{pc, &s.UDPPackets}, &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{alpn}},
			&quic.Config{Versions: []quic.Version{quic.Version1}, MaxIncomingStreams: 10000, KeepAlivePeriod: 20 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		s.ql = ql
		s.wg.Go(s.acceptQUIC)
	}

	mux := http.NewServeMux()
	mux.HandleFunc("GET "+tunnelwire.WebSocketPath, s.webSocket)
	s.hs = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, ErrorLog: log.New(io.Discard, "", 0)}
	tl := tls.NewListener(countingListener{ln, &s.TCPConns}, &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"http/1.1"}})
	s.wg.Go(func() { s.hs.Serve(tl) })
	t.Cleanup(s.Close)
	return s
}

// listen binds TCP and, if udp, UDP on the same port of host.
func listen(t testing.TB, host string, udp bool) (net.Listener, net.PacketConn) {
	t.Helper()
	for range 50 {
		ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
		if err != nil {
			t.Fatal(err)
		}
		if !udp {
			return ln, nil
		}
		port := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
		pc, err := net.ListenPacket("udp", net.JoinHostPort(host, port))
		if err == nil {
			return ln, pc
		}
		ln.Close()
	}
	t.Fatal("tunneltest: no port free for both TCP and UDP")
	return nil, nil
}

// Close stops the server and ends every tunnel. Tests need not call it.
func (s *Server) Close() {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.closed = true
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	if s.ql != nil {
		s.ql.Close()
	}
	if s.udpConn != nil {
		s.udpConn.Close()
	}
	s.hs.Close()
	s.wg.Wait()
}

// CloseQUIC closes every QUIC connection, as a restarting bastion would.
func (s *Server) CloseQUIC() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		if qc, ok := c.(quicCloser); ok {
			qc.Close()
		}
	}
}

// countingListener counts the connections it accepts.
type countingListener struct {
	net.Listener
	n *atomic.Int64
}

func (l countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.n.Add(1)
	}
	return c, err
}

type countingPacketConn struct {
	net.PacketConn
	n *atomic.Int64
}

func (c countingPacketConn) ReadFrom(p []byte) (int, net.Addr, error) {
	n, addr, err := c.PacketConn.ReadFrom(p)
	if err == nil {
		c.n.Add(1)
	}
	return n, addr, err
}

// SetReadBuffer and SetWriteBuffer let quic-go size the socket's buffers.
func (c countingPacketConn) SetReadBuffer(n int) error {
	return c.PacketConn.(interface{ SetReadBuffer(int) error }).SetReadBuffer(n)
}

func (c countingPacketConn) SetWriteBuffer(n int) error {
	return c.PacketConn.(interface{ SetWriteBuffer(int) error }).SetWriteBuffer(n)
}

type quicCloser struct{ c *quic.Conn }

func (q quicCloser) Close() error { return q.c.CloseWithError(0, "closed by the test") }

// track adds c to the conns closed at the end; false when the server is
// closed already (then c is closed).
func (s *Server) track(c io.Closer) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		c.Close()
		return false
	}
	s.conns[c] = true
	return true
}

func (s *Server) untrack(c io.Closer) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.conns, c)
}

func (s *Server) acceptQUIC() {
	for {
		conn, err := s.ql.Accept(context.Background())
		if err != nil {
			return
		}
		s.QUICConns.Add(1)
		qc := quicCloser{conn}
		if !s.track(qc) {
			return
		}
		s.wg.Go(func() {
			defer s.untrack(qc)
			for {
				str, err := conn.AcceptStream(context.Background())
				if err != nil {
					return
				}
				s.Streams.Add(1)
				s.wg.Go(func() { s.serve(tunnel.NewStreamConn(conn, str)) })
			}
		})
	}
}

func (s *Server) webSocket(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Origin") != "" {
		http.Error(w, "forbidden", http.StatusForbidden)
		return
	}
	ws, err := websocket.Accept(w, r, tunnel.AcceptOptions())
	if err != nil {
		return
	}
	// http.Server.Close does not wait for hijacked connections: this one
	// is counted in s.wg.
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		ws.CloseNow()
		return
	}
	s.wg.Add(1)
	s.mu.Unlock()
	defer s.wg.Done()
	s.WebSockets.Add(1)
	local, _ := r.Context().Value(http.LocalAddrContextKey).(net.Addr)
	remote, _ := net.ResolveTCPAddr("tcp", r.RemoteAddr)
	// The handler goroutine carries the tunnel, as bastiond's does.
	s.serve(tunnel.NewWSConn(context.Background(), ws, local, remote))
}

// serve reads a request from c and hands it to the handler.
func (s *Server) serve(c net.Conn) {
	if !s.track(c) {
		return
	}
	defer s.untrack(c)
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	req, err := tunnelwire.ReadRequest(c)
	if err != nil {
		var pe *tunnelwire.ProtocolError
		if errors.As(err, &pe) {
			Refuse(c, pe.Status, pe.Error())
		}
		return
	}
	c.SetReadDeadline(time.Time{})
	s.cfg.Handler(c, req)
}

// Refuse answers st with msg and ends the tunnel.
func Refuse(c net.Conn, st tunnelwire.Status, msg string) {
	c.SetWriteDeadline(time.Now().Add(5 * time.Second))
	tunnelwire.WriteResponse(c, tunnelwire.Response{Status: st, Message: msg})
	c.(interface{ CloseWrite() error }).CloseWrite()
}

// SessionID is the session ID Echo answers.
const SessionID = "test-session"

// Echo answers StatusOK and sends back what it reads; at the client's end
// of stream it ends its own direction.
func Echo(c net.Conn, req tunnelwire.Request) {
	if err := tunnelwire.WriteResponse(c, tunnelwire.Response{Status: tunnelwire.StatusOK, Message: SessionID}); err != nil {
		return
	}
	if _, err := io.Copy(c, c); err != nil {
		return
	}
	c.(interface{ CloseWrite() error }).CloseWrite()
}

// selfSigned is a certificate for Name, 127.0.0.1 and ::1, and a pool
// that trusts it.
func selfSigned(t testing.TB) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	c := testcert.New(t, testcert.Options{Name: Name, IPs: []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}, CA: true})
	pool := x509.NewCertPool()
	pool.AddCert(c.Leaf)
	return c, pool
}

// String describes the server, for test logs.
func (s *Server) String() string { return fmt.Sprintf("tunnel test server on %s", s.Addr) }
