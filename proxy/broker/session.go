package broker

import (
	"context"
	"errors"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/bastiond/bastiond/api/admin"
	"github.com/bastiond/bastiond/internal/audit"
)

// Info is a live session as `bastionctl sessions` shows it.
type Info = admin.Session

// Session is one open session: a connection to a target, and the client
// it is relayed to.
type Session struct {
	b      *Broker
	info   Info // immutable after Open; the live fields are below
	weight int  // the units it was admitted with
	target *net.TCPConn
	log    *zap.Logger // with the session's ID

	up, down atomic.Int64 // bytes from the user, to the user
	last     atomic.Int64 // unix nanoseconds of the last byte either way
	ending   atomic.Bool  // End has begun
	recorded atomic.Pointer[string]
	digest   atomic.Pointer[string] // the closed recording's SHA-256

	ctx    context.Context
	cancel context.CancelCauseFunc

	mu       sync.Mutex // guards the fields below
	client   net.Conn   // given to Relay
	closing  bool       // End has begun: Relay must not start
	reason   string
	copying  sync.WaitGroup // the relay's two directions
	watchers []string       // everyone who watched the session, sorted, once each

	once sync.Once
	done chan struct{} // closed once the end record is on disk or queued
}

// EndedError is the cause of a session's Context once it is ended.
type EndedError struct{ Reason string }

func (e *EndedError) Error() string { return "broker: session ended: " + e.Reason }

func newSession(b *Broker, info Info, weight int, target *net.TCPConn) *Session {
	s := &Session{b: b, info: info, weight: weight, target: target, done: make(chan struct{}),
		log: b.log.With(zap.String("session", info.ID))}
	s.last.Store(info.Start.UnixNano())
	s.ctx, s.cancel = context.WithCancelCause(context.Background())
	return s
}

// ID is the session's identifier, as listed and recorded.
func (s *Session) ID() string { return s.info.ID }

// Target is the connection to the machine, a *net.TCPConn. A caller that
// does not use Relay (browser SSH terminates the protocol on the bastion)
// reads and writes it itself, counts with AddUp and AddDown, and calls End.
func (s *Session) Target() net.Conn { return s.target }

// Context is done once the session is being ended (kill, timeout,
// revocation, shutdown, or the relay's end); context.Cause is then an
// *EndedError with the reason.
func (s *Session) Context() context.Context { return s.ctx }

// Info is the session with its live counters.
func (s *Session) Info() Info {
	i := s.info
	i.LastActive = s.lastActive()
	i.BytesUp, i.BytesDown = s.up.Load(), s.down.Load()
	if p := s.recorded.Load(); p != nil {
		i.Recording = *p
	}
	if p := s.digest.Load(); p != nil {
		i.RecordingSHA256 = *p
	}
	return i
}

// EndReason is why the session ended, or "" while it is live.
func (s *Session) EndReason() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.reason
}

func (s *Session) lastActive() time.Time { return time.Unix(0, s.last.Load()) }

func (s *Session) touch() { s.last.Store(time.Now().UnixNano()) }

// SetRecording names the file the session is recorded to: the end record,
// and the live entry (so an abandoned record too), refer to it.
func (s *Session) SetRecording(path string) { s.recorded.Store(&path) }

// SetRecordingSHA256 gives the hash of the closed recording's file to the
// end record (call it before End).
func (s *Session) SetRecordingSHA256(sum string) { s.digest.Store(&sum) }

// AddWatchers notes auditors who watch the session live: the end record
// lists every one who did.
func (s *Session) AddWatchers(names []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, n := range names {
		if i, found := slices.BinarySearch(s.watchers, n); !found {
			s.watchers = slices.Insert(s.watchers, i, n)
		}
	}
}

// AddUp counts n bytes from the user to the machine, for relays that are
// not byte copies (the browser SSH terminal), and marks the session active.
func (s *Session) AddUp(n int64) {
	s.up.Add(n)
	s.touch()
}

// AddDown counts n bytes from the machine to the user; see AddUp.
func (s *Session) AddDown(n int64) {
	s.down.Add(n)
	s.touch()
}

// End ends the session with reason: it closes the target connection and the
// client given to Relay (so that blocked reads return), waits for the relay
// to stop counting, writes the end record (synced), deletes the live entry,
// updates the metrics, gives the units back and forgets the session. It is
// idempotent and safe from any goroutine; the first reason wins and every
// call returns once the record is on disk, or once it is queued because the
// audit file cannot be written: End waits for one attempt, never for the
// file to come back. A queued record is retried every second and with
// every later record, and the live entry stays until it is written (if the
// process stops first, the next start records the session as abandoned).
func (s *Session) End(reason string) {
	s.once.Do(func() {
		s.ending.Store(true)
		s.mu.Lock()
		s.closing, s.reason = true, reason
		client := s.client
		s.mu.Unlock()
		s.cancel(&EndedError{Reason: reason})
		s.target.Close()
		if client != nil {
			client.Close()
		}
		s.copying.Wait() // the byte counts are final after this
		s.finish(reason)
		close(s.done)
	})
	<-s.done
}

func (s *Session) finish(reason string) {
	b := s.b
	end := endOf(startRecord(s.Info()), time.Now(), s.up.Load(), s.down.Load(), reason, true)
	s.mu.Lock()
	end.Watchers = slices.Clone(s.watchers)
	s.mu.Unlock()
	err := b.audit.submit(auditOp{lines: [][]byte{marshalLine(end)}, ended: s.info.ID})
	switch {
	case err == nil:
	case errors.Is(err, ErrAuditUnavailable):
		s.log.Warn("the end record waits in memory until the audit file can be written", zap.Error(err))
	default:
		// The live entry stays: the next start records the session as
		// abandoned, with the counts last saved, rather than losing it.
		s.log.Error("cannot record the end of the session; it will be recorded as abandoned at the next start", zap.Error(err))
	}
	if err == nil {
		// A record that waits in the queue has its entry removed once it
		// is written (pendUnregister); one that failed otherwise keeps it,
		// as it keeps the journal's, for the abandoned record.
		b.unregister(s.info.ID)
	}
	b.countEvent(audit.SessionEnd)
	if ce := s.log.Check(zap.InfoLevel, "session ended"); ce != nil {
		ce.Write(fields(end)...)
	}
	b.metrics.active.WithLabelValues(s.info.Protocol).Dec()
	b.metrics.ended.WithLabelValues(s.info.Protocol, reasonClass(reason)).Inc()
	b.forget(s)
}
