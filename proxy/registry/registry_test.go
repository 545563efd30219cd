package registry

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/bastiond/bastiond/api/admin"
	"github.com/bastiond/bastiond/internal/statedb"
	"github.com/bastiond/bastiond/internal/store"
)

// clock is a test's time, moved by hand.
type clock struct{ ns atomic.Int64 }

func newClock() *clock {
	c := &clock{}
	c.ns.Store(time.Date(2026, 12, 7, 3, 0, 0, 0, time.UTC).UnixNano())
	return c
}
func (c *clock) now() time.Time           { return time.Unix(0, c.ns.Load()) }
func (c *clock) add(d time.Duration)      { c.ns.Add(int64(d)) }
func openDB(t testing.TB) *statedb.Handle { return openDBAt(t, filepath.Join(t.TempDir(), "state.db")) }

func openDBAt(t testing.TB, path string) *statedb.Handle {
	t.Helper()
	db, err := statedb.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

const (
	beat = 5 * time.Second
	dead = 15 * time.Second
)

// instance is a registry over db named name, on clk's time.
func instance(t testing.TB, db store.DB, name string, clk *clock) *Registry {
	t.Helper()
	r, err := New(Config{DB: db, Instance: name, Logger: zap.NewNop(), Beat: beat, Dead: dead, Poll: 10 * time.Millisecond,
		KillWait: 5 * time.Second, Version: "test", PID: 1, Addresses: []netip.Addr{netip.MustParseAddr("198.18.0.4"), netip.MustParseAddr("2001:db8:18::4")}})
	if err != nil {
		t.Fatal(err)
	}
	if clk != nil {
		r.now = clk.now
	}
	return r
}

// handler is a Handler that records what it is asked, as a broker would.
type handler struct {
	name string
	reg  *Registry

	mu       sync.Mutex
	live     map[string]bool
	recorded map[string][]string // session ID -> instances that recorded it
	killed   map[string]string   // session ID -> reason
	alive    map[string]bool     // processes alive
	failKill error
	rechecks []string
	load     admin.Load
}

func (h *handler) Recheck(why string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.rechecks = append(h.rechecks, why)
}

func newHandler(name string, reg *Registry, recorded map[string][]string, mu *sync.Mutex) *handler {
	return &handler{name: name, reg: reg, live: map[string]bool{}, recorded: recorded, killed: map[string]string{}, alive: map[string]bool{"journal-1": true}}
}

func (h *handler) Kill(id, reason string) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.failKill != nil {
		return h.failKill
	}
	if !h.live[id] {
		return errors.New("no such session here")
	}
	delete(h.live, id)
	h.killed[id] = reason
	return h.reg.Remove([]string{id})
}

func (h *handler) Load() admin.Load {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.load
}

func (h *handler) ProcessAlive(p string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.alive[p]
}

// recordedMu guards every handler's shared recorded map.
var recordedMu sync.Mutex

func (h *handler) Abandoned(list []admin.Session) error {
	recordedMu.Lock()
	defer recordedMu.Unlock()
	for _, s := range list {
		h.recorded[s.ID] = append(h.recorded[s.ID], h.name+" for "+s.Instance)
	}
	return nil
}

// session is a live session of a client at client.
func session(id, client string) admin.Session {
	return admin.Session{ID: id, User: "alice", Client: netip.MustParseAddrPort(client), Target: "vm1",
		Address: netip.MustParseAddrPort("198.18.1.11:22"), Protocol: "ssh", Port: 22, Start: time.Unix(1700000000, 0)}
}

func add(t testing.TB, r *Registry, h *handler, sessions ...admin.Session) {
	t.Helper()
	for _, s := range sessions {
		if err := r.Add("journal-1", s, 0); err != nil {
			t.Fatal(err)
		}
		if h != nil {
			h.live[s.ID] = true
		}
	}
}

func ids(list []admin.Session) []string {
	var out []string
	for _, s := range list {
		out = append(out, s.Instance+"/"+s.ID)
	}
	return out
}

func TestAddListRefreshRemove(t *testing.T) {
	db := openDB(t)
	a, b := instance(t, db, "bastion-a", nil), instance(t, db, "bastion-b", nil)
	add(t, a, nil, session("aaaa00000001", "192.0.2.10:50000"), session("aaaa00000002", "[2001:db8:2::7]:50001"))
	add(t, b, nil, session("bbbb00000001", "198.51.100.7:40000"))
	list, err := b.List()
	if err != nil {
		t.Fatal(err)
	}
	if got, want := ids(list), []string{"bastion-a/aaaa00000001", "bastion-a/aaaa00000002", "bastion-b/bbbb00000001"}; !slices.Equal(got, want) {
		t.Fatalf("listed %v, want %v", got, want)
	}
	if list[1].Client.Addr() != netip.MustParseAddr("2001:db8:2::7") || list[0].Client.Addr() != netip.MustParseAddr("192.0.2.10") {
		t.Errorf("client addresses %v, %v", list[0].Client, list[1].Client)
	}

	s := session("aaaa00000001", "192.0.2.10:50000")
	s.BytesUp, s.BytesDown = 1234, 5678
	gone := session("aaaa00000009", "[2001:db8:2::9]:1")
	if err := a.Refresh("journal-1", []admin.Session{s, gone}); err != nil {
		t.Fatal(err)
	}
	if err := a.Remove([]string{"aaaa00000002"}); err != nil {
		t.Fatal(err)
	}
	list, _ = a.List()
	if got, want := ids(list), []string{"bastion-a/aaaa00000001", "bastion-b/bbbb00000001"}; !slices.Equal(got, want) {
		t.Fatalf("after refresh and remove: %v, want %v (a refresh must not add a session)", got, want)
	}
	if list[0].BytesUp != 1234 || list[0].BytesDown != 5678 {
		t.Errorf("refreshed counts %d/%d", list[0].BytesUp, list[0].BytesDown)
	}
	// Only an instance's own entries: b removing a's ID removes nothing.
	b.Remove([]string{"aaaa00000001"})
	if list, _ = a.List(); len(list) != 2 {
		t.Errorf("b removed a's session: %v", ids(list))
	}
}

func TestNewRefuses(t *testing.T) {
	db := openDB(t)
	for _, name := range []string{"", "Bastion", "a_b", "a.b", strings.Repeat("a", 64)} {
		if _, err := New(Config{DB: db, Instance: name, Logger: zap.NewNop()}); err == nil {
			t.Errorf("instance name %q accepted", name)
		}
	}
	if _, err := New(Config{DB: db, Instance: "a", Logger: zap.NewNop(), Beat: time.Second, Dead: time.Second}); err == nil {
		t.Error("dead no longer than beat accepted")
	}
}

// TestDeadInstanceRecordedOnce: an instance stops beating with live
// sessions; two survivors watch and race to take it over: every session is
// recorded as abandoned by exactly one of them, naming the dead instance,
// within Dead + Beat of its last heartbeat; then the dead instance comes
// back and its journal's recovery claims nothing.
func TestDeadInstanceRecordedOnce(t *testing.T) {
	db := openDB(t)
	clk := newClock()
	recorded := map[string][]string{}
	a := instance(t, db, "bastion-a", clk)
	ha := newHandler("bastion-a", a, recorded, nil)
	b, c := instance(t, db, "bastion-b", clk), instance(t, db, "bastion-c", clk)
	hb, hc := newHandler("bastion-b", b, recorded, nil), newHandler("bastion-c", c, recorded, nil)
	var dying []string
	for i := range 20 {
		client := fmt.Sprintf("192.0.2.%d:5000", i+1)
		if i%2 == 1 {
			client = fmt.Sprintf("[2001:db8::%x]:5000", i+1)
		}
		id := fmt.Sprintf("aaaa%08d", i)
		add(t, a, ha, session(id, client))
		dying = append(dying, id)
	}
	add(t, b, hb, session("bbbb00000001", "198.51.100.1:1"))
	add(t, c, hc, session("cccc00000001", "[2001:db8:c::1]:1"))

	// All three beat for a while; then a stops.
	for range 4 {
		a.tick(ha, false)
		b.tick(hb, false)
		c.tick(hc, false)
		clk.add(beat)
	}
	stopped := clk.now()
	var wg sync.WaitGroup
	for range 5 { // 5 beats: 25 s, past Dead + Beat
		for _, p := range []struct {
			r *Registry
			h *handler
		}{{b, hb}, {c, hc}} {
			wg.Go(func() {
				for range 3 {
					p.r.tick(p.h, false)
				}
			})
		}
		wg.Wait()
		clk.add(beat)
	}
	recordedMu.Lock()
	for _, id := range dying {
		if len(recorded[id]) != 1 {
			t.Errorf("session %s recorded %d times: %v", id, len(recorded[id]), recorded[id])
		} else if !strings.HasSuffix(recorded[id][0], " for bastion-a") {
			t.Errorf("session %s recorded as %q, want the dead instance named", id, recorded[id][0])
		}
	}
	for _, id := range []string{"bbbb00000001", "cccc00000001"} {
		if len(recorded[id]) != 0 {
			t.Errorf("a survivor's session %s recorded as abandoned", id)
		}
	}
	recordedMu.Unlock()
	if clk.now().Sub(stopped) > 30*time.Second {
		t.Errorf("took %v", clk.now().Sub(stopped))
	}
	list, _ := b.List()
	if got, want := ids(list), []string{"bastion-b/bbbb00000001", "bastion-c/cccc00000001"}; !slices.Equal(got, want) {
		t.Errorf("left in the registry: %v, want %v", got, want)
	}
	hbs, _ := b.Instances()
	for _, h := range hbs {
		if h.Instance == "bastion-a" {
			t.Error("the dead instance's heartbeat is still there")
		}
	}

	// a comes back and recovers its journal: nothing is left to claim.
	a2 := instance(t, db, "bastion-a", clk)
	claimed, err := a2.Claim(dying)
	if err != nil {
		t.Fatal(err)
	}
	if len(claimed) != 0 {
		t.Errorf("the restarted instance claimed %v, recorded already", claimed)
	}
	a2.tick(newHandler("bastion-a", a2, recorded, nil), false)
	recordedMu.Lock()
	defer recordedMu.Unlock()
	for _, id := range dying {
		if len(recorded[id]) != 1 {
			t.Errorf("session %s recorded %d times after the restart", id, len(recorded[id]))
		}
	}
}

// TestRestartBeforeNoticed: the instance comes back before the others take
// it for dead: its journal's recovery claims its sessions and records them
// itself, and the survivors, seeing its heartbeat change, take nothing.
func TestRestartBeforeNoticed(t *testing.T) {
	db := openDB(t)
	clk := newClock()
	recorded := map[string][]string{}
	a := instance(t, db, "bastion-a", clk)
	ha := newHandler("bastion-a", a, recorded, nil)
	b := instance(t, db, "bastion-b", clk)
	hb := newHandler("bastion-b", b, recorded, nil)
	add(t, a, ha, session("aaaa00000001", "192.0.2.1:1"), session("aaaa00000002", "[2001:db8::2]:2"))
	for range 4 {
		a.tick(ha, false)
		b.tick(hb, false)
		clk.add(beat)
	}
	// a crashes (its last beat at 15 s); at 25 s (silent for less than
	// Dead) it starts again.
	clk.add(beat)
	b.tick(hb, false)
	a2 := instance(t, db, "bastion-a", clk)
	ha2 := newHandler("bastion-a", a2, recorded, nil)
	claimed, err := a2.Claim([]string{"aaaa00000001", "aaaa00000002"})
	if err != nil {
		t.Fatal(err)
	}
	if len(claimed) != 2 {
		t.Fatalf("claimed %v", claimed)
	}
	for range 6 {
		a2.tick(ha2, false)
		b.tick(hb, false)
		clk.add(beat)
	}
	recordedMu.Lock()
	defer recordedMu.Unlock()
	for _, id := range []string{"aaaa00000001", "aaaa00000002"} {
		if got := recorded[id]; len(got) != 1 || got[0] != "bastion-a for bastion-a" {
			t.Errorf("session %s recorded by %v, want once by bastion-a", id, got)
		}
	}
}

// flaky is a store whose transactions fail while down is set, as a
// database that went away would.
type flaky struct {
	store.DB
	down atomic.Bool
}

func (f *flaky) View(fn func(store.Tx) error) error {
	if f.down.Load() {
		return store.ErrUnavailable
	}
	return f.DB.View(fn)
}

func (f *flaky) Update(fn func(store.Tx) error) error {
	if f.down.Load() {
		return store.ErrUnavailable
	}
	return f.DB.Update(fn)
}

// TestStoreOutageIsNoDeath: the store goes away for longer than Dead; when
// it comes back, an instance that writes its heartbeat first takes nobody
// for dead: every instance's heartbeat was equally stuck.
func TestStoreOutageIsNoDeath(t *testing.T) {
	db := &flaky{DB: openDB(t)}
	clk := newClock()
	recorded := map[string][]string{}
	a, b := instance(t, db, "bastion-a", clk), instance(t, db, "bastion-b", clk)
	ha, hb := newHandler("bastion-a", a, recorded, nil), newHandler("bastion-b", b, recorded, nil)
	add(t, a, ha, session("aaaa00000001", "192.0.2.1:1"), session("aaaa00000002", "[2001:db8::2]:2"))
	for range 4 {
		a.tick(ha, false)
		b.tick(hb, false)
		clk.add(beat)
	}
	db.down.Store(true)
	for range 8 { // 40 s
		a.tick(ha, false)
		b.tick(hb, false)
		clk.add(beat)
	}
	db.down.Store(false)
	for range 3 { // b beats first each time, a a little later
		b.tick(hb, false)
		clk.add(beat / 2)
		a.tick(ha, false)
		clk.add(beat / 2)
	}
	if list, _ := b.List(); len(list) != 2 {
		t.Errorf("sessions left: %v", ids(list))
	}
	recordedMu.Lock()
	defer recordedMu.Unlock()
	if len(recorded) != 0 {
		t.Errorf("recorded as abandoned after an outage: %v", recorded)
	}
}

// TestKillOnAnotherInstance: b asks for a session a carries; a's Run
// picks the request up, ends the session with the reason given, and b
// hears the outcome.
func TestKillOnAnotherInstance(t *testing.T) {
	db := openDB(t)
	recorded := map[string][]string{}
	a, b := instance(t, db, "bastion-a", nil), instance(t, db, "bastion-b", nil)
	ha, hb := newHandler("bastion-a", a, recorded, nil), newHandler("bastion-b", b, recorded, nil)
	add(t, a, ha, session("aaaa00000001", "192.0.2.1:1"), session("aaaa00000002", "[2001:db8::2]:2"), session("aaaa00000003", "192.0.2.3:3"))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 2)
	go func() { done <- a.Run(ctx, ha) }()
	go func() { done <- b.Run(ctx, hb) }()
	defer func() {
		cancel()
		<-done
		<-done
	}()

	for _, id := range []string{"aaaa00000001", "aaaa00000002"} {
		owner, err := b.Kill(context.Background(), id, "by root on instance bastion-b: left open")
		if err != nil || owner != "bastion-a" {
			t.Fatalf("kill %s: owner %q, %v", id, owner, err)
		}
		ha.mu.Lock()
		reason := ha.killed[id]
		ha.mu.Unlock()
		if reason != "by root on instance bastion-b: left open" {
			t.Errorf("killed %s with reason %q", id, reason)
		}
	}
	list, _ := b.List()
	if got := ids(list); !slices.Equal(got, []string{"bastion-a/aaaa00000003"}) {
		t.Errorf("left: %v", got)
	}
	if _, err := b.Kill(context.Background(), "ffffffffffff", "x"); !errors.Is(err, ErrNoSession) {
		t.Errorf("unknown session: %v", err)
	}
	// a asking for its own session (that no process of it carries: the
	// daemon asks the registry only then) is told at once.
	if _, err := a.Kill(context.Background(), "aaaa00000003", "x"); !errors.Is(err, ErrNoSession) || !strings.Contains(err.Error(), "none of its processes") {
		t.Errorf("own stale session: %v", err)
	}
	ha.mu.Lock()
	ha.failKill = errors.New("the session is ending already")
	ha.mu.Unlock()
	if _, err := b.Kill(context.Background(), "aaaa00000003", "x"); err == nil || !strings.Contains(err.Error(), "instance bastion-a: the session is ending already") {
		t.Errorf("a failed kill: %v", err)
	}
}

// TestKillDeadInstance: a kill for a session of an instance that stopped
// beating is refused at once, saying so.
func TestKillDeadInstance(t *testing.T) {
	db := openDB(t)
	clk := newClock()
	recorded := map[string][]string{}
	a, b := instance(t, db, "bastion-a", clk), instance(t, db, "bastion-b", clk)
	ha, hb := newHandler("bastion-a", a, recorded, nil), newHandler("bastion-b", b, recorded, nil)
	add(t, a, ha, session("aaaa00000001", "[2001:db8::1]:1"))
	a.tick(ha, false)
	b.tick(hb, false)
	clk.add(beat)
	for range 3 { // 15 s: dead, not yet taken over (b's next tick would)
		clk.add(beat)
	}
	b.mu.Lock()
	b.streak = clk.now().Add(-time.Minute)
	b.mu.Unlock()
	_, err := b.Kill(context.Background(), "aaaa00000001", "x")
	if !errors.Is(err, ErrInstanceDead) || !strings.Contains(err.Error(), "instance bastion-a has not been heard from for 20s") {
		t.Errorf("kill on a dead instance: %v", err)
	}
}

// notifying is a store with a Notifier, as the PostgreSQL backend would
// be, over bbolt.
type notifying struct {
	store.DB
	mu   sync.Mutex
	subs map[string][]chan struct{}
}

func (n *notifying) Notify(channel string) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, c := range n.subs[channel] {
		select {
		case c <- struct{}{}:
		default:
		}
	}
	return nil
}

func (n *notifying) Subscribe(ctx context.Context, channel string) (<-chan struct{}, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.subs == nil {
		n.subs = map[string][]chan struct{}{}
	}
	c := make(chan struct{}, 1)
	n.subs[channel] = append(n.subs[channel], c)
	return c, nil
}

// TestKillNotified: with a store that notifies, the owner ends the session
// on the notification, without polling.
func TestKillNotified(t *testing.T) {
	db := &notifying{DB: openDB(t)}
	recorded := map[string][]string{}
	a, err := New(Config{DB: db, Instance: "bastion-a", Logger: zap.NewNop(), Poll: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	b := instance(t, db, "bastion-b", nil)
	ha := newHandler("bastion-a", a, recorded, nil)
	add(t, a, ha, session("aaaa00000001", "192.0.2.1:1"))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- a.Run(ctx, ha) }()
	defer func() {
		cancel()
		<-done
	}()
	for { // bounded by the subscription, which Run makes at once
		db.mu.Lock()
		n := len(db.subs[killChannel("bastion-a")])
		db.mu.Unlock()
		if n > 0 {
			break
		}
		time.Sleep(time.Millisecond)
	}
	if _, err := b.Kill(context.Background(), "aaaa00000001", "by root on instance bastion-b: now"); err != nil {
		t.Fatal(err)
	}
}

// TestStaleOwnEntries: entries of this instance whose process is gone
// without a journal (it wrote their end records, then stopped before it
// removed them) are taken over and handed to Abandoned, which skips those
// already ended.
func TestStaleOwnEntries(t *testing.T) {
	db := openDB(t)
	recorded := map[string][]string{}
	a := instance(t, db, "bastion-a", nil)
	ha := newHandler("bastion-a", a, recorded, nil)
	if err := a.Add("journal-gone", session("aaaa00000001", "192.0.2.1:1"), 0); err != nil {
		t.Fatal(err)
	}
	if err := a.Add("journal-1", session("aaaa00000002", "[2001:db8::2]:2"), 0); err != nil {
		t.Fatal(err)
	}
	a.tick(ha, true)
	recordedMu.Lock()
	defer recordedMu.Unlock()
	if len(recorded["aaaa00000001"]) != 1 || len(recorded["aaaa00000002"]) != 0 {
		t.Errorf("recorded %v", recorded)
	}
	if list, _ := a.List(); !slices.Equal(ids(list), []string{"bastion-a/aaaa00000002"}) {
		t.Errorf("left %v", ids(list))
	}
}

// TestLeave: a clean stop removes the heartbeat, so that nobody takes the
// instance for dead; with sessions still registered it stays.
func TestLeave(t *testing.T) {
	db := openDB(t)
	recorded := map[string][]string{}
	a := instance(t, db, "bastion-a", nil)
	ha := newHandler("bastion-a", a, recorded, nil)
	a.tick(ha, false)
	a.leave()
	if hbs, _ := a.Instances(); len(hbs) != 0 {
		t.Errorf("heartbeats after leaving: %v", hbs)
	}
	add(t, a, ha, session("aaaa00000001", "192.0.2.1:1"))
	a.tick(ha, false)
	a.leave()
	if hbs, _ := a.Instances(); len(hbs) != 1 || hbs[0].Addresses[1] != netip.MustParseAddr("2001:db8:18::4") {
		t.Errorf("heartbeats after leaving with a session: %+v", hbs)
	}
}

// TestRecheck: an instance that changed rights asks the others to check
// their sessions; it does not ask itself, and a retired process (the old
// half of an upgrade) leaves it to its successor.
func TestRecheck(t *testing.T) {
	db := openDB(t)
	recorded := map[string][]string{}
	a, b := instance(t, db, "bastion-a", nil), instance(t, db, "bastion-b", nil)
	old := instance(t, db, "bastion-b", nil)
	ha, hb, hold := newHandler("bastion-a", a, recorded, nil), newHandler("bastion-b", b, recorded, nil), newHandler("bastion-b", old, recorded, nil)
	old.Retire()
	for _, p := range []struct {
		r *Registry
		h *handler
	}{{a, ha}, {b, hb}, {old, hold}} {
		p.r.serveRecheck(p.h) // the generation as it stands at start: nothing to do
	}
	if err := a.Recheck("role revoked"); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		a.serveRecheck(ha)
		b.serveRecheck(hb)
		old.serveRecheck(hold)
	}
	if len(ha.rechecks) != 0 || len(hold.rechecks) != 0 || !slices.Equal(hb.rechecks, []string{"on instance bastion-a: role revoked"}) {
		t.Errorf("rechecks: a %v, b %v, retired %v", ha.rechecks, hb.rechecks, hold.rechecks)
	}
}

// notHere is a handler of a process that carries none of its instance's
// sessions (the other half of an upgrade carries them).
type notHere struct{ *handler }

func (notHere) Kill(string, string) error { return ErrNotHere }

// TestKillTwoProcessesOfOneInstance: during an upgrade both processes of
// an instance poll for its kill requests; the one that does not carry the
// session leaves the request to the one that does.
func TestKillTwoProcessesOfOneInstance(t *testing.T) {
	db := openDB(t)
	recorded := map[string][]string{}
	oldA, newA, b := instance(t, db, "bastion-a", nil), instance(t, db, "bastion-a", nil), instance(t, db, "bastion-b", nil)
	hOld, hNew := newHandler("bastion-a", oldA, recorded, nil), newHandler("bastion-a", newA, recorded, nil)
	add(t, oldA, hOld, session("aaaa00000001", "[2001:db8::1]:1"))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 2)
	go func() { done <- newA.Run(ctx, notHere{hNew}) }()
	go func() { done <- oldA.Run(ctx, hOld) }()
	defer func() {
		cancel()
		<-done
		<-done
	}()
	if _, err := b.Kill(context.Background(), "aaaa00000001", "by root on instance bastion-b: upgrade"); err != nil {
		t.Fatal(err)
	}
	hOld.mu.Lock()
	defer hOld.mu.Unlock()
	if hOld.killed["aaaa00000001"] != "by root on instance bastion-b: upgrade" {
		t.Errorf("killed: %v", hOld.killed)
	}
}

// BenchmarkList10k is `bastionctl sessions` over a registry of 10,000 live
// sessions (bbolt; the PostgreSQL backend runs it too, once it is there).
func BenchmarkList10k(b *testing.B) {
	db := openDB(b)
	regs := []*Registry{instance(b, db, "bastion-a", nil), instance(b, db, "bastion-b", nil)}
	for i := range 10000 {
		s := session(fmt.Sprintf("%012x", i), "192.0.2.10:50000")
		if i%2 == 1 {
			s.Client = netip.MustParseAddrPort("[2001:db8::10]:50000")
		}
		if err := regs[i%2].Add("journal-1", s, 0); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	for b.Loop() {
		list, err := regs[0].List()
		if err != nil || len(list) != 10000 {
			b.Fatal(len(list), err)
		}
	}
}
