package rdcleanpath

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/bastiond/bastiond/internal/testcert"
)

// closedPort returns an address on network where nothing listens.
func closedPort(t *testing.T, network, addr string) string {
	t.Helper()
	l, err := net.Listen(network, addr)
	if err != nil {
		t.Skipf("no %s: %v", addr, err)
	}
	a := l.Addr().String()
	l.Close()
	return a
}

func TestWSACodeDial(t *testing.T) {
	for _, tc := range []struct{ network, addr string }{
		{"tcp4", "127.0.0.1:0"},
		{"tcp6", "[::1]:0"},
	} {
		t.Run(tc.network, func(t *testing.T) {
			a := closedPort(t, tc.network, tc.addr)
			_, err := net.DialTimeout("tcp", a, 5*time.Second)
			if !errors.Is(err, syscall.ECONNREFUSED) {
				t.Fatalf("dial %s: %v, want connection refused", a, err)
			}
			if code, ok := WSACode(err); !ok || code != WSAECONNREFUSED {
				t.Fatalf("WSACode(%v) = %d, %v; want %d", err, code, ok, WSAECONNREFUSED)
			}
		})
	}
}

// tcpPair returns both ends of a loopback TCP connection.
func tcpPair(t *testing.T) (client, server *net.TCPConn) {
	t.Helper()
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	c, err := net.Dial("tcp4", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(); s.Close() })
	return c.(*net.TCPConn), s.(*net.TCPConn)
}

func TestWSACodeReset(t *testing.T) {
	c, s := tcpPair(t)
	s.SetLinger(0) // close sends a RST
	s.Close()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err := c.Read(make([]byte, 1))
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("read: %v, want connection reset", err)
	}
	if code, ok := WSACode(err); !ok || code != WSAECONNRESET {
		t.Fatalf("WSACode(%v) = %d, %v; want %d", err, code, ok, WSAECONNRESET)
	}
}

func TestWSACodeTimeout(t *testing.T) {
	c, _ := tcpPair(t)
	c.SetReadDeadline(time.Now().Add(-time.Second))
	_, readErr := c.Read(make([]byte, 1))

	ctx, cancel := context.WithTimeout(context.Background(), time.Nanosecond)
	defer cancel()
	<-ctx.Done()
	var d net.Dialer
	_, dialErr := d.DialContext(ctx, "tcp4", closedPort(t, "tcp4", "127.0.0.1:0"))

	for _, err := range []error{
		readErr,
		dialErr,
		context.DeadlineExceeded,
		fmt.Errorf("dial: %w", os.ErrDeadlineExceeded),
		&net.OpError{Op: "dial", Net: "tcp", Err: &os.SyscallError{Syscall: "connect", Err: syscall.ETIMEDOUT}},
	} {
		if err == nil {
			t.Fatal("no error")
		}
		if code, ok := WSACode(err); !ok || code != WSAETIMEDOUT {
			t.Errorf("WSACode(%v) = %d, %v; want %d", err, code, ok, WSAETIMEDOUT)
		}
	}
}

func TestWSACodeErrno(t *testing.T) {
	for _, tc := range []struct {
		errno syscall.Errno
		code  int
	}{
		{syscall.ECONNREFUSED, WSAECONNREFUSED},
		{syscall.ETIMEDOUT, WSAETIMEDOUT},
		{syscall.ECONNRESET, WSAECONNRESET},
		{syscall.ECONNABORTED, WSAECONNABORTED},
		{syscall.EPIPE, WSAECONNABORTED},
		{syscall.ENETUNREACH, WSAENETUNREACH},
		{syscall.EHOSTUNREACH, WSAEHOSTUNREACH},
	} {
		t.Run(tc.errno.Error(), func(t *testing.T) {
			for _, err := range []error{
				tc.errno,
				&os.SyscallError{Syscall: "connect", Err: tc.errno},
				&net.OpError{Op: "dial", Net: "tcp", Err: &os.SyscallError{Syscall: "connect", Err: tc.errno}},
				fmt.Errorf("broker: dial vm1: %w", &net.OpError{Op: "read", Net: "tcp", Err: &os.SyscallError{Syscall: "read", Err: tc.errno}}),
			} {
				if code, ok := WSACode(err); !ok || code != tc.code {
					t.Errorf("WSACode(%v) = %d, %v; want %d", err, code, ok, tc.code)
				}
			}
		})
	}
}

func TestWSACodeOthers(t *testing.T) {
	for _, err := range []error{
		nil,
		io.EOF,
		errors.New("connection refused"), // the text is not the errno
		syscall.EACCES,
		&net.OpError{Op: "dial", Net: "tcp", Err: &net.DNSError{Err: "no such host", Name: "vm1", IsNotFound: true}},
		context.Canceled,
	} {
		if code, ok := WSACode(err); ok {
			t.Errorf("WSACode(%v) = %d, true; want false", err, code)
		}
	}
}

// handshake runs a TLS handshake over net.Pipe and returns the client's
// error: from Handshake, or from the first Read when the server refuses
// the client only after the client's handshake is done (TLS 1.3), and the
// server's.
func handshake(t *testing.T, client, server *tls.Config) (clientErr, serverErr error) {
	t.Helper()
	cc, sc := net.Pipe()
	defer cc.Close()
	deadline := time.Now().Add(10 * time.Second)
	cc.SetDeadline(deadline)
	sc.SetDeadline(deadline)
	done := make(chan error, 1)
	go func() {
		defer sc.Close()
		s := tls.Server(sc, server)
		done <- s.Handshake()
	}()
	c := tls.Client(cc, client)
	clientErr = c.Handshake()
	if clientErr == nil {
		_, clientErr = c.Read(make([]byte, 1))
	}
	return clientErr, <-done
}

func TestTLSAlert(t *testing.T) {
	serverCert := testcert.New(t, testcert.Options{Name: "rdp.test", Usage: x509.ExtKeyUsageServerAuth})
	clientCert := testcert.New(t, testcert.Options{Name: "gateway", Usage: x509.ExtKeyUsageClientAuth})
	trusted := x509.NewCertPool()
	trusted.AddCert(must(x509.ParseCertificate(serverCert.Certificate[0])))
	otherCA := x509.NewCertPool()
	otherCA.AddCert(must(x509.ParseCertificate(testcert.New(t, testcert.Options{Name: "ca", Usage: x509.ExtKeyUsageClientAuth}).Certificate[0])))

	for _, tc := range []struct {
		name   string
		client *tls.Config
		server *tls.Config
		alert  uint8
	}{
		{
			name: "unknown CA, TLS 1.2",
			client: &tls.Config{
				RootCAs: trusted, ServerName: "rdp.test", MaxVersion: tls.VersionTLS12,
				// Sent although the server asks for another CA's.
				GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &clientCert, nil },
			},
			server: &tls.Config{Certificates: []tls.Certificate{serverCert}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: otherCA},
			alert:  48, // unknown_ca
		},
		{
			name:   "no client certificate, TLS 1.3",
			client: &tls.Config{RootCAs: trusted, ServerName: "rdp.test"},
			server: &tls.Config{Certificates: []tls.Certificate{serverCert}, ClientAuth: tls.RequireAnyClientCert},
			alert:  116, // certificate_required
		},
		{
			name:   "protocol version",
			client: &tls.Config{RootCAs: trusted, ServerName: "rdp.test", MaxVersion: tls.VersionTLS12},
			server: &tls.Config{Certificates: []tls.Certificate{serverCert}, MinVersion: tls.VersionTLS13},
			alert:  70, // protocol_version
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clientErr, serverErr := handshake(t, tc.client, tc.server)
			if clientErr == nil || serverErr == nil {
				t.Fatalf("handshake: client %v, server %v; want both to fail", clientErr, serverErr)
			}
			alert, ok := TLSAlert(clientErr)
			if !ok || alert != tc.alert {
				t.Fatalf("TLSAlert(%v) = %d, %v; want %d", clientErr, alert, ok, tc.alert)
			}
			wrapped := fmt.Errorf("rdcleanpath: TLS handshake with vm1: %w", clientErr)
			if alert, ok := TLSAlert(wrapped); !ok || alert != tc.alert {
				t.Fatalf("TLSAlert(%v) = %d, %v; want %d", wrapped, alert, ok, tc.alert)
			}
			// The server sent the alert: its own error is not one
			// received.
			if alert, ok := TLSAlert(serverErr); ok {
				t.Fatalf("TLSAlert(%v) = %d, true for the side that sent it", serverErr, alert)
			}
		})
	}

	t.Run("certificate refused by the client", func(t *testing.T) {
		clientErr, _ := handshake(t,
			&tls.Config{RootCAs: otherCA, ServerName: "rdp.test"},
			&tls.Config{Certificates: []tls.Certificate{serverCert}})
		if clientErr == nil {
			t.Fatal("handshake succeeded")
		}
		if alert, ok := TLSAlert(clientErr); ok {
			t.Fatalf("TLSAlert(%v) = %d, true for an alert the client sent", clientErr, alert)
		}
	})

	for _, tc := range []struct {
		err   error
		alert uint8
		ok    bool
	}{
		{tls.AlertError(40), 40, true},
		{fmt.Errorf("quic: %w", tls.AlertError(42)), 42, true},
		{&net.OpError{Op: "remote error", Err: errors.New("tls: bad certificate")}, 0, false},
		{&net.OpError{Op: "read", Err: syscall.ECONNRESET}, 0, false},
		{io.EOF, 0, false},
		{nil, 0, false},
	} {
		if alert, ok := TLSAlert(tc.err); alert != tc.alert || ok != tc.ok {
			t.Errorf("TLSAlert(%v) = %d, %v; want %d, %v", tc.err, alert, ok, tc.alert, tc.ok)
		}
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}
