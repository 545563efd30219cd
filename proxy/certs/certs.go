// Package certs provides the TLS certificate for port 443: a PEM pair read
// from files (and re-read on reload), or, for demos, a self-signed
// certificate generated once and kept in the state directory so that a
// browser exception survives restarts.
package certs

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sync/atomic"
	"time"
)

// Config says where the certificate comes from.
type Config struct {
	// CertFile and KeyFile are a PEM chain and key. Used unless SelfSigned.
	CertFile, KeyFile string
	// SelfSigned generates (once) a certificate for ServerName under Dir.
	SelfSigned bool
	ServerName string
	// Dir holds the self-signed pair (Dir/tls/self-signed.{crt,key}).
	Dir string
}

// Store hands the current certificate to TLS handshakes; Load swaps it
// atomically, so handshakes in flight keep the one they started with.
type Store struct {
	cur atomic.Pointer[tls.Certificate]
}

// Load reads or generates the certificate that cfg names and makes it
// current. On error the previous certificate stays in use.
func (s *Store) Load(cfg Config) error {
	var (
		cert tls.Certificate
		err  error
	)
	if cfg.SelfSigned {
		cert, err = selfSigned(cfg.Dir, cfg.ServerName)
	} else {
		cert, err = tls.LoadX509KeyPair(cfg.CertFile, cfg.KeyFile)
	}
	if err != nil {
		return fmt.Errorf("certs: %w", err)
	}
	if cert.Leaf == nil {
		if cert.Leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return fmt.Errorf("certs: parse leaf: %w", err)
		}
	}
	if time.Now().After(cert.Leaf.NotAfter) {
		return fmt.Errorf("certs: certificate expired on %s", cert.Leaf.NotAfter.Format(time.DateOnly))
	}
	if err := cert.Leaf.VerifyHostname(cfg.ServerName); err != nil {
		return fmt.Errorf("certs: certificate does not cover server_name: %w", err)
	}
	s.cur.Store(&cert)
	return nil
}

// Current returns the certificate in use, or nil before the first Load.
func (s *Store) Current() *tls.Certificate { return s.cur.Load() }

// GetCertificate is for tls.Config.GetCertificate.
func (s *Store) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	if c := s.cur.Load(); c != nil {
		return c, nil
	}
	return nil, errors.New("certs: no certificate loaded")
}

// selfSigned returns the pair under dir, making a new one when there is none,
// when it no longer covers name, or when it expires within a month.
func selfSigned(dir, name string) (tls.Certificate, error) {
	certFile := filepath.Join(dir, "tls", "self-signed.crt")
	keyFile := filepath.Join(dir, "tls", "self-signed.key")
	if cert, err := tls.LoadX509KeyPair(certFile, keyFile); err == nil {
		leaf, err := x509.ParseCertificate(cert.Certificate[0])
		if err == nil && leaf.VerifyHostname(name) == nil && time.Until(leaf.NotAfter) > 30*24*time.Hour {
			cert.Leaf = leaf
			return cert, nil
		}
	}
	certPEM, keyPEM, err := generate(name, time.Now())
	if err != nil {
		return tls.Certificate{}, err
	}
	if err := os.MkdirAll(filepath.Dir(certFile), 0o700); err != nil {
		return tls.Certificate{}, err
	}
	// Key first, then certificate: a crash in between leaves no pair that
	// loads, so the next start generates again instead of using a half.
	if err := writeFileAtomic(keyFile, keyPEM, 0o600); err != nil {
		return tls.Certificate{}, err
	}
	if err := writeFileAtomic(certFile, certPEM, 0o644); err != nil {
		return tls.Certificate{}, err
	}
	return tls.X509KeyPair(certPEM, keyPEM)
}

// generate makes an ECDSA P-256 certificate for name, valid one year. The
// SANs also carry localhost and the loopback addresses, which is where a demo
// is reached from.
func generate(name string, now time.Time) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, nil, err
	}
	names := []string{name}
	if name != "localhost" {
		names = append(names, "localhost")
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: name},
		DNSNames:              slices.Compact(names),
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(365 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), nil
}

func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), ".tmp-"+filepath.Base(path))
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if err := f.Chmod(mode); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}
