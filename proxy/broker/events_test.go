package broker

import (
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.etcd.io/bbolt"
	"go.uber.org/zap"

	"github.com/bastiond/bastiond/internal/audit"
)

// waitFor waits until cond holds. Its bound is a failure's, not a speed
// target: under the race detector on a loaded machine the writer takes
// seconds to queue TestAuditEventsLost's 131k events.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// eventsOf is the events of type ev in recs, by actor.
func eventsOf(recs []record, ev string) []string {
	var out []string
	for _, r := range recs {
		if r.Event == ev {
			out = append(out, r.Actor)
		}
	}
	return out
}

// TestAuditEvents: events are written in the order Audit was called,
// between the session records, each line chained to the one before, and
// shipped in the order written.
func TestAuditEvents(t *testing.T) {
	srv := listen(t, "tcp6", "[::1]:0")
	var mu sync.Mutex
	var shipped [][]byte
	dir := t.TempDir()
	db, err := bbolt.Open(filepath.Join(dir, "state.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	path := filepath.Join(dir, "audit.jsonl")
	b, err := New(Config{Logger: zap.NewNop(), Targets: []Target{targetAt("vm1", srv.addrPort())}},
		Options{LiveDir: filepath.Join(dir, "live"), DB: db, AuditFile: path, tuning: quick(), Ship: func(lines [][]byte) {
			mu.Lock()
			shipped = append(shipped, lines...)
			mu.Unlock()
		}})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 50 {
		b.Audit(audit.Event{Event: audit.SigninFailed, Actor: fmt.Sprintf("u%02d", i), Source: "2001:db8::1", Reason: "bad_password"})
	}
	s, err := b.Open(context.Background(), tunnelTo("alice", "vm1", srv.addrPort().Port()))
	if err != nil {
		t.Fatal(err)
	}
	srv.next(t)
	b.Audit(audit.Event{Event: audit.SessionKilled, Actor: "root", Source: audit.SourceLocal, Session: s.ID(), User: "alice"})
	s.End(ReasonKilled + "by root")
	b.Audit(audit.Event{Event: audit.Signout, Actor: "alice", Source: "192.0.2.7"})
	if err := b.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	recs := readRecords(t, path) // verifies the chain
	var want []string
	for i := range 50 {
		want = append(want, fmt.Sprintf("u%02d", i))
	}
	if got := eventsOf(recs, audit.SigninFailed); !slices.Equal(got, want) {
		t.Errorf("sign-in failures in the file: %v", got)
	}
	order := func(ev string) int {
		return slices.IndexFunc(recs, func(r record) bool { return r.Event == ev })
	}
	if !(order(audit.SigninFailed) < order(audit.SessionStart) && order(audit.SessionStart) < order(audit.SessionKilled) &&
		order(audit.SessionKilled) < order(audit.SessionEnd) && order(audit.SessionEnd) < order(audit.Signout)) {
		t.Errorf("events out of order: %v", recs)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	var joined []byte
	for _, l := range shipped {
		joined = append(append(joined, l...), '\n')
	}
	if string(joined) != string(data) {
		t.Errorf("shipped lines differ from the file:\n%s\nfile:\n%s", joined, data)
	}
}

// TestAuditTwoWriters is an upgrade's two processes appending to one file
// at once: their lines interleave, and the chain holds across them.
func TestAuditTwoWriters(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "audit.jsonl")
	var brokers []*Broker
	for i := range 2 {
		db, err := bbolt.Open(filepath.Join(dir, fmt.Sprintf("state%d.db", i)), 0o600, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		b, err := New(Config{Logger: zap.NewNop()}, Options{LiveDir: filepath.Join(dir, fmt.Sprintf("live%d", i)), DB: db, AuditFile: path, tuning: quick()})
		if err != nil {
			t.Fatal(err)
		}
		brokers = append(brokers, b)
	}
	var wg sync.WaitGroup
	for i, b := range brokers {
		wg.Go(func() {
			for j := range 300 {
				b.Audit(audit.Event{Event: audit.SigninSucceeded, Actor: fmt.Sprintf("w%d-%03d", i, j), Source: "192.0.2.1"})
				if j%50 == 0 {
					time.Sleep(time.Millisecond)
				}
			}
		})
	}
	wg.Wait()
	for _, b := range brokers {
		b.Close(context.Background())
	}
	recs := readRecords(t, path)
	if n := len(eventsOf(recs, audit.SigninSucceeded)); n != 600 {
		t.Fatalf("%d events, want 600", n)
	}
}

// TestAuditEventsWaitForTheFile: while the file refuses lines, events wait
// in memory, and are written in order, chained, once it takes them again;
// a partial write the file could not take back is ended, and the chain
// goes on after it, where verify reports it.
func TestAuditEventsWaitForTheFile(t *testing.T) {
	faults := &auditFaults{}
	e := newEnvTuned(t, Config{}, faults.tuning())
	e.b.Audit(audit.Event{Event: audit.Signout, Actor: "first", Source: "192.0.2.1"})
	waitFor(t, "the first event", func() bool { return e.b.audit.depth.Load() == 0 })
	faults.set(syscall.ENOSPC, false, nil)
	for i := range 20 {
		e.b.Audit(audit.Event{Event: audit.Signout, Actor: fmt.Sprintf("w%02d", i), Source: "2001:db8::2"})
	}
	waitFor(t, "the fault", func() bool { return e.b.audit.unavailable() != nil })
	if d := e.b.audit.depth.Load(); d != 20 {
		t.Errorf("queue depth %d, want 20", d)
	}
	faults.set(nil, false, nil)
	waitFor(t, "the retry", func() bool { return e.b.audit.depth.Load() == 0 })
	recs := e.records()
	got := eventsOf(recs, audit.Signout)
	if len(got) != 21 || got[0] != "first" || got[20] != "w19" {
		t.Errorf("events %v", got)
	}
}

// TestAuditEventsLost: past maxQueuedEvents waiting, events are dropped,
// counted, and the count written once the file takes lines again.
func TestAuditEventsLost(t *testing.T) {
	faults := &auditFaults{}
	e := newEnvTuned(t, Config{}, faults.tuning())
	faults.set(syscall.ENOSPC, false, nil)
	e.b.Audit(audit.Event{Event: audit.Signout, Actor: "a", Source: "192.0.2.1"})
	waitFor(t, "the fault", func() bool { return e.b.audit.unavailable() != nil })
	const extra = 10
	for range maxQueuedEvents + extra {
		e.b.Audit(audit.Event{Event: audit.Signout, Actor: "b", Source: "192.0.2.1"})
	}
	waitFor(t, "the queue to fill", func() bool {
		e.b.audit.evMu.Lock()
		defer e.b.audit.evMu.Unlock()
		return len(e.b.audit.evs) == 0 && e.b.audit.depth.Load() <= maxQueuedEvents
	})
	faults.set(nil, false, nil)
	waitFor(t, "the retry", func() bool { return e.b.audit.depth.Load() == 0 && e.b.audit.unavailable() == nil })
	e.b.Close(context.Background())
	e.b = nil
	recs := e.records()
	var lost int64
	for _, r := range recs {
		if r.Event == audit.EventsLost {
			lost += r.Count
		}
	}
	// Events the writer had not taken yet may be refused before the
	// queue is full: then fewer are written, and more counted lost.
	n := int64(len(eventsOf(recs, audit.Signout)))
	if lost < extra+1 || n > maxQueuedEvents || n+lost != maxQueuedEvents+extra+1 {
		t.Errorf("lost %d (want at least %d), written %d (want at most %d), sum %d", lost, extra+1, n, maxQueuedEvents, n+lost)
	}
}

// TestAuditContinuesAnOldFile: an audit file of an earlier version, whose
// lines are not chained, gets an audit_chain_started line that continues
// its last line, and then chained lines.
func TestAuditContinuesAnOldFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "log", "audit.jsonl")
	os.MkdirAll(filepath.Dir(path), 0o750)
	old := `{"time":"2026-01-01T00:00:00Z","event":"session_end","session":"0123456789ab","user":"bob"}` + "\n"
	if err := os.WriteFile(path, []byte(old+old), 0o640); err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, tn: quick(), dir: dir, audit: path, live: filepath.Join(dir, "live")}
	e.open(Config{})
	e.b.Audit(audit.Event{Event: audit.Signout, Actor: "alice", Source: "192.0.2.1"})
	e.b.Close(context.Background())
	e.db.Close()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rep, err := audit.Verify(audit.File{Name: path, R: f})
	if err != nil || rep.Broken != nil || rep.Legacy != 2 || rep.Chained != 2 {
		t.Fatalf("%+v %v %v", rep, err, rep.Broken)
	}
}

// TestAuditContinuesARotatedFile: a file logrotate moved (and compressed)
// while the daemon was stopped is continued by the new file's first line.
func TestAuditContinuesARotatedFile(t *testing.T) {
	e := newEnv(t, Config{})
	e.b.Audit(audit.Event{Event: audit.Signout, Actor: "alice", Source: "192.0.2.1"})
	e.b.Close(context.Background())
	e.b = nil
	e.db.Close()
	data, err := os.ReadFile(e.audit)
	if err != nil {
		t.Fatal(err)
	}
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(data)
	zw.Close()
	rotated := e.audit + ".1.gz"
	if err := os.WriteFile(rotated, gz.Bytes(), 0o640); err != nil {
		t.Fatal(err)
	}
	os.Remove(e.audit)
	e.open(Config{})
	e.b.Audit(audit.Event{Event: audit.Signout, Actor: "bob", Source: "2001:db8::1"})
	e.b.Close(context.Background())
	e.b = nil
	second, err := os.ReadFile(e.audit)
	if err != nil {
		t.Fatal(err)
	}
	rep, err := audit.Verify(audit.File{Name: "1", R: bytes.NewReader(data)}, audit.File{Name: "2", R: bytes.NewReader(second)})
	if err != nil || rep.Broken != nil || len(rep.Restarts) != 0 || rep.Chained != 3 {
		t.Fatalf("%+v %v %v", rep, err, rep.Broken)
	}
}
