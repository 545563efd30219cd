package hostkeys

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"

	"github.com/bastiond/bastiond/internal/hostkeyfile"
	"github.com/bastiond/bastiond/proxy/rdcleanpath"
)

// CertificateCheck returns the check of the certificate an RDP server of
// target presents from addr, for tls.Config.VerifyConnection. It accepts
// exactly a certificate pinned for target: its DER, not a chain to a CA, since
// RDP servers mostly present self-signed certificates. Any other certificate
// is recorded as pending and refused with a *CheckError, as Verifier does
// for SSH host keys.
func (s *Store) CertificateCheck(target, addr string) func(tls.ConnectionState) error {
	return func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			return fmt.Errorf("hostkeys: the RDP server of %s presented no certificate", target)
		}
		return s.check(KindRDP, target, "", cs.PeerCertificates[0].Raw, addr)
	}
}

// Scan collects the keys of target's servers for each of protocols (KindSSH,
// KindRDP; SSH when none is given), connecting with dial: ScanSSH and
// ScanRDP. It stops at the first protocol that fails; what the others found
// is recorded all the same.
func (s *Store) Scan(ctx context.Context, target string, protocols []string,
	dial func(ctx context.Context, protocol string) (net.Conn, error)) ([]Key, error) {
	if len(protocols) == 0 {
		protocols = []string{KindSSH}
	}
	var found []Key
	for _, p := range protocols {
		scan := s.ScanSSH
		switch p {
		case KindSSH:
		case KindRDP:
			scan = s.ScanRDP
		default:
			return nil, fmt.Errorf("hostkeys: scan %s: no keys to scan for protocol %q (ssh or rdp)", target, p)
		}
		keys, err := scan(ctx, target, func(ctx context.Context) (net.Conn, error) { return dial(ctx, p) })
		if err != nil {
			return nil, err
		}
		found = append(found, keys...)
	}
	return found, nil
}

// ParseCertificate reads an RDP server's certificate from PEM or DER and
// returns its DER (see hostkeyfile.ParseCertificate).
func ParseCertificate(data []byte) ([]byte, error) { return hostkeyfile.ParseCertificate(data) }

// PinCertificate pins for target the RDP server certificate in data (see
// ParseCertificate), one an admin obtained from the machine itself. by is
// who asked.
func (s *Store) PinCertificate(target string, data []byte, by string) (Key, error) {
	if err := checkTarget(target); err != nil {
		return Key{}, err
	}
	der, err := ParseCertificate(data)
	if err != nil {
		return Key{}, err
	}
	return s.pin(KindRDP, target, "", der, by)
}

// errCollected ends a scan's handshake once the certificate is known.
var errCollected = errors.New("certificate collected")

// ScanRDP connects to target's RDP server with dial, negotiates TLS as a
// client does (asking for TLS or NLA) and returns the certificate it
// presents, recorded as pending if it is new. The connection ends before any
// credentials: nothing is authenticated. It is bounded by Config.ScanTimeout.
func (s *Store) ScanRDP(ctx context.Context, target string, dial func(context.Context) (net.Conn, error)) ([]Key, error) {
	if err := checkTarget(target); err != nil {
		return nil, err
	}
	actx, cancel := context.WithTimeout(ctx, s.scanTimeout)
	defer cancel()
	conn, err := dial(actx)
	if err != nil {
		return nil, fmt.Errorf("hostkeys: scan %s: %w", target, err)
	}
	defer conn.Close()
	addr := addrString(conn.RemoteAddr())
	var leaf []byte
	cfg := rdcleanpath.ClientTLS(func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) > 0 {
			leaf = cs.PeerCertificates[0].Raw
		}
		return errCollected
	})
	cr := rdcleanpath.ConnectionRequestPDU("", rdcleanpath.ProtocolSSL|rdcleanpath.ProtocolHybrid|rdcleanpath.ProtocolHybridEx)
	_, tc, err := rdcleanpath.Connect(actx, conn, nil, cr, cfg)
	if tc != nil {
		tc.Close()
	}
	switch {
	case leaf != nil:
	case ctx.Err() != nil:
		return nil, ctx.Err()
	case actx.Err() != nil, errors.Is(err, os.ErrDeadlineExceeded):
		return nil, fmt.Errorf("hostkeys: scan %s: no certificate within %s", target, s.scanTimeout)
	case err != nil:
		return nil, fmt.Errorf("hostkeys: scan %s: %w", target, err)
	default:
		return nil, fmt.Errorf("hostkeys: scan %s: the RDP server presented no certificate", target)
	}
	k, err := s.record(KindRDP, target, "", leaf, addr)
	if err != nil {
		return nil, err
	}
	return []Key{k}, nil
}
