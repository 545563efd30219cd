// Package testcert makes throwaway self-signed certificates for tests: an
// RDP or TLS server's, a client's, a pinned one that no server has.
package testcert

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"testing"
	"time"
)

// Options shape a certificate. The zero value is a server certificate for
// "test".
type Options struct {
	// Name is the subject's common name and the DNS name; default "test".
	Name string
	// IPs are addresses the certificate is also for.
	IPs []net.IP
	// Usage is the extended key usage; default server authentication.
	Usage x509.ExtKeyUsage
	// CA lets the certificate sign, so that a pool holding it trusts it.
	CA bool
}

// New returns a self-signed ECDSA P-256 certificate, valid from an hour ago
// for a day, with its Leaf parsed.
func New(t testing.TB, o Options) tls.Certificate {
	t.Helper()
	if o.Name == "" {
		o.Name = "test"
	}
	if o.Usage == 0 {
		o.Usage = x509.ExtKeyUsageServerAuth
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, err := rand.Int(rand.Reader, big.NewInt(1<<62))
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: o.Name},
		DNSNames:              []string{o.Name},
		IPAddresses:           o.IPs,
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{o.Usage},
		BasicConstraintsValid: o.CA,
		IsCA:                  o.CA,
	}
	if o.CA {
		tmpl.KeyUsage |= x509.KeyUsageCertSign
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
}

// PEM is c's certificate in PEM.
func PEM(c tls.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Certificate[0]})
}

// KeyPEM is c's private key in PEM (a key New made).
func KeyPEM(t testing.TB, c tls.Certificate) []byte {
	t.Helper()
	der, err := x509.MarshalECPrivateKey(c.PrivateKey.(*ecdsa.PrivateKey))
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der})
}
