package hostkeys

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/bastiond/bastiond/internal/store"

	"github.com/bastiond/bastiond/internal/hostkeyfile"
)

// Verifier returns the host key check for an SSH connection to target and
// the host key algorithms to offer. The callback accepts exactly a key
// pinned for target; any other key is recorded as pending and refused with a
// *CheckError (ErrMismatch when something else is pinned, ErrNotPinned when
// nothing is).
//
// algorithms lists those of the pinned keys first, so that a server with
// several host keys presents a pinned one (the first algorithm of the
// client's list that the server has wins), then the others the bastion
// accepts, so that a server that lost its pinned keys presents another and
// is refused as a mismatch, naming the key it presented, instead of failing
// negotiation with no key to show. algorithms is nil when nothing is
// pinned: the client's defaults apply and the key seen is recorded.
func (s *Store) Verifier(target string) (cb ssh.HostKeyCallback, algorithms []string) {
	cb = func(_ string, remote net.Addr, key ssh.PublicKey) error {
		// A host certificate proves the key it certifies; that key is
		// what is pinned, not a certificate that expires.
		if c, ok := key.(*ssh.Certificate); ok {
			key = c.Key
		}
		return s.check(KindSSH, target, key.Type(), key.Marshal(), addrString(remote))
	}
	keys, err := s.List(target)
	if err != nil || checkTarget(target) != nil {
		return cb, nil // the callback meets the same error and refuses
	}
	add := func(algs ...string) {
		for _, a := range algs {
			if !slices.Contains(algorithms, a) {
				algorithms = append(algorithms, a)
			}
		}
	}
	for _, k := range keys {
		if k.Kind != KindSSH || k.State != StatePinned {
			continue
		}
		if k.Algorithm == ssh.KeyAlgoRSA {
			// The key type ssh-rsa signs with SHA-1 unless the client
			// asks for one of these.
			add(ssh.KeyAlgoRSASHA512, ssh.KeyAlgoRSASHA256)
		} else {
			add(k.Algorithm)
		}
	}
	if algorithms != nil {
		add(acceptedAlgorithms...)
	}
	return cb, algorithms
}

// acceptedAlgorithms are the host key algorithms the bastion offers, in its
// order of preference.
var acceptedAlgorithms = []string{
	ssh.KeyAlgoED25519,
	ssh.KeyAlgoECDSA256, ssh.KeyAlgoECDSA384, ssh.KeyAlgoECDSA521,
	ssh.KeyAlgoRSASHA512, ssh.KeyAlgoRSASHA256,
}

func addrString(a net.Addr) string {
	if a == nil {
		return ""
	}
	return a.String()
}

// scanAlgorithms are offered one per connection, so that a server with
// several host keys shows each of them. The three ECDSA curves are separate
// keys on a server, hence separate connections.
var scanAlgorithms = []string{
	ssh.KeyAlgoED25519,
	ssh.KeyAlgoECDSA256, ssh.KeyAlgoECDSA384, ssh.KeyAlgoECDSA521,
	ssh.KeyAlgoRSASHA512,
}

// errScanned ends a scan's handshake once the host key is known: nothing
// past it is needed, and nothing is authenticated.
var errScanned = errors.New("host key collected")

// ScanSSH connects to target's SSH server once per host key algorithm,
// with dial, and returns every host key the server has. Keys not yet known
// are recorded as pending; known ones keep their state (a pinned key stays
// pinned). Each connection is bounded by Config.ScanTimeout.
func (s *Store) ScanSSH(ctx context.Context, target string, dial func(context.Context) (net.Conn, error)) ([]Key, error) {
	if err := checkTarget(target); err != nil {
		return nil, err
	}
	var found []Key
	for _, alg := range scanAlgorithms {
		key, addr, err := s.scanOne(ctx, dial, alg)
		if err != nil {
			return nil, fmt.Errorf("hostkeys: scan %s: %w", target, err)
		}
		if key == nil {
			continue
		}
		k, err := s.record(KindSSH, target, key.Type(), key.Marshal(), addr)
		if err != nil {
			return nil, err
		}
		if !slices.ContainsFunc(found, func(f Key) bool { return f.Fingerprint == k.Fingerprint }) {
			found = append(found, k)
		}
	}
	if len(found) == 0 {
		return nil, fmt.Errorf("hostkeys: scan %s: the SSH server has no host key of a type the bastion accepts (%s)",
			target, strings.Join(scanAlgorithms, ", "))
	}
	return found, nil
}

// scanOne returns the host key the server presents for alg, and the
// address it answered from, or a nil key when it has none for alg.
func (s *Store) scanOne(ctx context.Context, dial func(context.Context) (net.Conn, error), alg string) (ssh.PublicKey, string, error) {
	actx, cancel := context.WithTimeout(ctx, s.scanTimeout)
	defer cancel()
	conn, err := dial(actx)
	if err != nil {
		return nil, "", err
	}
	defer conn.Close()
	deadline, _ := actx.Deadline()
	conn.SetDeadline(deadline)
	// Cancelling ctx must end a handshake in progress too.
	stop := context.AfterFunc(actx, func() { conn.SetDeadline(time.Now()) })
	defer stop()

	var key ssh.PublicKey
	var addr string
	_, _, _, err = ssh.NewClientConn(conn, conn.RemoteAddr().String(), &ssh.ClientConfig{
		User:              "bastiond-hostkey-scan",
		HostKeyAlgorithms: []string{alg},
		HostKeyCallback: func(_ string, remote net.Addr, k ssh.PublicKey) error {
			key, addr = k, addrString(remote)
			return errScanned
		},
	})
	var neg *ssh.AlgorithmNegotiationError
	switch {
	case key != nil:
		return key, addr, nil
	case errors.As(err, &neg) && neg.What == "host key":
		return nil, "", nil
	case ctx.Err() != nil:
		return nil, "", ctx.Err()
	case actx.Err() != nil, errors.Is(err, os.ErrDeadlineExceeded):
		return nil, "", fmt.Errorf("no %s host key within %s", alg, s.scanTimeout)
	}
	return nil, "", err
}

// ParseSSHKey reads one public key from a line of an authorized_keys or
// known_hosts file, or of a .pub file (see hostkeyfile.ParseSSHKey).
func ParseSSHKey(line string) (ssh.PublicKey, error) { return hostkeyfile.ParseSSHKey(line) }

// PinKey pins for target the SSH host key on line (see ParseSSHKey), one
// an admin obtained from the machine itself. by is who asked.
func (s *Store) PinKey(target, line, by string) (Key, error) {
	if err := checkTarget(target); err != nil {
		return Key{}, err
	}
	pub, err := ParseSSHKey(line)
	if err != nil {
		return Key{}, err
	}
	return s.pin(KindSSH, target, pub.Type(), pub.Marshal(), by)
}

// pin pins data, a key of kind, for target: a new key, or one seen before.
func (s *Store) pin(kind, target, algorithm string, data []byte, by string) (Key, error) {
	now := s.now().UTC()
	pinned := Key{
		Kind: kind, Target: target, Algorithm: algorithm, Data: encode(data), Fingerprint: Fingerprint(data),
		State: StatePinned, FirstSeen: now, Pinned: now, PinnedBy: by,
	}
	var k Key
	err := s.db.Update(func(tx store.Tx) error {
		k = pinned
		b := tx.Bucket(bucket)
		v, err := b.Get(storeKey(target, kind, k.Fingerprint))
		if err != nil {
			return err
		}
		if v != nil {
			var old Key
			if err := json.Unmarshal(v, &old); err != nil {
				return err
			}
			if old.State == StatePinned {
				k = old
				return nil
			}
			k.FirstSeen, k.SeenAt = old.FirstSeen, old.SeenAt
		}
		return put(b, k)
	})
	if err != nil {
		return Key{}, fmt.Errorf("hostkeys: pin %s key of %s: %w", k.Fingerprint, target, err)
	}
	return k, nil
}
