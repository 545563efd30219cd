package broker

import (
	"bufio"
	"bytes"
	"cmp"
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"go.etcd.io/bbolt"
	"go.uber.org/zap"

	"github.com/bastiond/bastiond/internal/audit"
)

// liveBucket holds, in a live journal, one entry per open session: its
// start record, with the byte counts last saved. An entry left in a dead
// process's journal is a session a crash interrupted. Versions before live
// journals kept the bucket in the state store.
var liveBucket = []byte("live_sessions")

// record is a session's line of the audit file: a session_start or
// session_end event.
type record = audit.Event

func startRecord(i Info) record {
	source := audit.ActorAnonymous
	if i.Client.IsValid() {
		source = i.Client.Addr().String()
	}
	return record{V: audit.Version, Time: i.Start, Event: audit.SessionStart, Actor: i.User, Source: source, Instance: i.Instance,
		Session: i.ID, User: i.User, Client: i.Client.String(),
		Target: i.Target, Address: i.Address.String(), Network: i.Network, Protocol: i.Protocol, Port: i.Port, Login: i.Login, Via: i.Via,
		Token: i.Token, Roles: i.Roles, Recording: i.Recording, RecordingSHA256: i.RecordingSHA256}
}

// endOf turns a start record into the end record of the same session.
func endOf(r record, end time.Time, up, down int64, reason string, exact bool) record {
	start := r.Time
	dur := end.Sub(start).Milliseconds()
	r.Time, r.Event = end, audit.SessionEnd
	r.Start, r.End, r.DurationMS = &start, &end, &dur
	r.BytesUp, r.BytesDown, r.Reason, r.BytesExact = &up, &down, reason, &exact
	return r
}

// fields are the record's fields for the log line that repeats it (the
// session's logger carries "session").
func fields(r record) []zap.Field {
	f := []zap.Field{zap.String("event", r.Event), zap.String("user", r.User), zap.String("client", r.Client),
		zap.String("target", r.Target), zap.String("address", r.Address), zap.String("protocol", r.Protocol),
		zap.Uint16("port", r.Port), zap.String("via", r.Via), zap.Strings("roles", r.Roles)}
	if r.Network != "" {
		f = append(f, zap.String("network", r.Network))
	}
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
	// Registered says the session is in the cluster's registry too: its
	// abandoned record is then written by whoever takes its registry entry
	// (Registry.Claim), once in the cluster.
	Registered bool `json:"registered,omitempty"`
}

// auditOp is one request to the writer.
type auditOp struct {
	// seq orders the op among every op and event submitted (auditLog.seq).
	seq uint64
	// opening and entry are the ID and live entry of a session opening. The
	// entry is committed before lines (its start record): a crash in
	// between leaves an entry that the next start completes with an
	// abandoned record, instead of a start record with no end.
	opening string
	entry   []byte
	// lines are records to append, each without its newline.
	lines [][]byte
	// ended is the session whose end record lines holds: its live entry is
	// deleted once the line is synced. If the audit file refuses the line,
	// it waits in the writer's queue and the entry stays.
	ended string
	// refresh replaces existing entries only (byte counts): it must not
	// bring back a session that ended meanwhile.
	refresh map[string][]byte
	// event marks lines that are audit events (Broker.Audit): while the
	// file refuses them they wait in the queue, up to maxQueuedEvents.
	event bool
	// done receives nil once lines are synced, else why not: for an
	// opening session, the refusal (the journal's error, or the audit
	// file's fault, and then its start record waits in the queue with an
	// end record saying why); for an ended one, the fault that queued its
	// record; for other lines (abandoned records), the fault, and they are
	// not kept. Faults wrap ErrAuditUnavailable. nil: nobody waits.
	done chan error
}

// queued is a line in the writer's queue: the audit file refused it.
type queued struct {
	line   []byte // as marshalled, without prev
	out    []byte // line as stamped for the file, once a write left it whole there
	inFile bool   // a failed attempt left it whole in the file: it needs a sync, not a write
	del    string // the live entry to delete once it is synced, if any
	event  bool   // an audit event, not a session record: dropped first when the queue is full
}

// auditFile is the open audit file: an *os.File, which tests wrap (through
// tuning.openAuditFile) to inject faults.
type auditFile interface {
	io.WriteCloser
	io.ReaderAt
	Sync() error
	Stat() (fs.FileInfo, error)
	Truncate(size int64) error
	Fd() uintptr
}

// openAuditFile opens the audit file for appending.
func openAuditFile(path string) (auditFile, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_APPEND|os.O_CREATE, 0o640) // read: the chain goes on from the last line
	if err != nil {
		return nil, err
	}
	return f, nil
}

// auditLog appends records to the audit file and keeps the live journal.
// One goroutine does all the writing and commits whatever has queued up
// with one write and one fsync of the file, and at most two bbolt commits
// (group commit), so that 10,000 sessions opening at once share a few
// dozen fsyncs instead of making 20,000. The writer is the journal's only
// writer, so one db.Update per batch is what db.Batch would do, in order.
//
// When the audit file cannot be written (disk full, read-only, moved and
// not reopenable), the records it refused (end records, and both records
// of a session refused for it) wait in a queue, in order, with their live
// entries, and go ahead of every later batch; the writer also retries them
// every retry. Meanwhile Open refuses sessions.
type auditLog struct {
	path string
	// openFile opens path for appending (openAuditFile but in tests).
	openFile func(path string) (auditFile, error)
	// retry is how often the writer tries the queue again: once a second
	// but in tests.
	retry time.Duration
	db    *bbolt.DB // the live journal
	log   *zap.Logger
	// instance goes into the lines the writer makes itself (chain start,
	// events lost).
	instance string
	// queued, if set, is told the sessions whose end records waited in the
	// queue and are now durable (their callers returned long ago); it runs
	// on the writer's goroutine and must not block.
	queued func(ids []string)
	ops    chan auditOp
	done   chan struct{}

	// fault is why the audit file cannot be written (it wraps
	// ErrAuditUnavailable), nil while it can. The writer sets it when a
	// write or sync fails and clears it when one succeeds.
	fault atomic.Pointer[error]

	closeMu sync.RWMutex // held to read while sending on ops; to write to close it
	closed  bool

	// The writer goroutine owns the fields below (and New, before it runs).
	f       auditFile // nil after a failed fsync or reopen, until reopened
	checked time.Time // when the file's identity was last compared with path
	queue   []queued  // records the audit file refused, oldest first
	// head is the hash of the last line in the file, which the next line
	// carries as its prev, and size the file's size after it: when the
	// size on disk differs (the other process of an upgrade appended, a
	// failed write left part of a line, a new file), the writer reads the
	// tail again. size is -1 when unknown.
	head audit.Hash
	size int64
	// carried is the head of the last file written, which the first line
	// of the next one (after logrotate moved it) continues.
	carried audit.Hash
	// lost counts the events dropped because too many waited, not yet
	// reported in an audit_events_lost line.
	lost int64

	// ship receives the lines of every successful write, in order, as
	// written (stamped, without newlines); it must not block. nil: none.
	ship func(lines [][]byte)

	evMu     sync.Mutex     // guards the fields below
	evs      []pendingEvent // events waiting for the writer (Broker.Audit)
	evLost   int64          // events refused because evs was full
	kick     chan struct{}
	depth    atomic.Int64 // events waiting: in evs and in the queue
	lostEver atomic.Int64 // events ever lost, for the metric

	// seq numbers events and ops as they are submitted, so that the
	// writer puts them in the file in that order although they reach it
	// by two ways (evs and ops): an event audited before a session opens
	// (its ticket_issued) is written before the session's start record.
	seq atomic.Uint64
}

// pendingEvent is an audit event line waiting for the writer.
type pendingEvent struct {
	seq  uint64
	line []byte
}

// maxQueuedEvents bounds the audit events kept in memory, waiting for the
// writer or for a file that refuses them: at about 400 bytes a line, 64 MiB.
// Beyond it the oldest are dropped, counted, and the count written as an
// audit_events_lost line once the file takes lines again. Session records
// are never dropped (there is at most one start and one end per session).
const maxQueuedEvents = 1 << 17

// event queues one audit event line for the writer, without waiting.
func (a *auditLog) event(line []byte) {
	a.evMu.Lock()
	if len(a.evs) >= maxQueuedEvents {
		a.evLost++
		a.evMu.Unlock()
		a.lostEver.Add(1)
		return
	}
	a.evs = append(a.evs, pendingEvent{seq: a.seq.Add(1), line: line})
	a.evMu.Unlock()
	a.depth.Add(1)
	select {
	case a.kick <- struct{}{}:
	default:
	}
}

// takeEvents returns the events waiting, in the order they were audited.
func (a *auditLog) takeEvents() []pendingEvent {
	a.evMu.Lock()
	evs, lost := a.evs, a.evLost
	a.evs, a.evLost = nil, 0
	a.evMu.Unlock()
	a.lost += lost
	return evs
}

// interleave puts evs among the ops of batch in the order both were
// submitted: the events audited before an op go ahead of it, in one event
// op per run. Ops sent at once by different goroutines reach the writer in
// any order, so batch is sorted first; those have no order of their own.
func interleave(batch []auditOp, evs []pendingEvent) []auditOp {
	if len(evs) == 0 {
		return batch
	}
	slices.SortStableFunc(batch, func(x, y auditOp) int { return cmp.Compare(x.seq, y.seq) })
	out := make([]auditOp, 0, len(batch)+2)
	run := func(upTo uint64) {
		var lines [][]byte
		for len(evs) > 0 && evs[0].seq < upTo {
			lines = append(lines, evs[0].line)
			evs = evs[1:]
		}
		if len(lines) > 0 {
			out = append(out, auditOp{seq: upTo - 1, lines: lines, event: true})
		}
	}
	for _, op := range batch {
		run(op.seq)
		out = append(out, op)
	}
	run(math.MaxUint64)
	return out
}

// bound drops the oldest events of queue beyond maxQueuedEvents (never a
// session record, nor a line already in the file), counting them in lost.
func (a *auditLog) bound(queue []queued) []queued {
	n := 0
	for _, q := range queue {
		if q.event && !q.inFile {
			n++
		}
	}
	drop := n - maxQueuedEvents
	if drop <= 0 {
		return queue
	}
	kept := queue[:0]
	for _, q := range queue {
		if drop > 0 && q.event && !q.inFile {
			drop--
			a.lost++
			a.lostEver.Add(1)
			a.depth.Add(-1)
			continue
		}
		kept = append(kept, q)
	}
	return kept
}

func openAudit(path string, journal *bbolt.DB, log *zap.Logger, ship func([][]byte),
	openFile func(string) (auditFile, error), retry time.Duration, instance string) (*auditLog, error) {
	a := &auditLog{path: path, openFile: openFile, retry: retry, db: journal, log: log, instance: instance, ops: make(chan auditOp, 1024), done: make(chan struct{}), size: -1,
		kick: make(chan struct{}, 1), ship: ship}
	if err := a.open(); err != nil {
		return nil, err
	}
	return a, nil
}

func (a *auditLog) open() error {
	if err := os.MkdirAll(filepath.Dir(a.path), 0o750); err != nil {
		return fmt.Errorf("broker: audit file: %w", err)
	}
	f, err := a.openFile(a.path)
	if err != nil {
		return fmt.Errorf("broker: audit file: %w", err)
	}
	// A fresh descriptor: a partial line in a file it replaces stays there.
	if a.size >= 0 {
		a.carried = a.head
	}
	a.f, a.checked, a.size = f, time.Now(), -1
	return nil
}

// ensureFile makes a.f the file at path: it reopens it when logrotate (or
// anyone) renamed or removed it, compared at most once a second, and after
// a failed fsync discarded it. A file that cannot be reopened is a fault:
// records written to the old one would go wherever it went.
func (a *auditLog) ensureFile() error {
	if a.f != nil {
		if time.Since(a.checked) < time.Second {
			return nil
		}
		a.checked = time.Now()
		onDisk, err := os.Stat(a.path)
		mine, err2 := a.f.Stat()
		if err == nil && err2 == nil && os.SameFile(onDisk, mine) {
			return nil
		}
		a.f.Close()
		a.f = nil
		a.log.Info("audit file moved or removed; reopening it", zap.String("path", a.path))
	}
	return a.open()
}

// unavailable is why the audit file cannot be written, or nil.
func (a *auditLog) unavailable() error {
	if p := a.fault.Load(); p != nil {
		return *p
	}
	return nil
}

func (a *auditLog) run() {
	defer close(a.done)
	retry := time.NewTicker(a.retry)
	defer retry.Stop()
	for {
		var tick <-chan time.Time
		if len(a.queue) > 0 {
			tick = retry.C
		}
		select {
		case op, ok := <-a.ops:
			if !ok {
				a.shut()
				return
			}
			a.commit(a.withEvents(a.gather(op)))
		case <-a.kick:
			a.commit(a.withEvents(nil))
		case <-tick:
			a.commit(a.withEvents(nil))
		}
	}
}

// withEvents adds to batch the events waiting, and a line for the events
// lost since the last one was written.
func (a *auditLog) withEvents(batch []auditOp) []auditOp {
	batch = interleave(batch, a.takeEvents())
	if a.lost > 0 && a.unavailable() == nil {
		line := audit.Marshal(audit.Event{Event: audit.EventsLost, Actor: audit.ActorDaemon, Source: audit.SourceLocal, Instance: a.instance, Count: a.lost,
			Reason: "too many events waited for the audit file"})
		a.lost = 0
		a.depth.Add(1)
		batch = append(batch, auditOp{lines: [][]byte{line}, event: true})
	}
	return batch
}

// gather is a batch: op and whatever else has queued up behind it.
func (a *auditLog) gather(op auditOp) []auditOp {
	batch := []auditOp{op}
	for len(batch) < 4096 {
		select {
		case op, ok := <-a.ops:
			if !ok {
				return batch // run sees the close next
			}
			batch = append(batch, op)
		default:
			return batch
		}
	}
	return batch
}

// shut tries the queue once more and closes the file. What is still
// refused is left to the journal, whose entries the next start records as
// abandoned.
func (a *auditLog) shut() {
	if batch := a.withEvents(nil); len(batch) > 0 || len(a.queue) > 0 {
		a.commit(batch)
	}
	if len(a.queue) > 0 {
		a.log.Error("audit file still unwritable at shutdown: the sessions whose end records are not written will be recorded as abandoned at the next start",
			zap.String("path", a.path), zap.Int("records", len(a.queue)), zap.Error(a.unavailable()))
	}
	if a.f != nil {
		a.f.Close()
	}
}

// commit makes batch durable behind the queue: the entries of the sessions
// opening (one bbolt commit), then every record not yet in the file (one
// write, one fsync), then the deletes and refreshes (one bbolt commit).
func (a *auditLog) commit(batch []auditOp) {
	batch = a.putEntries(batch)
	items := slices.Clone(a.queue)
	for _, op := range batch {
		for i, l := range op.lines {
			q := queued{line: l, event: op.event}
			if i == len(op.lines)-1 {
				q.del = op.ended
			}
			items = append(items, q)
		}
	}
	if len(items) == 0 { // refreshes only: nothing for the file
		a.settle(nil, batch)
		reply(batch, nil)
		return
	}
	written, err := a.flush(items)
	if err == nil {
		if a.ship != nil {
			a.ship(written)
		}
		for _, q := range items {
			if q.event {
				a.depth.Add(-1)
			}
		}
		a.settle(items, batch)
		if a.queued != nil {
			var ids []string
			for _, q := range items[:len(a.queue)] {
				if q.del != "" {
					ids = append(ids, q.del)
				}
			}
			if len(ids) > 0 {
				a.queued(ids)
			}
		}
		if a.unavailable() != nil {
			a.log.Info("audit file writable again", zap.String("path", a.path), zap.Int("records", len(a.queue)))
			a.fault.Store(nil)
		}
		a.queue = nil
		reply(batch, nil)
		return
	}
	if a.unavailable() == nil {
		a.log.Error("audit file unwritable: new sessions are refused, and end records wait in memory until it can be written",
			zap.String("path", a.path), zap.Error(err))
	}
	a.fault.Store(&err)
	next := slices.Clone(items[:len(a.queue)])
	fresh := items[len(a.queue):]
	for _, op := range batch {
		mine := fresh[:len(op.lines)]
		fresh = fresh[len(op.lines):]
		switch {
		case op.opening != "":
			// The session is refused, but its target was dialled: once the
			// file can be written, it shows the start and an end at once.
			next = append(next, mine...)
			next = append(next, queued{line: refusedEnd(op.entry), del: op.opening})
		case op.ended != "", op.event:
			next = append(next, mine...)
		}
		// Abandoned records are not kept: their journal still holds them.
	}
	a.queue = a.bound(next)
	a.settle(nil, batch)
	reply(batch, err)
}

func reply(batch []auditOp, err error) {
	for _, op := range batch {
		if op.done != nil {
			op.done <- err
		}
	}
}

// refusedEnd is the end record of a session refused because its start
// record could not be written.
func refusedEnd(entry []byte) []byte {
	var e liveEntry
	json.Unmarshal(entry, &e) // Open marshalled it
	return marshalLine(endOf(e.Start, time.Now(), 0, 0, ReasonAuditUnavailable, true))
}

// putEntries commits the entries of the sessions opening in batch. If that
// fails, those sessions are refused: answered, and left out of the batch.
func (a *auditLog) putEntries(batch []auditOp) []auditOp {
	if !slices.ContainsFunc(batch, func(op auditOp) bool { return op.opening != "" }) {
		return batch
	}
	err := a.update(func(b *bbolt.Bucket) error {
		for _, op := range batch {
			if op.opening != "" {
				if err := b.Put([]byte(op.opening), op.entry); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err == nil {
		return batch
	}
	kept := batch[:0]
	for _, op := range batch {
		if op.opening != "" {
			op.done <- err
			continue
		}
		kept = append(kept, op)
	}
	return kept
}

// settle deletes the entries of the sessions whose records in synced are
// durable, and applies batch's refreshes, in one bbolt commit. If that
// fails the entries stay, and a later recovery finds their end records in
// the file's tail.
func (a *auditLog) settle(synced []queued, batch []auditOp) {
	var del []string
	for _, q := range synced {
		if q.del != "" {
			del = append(del, q.del)
		}
	}
	if len(del) == 0 && !slices.ContainsFunc(batch, func(op auditOp) bool { return len(op.refresh) > 0 }) {
		return // an empty bbolt commit still costs an fsync
	}
	a.update(func(b *bbolt.Bucket) error {
		for _, k := range del {
			if err := b.Delete([]byte(k)); err != nil {
				return err
			}
		}
		for _, op := range batch {
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

// update runs fn on the journal's live bucket in one bbolt transaction;
// bbolt syncs the commit.
func (a *auditLog) update(fn func(*bbolt.Bucket) error) error {
	err := a.db.Update(func(tx *bbolt.Tx) error {
		b := tx.Bucket(liveBucket)
		if b == nil {
			return errors.New("bucket live_sessions is missing")
		}
		return fn(b)
	})
	if err != nil {
		a.log.Error("cannot update the live journal", zap.Error(err))
		return fmt.Errorf("broker: live journal: %w", err)
	}
	return nil
}

// flush appends the lines of the items not yet in the file, in order,
// each stamped with the hash of the line before it, and syncs the file. If
// that fails, it marks the items the attempt left whole in the file (they
// are not written again: each record appears once) and returns the fault.
// It returns the lines it wrote, for shipping.
//
// The write is made under an exclusive flock of the file, which the other
// process of an upgrade takes too, so that the two never interleave and
// each continues the chain from the line the other wrote last.
func (a *auditLog) flush(items []queued) ([][]byte, error) {
	if err := a.ensureFile(); err != nil {
		return nil, a.faultOf(err)
	}
	fd := int(a.f.Fd())
	if err := syscall.Flock(fd, syscall.LOCK_EX); err != nil {
		return nil, a.faultOf(err)
	}
	defer syscall.Flock(fd, syscall.LOCK_UN)
	st, err := a.f.Stat()
	if err != nil {
		return nil, a.faultOf(err)
	}
	before := st.Size()
	var buf bytes.Buffer
	var lines [][]byte // what this write adds, for shipping
	head := a.head
	if before != a.size {
		var start []byte
		head, start = a.resume(before, &buf)
		if start != nil {
			lines = append(lines, start)
		}
	}
	ends := make([]int, len(items)) // where each item's line ends in buf; 0: not in buf
	for i := range items {
		q := &items[i]
		if q.inFile {
			continue
		}
		q.out = audit.Stamp(q.line, head)
		head = audit.HashLine(q.out)
		buf.Write(q.out)
		buf.WriteByte('\n')
		ends[i] = buf.Len()
		lines = append(lines, q.out)
	}
	if buf.Len() > 0 {
		n, err := a.f.Write(buf.Bytes())
		if err != nil && n > 0 && a.cutBack(before, n) {
			n = 0 // the part written is gone again: no partial line in the file
		}
		if err != nil {
			for i, end := range ends {
				if end > 0 && end <= n {
					items[i].inFile = true
				}
			}
			a.size = -1 // read the tail again before the next write
			return nil, a.faultOf(err)
		}
	}
	if err := a.f.Sync(); err != nil {
		// After a failed fsync the kernel may have dropped the dirty pages
		// and a later fsync can succeed without them: never trust this
		// descriptor again. What it wrote counts as in the file, as for
		// recovery, which reads the file back: writing it again would
		// repeat every record that did reach the disk.
		a.f.Close()
		a.f = nil
		for i := range items {
			items[i].inFile = true
		}
		a.size = -1
		return nil, a.faultOf(err)
	}
	a.head, a.size = head, before+int64(buf.Len())
	return lines, nil
}

// resume finds where the chain stands in a file of size bytes that this
// writer did not write last, and returns its head. To an empty file, or
// one that ends with a line from before the chain, it first adds (to buf)
// an audit_chain_started line, returned too. A partial last line, which a
// failed write left, is ended with a newline: it stays in the file, where
// audit verify reports it, and the chain goes on from it.
func (a *auditLog) resume(size int64, buf *bytes.Buffer) (audit.Hash, []byte) {
	start := audit.Event{Event: audit.ChainStarted, Actor: audit.ActorDaemon, Source: audit.SourceLocal, Instance: a.instance}
	var prev audit.Hash
	last, whole, err := audit.Tail(a.f, size)
	switch {
	case errors.Is(err, audit.ErrNoLine):
		prev = a.carried
		start.Reason = "new file"
		if prev != audit.Zero {
			start.Reason = "continues the file logrotate moved"
		} else if h, name, ok := rotatedHead(a.path); ok {
			// Rotated while no process had it open (a restart).
			prev = h
			start.Reason, start.Detail = "continues the file logrotate moved", "the last line of "+name
		}
	case err != nil:
		// Unreadable: the chain restarts, and says why.
		a.log.Error("cannot read the audit file's last line: the chain restarts", zap.String("path", a.path), zap.Error(err))
		start.Reason, start.Detail = "tail unreadable", err.Error()
	default:
		prev = audit.HashLine(last)
		if !whole {
			buf.WriteByte('\n')
		}
		var l struct {
			Prev *string `json:"prev"`
		}
		if whole && json.Unmarshal(last, &l) == nil && l.Prev != nil {
			return prev, nil // a chained line: go on from it
		}
		start.Reason = "continues a file of unchained lines"
		if !whole {
			start.Reason = "after a partial line"
		}
	}
	line := audit.Stamp(audit.Marshal(start), prev)
	buf.Write(line)
	buf.WriteByte('\n')
	return audit.HashLine(line), line
}

// cutBack undoes a write that failed after n bytes (a disk that filled
// mid-record) by truncating the file to its size before it, before, so
// that the file holds no partial line for an auditor's parser to trip on.
// It does nothing, and says so, when the file's size is not before+n: the
// process of an upgrade's other half appended meanwhile, and the partial
// line then stays, ended by the next write (see resume).
func (a *auditLog) cutBack(before int64, n int) bool {
	st, err := a.f.Stat()
	if before < 0 || err != nil || st.Size() != before+int64(n) {
		return false
	}
	return a.f.Truncate(before) == nil
}

// faultOf is err, an I/O error on the audit file, as the reason the audit
// log is unavailable.
func (a *auditLog) faultOf(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		err = pe.Err // the path is said once
	}
	return fmt.Errorf("%w (%s: %w): new sessions are refused until it can be written", ErrAuditUnavailable, a.path, err)
}

// submit queues op and waits for the writer's answer (see auditOp.done).
func (a *auditLog) submit(op auditOp) error {
	op.done = make(chan error, 1)
	a.closeMu.RLock()
	if a.closed {
		a.closeMu.RUnlock()
		return errClosed
	}
	op.seq = a.seq.Add(1)
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
	op.seq = a.seq.Add(1)
	select {
	case a.ops <- op:
	default: // busy; the next sweep tries again
	}
}

// close stops the writer once it has committed what is queued (and tried
// the refused records once more), and closes the file.
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

func marshalLine(r record) []byte { return audit.Marshal(r) }

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

// rotatedHead finds the file logrotate last moved path to (path.1,
// path-20261206, path.1.gz...: the newest file in path's directory whose
// name starts with path's, and is not path) and returns the hash of its last
// line, for a new file to continue its chain.
func rotatedHead(path string) (audit.Hash, string, bool) {
	matches, _ := filepath.Glob(path + "?*")
	var newest string
	var newestMod time.Time
	for _, m := range matches {
		st, err := os.Stat(m)
		if err != nil || !st.Mode().IsRegular() || st.Size() == 0 {
			continue
		}
		if newest == "" || st.ModTime().After(newestMod) {
			newest, newestMod = m, st.ModTime()
		}
	}
	if newest == "" {
		return audit.Zero, "", false
	}
	f, err := os.Open(newest)
	if err != nil {
		return audit.Zero, "", false
	}
	defer f.Close()
	var r io.Reader = f
	if zr, err := gzip.NewReader(f); err == nil {
		r = zr
	} else {
		f.Seek(0, io.SeekStart)
	}
	var last []byte
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if len(sc.Bytes()) > 0 {
			last = append(last[:0], sc.Bytes()...)
		}
	}
	if sc.Err() != nil || last == nil {
		return audit.Zero, "", false
	}
	return audit.HashLine(last), filepath.Base(newest), true
}
