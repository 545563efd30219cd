package recording

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/bastiond/bastiond/internal/store"
)

// Catalog describes the recordings of a cluster's instances in their shared
// state store, so that any instance lists and plays every instance's
// recordings without reading the others' audit files. The files themselves
// are in the directory every instance mounts (recordings_dir); an entry is
// written when a recording starts (who, what, where, on which instance) and
// when it closes (its size and hash), and marked when retention removes it.
// A single host needs none: its audit trail says the same.
type Catalog struct {
	db store.DB
}

// Buckets of the catalog in the state store.
const (
	catalogBucket = "recordings"
	leaseBucket   = "leases"
)

// NewCatalog is the catalog kept in db.
func NewCatalog(db store.DB) *Catalog { return &Catalog{db: db} }

// Entry is one recording in the catalog.
type Entry struct {
	ID       string `json:"id"`       // the session's ID
	Protocol string `json:"protocol"` // ssh or rdp
	// File is the recording's file name in the recordings directory.
	File     string    `json:"file"`
	Instance string    `json:"instance"` // the instance that records it
	User     string    `json:"user,omitempty"`
	Target   string    `json:"target,omitempty"`
	Login    string    `json:"login,omitempty"`
	Client   string    `json:"client,omitempty"`
	Start    time.Time `json:"start"`
	// End, Size and SHA256 are the recording's at close; zero while it is
	// being written (or when its instance died before closing it).
	End    time.Time `json:"end,omitzero"`
	Size   int64     `json:"size,omitempty"`
	SHA256 string    `json:"sha256,omitempty"`
	// Removed is when retention removed the file, RemovedBy the instance
	// whose retention did, RemovedReason why (RemovedAge, RemovedSize).
	Removed       time.Time `json:"removed,omitzero"`
	RemovedBy     string    `json:"removed_by,omitempty"`
	RemovedReason string    `json:"removed_reason,omitempty"`
}

// Started enters a recording that starts. e.ID, e.File and e.Instance are
// required.
func (c *Catalog) Started(e Entry) error {
	if !validID(e.ID) || e.File == "" || strings.ContainsRune(e.File, '/') || e.Instance == "" {
		return fmt.Errorf("recording: catalog: an entry needs a session ID, a file name and an instance (got %q, %q, %q)", e.ID, e.File, e.Instance)
	}
	v, _ := json.Marshal(e)
	err := c.db.Update(func(tx store.Tx) error { return tx.Bucket(catalogBucket).Put([]byte(e.ID), v) })
	if err != nil {
		return fmt.Errorf("recording: catalog: enter %s: %w", e.ID, err)
	}
	return nil
}

// Closed notes the end of recording id: when, its size and hash. A
// recording the catalog does not have (its start was not entered: the
// store was down) is entered with what the close says.
func (c *Catalog) Closed(id string, end time.Time, size int64, sha string, fallback Entry) error {
	return c.update(id, "close", func(e *Entry, found bool) {
		if !found {
			*e = fallback
			e.ID = id
		}
		e.End, e.Size, e.SHA256 = end, size, sha
	})
}

// Removed marks recording id as removed by retention on instance by.
func (c *Catalog) Removed(id string, at time.Time, by, reason string, fallback Entry) error {
	return c.update(id, "mark removed", func(e *Entry, found bool) {
		if !found {
			*e = fallback
			e.ID = id
		}
		e.Removed, e.RemovedBy, e.RemovedReason = at, by, reason
	})
}

func (c *Catalog) update(id, what string, fn func(e *Entry, found bool)) error {
	if !validID(id) {
		return fmt.Errorf("recording: catalog: invalid session ID %q", id)
	}
	err := c.db.Update(func(tx store.Tx) error {
		b := tx.Bucket(catalogBucket)
		v, err := b.Get([]byte(id))
		if err != nil {
			return err
		}
		var e Entry
		if v != nil {
			if err := json.Unmarshal(v, &e); err != nil {
				return fmt.Errorf("entry %s: %w", id, err)
			}
		}
		fn(&e, v != nil)
		v, _ = json.Marshal(e)
		return b.Put([]byte(id), v)
	})
	if err != nil {
		return fmt.Errorf("recording: catalog: %s %s: %w", what, id, err)
	}
	return nil
}

// Get returns the entry of recording id; ok is false when there is none.
func (c *Catalog) Get(id string) (e Entry, ok bool, err error) {
	if !validID(id) {
		return Entry{}, false, nil
	}
	err = c.db.View(func(tx store.Tx) error {
		v, err := tx.Bucket(catalogBucket).Get([]byte(id))
		if err != nil || v == nil {
			return err
		}
		ok = true
		return json.Unmarshal(v, &e)
	})
	if err != nil {
		return Entry{}, false, fmt.Errorf("recording: catalog: read %s: %w", id, err)
	}
	return e, ok, nil
}

// List returns every entry, oldest start first.
func (c *Catalog) List() ([]Entry, error) {
	var out []Entry
	err := c.db.View(func(tx store.Tx) error {
		out = out[:0]
		return tx.Bucket(catalogBucket).ForEach(nil, func(k, v []byte) error {
			var e Entry
			if json.Unmarshal(v, &e) != nil {
				return nil // an entry of a later release's making, or damaged: the file is still listed
			}
			out = append(out, e)
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("recording: catalog: list: %w", err)
	}
	slices.SortFunc(out, func(a, b Entry) int {
		if c := a.Start.Compare(b.Start); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	return out, nil
}

// lease is who holds a lease, until when.
type lease struct {
	Holder string    `json:"holder"`
	Until  time.Time `json:"until"`
}

// Lease takes or renews the lease called name for holder, at now, for
// ttl: it reports whether holder has it. A lease another holder renewed
// less than ttl ago is theirs; one that expired (its holder stopped, or
// died) goes to whoever asks next. The instances' clocks must agree within
// much less than ttl (they run NTP: TOTP needs it too).
func (c *Catalog) Lease(name, holder string, now time.Time, ttl time.Duration) (bool, error) {
	var ok bool
	err := c.db.Update(func(tx store.Tx) error {
		ok = false
		b := tx.Bucket(leaseBucket)
		v, err := b.Get([]byte(name))
		if err != nil {
			return err
		}
		var l lease
		if v != nil && json.Unmarshal(v, &l) == nil && l.Holder != holder && now.Before(l.Until) {
			return nil
		}
		ok = true
		v, _ = json.Marshal(lease{Holder: holder, Until: now.Add(ttl)})
		return b.Put([]byte(name), v)
	})
	if err != nil {
		return false, fmt.Errorf("recording: lease %s: %w", name, err)
	}
	return ok, nil
}

// Release gives up holder's lease name, if it has it, so that another
// instance takes it at once rather than when it expires.
func (c *Catalog) Release(name, holder string) error {
	return c.db.Update(func(tx store.Tx) error {
		b := tx.Bucket(leaseBucket)
		v, err := b.Get([]byte(name))
		if err != nil || v == nil {
			return err
		}
		var l lease
		if json.Unmarshal(v, &l) == nil && l.Holder == holder {
			return b.Delete([]byte(name))
		}
		return nil
	})
}
