package broker

import (
	"fmt"
	"testing"
)

// TestInterleave: events and session records reach the writer by two ways;
// it writes them in the order they were submitted, whichever way brought
// them first. An event audited before a session opened (its ticket) goes
// before the session's start record, one audited after its end after it.
func TestInterleave(t *testing.T) {
	ev := func(seq uint64, name string) pendingEvent { return pendingEvent{seq: seq, line: []byte(name)} }
	op := func(seq uint64, name string) auditOp { return auditOp{seq: seq, lines: [][]byte{[]byte(name)}} }
	order := func(ops []auditOp) string {
		s := ""
		for _, o := range ops {
			for _, l := range o.lines {
				s += fmt.Sprintf("%s(%v) ", l, o.event)
			}
		}
		return s
	}
	for _, c := range []struct {
		batch []auditOp
		evs   []pendingEvent
		want  string
	}{
		{nil, nil, ""},
		{nil, []pendingEvent{ev(1, "a"), ev(2, "b")}, "a(true) b(true) "},
		{[]auditOp{op(5, "start")}, nil, "start(false) "},
		{[]auditOp{op(2, "start")}, []pendingEvent{ev(1, "ticket")}, "ticket(true) start(false) "},
		// Received in the other order: sorted back.
		{[]auditOp{op(4, "end"), op(2, "start")}, []pendingEvent{ev(1, "ticket"), ev(3, "kill"), ev(5, "closed"), ev(6, "played")},
			"ticket(true) start(false) kill(true) end(false) closed(true) played(true) "},
	} {
		if got := order(interleave(c.batch, c.evs)); got != c.want {
			t.Errorf("interleave(%v) = %q, want %q", c.evs, got, c.want)
		}
	}
}
