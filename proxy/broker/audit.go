package broker

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"time"

	"go.etcd.io/bbolt"
	"go.uber.org/zap"
)

// liveBucket holds one entry per open session: its start record, with the
// byte counts last seen. An entry left at start-up is a session a crash
// interrupted.
var liveBucket = []byte("live_sessions")

// record is one line of the audit file.
type record struct {
	Time       time.Time  `json:"time"`
	Event      string     `json:"event"` // session_start, session_end
	Session    string     `json:"session"`
	User       string     `json:"user"`
	Client     string     `json:"client"`
	Target     string     `json:"target"`
	Address    string     `json:"address"`
	Protocol   string     `json:"protocol"`
	Port       uint16     `json:"port"`
	Login      string     `json:"login,omitempty"`
	Via        string     `json:"via"`
	Token      string     `json:"token,omitempty"`
	Roles      []string   `json:"roles"`
	Start      *time.Time `json:"start,omitempty"`
	End        *time.Time `json:"end,omitempty"`
	DurationMS *int64     `json:"duration_ms,omitempty"`
	BytesUp    *int64     `json:"bytes_up,omitempty"`
	BytesDown  *int64     `json:"bytes_down,omitempty"`
	Reason     string     `json:"reason,omitempty"`
	BytesExact *bool      `json:"bytes_exact,omitempty"`
	Recording  string     `json:"recording,omitempty"`
}

func startRecord(i Info) record {
	if i.Roles == nil {
		i.Roles = []string{} // "roles": [], not null
	}
	return record{Time: i.Start, Event: "session_start", Session: i.ID, User: i.User, Client: i.Client.String(),
		Target: i.Target, Address: i.Address.String(), Protocol: i.Protocol, Port: i.Port, Login: i.Login, Via: i.Via,
		Token: i.Token, Roles: i.Roles, Recording: i.Recording}
}

// endOf turns a start record into the end record of the same session.
func endOf(r record, end time.Time, up, down int64, reason string, exact bool) record {
	start := r.Time
	dur := end.Sub(start).Milliseconds()
	r.Time, r.Event = end, "session_end"
	r.Start, r.End, r.DurationMS = &start, &end, &dur
	r.BytesUp, r.BytesDown, r.Reason, r.BytesExact = &up, &down, reason, &exact
	return r
}

// fields are the record's fields for the log line that repeats it (the
// session's logger carries "session").
func (r record) fields() []zap.Field {
	f := []zap.Field{zap.String("event", r.Event), zap.String("user", r.User), zap.String("client", r.Client),
		zap.String("target", r.Target), zap.String("address", r.Address), zap.String("protocol", r.Protocol),
		zap.Uint16("port", r.Port), zap.String("via", r.Via), zap.Strings("roles", r.Roles)}
	if r.Login != "" {
		f = append(f, zap.String("login", r.Login))
	}
	if r.Token != "" {
		f = append(f, zap.String("token", r.Token))
	}
	if r.Recording != "" {
		f = append(f, zap.String("recording", r.Recording))
	}
	if r.Event == "session_end" {
		f = append(f, zap.Time("start", *r.Start), zap.Time("end", *r.End), zap.Int64("duration_ms", *r.DurationMS), zap.Int64("bytes_up", *r.BytesUp),
			zap.Int64("bytes_down", *r.BytesDown), zap.String("reason", r.Reason), zap.Bool("bytes_exact", *r.BytesExact))
	}
	return f
}

// liveEntry is the value kept in liveBucket.
type liveEntry struct {
	Start     record `json:"start"`
	BytesUp   int64  `json:"bytes_up"`
	BytesDown int64  `json:"bytes_down"`
}

// auditOp is one request to the writer.
type auditOp struct {
	// start are live entries of sessions opening, committed before lines:
	// a crash in between leaves an entry that the next start completes
	// with an abandoned record, instead of a start record with no end.
	start map[string][]byte
	// lines are records to append, each without its newline.
	lines [][]byte
	// del are live entries to delete once lines are synced: a failed end
	// record leaves the entry, and the session is recorded as abandoned
	// at the next start rather than lost.
	del []string
	// refresh replaces existing entries only (byte counts): it must not
	// bring back a session that ended meanwhile.
	refresh map[string][]byte
	done    chan error // nil: nobody waits
}

// auditLog appends records to the audit file and keeps the live bucket. One
// goroutine does all the writing and commits whatever has queued up with
// one write and one fsync of the file, and at most two bbolt commits (group
// commit), so that 10,000 sessions opening at once share a few dozen
// fsyncs instead of making 20,000. The writer is the bucket's only writer,
// so one db.Update per batch is what db.Batch would do, in order.
type auditLog struct {
	path string
	db   *bbolt.DB
	log  *zap.Logger
	ops  chan auditOp
	done chan struct{}

	closeMu sync.RWMutex // held to read while sending on ops; to write to close it
	closed  bool

	// The writer goroutine owns the fields below (and New, before it runs).
	f       *os.File
	checked time.Time // when the file's identity was last compared with path
	torn    bool      // a failed write may have left a partial line
}

func openAudit(path string, db *bbolt.DB, log *zap.Logger) (*auditLog, error) {
	a := &auditLog{path: path, db: db, log: log, ops: make(chan auditOp, 1024), done: make(chan struct{})}
	if err := a.open(); err != nil {
		return nil, err
	}
	if err := db.Update(func(tx *bbolt.Tx) error {
		_, err := tx.CreateBucketIfNotExists(liveBucket)
		return err
	}); err != nil {
		a.f.Close()
		return nil, fmt.Errorf("broker: state store: %w", err)
	}
	return a, nil
}

func (a *auditLog) open() error {
	if err := os.MkdirAll(filepath.Dir(a.path), 0o750); err != nil {
		return fmt.Errorf("broker: audit file: %w", err)
	}
	f, err := os.OpenFile(a.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
	if err != nil {
		return fmt.Errorf("broker: audit file: %w", err)
	}
	a.f, a.checked = f, time.Now()
	return nil
}

// reopenIfMoved reopens the file when logrotate (or anyone) renamed or
// removed it, so that records go to the file at path. It compares at most
// once a second, unless force.
func (a *auditLog) reopenIfMoved(force bool) {
	if !force && time.Since(a.checked) < time.Second {
		return
	}
	a.checked = time.Now()
	onDisk, err := os.Stat(a.path)
	mine, err2 := a.f.Stat()
	if !force && err == nil && err2 == nil && os.SameFile(onDisk, mine) {
		return
	}
	old := a.f
	if err := a.open(); err != nil {
		a.log.Error("cannot reopen the audit file; still writing to the old one", zap.String("path", a.path), zap.Error(err))
		a.f = old
		return
	}
	old.Close()
	a.torn = false // a fresh descriptor; a torn line in the old file stays there
	if !force {
		a.log.Info("audit file moved or removed; reopened", zap.String("path", a.path))
	}
}

func (a *auditLog) run() {
	defer close(a.done)
	for op := range a.ops {
		batch := []auditOp{op}
	more:
		for len(batch) < 4096 {
			select {
			case op, ok := <-a.ops:
				if !ok {
					break more
				}
				batch = append(batch, op)
			default:
				break more
			}
		}
		err := a.commit(batch)
		for _, op := range batch {
			if op.done != nil {
				op.done <- err
			}
		}
	}
	a.f.Close()
}

// commit makes batch durable: the start entries (one bbolt commit), then
// the lines (one write, one fsync), then the deletes and refreshes (one
// bbolt commit). An error fails the whole batch; every waiter gets it.
func (a *auditLog) commit(batch []auditOp) error {
	var starts []string
	if err := a.update(func(b *bbolt.Bucket) error {
		for _, op := range batch {
			for k, v := range op.start {
				if err := b.Put([]byte(k), v); err != nil {
					return err
				}
				starts = append(starts, k)
			}
		}
		return nil
	}); err != nil {
		return err
	}
	if err := a.write(batch); err != nil {
		// The sessions whose start records failed are refused: their
		// entries go. If that fails too, the next start records them as
		// abandoned, which says more than nothing.
		a.update(func(b *bbolt.Bucket) error {
			for _, k := range starts {
				if err := b.Delete([]byte(k)); err != nil {
					return err
				}
			}
			return nil
		})
		return err
	}
	return a.update(func(b *bbolt.Bucket) error {
		for _, op := range batch {
			for _, k := range op.del {
				if err := b.Delete([]byte(k)); err != nil {
					return err
				}
			}
			for k, v := range op.refresh {
				if b.Get([]byte(k)) == nil {
					continue
				}
				if err := b.Put([]byte(k), v); err != nil {
					return err
				}
			}
		}
		return nil
	})
}

// update runs fn on the live bucket in one bbolt transaction, if fn has
// anything to do; bbolt syncs the commit.
func (a *auditLog) update(fn func(*bbolt.Bucket) error) error {
	err := a.db.Update(func(tx *bbolt.Tx) error {
		b := tx.Bucket(liveBucket)
		if b == nil {
			return errors.New("bucket live_sessions is missing")
		}
		return fn(b)
	})
	if err != nil {
		a.log.Error("cannot update the live sessions in the state store", zap.Error(err))
		return fmt.Errorf("broker: state store: %w", err)
	}
	return nil
}

// write appends the batch's lines and syncs them.
func (a *auditLog) write(batch []auditOp) error {
	var buf bytes.Buffer
	if a.torn {
		buf.WriteByte('\n') // end the partial line a failed write left
	}
	for _, op := range batch {
		for _, l := range op.lines {
			buf.Write(l)
			buf.WriteByte('\n')
		}
	}
	if buf.Len() == 0 || (a.torn && buf.Len() == 1) {
		return nil
	}
	a.reopenIfMoved(false)
	if n, err := a.f.Write(buf.Bytes()); err != nil {
		a.torn = a.torn || n > 0
		a.log.Error("cannot write the audit file", zap.String("path", a.path), zap.Error(err))
		return fmt.Errorf("broker: audit file: %w", err)
	}
	a.torn = false
	if err := a.f.Sync(); err != nil {
		// After a failed fsync the kernel may have dropped the dirty pages
		// and a later fsync can succeed without them: never trust this
		// descriptor again.
		a.log.Error("cannot sync the audit file", zap.String("path", a.path), zap.Error(err))
		a.reopenIfMoved(true)
		return fmt.Errorf("broker: audit file: %w", err)
	}
	return nil
}

// submit queues op and waits for it to be durable.
func (a *auditLog) submit(op auditOp) error {
	op.done = make(chan error, 1)
	a.closeMu.RLock()
	if a.closed {
		a.closeMu.RUnlock()
		return errClosed
	}
	a.ops <- op
	a.closeMu.RUnlock()
	return <-op.done
}

// offer queues op if the writer has room, without waiting.
func (a *auditLog) offer(op auditOp) {
	a.closeMu.RLock()
	defer a.closeMu.RUnlock()
	if a.closed {
		return
	}
	select {
	case a.ops <- op:
	default: // busy; the next sweep tries again
	}
}

// close stops the writer once it has committed what is queued, and closes
// the file.
func (a *auditLog) close() {
	a.closeMu.Lock()
	if a.closed {
		a.closeMu.Unlock()
		return
	}
	a.closed = true
	close(a.ops)
	a.closeMu.Unlock()
	<-a.done
}

func marshalLine(r record) []byte {
	b, _ := json.Marshal(r) // a record always marshals
	return b
}

// recover completes the records of sessions left in the live bucket by a
// crash and deletes the entries; it returns the end records it wrote. A
// session whose end record made it to the file (a crash between the record
// and the delete) gets no second one. It runs before the writer starts.
func (a *auditLog) recover(now time.Time) ([]record, error) {
	var left []liveEntry
	var keys []string
	err := a.db.View(func(tx *bbolt.Tx) error {
		return tx.Bucket(liveBucket).ForEach(func(k, v []byte) error {
			keys = append(keys, string(k))
			var e liveEntry
			if err := json.Unmarshal(v, &e); err != nil || e.Start.Session == "" {
				a.log.Error("unreadable live session entry; deleted without a record", zap.ByteString("key", k),
					zap.ByteString("value", v), zap.Error(err))
				return nil
			}
			left = append(left, e)
			return nil
		})
	})
	if err != nil || len(keys) == 0 {
		return nil, err
	}
	ended := a.endedInTail(1 << 20)
	op := auditOp{del: keys}
	var ends []record
	for _, e := range left {
		if ended[e.Start.Session] {
			continue
		}
		end := endOf(e.Start, now, e.BytesUp, e.BytesDown, ReasonAbandoned, false)
		op.lines = append(op.lines, marshalLine(end))
		ends = append(ends, end)
		a.log.Warn("session interrupted by a crash or a kill", append(end.fields(), zap.String("session", end.Session))...)
	}
	if err := a.commit([]auditOp{op}); err != nil {
		return nil, err
	}
	return ends, nil
}

// endedInTail returns the sessions with an end record in the last n bytes
// of the audit file.
func (a *auditLog) endedInTail(n int64) map[string]bool {
	ended := map[string]bool{}
	f, err := os.Open(a.path)
	if err != nil {
		return ended
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return ended
	}
	off := max(st.Size()-n, 0)
	data, err := io.ReadAll(io.NewSectionReader(f, off, st.Size()-off))
	if err != nil {
		return ended
	}
	for line := range bytes.SplitSeq(data, []byte{'\n'}) {
		var r struct{ Event, Session string }
		if json.Unmarshal(line, &r) == nil && r.Event == "session_end" {
			ended[r.Session] = true
		}
	}
	return ended
}

var errClosed = errors.New("broker: closed")
