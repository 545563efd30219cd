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
	Via        string     `json:"via,omitempty"`
	Token      string     `json:"token,omitempty"`
	Roles      []string   `json:"roles,omitempty"`
	Start      *time.Time `json:"start,omitempty"`
	End        *time.Time `json:"end,omitempty"`
	DurationMS *int64     `json:"duration_ms,omitempty"`
	BytesUp    *int64     `json:"bytes_up,omitempty"`
	BytesDown  *int64     `json:"bytes_down,omitempty"`
	Reason     string     `json:"reason,omitempty"`
	BytesExact *bool      `json:"bytes_exact,omitempty"`
}

func startRecord(i Info) record {
	return record{Time: i.Start, Event: "session_start", Session: i.ID, User: i.User, Client: i.Client.String(),
		Target: i.Target, Address: i.Address.String(), Protocol: i.Protocol, Port: i.Port, Login: i.Login, Via: i.Via,
		Token: i.Token, Roles: i.Roles}
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

func (r record) fields() []zap.Field {
	f := []zap.Field{zap.String("session", r.Session), zap.String("user", r.User), zap.String("client", r.Client),
		zap.String("target", r.Target), zap.String("address", r.Address), zap.String("protocol", r.Protocol),
		zap.Uint16("port", r.Port), zap.String("via", r.Via)}
	if r.Login != "" {
		f = append(f, zap.String("login", r.Login))
	}
	if r.Token != "" {
		f = append(f, zap.String("token", r.Token))
	}
	if r.Event == "session_end" {
		f = append(f, zap.Time("start", *r.Start), zap.Int64("duration_ms", *r.DurationMS), zap.Int64("bytes_up", *r.BytesUp),
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

// auditOp is one request to the writer: lines to append and live entries
// to put or delete once the lines are on disk.
type auditOp struct {
	lines [][]byte
	put   map[string][]byte
	del   []string
	// update makes put change existing entries only: a refresh of byte
	// counts must not bring back a session that ended meanwhile.
	update bool
	done   chan error // nil: nobody waits
}

// auditLog appends records to the audit file and keeps the live bucket. One
// goroutine does all the writing and commits whatever has queued up with
// one fsync of the file and one bbolt commit (group commit), so that many
// sessions opening at once share the cost of making their records durable.
type auditLog struct {
	path string
	db   *bbolt.DB
	log  *zap.Logger
	f    *os.File
	ops  chan auditOp
	done chan struct{}

	closeMu sync.RWMutex // held to read while sending on ops; to write to close it
	closed  bool

	checked time.Time // when the file's identity was last compared with path
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
// removed it, so that records go to the file at path.
func (a *auditLog) reopenIfMoved() {
	if time.Since(a.checked) < time.Second {
		return
	}
	a.checked = time.Now()
	onDisk, err := os.Stat(a.path)
	mine, err2 := a.f.Stat()
	if err == nil && err2 == nil && os.SameFile(onDisk, mine) {
		return
	}
	old := a.f
	if err := a.open(); err != nil {
		a.log.Error("cannot reopen the audit file; still writing to the moved one", zap.Error(err))
		a.f = old
		return
	}
	old.Close()
	a.log.Info("audit file moved; reopened", zap.String("path", a.path))
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

func (a *auditLog) commit(batch []auditOp) error {
	var buf bytes.Buffer
	for _, op := range batch {
		for _, l := range op.lines {
			buf.Write(l)
			buf.WriteByte('\n')
		}
	}
	if buf.Len() > 0 {
		a.reopenIfMoved()
		if _, err := a.f.Write(buf.Bytes()); err != nil {
			a.log.Error("cannot write the audit file", zap.Error(err))
			return fmt.Errorf("broker: audit file: %w", err)
		}
		if err := a.f.Sync(); err != nil {
			a.log.Error("cannot sync the audit file", zap.Error(err))
			return fmt.Errorf("broker: audit file: %w", err)
		}
	}
	// The live entries change only once the lines they stand for are on
	// disk: an end record that failed leaves the entry, and the next start
	// records the session as abandoned rather than losing it.
	err := a.db.Update(func(tx *bbolt.Tx) error {
		b := tx.Bucket(liveBucket)
		for _, op := range batch {
			for k, v := range op.put {
				if op.update && b.Get([]byte(k)) == nil {
					continue
				}
				if err := b.Put([]byte(k), v); err != nil {
					return err
				}
			}
			for _, k := range op.del {
				if err := b.Delete([]byte(k)); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		a.log.Error("cannot update the live sessions in the state store", zap.Error(err))
		return fmt.Errorf("broker: state store: %w", err)
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
// crash, and returns how many it wrote. A session whose end record made it
// to the file (a crash between the record and the delete) gets no second
// one.
func (a *auditLog) recover(now time.Time) ([]record, error) {
	var left []liveEntry
	var keys [][]byte
	err := a.db.View(func(tx *bbolt.Tx) error {
		return tx.Bucket(liveBucket).ForEach(func(k, v []byte) error {
			var e liveEntry
			if json.Unmarshal(v, &e) == nil {
				left = append(left, e)
			}
			keys = append(keys, append([]byte(nil), k...))
			return nil
		})
	})
	if err != nil || len(keys) == 0 {
		return nil, err
	}
	ended := a.endedInTail(1 << 20)
	var op auditOp
	var ends []record
	for _, e := range left {
		if ended[e.Start.Session] {
			continue
		}
		end := endOf(e.Start, now, e.BytesUp, e.BytesDown, ReasonAbandoned, false)
		op.lines = append(op.lines, marshalLine(end))
		ends = append(ends, end)
		a.log.Warn("session ended by a crash", end.fields()...)
	}
	for _, k := range keys {
		op.del = append(op.del, string(k))
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
