// Package hostkeyfile reads the host keys an admin gives bastiond: an SSH
// public key line (from a .pub, authorized_keys or known_hosts file) or an
// RDP server's certificate (PEM or DER). Both the server (proxy/hostkeys)
// and bastionctl, which checks a file before it sends it, use it.
package hostkeyfile

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"

	"golang.org/x/crypto/ssh"
)

// ParseSSHKey reads one public key from a line of an authorized_keys or
// known_hosts file, or of a .pub file (which is the same as the former).
// Certificates, CA and revoked lines are refused: a host key is pinned.
func ParseSSHKey(line string) (ssh.PublicKey, error) {
	line = strings.TrimSpace(line)
	switch {
	case line == "":
		return nil, errors.New("hostkeys: no key: the line is empty")
	case strings.ContainsAny(line, "\r\n"):
		return nil, errors.New("hostkeys: one key per line")
	case strings.HasPrefix(line, "#"):
		return nil, errors.New("hostkeys: a comment, not a key")
	}
	// known_hosts first: a key with host names in front of it would also
	// pass as an authorized key with options.
	marker, _, key, _, _, err := ssh.ParseKnownHosts([]byte(line))
	if err != nil {
		key, _, _, _, err = ssh.ParseAuthorizedKey([]byte(line))
	}
	switch {
	case err != nil:
		return nil, errors.New("hostkeys: not a public key line (from a .pub, authorized_keys or known_hosts file)")
	case marker != "":
		return nil, fmt.Errorf("hostkeys: a known_hosts @%s line, not a host key", marker)
	}
	if _, ok := key.(*ssh.Certificate); ok {
		return nil, errors.New("hostkeys: a certificate, not a host key")
	}
	return key, nil
}

// ParseCertificate reads an RDP server's certificate from a PEM file (the
// first CERTIFICATE block: the server's own) or from DER, and returns its DER.
func ParseCertificate(data []byte) ([]byte, error) {
	der := data
	if bytes.Contains(data, []byte("-----BEGIN")) {
		der = nil
		for rest := data; der == nil; {
			var block *pem.Block
			if block, rest = pem.Decode(rest); block == nil {
				return nil, errors.New("hostkeys: no CERTIFICATE block in the PEM file")
			}
			if block.Type == "CERTIFICATE" {
				der = block.Bytes
			}
		}
	}
	if _, err := x509.ParseCertificate(der); err != nil {
		return nil, fmt.Errorf("hostkeys: not a certificate (PEM or DER): %w", err)
	}
	return der, nil
}
