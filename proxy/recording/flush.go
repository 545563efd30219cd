package recording

import "time"

// flushTimer has a recorder's buffered writes flushed at most FlushInterval
// after the first write since the last flush. The recorder's mutex guards
// it: arm and stop are called with it held, and the flush function takes
// it and calls fired first.
type flushTimer struct {
	timer *time.Timer // made at the first arm
	armed bool        // the timer will flush
}

// arm schedules flush, unless a flush is scheduled already.
func (t *flushTimer) arm(flush func()) {
	switch {
	case t.armed:
	case t.timer == nil:
		t.timer = time.AfterFunc(FlushInterval, flush)
	default:
		t.timer.Reset(FlushInterval)
	}
	t.armed = true
}

// fired notes that the scheduled flush runs.
func (t *flushTimer) fired() { t.armed = false }

// stop cancels a scheduled flush.
func (t *flushTimer) stop() {
	if t.timer != nil {
		t.timer.Stop()
	}
}
