package audit

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"
)

// Floods are the event types a stranger can cause at will, without an
// account: refusals of malformed or throttled sign-ins, of unknown API
// tokens, of connects with no valid ticket, of a local user who is not an
// admin on the admin socket. A Limiter writes the first
// ones of each second and summarises the rest.
var Floods = map[string]bool{
	SigninFailed:    true,
	SigninThrottled: true,
	SigninRefused:   true,
	TokenRefused:    true,
	ConnectRefused:  true,
	AdminRefused:    true, // any local user can knock on the admin socket
	LinkRefused:     true, // anyone can present a link's URL
}

// Limiter is a Sink that passes events on to Next, except that of the
// event types in Floods it passes at most PerSecond a second, all types
// together; the others of that second are counted, by type, and passed on
// as one audit_events_suppressed event when the second is over (at the
// next event, or from Flush). Without it, a sign-in flood would cost an
// audit line and a share of an fsync per request, and fill the disk.
type Limiter struct {
	Next      Sink
	PerSecond int // 0: 200

	mu         sync.Mutex // guards the fields below
	second     time.Time
	passed     int
	suppressed map[string]int64
	sources    map[string]bool
}

var _ Sink = (*Limiter)(nil)

// maxSampledSources bounds the sources a summary names.
const maxSampledSources = 8

// Audit implements Sink.
func (l *Limiter) Audit(e Event) {
	if e.Time.IsZero() {
		e.Time = time.Now()
	}
	now := e.Time.Truncate(time.Second)
	l.mu.Lock()
	var summary *Event
	if !now.Equal(l.second) {
		summary = l.summaryLocked()
		l.second, l.passed = now, 0
	}
	pass := true
	if Floods[e.Event] {
		limit := l.PerSecond
		if limit == 0 {
			limit = 200
		}
		if l.passed >= limit {
			pass = false
			if l.suppressed == nil {
				l.suppressed, l.sources = map[string]int64{}, map[string]bool{}
			}
			l.suppressed[e.Event]++
			if len(l.sources) < maxSampledSources {
				l.sources[e.Source] = true
			}
		} else {
			l.passed++
		}
	}
	l.mu.Unlock()
	// In order: the summary of the second before comes before this event.
	if summary != nil {
		l.Next.Audit(*summary)
	}
	if pass {
		l.Next.Audit(e)
	}
}

// Flush passes on the summary of the current second, if anything was
// suppressed in it. The daemon calls it every second and at shutdown.
func (l *Limiter) Flush() {
	l.mu.Lock()
	summary := l.summaryLocked()
	l.mu.Unlock()
	if summary != nil {
		l.Next.Audit(*summary)
	}
}

// summaryLocked is the audit_events_suppressed event of what was counted,
// or nil, and resets the counts.
func (l *Limiter) summaryLocked() *Event {
	if len(l.suppressed) == 0 {
		return nil
	}
	var total int64
	var parts []string
	for _, ev := range slices.Sorted(maps.Keys(l.suppressed)) {
		n := l.suppressed[ev]
		total += n
		parts = append(parts, fmt.Sprintf("%s: %d", ev, n))
	}
	srcs := slices.Sorted(maps.Keys(l.sources))
	detail := strings.Join(parts, ", ") + "; from " + strings.Join(srcs, ", ")
	if len(srcs) == maxSampledSources {
		detail += " and others"
	}
	e := &Event{Time: time.Now(), Event: EventsSuppressed, Actor: ActorDaemon, Source: SourceLocal, Count: total,
		Reason: "over the flood limit of events per second", Detail: detail}
	l.suppressed, l.sources = nil, nil
	return e
}
