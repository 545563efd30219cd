package audit

import "sync"

// Capture is a Sink that keeps the events it is given, in order, for tests
// and tools that check what a component audits.
type Capture struct {
	mu     sync.Mutex // guards events
	events []Event
}

var _ Sink = (*Capture)(nil)

// Audit implements Sink.
func (c *Capture) Audit(e Event) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.events = append(c.events, e)
}

// Take returns the events given since the last Take.
func (c *Capture) Take() []Event {
	c.mu.Lock()
	defer c.mu.Unlock()
	es := c.events
	c.events = nil
	return es
}
