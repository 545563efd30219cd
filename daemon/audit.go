package daemon

import (
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/bastiond/bastiond/internal/audit"
)

// trail is the daemon's audit sink, which every subsystem is given at
// start. It forwards events, through a flood Limiter, to the broker's
// writer, the one writer of the audit file; the broker opens after the
// state store, so until then (and after it closes) events are logged
// instead, at warn level, with everything they say.
type trail struct {
	log     *zap.Logger
	writer  atomic.Pointer[audit.Sink]
	limiter *audit.Limiter
	stop    chan struct{}
}

func newTrail(log *zap.Logger) *trail {
	t := &trail{log: log, stop: make(chan struct{})}
	t.limiter = &audit.Limiter{Next: audit.SinkFunc(t.write)}
	go t.flushEverySecond()
	return t
}

var _ audit.Sink = (*trail)(nil)

// Audit implements audit.Sink.
func (t *trail) Audit(e audit.Event) { t.limiter.Audit(e) }

func (t *trail) write(e audit.Event) {
	if w := t.writer.Load(); w != nil {
		(*w).Audit(e)
		return
	}
	t.log.Warn("audit event with no audit file open", zap.ByteString("event", audit.Marshal(e)))
}

// attach makes w the writer (nil: none).
func (t *trail) attach(w audit.Sink) {
	if w == nil {
		t.limiter.Flush()
		t.writer.Store(nil)
		return
	}
	t.writer.Store(&w)
}

func (t *trail) flushEverySecond() {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-tick.C:
			t.limiter.Flush()
		case <-t.stop:
			return
		}
	}
}

// close stops the ticker, after a last flush.
func (t *trail) close() {
	t.limiter.Flush()
	close(t.stop)
}
