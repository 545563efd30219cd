package broker

import (
	"context"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// Info is a live session as `bastionctl sessions` shows it.
type Info struct {
	ID         string         `json:"id"`
	User       string         `json:"user"`
	Client     netip.AddrPort `json:"client"`
	Target     string         `json:"target"`
	Address    netip.AddrPort `json:"address"` // the inventory address dialled
	Protocol   string         `json:"protocol"`
	Port       uint16         `json:"port"`
	Login      string         `json:"login,omitempty"`
	Via        string         `json:"via,omitempty"`
	Token      string         `json:"token,omitempty"`
	Roles      []string       `json:"roles,omitempty"`
	Start      time.Time      `json:"start"`
	LastActive time.Time      `json:"last_active"`
	BytesUp    int64          `json:"bytes_up"`   // from the user to the machine, so far
	BytesDown  int64          `json:"bytes_down"` // from the machine to the user, so far
}

// Session is one open session: a connection to a target, and the client
// it is relayed to.
type Session struct {
	b      *Broker
	info   Info // immutable after Open
	weight int
	target *net.TCPConn
	log    *zap.Logger

	up, down atomic.Int64
	last     atomic.Int64 // unix nanoseconds of the last byte either way
	ended    atomic.Bool

	ctx    context.Context
	cancel context.CancelFunc

	mu      sync.Mutex // guards the fields below
	client  net.Conn
	closing bool
	reason  string
	copying sync.WaitGroup // the relay's two directions

	once sync.Once
	done chan struct{} // closed once the end record is on disk
}

func newSession(b *Broker, info Info, weight int, target *net.TCPConn) *Session {
	s := &Session{b: b, info: info, weight: weight, target: target, done: make(chan struct{}),
		log: b.log.With(zap.String("session", info.ID))}
	s.last.Store(info.Start.UnixNano())
	s.ctx, s.cancel = context.WithCancel(context.Background())
	return s
}

// ID is the session's identifier, as listed and recorded.
func (s *Session) ID() string { return s.info.ID }

// Target is the connection to the machine.
func (s *Session) Target() net.Conn { return s.target }

// Context is done once the session is being ended.
func (s *Session) Context() context.Context { return s.ctx }

// Info is the session with its live counters.
func (s *Session) Info() Info {
	i := s.info
	i.LastActive = s.lastActive()
	i.BytesUp, i.BytesDown = s.up.Load(), s.down.Load()
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

// AddUp and AddDown count bytes for relays that are not byte splices (the
// browser SSH terminal): from the user and to the user.
func (s *Session) AddUp(n int64) {
	s.up.Add(n)
	s.touch()
}

func (s *Session) AddDown(n int64) {
	s.down.Add(n)
	s.touch()
}

// End ends the session with reason: it closes both connections, waits
// for the relay to stop counting, writes the end record (synced), deletes
// the live entry and forgets the session. It is idempotent; every call
// returns once the record is on disk, and the first reason wins.
func (s *Session) End(reason string) {
	s.once.Do(func() {
		s.ended.Store(true)
		s.mu.Lock()
		s.closing, s.reason = true, reason
		client := s.client
		s.mu.Unlock()
		s.cancel()
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
	up, down := s.up.Load(), s.down.Load()
	end := endOf(startRecord(s.info), time.Now(), up, down, reason, true)
	if err := b.audit.submit(auditOp{lines: [][]byte{marshalLine(end)}, del: []string{s.info.ID}}); err != nil {
		// The live entry stays: the next start records the session as
		// abandoned with the counts last saved.
		s.log.Error("cannot record the end of the session", zap.Error(err))
	}
	b.log.Info("session ended", end.fields()...)
	b.metrics.active.WithLabelValues(s.info.Protocol).Dec()
	b.metrics.ended.WithLabelValues(s.info.Protocol, reasonClass(reason)).Inc()
	b.forget(s, up, down)
}
