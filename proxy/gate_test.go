package proxy

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/bastiond/bastiond/proxy/certs"
	"github.com/bastiond/bastiond/proxy/gate/gatetest"
)

const testName = gatetest.ServerName

// startServer serves the front door on a loopback listener of the given
// network (tcp4 or tcp6) and returns its address.
func startServer(t *testing.T, network string) string {
	t.Helper()
	return startServerWith(t, network, Config{HandshakeTimeout: 500 * time.Millisecond})
}

// startServerWith is startServer with cfg's limits.
func startServerWith(t *testing.T, network string, cfg Config) string {
	t.Helper()
	s := newTestServer(t, cfg)
	addr := "127.0.0.1:0"
	if network == "tcp6" {
		addr = "[::1]:0"
	}
	ln, err := net.Listen(network, addr)
	if err != nil {
		t.Skipf("no %s loopback: %v", network, err)
	}
	serve(t, s, []net.Listener{ln}, nil)
	return ln.Addr().String()
}

// silence sends hello on a fresh connection and reports how many bytes came
// back before the server closed it.
func silence(t *testing.T, addr string, hello []byte) int {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write(hello)
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := io.Copy(io.Discard, c)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("the server neither answered nor closed within 5s")
	}
	return int(n)
}

func TestGate(t *testing.T) {
	for _, network := range []string{"tcp4", "tcp6"} {
		t.Run(network, func(t *testing.T) {
			addr := startServer(t, network)
			t.Run("the server name gets TLS and HTTP", func(t *testing.T) {
				for _, name := range []string{testName, "BASTION.test.example."} {
					client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
						TLSClientConfig: &tls.Config{ServerName: name, InsecureSkipVerify: true}, ForceAttemptHTTP2: true}}
					req, _ := http.NewRequest(http.MethodGet, "https://"+addr+"/", nil)
					req.Host = name // the Host names the server too
					resp, err := client.Do(req)
					if err != nil {
						t.Fatalf("%s: %v", name, err)
					}
					resp.Body.Close()
					if resp.StatusCode != 200 || resp.ProtoMajor != 2 {
						t.Errorf("%s: %s %s", name, resp.Proto, resp.Status)
					}
					client.CloseIdleConnections()
				}
			})
			cases := []struct {
				name  string
				hello []byte
			}{
				{"no server name", gatetest.ClientHello(t, &tls.Config{InsecureSkipVerify: true})},
				{"another server name", gatetest.ClientHello(t, &tls.Config{ServerName: "other.example", InsecureSkipVerify: true})},
				{"a name that only starts like it", gatetest.ClientHello(t, &tls.Config{ServerName: testName + ".evil.example", InsecureSkipVerify: true})},
				{"plain HTTP", []byte("GET / HTTP/1.1\r\nHost: " + testName + "\r\n\r\n")},
				{"SSH", []byte("SSH-2.0-OpenSSH_9.2\r\n")},
				{"a truncated hello", gatetest.ClientHello(t, &tls.Config{ServerName: testName})[:40]},
				{"nothing at all", nil},
			}
			for _, tc := range cases {
				t.Run(tc.name+": closed with zero bytes sent", func(t *testing.T) {
					if n := silence(t, addr, tc.hello); n != 0 {
						t.Errorf("the server sent %d bytes", n)
					}
				})
			}
			t.Run("a hello split over records and one-byte writes passes", func(t *testing.T) {
				conn, err := net.Dial("tcp", addr)
				if err != nil {
					t.Fatal(err)
				}
				tc := tls.Client(&fragmenter{Conn: conn}, &tls.Config{ServerName: testName, InsecureSkipVerify: true})
				defer tc.Close()
				tc.SetDeadline(time.Now().Add(5 * time.Second))
				if err := tc.Handshake(); err != nil {
					t.Fatalf("handshake: %v", err)
				}
			})
		})
	}
}

// fragmenter splits the client's first record into two records, and writes
// them a byte at a time: the gate must reassemble both ways.
type fragmenter struct {
	net.Conn
	done bool
}

func (f *fragmenter) Write(p []byte) (int, error) {
	if f.done || len(p) < 5+8 || p[0] != 22 {
		return f.Conn.Write(p)
	}
	f.done = true
	body := p[5 : 5+(int(p[3])<<8|int(p[4]))]
	var out bytes.Buffer
	for _, part := range [][]byte{body[:7], body[7:]} { // the first holds the handshake header and a bit
		out.Write([]byte{22, p[1], p[2], byte(len(part) >> 8), byte(len(part))})
		out.Write(part)
	}
	out.Write(p[5+len(body):])
	for _, b := range out.Bytes() {
		if _, err := f.Conn.Write([]byte{b}); err != nil {
			return 0, err
		}
	}
	return len(p), nil
}

func TestGatePerSourceCap(t *testing.T) {
	for _, network := range []string{"tcp4", "tcp6"} {
		t.Run(network, func(t *testing.T) {
			// A long handshake timeout: only the cap can close the fourth.
			addr := startServerWith(t, network, Config{HandshakeTimeout: time.Minute, MaxConnsPerSource: 3})
			var held []net.Conn
			for range 3 {
				c, err := net.Dial("tcp", addr)
				if err != nil {
					t.Fatal(err)
				}
				held = append(held, c)
			}
			time.Sleep(100 * time.Millisecond) // let the server accept them
			if n := silence(t, addr, nil); n != 0 {
				t.Errorf("the fourth connection got %d bytes", n)
			}
			for _, c := range held {
				c.Close()
			}
			// The places come back as the server notices the closes.
			deadline := time.Now().Add(5 * time.Second)
			for {
				c, err := tls.DialWithDialer(&net.Dialer{Timeout: time.Second}, "tcp", addr, &tls.Config{ServerName: testName, InsecureSkipVerify: true})
				if err == nil {
					c.Close()
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("no place given back after the held connections closed: %v", err)
				}
				time.Sleep(50 * time.Millisecond)
			}
		})
	}
}

// TestTLSVersionsAndCertificateReload: TLS 1.3 only by default, 1.2 when
// configured; a certificate loaded into the store (a reload) serves the next
// handshake.
func TestTLSVersionsAndCertificateReload(t *testing.T) {
	s := newTestServer(t, Config{HandshakeTimeout: time.Second})
	store := s.cfg.Load().Certs
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve([]net.Listener{ln}, nil) }()
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		s.Shutdown(ctx)
		s.Close()
		<-done
	}()
	handshake := func(maxVersion uint16) (*tls.ConnectionState, error) {
		c, err := tls.DialWithDialer(&net.Dialer{Timeout: 2 * time.Second}, "tcp", ln.Addr().String(),
			&tls.Config{ServerName: testName, InsecureSkipVerify: true, MaxVersion: maxVersion})
		if err != nil {
			return nil, err
		}
		defer c.Close()
		st := c.ConnectionState()
		return &st, nil
	}
	if st, err := handshake(0); err != nil || st.Version != tls.VersionTLS13 {
		t.Fatalf("TLS 1.3 client: %v", err)
	}
	if _, err := handshake(tls.VersionTLS12); err == nil {
		t.Error("a TLS 1.2 client was served with the default minimum of 1.3")
	}
	c := *s.cfg.Load()
	c.MinTLSVersion = tls.VersionTLS12
	if err := s.SetConfig(c); err != nil {
		t.Fatal(err)
	}
	st, err := handshake(tls.VersionTLS12)
	if err != nil || st.Version != tls.VersionTLS12 {
		t.Fatalf("TLS 1.2 client with min_version 1.2: %v", err)
	}
	before := st.PeerCertificates[0].SerialNumber

	// A new certificate (what SIGHUP loads from the files) serves the next
	// handshake without a restart.
	dir := t.TempDir()
	if err := store.Load(certs.Config{SelfSigned: true, ServerName: testName, Dir: dir}); err != nil {
		t.Fatal(err)
	}
	st, err = handshake(0)
	if err != nil {
		t.Fatal(err)
	}
	if st.PeerCertificates[0].SerialNumber.Cmp(before) == 0 {
		t.Error("the reloaded certificate is not served")
	}
}
