package auditship

import (
	"sync"
	"time"
)

// entry is one line waiting in a queue.
type entry struct {
	seq  uint64
	line []byte
	// end is the count of bytes the connection had written once this
	// line was out, and at when: set once the line is sent on the
	// current connection (the first sent entries of the queue).
	end int64
	at  time.Time
}

// queue is a destination's bounded FIFO of lines. Its front holds the
// lines sent on the current connection and not yet known to be delivered
// (sent of them), then the lines not sent yet. Pushing never blocks: past
// max lines, the oldest are dropped and counted.
type queue struct {
	max  int
	wake chan struct{} // a token when lines were pushed

	mu      sync.Mutex // guards the fields below
	items   []entry
	sent    int    // items[:sent] are on the current connection
	nextSeq uint64 // the seq of the next line pushed
	dropped int64  // lines ever dropped because the queue was full
}

func newQueue(max int) *queue {
	return &queue{max: max, wake: make(chan struct{}, 1)}
}

// push appends lines, dropping the oldest beyond max.
func (q *queue) push(lines [][]byte) {
	if len(lines) == 0 {
		return
	}
	q.mu.Lock()
	for _, l := range lines {
		q.items = append(q.items, entry{seq: q.nextSeq, line: l})
		q.nextSeq++
	}
	if over := len(q.items) - q.max; over > 0 {
		q.dropFront(over)
		q.dropped += int64(over)
	}
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// dropFront forgets the first n items. The caller holds mu.
func (q *queue) dropFront(n int) {
	clear(q.items[:n]) // let the lines go
	q.items = q.items[n:]
	q.sent = max(q.sent-n, 0)
	if len(q.items) == 0 {
		q.items = nil // and the array behind them
	}
}

// take returns the lines not sent yet, from the first one, at most
// maxLines of them and at most maxBytes (one at least), with the seq of
// the last one. It does not mark them sent: wrote does, once they are.
func (q *queue) take(maxLines, maxBytes int) (last uint64, lines [][]byte) {
	q.mu.Lock()
	defer q.mu.Unlock()
	size := 0
	for _, e := range q.items[q.sent:] {
		if len(lines) == maxLines || (len(lines) > 0 && size+len(e.line) > maxBytes) {
			break
		}
		lines = append(lines, e.line)
		size += len(e.line)
		last = e.seq
	}
	return last, lines
}

// wrote marks the lines up to seq last as sent, with the connection's
// byte count end after them, at time at. Lines dropped meanwhile are
// simply gone.
func (q *queue) wrote(last uint64, end int64, at time.Time) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.items) == 0 {
		return
	}
	n := int(int64(last) - int64(q.items[0].seq) + 1)
	n = min(n, len(q.items))
	for i := q.sent; i < n; i++ {
		q.items[i].end, q.items[i].at = end, at
	}
	q.sent = max(q.sent, n)
}

// release forgets the sent lines, from the front, for which delivered
// says yes, and returns how many.
func (q *queue) release(delivered func(end int64, at time.Time) bool) int {
	q.mu.Lock()
	defer q.mu.Unlock()
	n := 0
	for n < q.sent && delivered(q.items[n].end, q.items[n].at) {
		n++
	}
	if n > 0 {
		q.dropFront(n)
	}
	return n
}

// rewind makes every sent line unsent again (the connection broke: they
// are sent again on the next one), and returns how many.
func (q *queue) rewind() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	n := q.sent
	for i := range q.items[:n] {
		q.items[i].end, q.items[i].at = 0, time.Time{}
	}
	q.sent = 0
	return n
}

// stats are the lines in the queue (sent and not), those not sent yet,
// and those ever dropped.
func (q *queue) stats() (depth, unsent int, dropped int64) {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.items), len(q.items) - q.sent, q.dropped
}
