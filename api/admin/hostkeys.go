package admin

import "time"

// ScanRequest is the body of POST /v1/hostkeys/{target}/scan.
type ScanRequest struct {
	// Pin pins the keys found, unless the target already has pinned keys
	// and presents others: those an admin pins by fingerprint after
	// checking them.
	Pin bool `json:"pin,omitempty"`
	// Protocol limits the scan to the keys of "ssh" or "rdp"; empty scans
	// every protocol the target offers.
	Protocol string `json:"protocol,omitempty"`
}

// PinRequest is the body of POST /v1/hostkeys/{target}/pin: fingerprints
// of keys already seen, or key lines, not both; neither pins every
// pending key of the target.
type PinRequest struct {
	Fingerprints []string `json:"fingerprints,omitempty"`
	// Keys are public key lines from a .pub, authorized_keys or
	// known_hosts file, each obtained from the machine itself.
	Keys []string `json:"keys,omitempty"`
	// Certificates are RDP server certificates, PEM, each obtained from
	// the machine itself.
	Certificates []string `json:"certificates,omitempty"`
}

// ForgetRequest is the body of POST /v1/hostkeys/{target}/forget.
type ForgetRequest struct {
	// Fingerprint is the key to forget; empty forgets every key of the
	// target.
	Fingerprint string `json:"fingerprint,omitempty"`
}

// CAInfo is the answer to GET /v1/ca.
type CAInfo struct {
	PublicKey string `json:"public_key"`
}

// Kinds of HostKey.
const (
	KeySSH = "ssh" // an SSH host key
	KeyRDP = "rdp" // an RDP server's TLS certificate
)

// States of a HostKey.
const (
	KeyPinned  = "pinned"  // sessions to the target accept it
	KeyPending = "pending" // seen, awaiting an admin's pin
)

// HostKey is one key seen on, or pinned for, a target: what GET
// /v1/hostkeys and the scan, pin and forget requests answer.
type HostKey struct {
	Kind   string `json:"kind"` // KeySSH or KeyRDP
	Target string `json:"target"`
	// Algorithm is the SSH key type (ssh-ed25519, ecdsa-sha2-nistp256,
	// ssh-rsa); empty for a certificate.
	Algorithm string `json:"algorithm,omitempty"`
	// Data is the key in standard base64: an SSH public key in wire format,
	// or a certificate in DER.
	Data string `json:"data"`
	// Fingerprint is the SHA-256 of the decoded Data as OpenSSH writes it:
	// "SHA256:" and unpadded base64.
	Fingerprint string `json:"fingerprint"`
	State       string `json:"state"` // KeyPinned or KeyPending
	// FirstSeen is when the bastion first saw the key, or when it was
	// pinned from a file if it was never seen.
	FirstSeen time.Time `json:"first_seen"`
	// SeenAt is the address the target presented the key from; empty for
	// a key pinned from a file and not seen since.
	SeenAt   string    `json:"seen_at,omitempty"`
	Pinned   time.Time `json:"pinned,omitzero"`
	PinnedBy string    `json:"pinned_by,omitempty"`
}
