package auth

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/bastiond/bastiond/internal/source"
	"github.com/bastiond/bastiond/internal/store"
)

// bucketThrottle holds the shared throttle's three tables, one key prefix
// each:
//
//	's' + source            -> entry   (per source)
//	'u' + name              -> entry   (per account)
//	'p' + name + 0x00 + source -> entry (per account and source)
//
// where source is the binary form of the IPv4 address or IPv6 /64
// (netip.Prefix.MarshalBinary) and an entry is 20 bytes: failures in a
// row (uint32), last failure and end of backoff (Unix ns, int64 each).
// User names cannot hold a NUL (userName).
const bucketThrottle = "signin_throttle"

const (
	tableSources byte = 's'
	tableUsers   byte = 'u'
	tablePairs   byte = 'p'
)

func sourceKey(src netip.Addr) []byte {
	b, _ := source.Of(src).MarshalBinary() // never fails for a valid prefix
	return append([]byte{tableSources}, b...)
}

func userThrottleKey(name string) []byte { return append([]byte{tableUsers}, name...) }

func pairPrefix(name string) []byte { return append(append([]byte{tablePairs}, name...), 0) }

func pairKey(name string, src netip.Addr) []byte {
	b, _ := source.Of(src).MarshalBinary()
	return append(pairPrefix(name), b...)
}

const entryLen = 20

func encodeEntry(e *entry) []byte {
	b := make([]byte, entryLen)
	binary.BigEndian.PutUint32(b, uint32(min(e.n, 1<<31)))
	binary.BigEndian.PutUint64(b[4:], uint64(e.last.UnixNano()))
	binary.BigEndian.PutUint64(b[12:], uint64(e.until.UnixNano()))
	return b
}

func decodeEntry(b []byte) (*entry, error) {
	if len(b) != entryLen {
		return nil, fmt.Errorf("auth: throttle entry of %d bytes", len(b))
	}
	return &entry{
		n:     int(binary.BigEndian.Uint32(b)),
		last:  time.Unix(0, int64(binary.BigEndian.Uint64(b[4:]))),
		until: time.Unix(0, int64(binary.BigEndian.Uint64(b[12:]))),
	}, nil
}

// sharedThrottle counts failed sign-ins in the state store, so that the
// instances of a cluster on one database add up each other's failures:
// an attacker taking turns at the instances meets the backoff and the
// lockout it would meet on one. Its tables are throttle's; the count and
// the backoff of a failure are one transaction.
//
// Bounds: the tables are swept (the entries idle for Forget deleted, then
// the ones that mattered least recently, entry.key, until each table
// holds MaxEntries) by an instance every Forget/8, or as soon as it has
// added MaxEntries/8 entries since its last sweep: between sweeps a table
// holds at most MaxEntries plus MaxEntries/8 per instance.
type sharedThrottle struct {
	cfg ThrottleConfig
	db  store.DB

	mu    sync.Mutex // guards the fields below
	swept time.Time
	added int           // entries this instance added since its last sweep
	st    ThrottleStats // sizes as of the last sweep, evictions by this instance
}

func newSharedThrottle(db store.DB, cfg ThrottleConfig) *sharedThrottle {
	return &sharedThrottle{cfg: cfg.withDefaults(), db: db}
}

func (t *sharedThrottle) wait(k []byte, now time.Time) (time.Duration, error) {
	v, err := store.Get(t.db, bucketThrottle, k)
	if err != nil {
		return 0, fmt.Errorf("auth: sign-in throttle: %w", err)
	}
	if v == nil {
		return 0, nil
	}
	e, err := decodeEntry(v)
	if err != nil {
		return 0, fmt.Errorf("auth: sign-in throttle: %w", err)
	}
	if now.Before(e.until) {
		return e.until.Sub(now), nil
	}
	return 0, nil
}

func (t *sharedThrottle) sourceWait(src netip.Addr, now time.Time) (time.Duration, error) {
	return t.wait(sourceKey(src), now)
}

func (t *sharedThrottle) userWait(name string, now time.Time) (time.Duration, error) {
	return t.wait(userThrottleKey(name), now)
}

// bump counts a failure of k in b and returns its failures in a row and
// whether the entry is new.
func (t *sharedThrottle) bump(b store.Bucket, k []byte, now time.Time) (int, bool, error) {
	v, err := b.Get(k)
	if err != nil {
		return 0, false, err
	}
	e := &entry{}
	if v != nil {
		if e, err = decodeEntry(v); err != nil {
			return 0, false, err
		}
	}
	e.count(now, t.cfg)
	return e.n, v == nil, b.Put(k, encodeEntry(e))
}

func (t *sharedThrottle) fail(name string, src netip.Addr, known bool, now time.Time) (int, error) {
	var n, added int
	err := t.db.Update(func(tx store.Tx) error {
		n, added = 0, 0
		b := tx.Bucket(bucketThrottle)
		keys := [][]byte{sourceKey(src)}
		if known {
			keys = append(keys, userThrottleKey(name), pairKey(name, src))
		}
		for _, k := range keys {
			c, isNew, err := t.bump(b, k, now)
			if err != nil {
				return err
			}
			if isNew {
				added++
			}
			if k[0] == tablePairs {
				n = c
			}
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("auth: sign-in throttle: %w", err)
	}
	t.mu.Lock()
	t.added += added
	due := now.Sub(t.swept) >= t.cfg.Forget/8 || t.added >= max(t.cfg.MaxEntries/8, 1)
	if due {
		t.swept, t.added = now, 0
	}
	t.mu.Unlock()
	if due {
		// The failure is counted: a sweep that fails is tried again at
		// the next failure.
		if err := t.sweep(now); err != nil {
			t.mu.Lock()
			t.swept = time.Time{}
			t.mu.Unlock()
		}
	}
	return n, nil
}

// remove deletes keys in one transaction.
func (t *sharedThrottle) remove(keys ...[]byte) error {
	err := t.db.Update(func(tx store.Tx) error {
		b := tx.Bucket(bucketThrottle)
		for _, k := range keys {
			if err := b.Delete(k); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("auth: sign-in throttle: %w", err)
	}
	return nil
}

func (t *sharedThrottle) locked(name string, src netip.Addr) error {
	return t.remove(pairKey(name, src))
}

// succeed clears the account's failures and the pair's. Most sign-ins
// have none to clear: they are looked for first, each read one statement,
// and only what is there is removed, so that a sign-in without failures
// writes nothing (in PostgreSQL, a SERIALIZABLE transaction of deletes
// takes predicate locks and commits, where the reads take neither).
func (t *sharedThrottle) succeed(name string, src netip.Addr) error {
	var there [][]byte
	for _, k := range [][]byte{userThrottleKey(name), pairKey(name, src)} {
		v, err := store.Get(t.db, bucketThrottle, k)
		if err != nil {
			return fmt.Errorf("auth: sign-in throttle: %w", err)
		}
		if v != nil {
			there = append(there, k)
		}
	}
	if len(there) == 0 {
		return nil
	}
	return t.remove(there...)
}

func (t *sharedThrottle) reset(name string) error {
	err := t.db.Update(func(tx store.Tx) error {
		b := tx.Bucket(bucketThrottle)
		keys := [][]byte{userThrottleKey(name)}
		err := b.ForEach(pairPrefix(name), func(k, _ []byte) error {
			keys = append(keys, slices.Clone(k))
			return nil
		})
		if err != nil {
			return err
		}
		for _, k := range keys {
			if err := b.Delete(k); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("auth: sign-in throttle: %w", err)
	}
	return nil
}

// stats are the sizes of the tables as of this instance's last sweep,
// and the entries its sweeps forgot to make room.
func (t *sharedThrottle) stats() ThrottleStats {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.st
}

// keyedEntry is an entry of a table, read by a sweep.
type keyedEntry struct {
	k []byte
	e *entry
}

// sweep deletes the entries idle for longer than Forget and, in a table
// still over MaxEntries, those that mattered least recently (entry.key),
// as the memory throttle evicts them: an entry in backoff stays while
// others do not.
func (t *sharedThrottle) sweep(now time.Time) error {
	var sizes [3]int
	var evicted [3]uint64
	err := t.db.Update(func(tx store.Tx) error {
		sizes, evicted = [3]int{}, [3]uint64{}
		b := tx.Bucket(bucketThrottle)
		for i, table := range []byte{tableSources, tableUsers, tablePairs} {
			var live []keyedEntry
			var stale [][]byte
			err := b.ForEach([]byte{table}, func(k, v []byte) error {
				e, err := decodeEntry(v)
				if err != nil {
					return fmt.Errorf("%w (key %q)", err, k)
				}
				if now.Sub(e.last) > t.cfg.Forget && !now.Before(e.until) {
					stale = append(stale, slices.Clone(k))
				} else {
					live = append(live, keyedEntry{slices.Clone(k), e})
				}
				return nil
			})
			if err != nil {
				return err
			}
			if over := len(live) - t.cfg.MaxEntries; over > 0 {
				slices.SortFunc(live, func(a, b keyedEntry) int { return a.e.key().Compare(b.e.key()) })
				for _, ke := range live[:over] {
					stale = append(stale, ke.k)
				}
				live = live[over:]
				evicted[i] = uint64(over)
			}
			for _, k := range stale {
				if err := b.Delete(k); err != nil {
					return err
				}
			}
			sizes[i] = len(live)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("auth: sign-in throttle: sweep: %w", err)
	}
	t.mu.Lock()
	t.st.Sources, t.st.Users, t.st.Pairs = sizes[0], sizes[1], sizes[2]
	t.st.SourceEvictions += evicted[0]
	t.st.UserEvictions += evicted[1]
	t.st.PairEvictions += evicted[2]
	t.mu.Unlock()
	return nil
}
