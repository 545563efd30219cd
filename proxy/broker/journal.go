package broker

import (
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"go.etcd.io/bbolt"
	"go.uber.org/zap"
)

// Live journals. Each broker keeps its live entries in a bbolt file of its
// own in Options.LiveDir, live-<pid>-<random>.db, and holds bbolt's
// exclusive lock (flock) on it for its whole life. During an upgrade two
// processes run at once, each with its journal, and neither needs the
// shared state store for them. A journal whose lock can be taken belongs to
// a process that is gone: its entries are sessions a crash interrupted.

// orphansFailed is what New and the sweeper log when RecoverOrphans fails.
const orphansFailed = "cannot record the sessions of processes that are gone; the sweeper tries again every 30 s"

// lockWait bounds taking another journal's lock: a lock that is held means
// its process is alive, and there is nothing to wait for.
const lockWait = 10 * time.Millisecond

// newJournalAge is how old a journal still named .new must be to be taken
// for a dead process's: its creator renames it within milliseconds.
const newJournalAge = time.Minute

// createJournal makes this process's live journal in dir and returns it,
// open and locked, with its path. It is built under a name ending in .new
// that the scan for dead journals passes over, and renamed once locked and
// ready: otherwise another process could take its lock between its creation
// and bbolt's flock, find it empty and remove it.
func createJournal(dir string) (*bbolt.DB, string, error) {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, "", fmt.Errorf("broker: live journal: %w", err)
	}
	var r [4]byte
	rand.Read(r[:]) // never fails (crypto/rand)
	path := filepath.Join(dir, fmt.Sprintf("live-%d-%x.db", os.Getpid(), r))
	db, err := bbolt.Open(path+".new", 0o600, nil)
	if err != nil {
		return nil, "", fmt.Errorf("broker: live journal: %w", err)
	}
	err = db.Update(func(tx *bbolt.Tx) error {
		_, err := tx.CreateBucket(liveBucket)
		return err
	})
	if err == nil {
		err = os.Rename(path+".new", path)
	}
	if err == nil {
		// The name must survive a power cut: the scan would take a journal
		// left as .new for an empty one.
		err = syncDir(dir)
	}
	if err != nil {
		db.Close()
		os.Remove(path + ".new")
		os.Remove(path)
		return nil, "", fmt.Errorf("broker: live journal: %w", err)
	}
	return db, path, nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// closeJournal closes the broker's journal once the writer has stopped. An
// empty journal (every end record written) is removed first, while still
// locked. One with entries left is kept: the next start records them as
// abandoned.
func (b *Broker) closeJournal() {
	db := b.audit.db
	defer db.Close()
	var left int
	if err := db.View(func(tx *bbolt.Tx) error {
		left = tx.Bucket(liveBucket).Stats().KeyN
		return nil
	}); err != nil {
		b.log.Error("live journal kept: cannot read it", zap.String("journal", b.journal), zap.Error(err))
		return
	}
	if left > 0 {
		b.log.Error("live journal kept: the next start records as abandoned those of its sessions whose end record is not in the audit file",
			zap.String("journal", b.journal), zap.Int("sessions", left))
		return
	}
	if err := os.Remove(b.journal); err != nil {
		b.log.Error("cannot remove the live journal", zap.Error(err))
	}
}

// RecoverOrphans records as abandoned the sessions in the live journals of
// dead processes, and removes those journals; it returns how many sessions
// it recorded. A journal is a dead process's when its lock can be taken: a
// live process's (the old bastiond during an upgrade) is left alone, and
// of two processes recovering at once, the one that holds the lock records
// the journal. The sweeper calls it every 30 seconds. A journal whose
// records cannot be written (the audit file is unwritable) is left for the
// next call, and the error says why.
func (b *Broker) RecoverOrphans() (int, error) {
	entries, err := os.ReadDir(b.liveDir)
	if err != nil {
		return 0, fmt.Errorf("broker: live journals: %w", err)
	}
	total := 0
	var errs []error
	for _, e := range entries {
		name := e.Name()
		path := filepath.Join(b.liveDir, name)
		if !strings.HasPrefix(name, "live-") || path == b.journal {
			continue
		}
		switch {
		case strings.HasSuffix(name, ".db"):
		case strings.HasSuffix(name, ".db.new"):
			if info, err := e.Info(); err != nil || time.Since(info.ModTime()) < newJournalAge {
				continue // being created
			}
		default:
			continue
		}
		n, err := b.recoverJournal(path)
		total += n
		if err != nil {
			errs = append(errs, err)
		}
	}
	return total, errors.Join(errs...)
}

// recoverJournal records the sessions of the journal at path, if its lock
// can be taken, and removes it.
func (b *Broker) recoverJournal(path string) (int, error) {
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{Timeout: lockWait, OpenFile: openExisting})
	switch {
	case errors.Is(err, bbolt.ErrTimeout), errors.Is(err, fs.ErrNotExist):
		return 0, nil // its process is alive, or another process has just recovered it
	case err != nil:
		return 0, fmt.Errorf("broker: live journal %s: %w", path, err)
	}
	defer db.Close()
	n, err := b.recordAbandoned(db)
	if err != nil {
		return 0, fmt.Errorf("broker: live journal %s: %w", path, err)
	}
	// Removed while still locked: no other process can take the lock of a
	// journal that is being removed. One that opened it just before gets
	// the lock of an empty journal once this one closes it.
	if err := os.Remove(path); err != nil {
		b.log.Error("cannot remove the live journal of a dead process", zap.String("journal", path), zap.Error(err))
	}
	if n > 0 {
		b.log.Warn("sessions of a process that is gone were recorded as abandoned", zap.String("journal", path), zap.Int("sessions", n))
	}
	return n, nil
}

// openExisting is os.OpenFile without O_CREATE, for bbolt: a journal
// removed since the directory was read stays removed.
func openExisting(name string, flag int, perm os.FileMode) (*os.File, error) {
	return os.OpenFile(name, flag&^os.O_CREATE, perm)
}

// recordAbandoned writes an abandoned end record for each session left in
// db's live bucket, then drops the bucket; it returns how many it recorded.
// The byte counts are those last saved, and not exact. A session whose end
// record is in the audit file's tail already (a crash between the record
// and the delete) gets no second one. db is a dead process's journal, or
// the state store of a version before live journals.
func (b *Broker) recordAbandoned(db *bbolt.DB) (int, error) {
	var left []liveEntry
	found := false
	err := db.View(func(tx *bbolt.Tx) error {
		bk := tx.Bucket(liveBucket)
		if bk == nil {
			return nil
		}
		found = true
		return bk.ForEach(func(k, v []byte) error {
			var e liveEntry
			if err := json.Unmarshal(v, &e); err != nil || e.Start.Session == "" {
				b.log.Error("unreadable live session entry; deleted without a record", zap.ByteString("key", k),
					zap.ByteString("value", v), zap.Error(err))
				return nil
			}
			left = append(left, e)
			return nil
		})
	})
	if err != nil || !found {
		return 0, err
	}
	// The sessions in the cluster's registry are recorded by whoever takes
	// their entries: this instance's registry, for those it can still
	// claim; another instance, which took this one for dead, for the rest.
	var claimed map[string]bool
	if b.reg != nil {
		var ids []string
		for _, e := range left {
			if e.Registered {
				ids = append(ids, e.Start.Session)
			}
		}
		if len(ids) > 0 {
			var err error
			if claimed, err = b.reg.Claim(ids); err != nil {
				return 0, err
			}
		}
	}
	ended := b.audit.endedInTail(1 << 20)
	now := time.Now()
	var op auditOp
	var ends []record
	taken := 0
	for _, e := range left {
		if e.Registered && b.reg != nil {
			if claimed[e.Start.Session] {
				taken++
			} else if !ended[e.Start.Session] {
				b.log.Info("a session interrupted by a crash was recorded as abandoned by another instance", zap.String("session", e.Start.Session))
			}
			continue
		}
		if ended[e.Start.Session] {
			continue
		}
		end := endOf(e.Start, now, e.BytesUp, e.BytesDown, ReasonAbandoned, false)
		op.lines = append(op.lines, marshalLine(end))
		ends = append(ends, end)
	}
	if len(ends) > 0 {
		if err := b.audit.submit(op); err != nil {
			return 0, err
		}
	}
	for _, end := range ends {
		b.log.Warn("session interrupted by a crash or a kill", append(fields(end), zap.String("session", end.Session))...)
		// Their bytes were counted by the process that carried them.
		b.metrics.ended.WithLabelValues(end.Protocol, reasonClass(ReasonAbandoned)).Inc()
	}
	// If this fails, the entries stay, and the next recovery finds their
	// end records in the tail.
	if err := db.Update(func(tx *bbolt.Tx) error { return tx.DeleteBucket(liveBucket) }); err != nil {
		b.log.Error("cannot delete recovered live session entries", zap.Error(err))
	}
	if taken > 0 {
		b.log.Warn("sessions interrupted by a crash are recorded as abandoned through the cluster's registry", zap.Int("sessions", taken))
	}
	return len(ends) + taken, nil
}
