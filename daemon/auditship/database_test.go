package auditship

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bastiond/bastiond/internal/audit"
	"github.com/bastiond/bastiond/internal/pgtest"
	"github.com/bastiond/bastiond/internal/store/pgstore"
)

// openDB opens database name of s over host as an instance does.
func openDB(t *testing.T, s *pgtest.Server, host, name string) *pgstore.DB {
	t.Helper()
	dsn := filepath.Join(t.TempDir(), "dsn")
	if err := os.WriteFile(dsn, []byte(s.DSN(host, name)), 0o600); err != nil {
		t.Fatal(err)
	}
	db, err := pgstore.Open(context.Background(), pgstore.Config{DSNFile: dsn, CAFile: s.CAFile, StatementTimeout: 2 * time.Second,
		ConnectTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// copied are the lines of the table, in the order they were added.
func copied(t *testing.T, s *pgtest.Server, name string) [][]byte {
	t.Helper()
	c := s.Admin(t, name)
	rows, err := c.Query(context.Background(), "SELECT line FROM audit_events ORDER BY id")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out [][]byte
	for rows.Next() {
		var l string
		if err := rows.Scan(&l); err != nil {
			t.Fatal(err)
		}
		out = append(out, []byte(l))
	}
	return out
}

// startShipper runs a shipper over dests until the end of t.
func startShipper(t *testing.T, dests ...Destination) *Shipper {
	sh := New(dests...)
	sh.Start()
	t.Cleanup(func() { sh.Close(time.Second) })
	return sh
}

// TestDatabaseTwoInstances: two instances, one over IPv4 and one over
// IPv6, copy their trails into one database; the cluster's query sees
// both, each line once, even one shipped twice.
func TestDatabaseTwoInstances(t *testing.T) {
	s := pgtest.Start(t)
	name := s.NewDatabase(t)
	var sa, sb *Shipper
	for i, host := range []string{"127.0.0.1", "::1"} {
		d, err := NewDatabase(DatabaseConfig{Table: openDB(t, s, host, name), Writer: []string{"a", "b"}[i]})
		if err != nil {
			t.Fatal(err)
		}
		sh := startShipper(t, d)
		if i == 0 {
			sa = sh
		} else {
			sb = sh
		}
	}
	la, _ := trailLines(40, audit.Zero)
	lb, _ := trailLines(30, audit.Zero)
	sa.Ship(la[:20])
	sb.Ship(lb)
	sa.Ship(la[10:]) // ten again
	waitFor(t, "70 lines copied", 10*time.Second, func() bool { return len(copied(t, s, name)) >= 70 })
	sa.Ship(la[39:])
	sa.Ship(nil)
	sa.Close(5 * time.Second) // idle: the last line is in
	got := copied(t, s, name)
	if len(got) != 70 {
		t.Fatalf("%d rows, want 70: each line once", len(got))
	}
	// Each instance's lines in its file's order.
	var ga, gb [][]byte
	for _, l := range got {
		sm, err := audit.Summarize(l)
		if err != nil {
			t.Fatal(err)
		}
		if containsLine(la, l) {
			ga = append(ga, l)
		} else if containsLine(lb, l) {
			gb = append(gb, l)
		} else {
			t.Fatalf("a row nobody shipped: %s (%v)", l, sm)
		}
	}
	if !equalLines(ga, la) || !equalLines(gb, lb) {
		t.Errorf("rows not in each file's order")
	}
	db := openDB(t, s, "::1", name)
	f, err := db.AuditEvents(context.Background(), audit.Query{Since: time.Now().Add(-time.Hour), Until: time.Now().Add(time.Minute),
		Events: []string{audit.SessionStart}, Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	if want := 13 + 10; len(f.Lines) != want {
		t.Errorf("session_start of both instances: %d lines, want %d", len(f.Lines), want)
	}
}

func containsLine(lines [][]byte, l []byte) bool {
	for _, x := range lines {
		if bytes.Equal(x, l) {
			return true
		}
	}
	return false
}

func equalLines(a, b [][]byte) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !bytes.Equal(a[i], b[i]) {
			return false
		}
	}
	return true
}

// TestDatabaseOutage: PostgreSQL stops while lines are shipped, then
// starts again: every line is copied, once, in order; the outage is one
// audit_shipping_failed event and one audit_shipping_resumed, counting the
// lines that waited, and a failure metric.
func TestDatabaseOutage(t *testing.T) {
	s := pgtest.Start(t)
	name := s.NewDatabase(t)
	ev := &events{}
	d, err := NewDatabase(DatabaseConfig{Table: openDB(t, s, "::1", name), Writer: "a", Audit: ev,
		MinBackoff: 50 * time.Millisecond, MaxBackoff: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	sh := startShipper(t, d)
	lines, _ := trailLines(150, audit.Zero)
	sh.Ship(lines[:50])
	waitFor(t, "the first 50 lines", 10*time.Second, func() bool { return len(copied(t, s, name)) == 50 })

	s.Stop(t)
	for i := 50; i < 150; i += 10 {
		sh.Ship(lines[i : i+10])
	}
	waitFor(t, "a failure", 20*time.Second, func() bool { return len(ev.of(audit.ShippingFailed)) > 0 })
	if _, unsent, _ := d.queue().stats(); unsent == 0 {
		t.Fatal("no line waits while the database is down")
	}
	s.Restart(t)
	waitFor(t, "the outage's end", 30*time.Second, func() bool { return len(ev.of(audit.ShippingResumed)) > 0 })

	got := copied(t, s, name)
	if !equalLines(got, lines) {
		t.Fatalf("%d rows after the outage, want the 150 lines once each, in order", len(got))
	}
	failed, resumed := ev.of(audit.ShippingFailed), ev.of(audit.ShippingResumed)
	if len(failed) != 1 || len(resumed) != 1 {
		t.Fatalf("%d failed and %d resumed events; want one of each for one outage", len(failed), len(resumed))
	}
	if f := failed[0]; f.Collector != DatabaseName || f.Reason != "collector_unreachable" || !strings.Contains(f.Detail, "pgstore") {
		t.Errorf("failed event %+v", f)
	}
	if r := resumed[0]; r.Collector != DatabaseName || r.Count != 100 {
		t.Errorf("resumed event %+v: want the 100 lines that waited", r)
	}
	if d.c.failures.Load() == 0 || d.c.shipped.Load() != 150 {
		t.Errorf("metrics: %d failures, %d shipped; want some, 150", d.c.failures.Load(), d.c.shipped.Load())
	}
}

// slowTable is a table whose inserts wait until released, to show the
// writer is never held up.
type slowTable struct {
	mu      sync.Mutex
	release chan struct{}
	lines   int
}

func (s *slowTable) AddAudit(ctx context.Context, _ string, lines [][]byte) (int, int, error) {
	select {
	case <-s.release:
	case <-ctx.Done():
		return 0, 0, ctx.Err()
	}
	s.mu.Lock()
	s.lines += len(lines)
	s.mu.Unlock()
	return len(lines), 0, nil
}

func (s *slowTable) PruneAudit(context.Context, time.Time) (int64, error) { return 0, nil }

// TestDatabaseNeverBlocks: Ship returns while the database does not
// answer, and past the queue's bound the oldest lines are dropped and
// counted.
func TestDatabaseNeverBlocks(t *testing.T) {
	tbl := &slowTable{release: make(chan struct{})}
	d, err := NewDatabase(DatabaseConfig{Table: tbl, Writer: "a", Queue: 100})
	if err != nil {
		t.Fatal(err)
	}
	startShipper(t, d)
	lines, _ := trailLines(300, audit.Zero)
	for i := range lines {
		d.Ship(lines[i : i+1])
	}
	if depth, _, dropped := d.queue().stats(); depth != 100 || dropped != 200 {
		t.Errorf("depth %d, dropped %d; want 100 and 200", depth, dropped)
	}
	close(tbl.release)
	waitFor(t, "the queue to empty", 5*time.Second, func() bool { depth, _, _ := d.queue().stats(); return depth == 0 })
}

func TestNewDatabaseRefuses(t *testing.T) {
	if _, err := NewDatabase(DatabaseConfig{Writer: "a"}); err == nil {
		t.Error("no table: accepted")
	}
	if _, err := NewDatabase(DatabaseConfig{Table: &slowTable{}}); err == nil {
		t.Error("no writer: accepted")
	}
}
