package hostkeys

import (
	"cmp"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/bastiond/bastiond/internal/store"

	"github.com/bastiond/bastiond/api/admin"
)

// Kinds of key.
const (
	KindSSH = admin.KeySSH // an SSH host key
	KindRDP = admin.KeyRDP // an RDP server's TLS certificate
)

// States of a key.
const (
	StatePinned  = admin.KeyPinned  // sessions to the target accept it
	StatePending = admin.KeyPending // seen, awaiting an admin's pin
)

// Key is one key seen on, or pinned for, a target.
type Key = admin.HostKey

// maxPending bounds the pending keys kept per target and kind, so that
// whoever answers in a target's place cannot grow the store without end.
// The oldest goes first.
const maxPending = 16

// bucket is the store's bucket in the state store.
const bucket = "host_keys"

// Config configures a Store.
type Config struct {
	// DB is the daemon's state store; the store keeps its keys in the
	// bucket "host_keys". Required.
	DB store.DB
	// ScanTimeout bounds each connection of a Scan, from the dial to the
	// host key. Default 10s.
	ScanTimeout time.Duration
}

// Store is the pinned and pending keys of every target.
type Store struct {
	db          store.DB
	scanTimeout time.Duration
	now         func() time.Time
}

// New returns the Store in cfg.DB.
func New(cfg Config) (*Store, error) {
	if cfg.DB == nil {
		return nil, errors.New("hostkeys: DB is required")
	}
	if cfg.ScanTimeout <= 0 {
		cfg.ScanTimeout = 10 * time.Second
	}
	return &Store{db: cfg.DB, scanTimeout: cfg.ScanTimeout, now: time.Now}, nil
}

// Fingerprint is the SHA-256 fingerprint of a key's bytes (an SSH key in
// wire format, a DER certificate) as OpenSSH writes it.
func Fingerprint(data []byte) string {
	sum := sha256.Sum256(data)
	return "SHA256:" + base64.RawStdEncoding.EncodeToString(sum[:])
}

func encode(data []byte) string { return base64.StdEncoding.EncodeToString(data) }

// checkTarget refuses a target name that would select other targets' keys.
func checkTarget(target string) error {
	if target == "" || strings.ContainsRune(target, 0) {
		return fmt.Errorf("hostkeys: %q is not a target name", target)
	}
	return nil
}

// storeKey is where k lives in the bucket: target, kind, fingerprint.
// A NUL cannot occur in a target name, so that one target's prefix never
// covers another's.
func storeKey(target, kind, fingerprint string) []byte {
	return []byte(target + "\x00" + kind + "\x00" + fingerprint)
}

func put(b store.Bucket, k Key) error {
	v, err := json.Marshal(k)
	if err != nil {
		return err
	}
	return b.Put(storeKey(k.Target, k.Kind, k.Fingerprint), v)
}

// keysOf returns the keys of target ("" for every target) in the order
// List documents.
func keysOf(tx store.Tx, target string) ([]Key, error) {
	var prefix []byte
	if target != "" {
		prefix = []byte(target + "\x00")
	}
	var keys []Key
	err := tx.Bucket(bucket).ForEach(prefix, func(k, v []byte) error {
		var key Key
		if err := json.Unmarshal(v, &key); err != nil {
			return fmt.Errorf("hostkeys: entry %q: %w", k, err)
		}
		keys = append(keys, key)
		return nil
	})
	if err != nil {
		return nil, err
	}
	slices.SortFunc(keys, func(a, b Key) int {
		return cmp.Or(strings.Compare(a.Target, b.Target), strings.Compare(a.Kind, b.Kind),
			strings.Compare(b.State, a.State), // pinned before pending
			strings.Compare(a.Algorithm, b.Algorithm), a.FirstSeen.Compare(b.FirstSeen),
			strings.Compare(a.Fingerprint, b.Fingerprint))
	})
	return keys, nil
}

// record notes a key seen on target at addr: a new one is pending, one
// already known keeps its state. It returns the key as stored.
func (s *Store) record(kind, target, algorithm string, data []byte, addr string) (Key, error) {
	if err := checkTarget(target); err != nil {
		return Key{}, err
	}
	seen := Key{
		Kind: kind, Target: target, Algorithm: algorithm, Data: encode(data),
		Fingerprint: Fingerprint(data), State: StatePending, FirstSeen: s.now().UTC(), SeenAt: addr,
	}
	var k Key
	err := s.db.Update(func(tx store.Tx) error {
		k = seen
		b := tx.Bucket(bucket)
		if v, err := b.Get(storeKey(target, kind, k.Fingerprint)); err != nil || v != nil {
			return cmp.Or(err, json.Unmarshal(v, &k))
		}
		keys, err := keysOf(tx, target)
		if err != nil {
			return err
		}
		pending := slices.DeleteFunc(keys, func(o Key) bool { return o.Kind != kind || o.State != StatePending })
		slices.SortFunc(pending, func(a, b Key) int { return a.FirstSeen.Compare(b.FirstSeen) })
		for _, old := range pending[:max(0, len(pending)-maxPending+1)] {
			if err := b.Delete(storeKey(old.Target, old.Kind, old.Fingerprint)); err != nil {
				return err
			}
		}
		return put(b, k)
	})
	if err != nil {
		return Key{}, fmt.Errorf("hostkeys: record %s key of %s: %w", kind, target, err)
	}
	return k, nil
}

// check accepts data if it is a key of kind pinned for target. Otherwise it
// records the key as pending and returns a *CheckError.
func (s *Store) check(kind, target, algorithm string, data []byte, addr string) error {
	if err := checkTarget(target); err != nil {
		return err
	}
	want := encode(data)
	var match bool
	var pinned []string
	err := s.db.View(func(tx store.Tx) error {
		keys, err := keysOf(tx, target)
		for _, k := range keys {
			if k.Kind != kind || k.State != StatePinned {
				continue
			}
			if k.Data == want {
				match = true
				return nil
			}
			pinned = append(pinned, k.Fingerprint)
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("hostkeys: check %s key of %s: %w", kind, target, err)
	}
	if match {
		return nil
	}
	k, err := s.record(kind, target, algorithm, data, addr)
	if err != nil {
		return err
	}
	cerr := &CheckError{Err: ErrNotPinned, Kind: kind, Target: target, Seen: k.Fingerprint, Algorithm: algorithm}
	if len(pinned) > 0 {
		cerr.Err, cerr.Pinned = ErrMismatch, pinned
	}
	return cerr
}

// List returns the keys of target, or of every target for "": by target,
// kind, pinned before pending, then algorithm.
func (s *Store) List(target string) ([]Key, error) {
	var keys []Key
	err := s.db.View(func(tx store.Tx) error {
		var err error
		keys, err = keysOf(tx, target)
		return err
	})
	return keys, err
}

// normalize accepts a fingerprint with or without its "SHA256:".
func normalize(fp string) string {
	if strings.HasPrefix(fp, "SHA256:") {
		return fp
	}
	return "SHA256:" + fp
}

// Pin pins the keys of target with the given fingerprints, or every pending
// one when fingerprints is empty, and returns the keys it names. by is who
// asked, for the record.
func (s *Store) Pin(target string, fingerprints []string, by string) ([]Key, error) {
	if err := checkTarget(target); err != nil {
		return nil, err
	}
	var out []Key
	err := s.db.Update(func(tx store.Tx) error {
		out = nil
		keys, err := keysOf(tx, target)
		if err != nil {
			return err
		}
		fingerprints := fingerprints
		if len(fingerprints) == 0 {
			for _, k := range keys {
				if k.State == StatePending {
					fingerprints = append(fingerprints, k.Fingerprint)
				}
			}
			if len(fingerprints) == 0 {
				return noKey("nothing pending for %s: run `bastionctl hostkeys scan %s` first, or pin a key taken from the machine with --key-file",
					target, target)
			}
		}
		now := s.now().UTC()
		for _, fp := range fingerprints {
			fp = normalize(fp)
			i := slices.IndexFunc(keys, func(k Key) bool { return k.Fingerprint == fp })
			if i < 0 {
				return noKey("%s has no key %s (see `bastionctl hostkeys list %s`)", target, fp, target)
			}
			k := keys[i]
			if k.State != StatePinned {
				k.State, k.Pinned, k.PinnedBy = StatePinned, now, by
				if err := put(tx.Bucket(bucket), k); err != nil {
					return err
				}
			}
			out = append(out, k)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("hostkeys: pin: %w", err)
	}
	return out, nil
}

// Forget removes the key of target with fingerprint, or every key of
// target for "", pinned or pending, and returns what it removed.
func (s *Store) Forget(target, fingerprint string) ([]Key, error) {
	if err := checkTarget(target); err != nil {
		return nil, err
	}
	var out []Key
	err := s.db.Update(func(tx store.Tx) error {
		out = nil
		keys, err := keysOf(tx, target)
		if err != nil {
			return err
		}
		for _, k := range keys {
			if fingerprint != "" && k.Fingerprint != normalize(fingerprint) {
				continue
			}
			if err := tx.Bucket(bucket).Delete(storeKey(k.Target, k.Kind, k.Fingerprint)); err != nil {
				return err
			}
			out = append(out, k)
		}
		switch {
		case len(out) > 0:
			return nil
		case fingerprint != "":
			return noKey("%s has no key %s (see `bastionctl hostkeys list %s`)", target, normalize(fingerprint), target)
		}
		return noKey("%s has no keys", target)
	})
	if err != nil {
		return nil, fmt.Errorf("hostkeys: forget: %w", err)
	}
	return out, nil
}
