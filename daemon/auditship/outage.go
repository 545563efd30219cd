package auditship

import (
	"sync/atomic"

	"go.uber.org/zap"

	"github.com/bastiond/bastiond/internal/audit"
)

// counters are one destination's metrics.
type counters struct {
	shipped  atomic.Int64 // lines written to it (a line sent again counts again)
	failures atomic.Int64 // failed connects, broken connections, refused writes
}

// outage tells of a destination's failures: every one is counted and
// logged, but only the first of an outage is an audit event
// (audit_shipping_failed), and the end of the outage is another
// (audit_shipping_resumed, with the count of lines sent to catch up), so
// that a collector away for an hour costs two lines of the trail, not one
// per retry. Only the destination's goroutine uses it.
type outage struct {
	name  string
	log   *zap.Logger
	audit audit.Sink
	c     *counters

	down    bool
	backlog int64 // lines sent since it came back, while catching up
}

// failed records a failure.
func (o *outage) failed(err error) {
	o.c.failures.Add(1)
	if o.down {
		o.log.Debug("audit shipping still failing", zap.String("collector", o.name), zap.Error(err))
		return
	}
	o.down, o.backlog = true, 0
	o.log.Warn("audit shipping failed; lines wait in the queue", zap.String("collector", o.name), zap.Error(err))
	o.audit.Audit(audit.Event{Event: audit.ShippingFailed, Actor: audit.ActorDaemon, Source: audit.SourceLocal,
		Collector: o.name, Reason: "collector_unreachable", Detail: err.Error()})
}

// sent counts n lines sent.
func (o *outage) sent(n int) {
	o.c.shipped.Add(int64(n))
	if o.down {
		o.backlog += int64(n)
	}
}

// caughtUp ends an outage, once the destination works again and the
// lines that waited have gone out.
func (o *outage) caughtUp() {
	if !o.down {
		return
	}
	o.down = false
	o.log.Info("audit shipping resumed", zap.String("collector", o.name), zap.Int64("lines", o.backlog))
	o.audit.Audit(audit.Event{Event: audit.ShippingResumed, Actor: audit.ActorDaemon, Source: audit.SourceLocal,
		Collector: o.name, Count: o.backlog})
}
