package hostkeys

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"encoding/pem"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/bastiond/bastiond/internal/testcert"
)

// startRDP serves the start of an RDP connection on addr: it reads the
// X.224 request, selects TLS (or, with nla, fails as a server that
// requires NLA) and does the TLS handshake with cert.
func startRDP(t *testing.T, network, addr string, cert tls.Certificate, nla bool) string {
	t.Helper()
	ln, err := net.Listen(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				var head [4]byte
				if _, err := io.ReadFull(c, head[:]); err != nil {
					return
				}
				io.CopyN(io.Discard, c, int64(binary.BigEndian.Uint16(head[2:]))-4)
				typ, value := byte(2), uint32(1)
				if nla {
					typ, value = 3, 5
				}
				cc := binary.LittleEndian.AppendUint32([]byte{3, 0, 0, 19, 14, 0xd0, 0, 0, 0, 0, 0, typ, 0, 8, 0}, value)
				c.Write(cc)
				if !nla {
					tls.Server(c, &tls.Config{Certificates: []tls.Certificate{cert}}).Handshake()
				}
			}()
		}
	}()
	return ln.Addr().String()
}

func TestScanRDPAndCheck(t *testing.T) {
	for _, n := range []struct{ network, addr string }{{"tcp4", "127.0.0.1:0"}, {"tcp6", "[::1]:0"}} {
		t.Run(n.network, func(t *testing.T) {
			s := newStore(t)
			cert := testcert.New(t, testcert.Options{Name: "vm2"})
			addr := startRDP(t, n.network, n.addr, cert, false)
			keys, err := s.ScanRDP(context.Background(), "vm2", dialer(addr))
			if err != nil {
				t.Fatal(err)
			}
			der := cert.Certificate[0]
			if len(keys) != 1 || keys[0].Kind != KindRDP || keys[0].State != StatePending || keys[0].Fingerprint != Fingerprint(der) ||
				keys[0].SeenAt != addr {
				t.Fatalf("scanned %+v", keys)
			}
			leaf, _ := x509.ParseCertificate(der)
			state := tls.ConnectionState{PeerCertificates: []*x509.Certificate{leaf}}
			var ce *CheckError
			if err := s.CertificateCheck("vm2", addr)(state); !errors.As(err, &ce) || !errors.Is(err, ErrNotPinned) ||
				!strings.Contains(err.Error(), "no certificate pinned") {
				t.Errorf("before the pin: %v", err)
			}
			if _, err := s.Pin("vm2", nil, "root"); err != nil {
				t.Fatal(err)
			}
			if err := s.CertificateCheck("vm2", addr)(state); err != nil {
				t.Errorf("the pinned certificate: %v", err)
			}
			// Another certificate, or this one for another target, is refused.
			other, _ := x509.ParseCertificate(testcert.New(t, testcert.Options{Name: "vm2"}).Certificate[0])
			err = s.CertificateCheck("vm2", addr)(tls.ConnectionState{PeerCertificates: []*x509.Certificate{other}})
			if !errors.Is(err, ErrMismatch) || !strings.Contains(err.Error(), "the certificate of vm2 is not the one pinned") {
				t.Errorf("another certificate: %v", err)
			}
			if err := s.CertificateCheck("vm3", addr)(state); !errors.Is(err, ErrNotPinned) {
				t.Errorf("vm2's certificate for vm3: %v", err)
			}
			// An SSH key of the same bytes would not count: kinds are apart.
			if err := s.check(KindSSH, "vm2", "ssh-ed25519", der, addr); !errors.Is(err, ErrNotPinned) {
				t.Errorf("the certificate as an SSH key: %v", err)
			}
			if err := s.CertificateCheck("vm2", addr)(tls.ConnectionState{}); err == nil {
				t.Error("no certificate accepted")
			}
		})
	}
}

func TestScanRDPFailures(t *testing.T) {
	s := newStore(t)
	addr := startRDP(t, "tcp4", "127.0.0.1:0", testcert.New(t, testcert.Options{Name: "vm2"}), true)
	if _, err := s.ScanRDP(context.Background(), "vm2", dialer(addr)); err == nil || !strings.Contains(err.Error(), "NLA") {
		t.Errorf("a server refusing TLS alone: %v", err)
	}
	// A port that accepts and says nothing: bounded by the scan timeout.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	s.scanTimeout = 300 * time.Millisecond
	if _, err := s.ScanRDP(context.Background(), "vm2", dialer(ln.Addr().String())); err == nil || !strings.Contains(err.Error(), "no certificate within") {
		t.Errorf("a silent server: %v", err)
	}
	if keys, _ := s.List("vm2"); len(keys) != 0 {
		t.Errorf("failed scans recorded %v", keys)
	}
}

func TestPinCertificate(t *testing.T) {
	s := newStore(t)
	der := testcert.New(t, testcert.Options{Name: "vm2"}).Certificate[0]
	pemText := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte("not this")})
	pemText = append(pemText, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})...)
	for _, data := range [][]byte{pemText, der} {
		k, err := s.PinCertificate("vm2", data, "root")
		if err != nil || k.Kind != KindRDP || k.State != StatePinned || k.Fingerprint != Fingerprint(der) || k.PinnedBy != "root" {
			t.Errorf("pin: %+v %v", k, err)
		}
	}
	if keys, _ := s.List("vm2"); len(keys) != 1 {
		t.Errorf("the same certificate twice: %d keys", len(keys))
	}
	for _, bad := range []string{"", "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n", "garbage"} {
		if _, err := s.PinCertificate("vm2", []byte(bad), "root"); err == nil {
			t.Errorf("pinned %q", bad)
		}
	}
}
