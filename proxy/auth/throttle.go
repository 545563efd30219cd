package auth

import (
	"container/heap"
	"net/netip"
	"sync"
	"time"

	"github.com/bastiond/bastiond/internal/source"
)

// ThrottleConfig tunes login throttling. Zero fields take the defaults.
type ThrottleConfig struct {
	// FreeFailures are the failures allowed before backoff starts. Default 3.
	FreeFailures int
	// BaseDelay is the first wait; each further failure doubles it. Default 1s.
	BaseDelay time.Duration
	// MaxDelay caps the wait. Default 5m.
	MaxDelay time.Duration
	// LockAfter consecutive failures for one account from one source lock
	// the account. Default 10.
	LockAfter int
	// LockFor is how long a lockout lasts unless an admin unlocks. Default 15m.
	LockFor time.Duration
	// Forget drops the record of a user or source with no failure for this
	// long. Default 1h.
	Forget time.Duration
	// MaxEntries bounds each of the throttle's tables (sources, accounts,
	// account and source pairs). A full table makes room by forgetting the
	// entry that mattered least recently (see entry.key): a flood of new
	// entries pushes out the oldest ones, never one whose backoff still
	// runs while others do not, and never refuses anyone. Default 65536.
	MaxEntries int
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
	if c.MaxEntries == 0 {
		c.MaxEntries = 1 << 16
	}
	return c
}

// throttler counts failed sign-ins: throttle in this process's memory
// (one host), sharedThrottle in the state store (a cluster, where every
// instance sees the failures of all). Methods fail only when the store
// does.
type throttler interface {
	// sourceWait is how long before src may try again; zero means now.
	sourceWait(src netip.Addr, now time.Time) (time.Duration, error)
	// userWait is how long the account name is held up; zero means it
	// is not.
	userWait(name string, now time.Time) (time.Duration, error)
	// fail records a failure from src. known says name is an existing
	// account; only those are counted per account. It returns the
	// failures in a row of the account from this source (zero when not
	// known).
	fail(name string, src netip.Addr, known bool, now time.Time) (int, error)
	// locked restarts the count of the account from src after it caused
	// a lockout: after the lock, it takes another LockAfter failures to
	// lock again, not one.
	locked(name string, src netip.Addr) error
	// succeed clears the account's failures, its own and those from src.
	// The source's stay, and the account's from other sources: one good
	// sign-in from a network must not wipe out the guessing done from it
	// or elsewhere.
	succeed(name string, src netip.Addr) error
	// reset forgets every failure of the account (an admin unlocked it).
	reset(name string) error
	// stats are the sizes of the tables and their evictions.
	stats() ThrottleStats
}

var (
	_ throttler = (*throttle)(nil)
	_ throttler = (*sharedThrottle)(nil)
)

// pair is an account as tried from one source: the unit of lockout, so
// that failures from many sources cannot add up to lock someone out.
type pair struct {
	user string
	src  netip.Prefix
}

// throttle counts failed sign-ins in three bounded tables:
//   - per source (source.Of: an IPv4 address, an IPv6 /64), whose backoff
//     refuses the source's attempts unchecked;
//   - per existing account, whose backoff holds up the account's password
//     however many sources the guesses come from;
//   - per existing account and source, which counts towards a lockout.
//
// Only names that pass the name rules reach it, and only names of
// existing accounts enter the last two tables: a stranger can add entries
// to the first only, one per source, each at the price of a password hash.
type throttle struct {
	cfg ThrottleConfig

	mu      sync.Mutex // guards the tables
	sources *table[netip.Prefix]
	users   *table[string]
	pairs   *table[pair]
	swept   time.Time
}

func newThrottle(cfg ThrottleConfig) *throttle {
	cfg = cfg.withDefaults()
	return &throttle{
		cfg:     cfg,
		sources: newTable[netip.Prefix](cfg.MaxEntries),
		users:   newTable[string](cfg.MaxEntries),
		pairs:   newTable[pair](cfg.MaxEntries),
	}
}

func (t *throttle) sourceWait(src netip.Addr, now time.Time) (time.Duration, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.sources.wait(source.Of(src), now), nil
}

func (t *throttle) userWait(name string, now time.Time) (time.Duration, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.users.wait(name, now), nil
}

func (t *throttle) fail(name string, src netip.Addr, known bool, now time.Time) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.sweepEvery(now)
	net := source.Of(src)
	t.sources.bump(net, now, t.cfg)
	if !known {
		return 0, nil
	}
	t.users.bump(name, now, t.cfg)
	return t.pairs.bump(pair{name, net}, now, t.cfg), nil
}

func (t *throttle) locked(name string, src netip.Addr) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.pairs.remove(pair{name, source.Of(src)})
	return nil
}

func (t *throttle) succeed(name string, src netip.Addr) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.users.remove(name)
	t.pairs.remove(pair{name, source.Of(src)})
	return nil
}

func (t *throttle) reset(name string) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.users.remove(name)
	t.pairs.removeIf(func(p pair) bool { return p.user == name })
	return nil
}

// sweepEvery forgets the entries idle for longer than Forget, at most
// once every Forget/8: a sweep walks every table.
func (t *throttle) sweepEvery(now time.Time) {
	if now.Sub(t.swept) < t.cfg.Forget/8 {
		return
	}
	t.swept = now
	stale := func(e *entry) bool { return now.Sub(e.last) > t.cfg.Forget && !now.Before(e.until) }
	t.sources.sweep(stale)
	t.users.sweep(stale)
	t.pairs.sweep(stale)
}

// ThrottleStats are the sizes of the throttle's tables and what each has
// forgotten to make room.
type ThrottleStats struct {
	Sources, Users, Pairs                         int
	SourceEvictions, UserEvictions, PairEvictions uint64
}

func (t *throttle) stats() ThrottleStats {
	t.mu.Lock()
	defer t.mu.Unlock()
	return ThrottleStats{
		Sources: t.sources.len(), Users: t.users.len(), Pairs: t.pairs.len(),
		SourceEvictions: t.sources.evictions, UserEvictions: t.users.evictions, PairEvictions: t.pairs.evictions,
	}
}

// entry is the failure record of one key.
type entry struct {
	n     int       // failures in a row
	last  time.Time // of the last failure
	until time.Time // no attempt before this
	index int       // in the table's heap
}

// key orders entries for eviction, the smallest first: the end of the
// entry's backoff, or its last failure if it has none. An entry in backoff
// is what the throttle enforces, and is kept until its backoff ends; the
// others are forgotten oldest first. (Not the fewest failures first: that
// would make every newcomer the next to go, so that two sources taking
// turns at a full table would never see a backoff.) A flood of new entries
// therefore pushes out only entries older than itself and not in backoff,
// and filling a table with entries in backoff takes FreeFailures+1
// failures, each a password hash, per entry.
func (e *entry) key() time.Time {
	if e.until.After(e.last) {
		return e.until
	}
	return e.last
}

// table is a map of failure records with at most max entries. A heap
// keeps the entry to forget first on top (entry.key).
type table[K comparable] struct {
	max       int
	m         map[K]*entry
	order     entryHeap[K]
	evictions uint64
}

func newTable[K comparable](max int) *table[K] {
	return &table[K]{max: max, m: map[K]*entry{}}
}

func (t *table[K]) len() int { return len(t.m) }

func (t *table[K]) wait(k K, now time.Time) time.Duration {
	e := t.m[k]
	if e == nil || !now.Before(e.until) {
		return 0
	}
	return e.until.Sub(now)
}

// bump counts a failure of k and returns its failures in a row.
func (t *table[K]) bump(k K, now time.Time, cfg ThrottleConfig) int {
	e := t.m[k]
	if e == nil {
		if len(t.m) >= t.max {
			t.remove(t.order.keys[0])
			t.evictions++
		}
		e = &entry{}
		t.m[k] = e
		heap.Push(&t.order, keyed[K]{k, e})
	}
	e.count(now, cfg)
	heap.Fix(&t.order, e.index)
	return e.n
}

// count adds a failure at now to e, and its backoff.
func (e *entry) count(now time.Time, cfg ThrottleConfig) {
	e.n++
	e.last = now
	if over := e.n - cfg.FreeFailures; over > 0 {
		d := cfg.MaxDelay
		if over <= 20 {
			d = min(cfg.BaseDelay<<(over-1), cfg.MaxDelay)
		}
		e.until = now.Add(d)
	}
}

func (t *table[K]) remove(k K) {
	if e := t.m[k]; e != nil {
		heap.Remove(&t.order, e.index)
		delete(t.m, k)
	}
}

func (t *table[K]) removeIf(match func(K) bool) {
	for k := range t.m {
		if match(k) {
			t.remove(k)
		}
	}
}

func (t *table[K]) sweep(stale func(*entry) bool) {
	for k, e := range t.m {
		if stale(e) {
			t.remove(k)
		}
	}
}

type keyed[K comparable] struct {
	k K
	e *entry
}

// entryHeap orders a table's entries for eviction (container/heap).
type entryHeap[K comparable] struct {
	keys []K
	ents []*entry
}

func (h *entryHeap[K]) Len() int { return len(h.ents) }

func (h *entryHeap[K]) Less(i, j int) bool {
	return h.ents[i].key().Before(h.ents[j].key())
}

func (h *entryHeap[K]) Swap(i, j int) {
	h.keys[i], h.keys[j] = h.keys[j], h.keys[i]
	h.ents[i], h.ents[j] = h.ents[j], h.ents[i]
	h.ents[i].index, h.ents[j].index = i, j
}

func (h *entryHeap[K]) Push(x any) {
	kv := x.(keyed[K])
	kv.e.index = len(h.ents)
	h.keys = append(h.keys, kv.k)
	h.ents = append(h.ents, kv.e)
}

func (h *entryHeap[K]) Pop() any {
	n := len(h.ents) - 1
	kv := keyed[K]{h.keys[n], h.ents[n]}
	var zero K
	h.keys[n], h.ents[n] = zero, nil
	h.keys, h.ents = h.keys[:n], h.ents[:n]
	return kv
}
