package auth

import (
	"net/netip"
	"sync"
	"time"
)

// ThrottleConfig tunes login throttling. Zero fields take the defaults.
type ThrottleConfig struct {
	// FreeFailures are the failures allowed before backoff starts. Default 3.
	FreeFailures int
	// BaseDelay is the first wait; each further failure doubles it. Default 1s.
	BaseDelay time.Duration
	// MaxDelay caps the wait. Default 5m.
	MaxDelay time.Duration
	// LockAfter consecutive failures lock an account. Default 10.
	LockAfter int
	// LockFor is how long a lockout lasts unless an admin unlocks. Default 15m.
	LockFor time.Duration
	// Forget drops the record of a user or source with no failure for this
	// long. Default 1h.
	Forget time.Duration
}

func (c ThrottleConfig) withDefaults() ThrottleConfig {
	if c.FreeFailures == 0 {
		c.FreeFailures = 3
	}
	if c.BaseDelay == 0 {
		c.BaseDelay = time.Second
	}
	if c.MaxDelay == 0 {
		c.MaxDelay = 5 * time.Minute
	}
	if c.LockAfter == 0 {
		c.LockAfter = 10
	}
	if c.LockFor == 0 {
		c.LockFor = 15 * time.Minute
	}
	if c.Forget == 0 {
		c.Forget = time.Hour
	}
	return c
}

// maxTracked bounds each table. When a flood fills one with live entries,
// sources it does not know wait BaseDelay: slower logins for everyone rather
// than memory without bound.
const maxTracked = 1 << 16

type failures struct {
	n     int       // consecutive failures
	last  time.Time // of the last failure
	until time.Time // no attempt before this
}

// throttle counts failures per user name and per source network (an IPv4
// address, an IPv6 /64) and says how long each must wait.
type throttle struct {
	cfg ThrottleConfig

	mu      sync.Mutex // guards the maps
	users   map[string]*failures
	sources map[netip.Prefix]*failures
}

func newThrottle(cfg ThrottleConfig) *throttle {
	return &throttle{cfg: cfg.withDefaults(), users: map[string]*failures{}, sources: map[netip.Prefix]*failures{}}
}

func sourceKey(a netip.Addr) netip.Prefix {
	a = a.Unmap()
	bits := 32
	if a.Is6() {
		bits = 64
	}
	p, _ := a.Prefix(bits)
	return p
}

// wait is how long before user may try again from src; zero means now.
func (t *throttle) wait(user string, src netip.Addr, now time.Time) time.Duration {
	t.mu.Lock()
	defer t.mu.Unlock()
	w := max(untilOf(t.users[user], now), untilOf(t.sources[sourceKey(src)], now))
	if w == 0 && (len(t.users) >= maxTracked || len(t.sources) >= maxTracked) {
		t.sweep(now)
		if t.sources[sourceKey(src)] == nil && len(t.sources) >= maxTracked {
			w = t.cfg.BaseDelay
		}
	}
	return w
}

func untilOf(f *failures, now time.Time) time.Duration {
	if f == nil || !now.Before(f.until) {
		return 0
	}
	return f.until.Sub(now)
}

// fail records a failure and returns the user's consecutive failures.
func (t *throttle) fail(user string, src netip.Addr, now time.Time) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.users) >= maxTracked || len(t.sources) >= maxTracked {
		t.sweep(now)
	}
	n := bumpIn(t.users, user, now, t.cfg)
	bumpIn(t.sources, sourceKey(src), now, t.cfg)
	return n
}

func bumpIn[K comparable](m map[K]*failures, k K, now time.Time, cfg ThrottleConfig) int {
	f := m[k]
	if f == nil {
		if len(m) >= maxTracked {
			return 0
		}
		f = &failures{}
		m[k] = f
	}
	f.n++
	f.last = now
	if over := f.n - cfg.FreeFailures; over > 0 {
		d := cfg.MaxDelay
		if over <= 20 {
			d = min(cfg.BaseDelay<<(over-1), cfg.MaxDelay)
		}
		f.until = now.Add(d)
	}
	return f.n
}

// succeed clears a user's failures. The source's stay: one good login
// from a network must not wipe out the guessing done from it.
func (t *throttle) succeed(user string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.users, user)
}

// reset forgets a user's failures (an admin unlocked it).
func (t *throttle) reset(user string) { t.succeed(user) }

func (t *throttle) sweep(now time.Time) {
	for k, f := range t.users {
		if now.Sub(f.last) > t.cfg.Forget && !now.Before(f.until) {
			delete(t.users, k)
		}
	}
	for k, f := range t.sources {
		if now.Sub(f.last) > t.cfg.Forget && !now.Before(f.until) {
			delete(t.sources, k)
		}
	}
}
