package audit

import (
	"strings"
	"testing"
	"time"
)

func TestLimiter(t *testing.T) {
	var got []Event
	l := &Limiter{Next: SinkFunc(func(e Event) { got = append(got, e) }), PerSecond: 3}
	t0 := time.Date(2026, 12, 6, 5, 0, 0, 0, time.UTC)
	for i := range 10 {
		l.Audit(Event{Time: t0.Add(time.Duration(i) * time.Millisecond), Event: SigninThrottled, Source: "2001:db8::1"})
	}
	// Not flood-class: always passed on, even past the limit.
	l.Audit(Event{Time: t0.Add(20 * time.Millisecond), Event: GrantAdded, Actor: "root"})
	l.Audit(Event{Time: t0.Add(30 * time.Millisecond), Event: SigninRefused, Source: "192.0.2.9"})
	if len(got) != 4 || got[3].Event != GrantAdded {
		t.Fatalf("within the second: %+v", got)
	}
	// The next second's first event brings the summary before it.
	l.Audit(Event{Time: t0.Add(time.Second), Event: SigninFailed, Source: "192.0.2.9"})
	if len(got) != 6 || got[4].Event != EventsSuppressed || got[5].Event != SigninFailed {
		t.Fatalf("after the second: %+v", got)
	}
	s := got[4]
	if s.Count != 8 || !strings.Contains(s.Detail, "signin_throttled: 7") || !strings.Contains(s.Detail, "signin_refused: 1") ||
		!strings.Contains(s.Detail, "2001:db8::1") || !strings.Contains(s.Detail, "192.0.2.9") {
		t.Errorf("summary %+v", s)
	}
	l.Flush()
	if len(got) != 6 {
		t.Errorf("Flush with nothing suppressed wrote %+v", got[6:])
	}
}
