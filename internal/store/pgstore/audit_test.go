package pgstore

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/bastiond/bastiond/internal/audit"
	"github.com/bastiond/bastiond/internal/pgtest"
)

// chain makes the stamped lines of events, as an instance's writer does,
// each continuing the one before.
func chain(events ...audit.Event) [][]byte {
	var prev audit.Hash
	lines := make([][]byte, len(events))
	for i, e := range events {
		lines[i] = audit.Stamp(audit.Marshal(e), prev)
		prev = audit.HashLine(lines[i])
	}
	return lines
}

// texts are lines as strings, to compare.
func texts(lines [][]byte) []string {
	out := make([]string, len(lines))
	for i, l := range lines {
		out[i] = string(l)
	}
	return out
}

func sameLines(t *testing.T, what string, got, want [][]byte) {
	t.Helper()
	g, w := strings.Join(texts(got), "\n"), strings.Join(texts(want), "\n")
	if g != w {
		t.Errorf("%s:\n got %d lines:\n%s\nwant %d lines:\n%s", what, len(got), g, len(want), w)
	}
}

// TestAuditCopy: two instances copy their lines into one database, over
// IPv4 and IPv6; a line sent twice is stored once; every filter and the
// limit select what they say; each row's hash is its line's.
func TestAuditCopy(t *testing.T) {
	s := pgtest.Start(t)
	for _, host := range hosts {
		t.Run(host, func(t *testing.T) {
			name := s.NewDatabase(t)
			a, b := open(t, s, host, name), open(t, s, host, name)
			ctx := context.Background()
			t0 := time.Date(2026, 12, 7, 5, 0, 0, 0, time.UTC)
			at := func(min int) time.Time { return t0.Add(time.Duration(min) * time.Minute) }
			la := chain(
				audit.Event{Time: at(0), Event: audit.ChainStarted, Actor: audit.ActorDaemon, Instance: "a"},
				audit.Event{Time: at(1), Event: audit.SigninSucceeded, Actor: "alice", Source: "192.0.2.10", User: "alice", Instance: "a"},
				audit.Event{Time: at(3), Event: audit.SessionStart, Actor: "alice", Source: "192.0.2.10", User: "alice", Target: "vm1", Session: "s1", Instance: "a"},
				audit.Event{Time: at(5), Event: audit.UserDisabled, Actor: "root", Source: audit.SourceLocal, User: "bob", Instance: "a"},
			)
			lb := chain(
				audit.Event{Time: at(0), Event: audit.ChainStarted, Actor: audit.ActorDaemon, Instance: "b"},
				audit.Event{Time: at(2), Event: audit.SigninFailed, Actor: "bob", Source: "2001:db8::7", User: "bob", Instance: "b"},
				// b wrote the end of a session a carried (a died)
				audit.Event{Time: at(4), Event: audit.SessionEnd, Actor: "alice", Source: "192.0.2.10", User: "alice", Session: "s1", Instance: "a", RecordedBy: "b"},
				audit.Event{Time: at(6), Event: audit.SessionStart, Actor: "bob", Source: "2001:db8::7", User: "bob", Target: "vm2", Session: "s2"}, // no instance: b's
			)
			add := func(db *DB, writer string, lines [][]byte, want int) {
				t.Helper()
				n, skipped, err := db.AddAudit(ctx, writer, lines)
				if err != nil || n != want || skipped != 0 {
					t.Fatalf("AddAudit %s: %d added, %d skipped, %v; want %d added", writer, n, skipped, err, want)
				}
			}
			add(a, "a", la[:3], 3)
			add(b, "b", lb, 4)
			add(a, "a", la[1:], 1) // two sent again after an outage, one new
			add(b, "b", lb[2:3], 0)
			if n, skipped, err := a.AddAudit(ctx, "a", [][]byte{[]byte("not json"), []byte(`{"v":2}`)}); n != 0 || skipped != 2 || err != nil {
				t.Fatalf("lines that are not audit lines: %d added, %d skipped, %v", n, skipped, err)
			}

			get := func(q audit.Query) audit.Found {
				t.Helper()
				if q.Since.IsZero() {
					q.Since, q.Until = t0, at(60)
				}
				f, err := b.AuditEvents(ctx, q)
				if err != nil {
					t.Fatalf("AuditEvents %+v: %v", q, err)
				}
				return f
			}
			all := [][]byte{la[0], lb[0], la[1], lb[1], la[2], lb[2], la[3], lb[3]}
			sameLines(t, "everything", get(audit.Query{}).Lines, all)
			sameLines(t, "a time range [2m, 5m)", get(audit.Query{Since: at(2), Until: at(5)}).Lines, all[3:6])
			sameLines(t, "instance a (the session b recorded for a included)", get(audit.Query{Instances: []string{"a"}}).Lines,
				[][]byte{la[0], la[1], la[2], lb[2], la[3]})
			sameLines(t, "instance b (a line without instance is its writer's)", get(audit.Query{Instances: []string{"b"}}).Lines,
				[][]byte{lb[0], lb[1], lb[3]})
			sameLines(t, "events", get(audit.Query{Events: []string{audit.SessionStart, audit.SessionEnd}}).Lines,
				[][]byte{la[2], lb[2], lb[3]})
			sameLines(t, "user bob: what he did and what was done to him", get(audit.Query{User: "bob"}).Lines,
				[][]byte{lb[1], la[3], lb[3]})
			sameLines(t, "user root: the admin", get(audit.Query{User: "root"}).Lines, [][]byte{la[3]})
			sameLines(t, "every filter", get(audit.Query{Instances: []string{"a", "b"}, Events: []string{audit.SessionStart}, User: "alice"}).Lines,
				[][]byte{la[2]})
			if f := get(audit.Query{Events: []string{"no_such_event"}}); len(f.Lines) != 0 || f.More {
				t.Errorf("an event nobody wrote: %+v", f)
			}
			f := get(audit.Query{Limit: 3})
			sameLines(t, "limit 3", f.Lines, all[:3])
			if !f.More || !f.Next.Equal(at(2)) {
				t.Errorf("limit 3: more %v from %v, want more from %v", f.More, f.Next, at(2))
			}
			if f := get(audit.Query{Limit: 8}); f.More {
				t.Errorf("limit 8 of 8 lines says there is more")
			}
			if _, err := a.AuditEvents(ctx, audit.Query{Since: at(5), Until: at(1)}); err == nil || !strings.Contains(err.Error(), "ends") {
				t.Errorf("a range that ends before it starts: %v", err)
			}

			// Each row's hash is its line's, and the line is as written.
			c := s.Admin(t, name)
			var bad, rows int
			if err := c.QueryRow(ctx, "SELECT count(*) FILTER (WHERE sha256(convert_to(line, 'UTF8')) <> hash), count(*) FROM audit_events").Scan(&bad, &rows); err != nil {
				t.Fatal(err)
			}
			if bad != 0 || rows != 8 {
				t.Errorf("%d rows, %d whose hash is not their line's; want 8 rows, 0", rows, bad)
			}
			var target string
			if err := c.QueryRow(ctx, "SELECT doc->>'target' FROM audit_events_json WHERE event = 'session_start' AND instance = 'a'").Scan(&target); err != nil || target != "vm1" {
				t.Errorf("the DBA's view: target %q, %v", target, err)
			}
		})
	}
}

// TestPruneAudit: rows older than the cut are deleted, in batches, the
// others kept; a second run (another instance) finds nothing.
func TestPruneAudit(t *testing.T) {
	s := pgtest.Start(t)
	db := open(t, s, "::1", s.NewDatabase(t))
	ctx := context.Background()
	t0 := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	const n = 2*pruneBatch + 10
	events := make([]audit.Event, n)
	for i := range events {
		events[i] = audit.Event{Time: t0.Add(time.Duration(i) * time.Second), Event: audit.SigninFailed, User: "mallory", Instance: "a"}
	}
	lines := chain(events...)
	for i := 0; i < n; i += 1000 {
		if _, _, err := db.AddAudit(ctx, "a", lines[i:min(i+1000, n)]); err != nil {
			t.Fatal(err)
		}
	}
	cut := t0.Add(time.Duration(n-5) * time.Second)
	if got, err := db.PruneAudit(ctx, cut); err != nil || got != n-5 {
		t.Fatalf("prune: %d, %v; want %d", got, err, n-5)
	}
	if got, err := db.PruneAudit(ctx, cut); err != nil || got != 0 {
		t.Fatalf("prune again: %d, %v; want 0", got, err)
	}
	f, err := db.AuditEvents(ctx, audit.Query{Since: t0, Until: t0.Add(24 * time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	sameLines(t, "kept", f.Lines, lines[n-5:])
}

// BenchmarkAuditCopy measures the database's copy of the audit trail on a
// durable server (fsync on): a batch of 512 lines as the shipper sends it
// (lines/s is the rate one instance's copy keeps up with), and a query of
// one hour out of a day of 100,000 lines of two instances, with and
// without a user filter, 1000 lines at most as bastionctl asks.
func BenchmarkAuditCopy(b *testing.B) {
	s := pgtest.Start(b, pgtest.Options{Durable: true})
	db := open(b, s, "127.0.0.1", s.NewDatabase(b))
	ctx := context.Background()
	t0 := time.Now().Add(-24 * time.Hour)
	mk := func(n int, from time.Time, step time.Duration) [][]byte {
		events := make([]audit.Event, n)
		for i := range events {
			events[i] = audit.Event{Time: from.Add(time.Duration(i) * step), Event: audit.SessionStart, Actor: "alice", Source: "2001:db8::7",
				User: fmt.Sprintf("user%d", i%100), Target: "vm1", Protocol: "ssh", Session: fmt.Sprintf("%016x", i), Instance: "a"}
		}
		return chain(events...)
	}
	day := mk(100000, t0, 24*time.Hour/100000)
	for i := 0; i < len(day); i += 512 {
		if _, _, err := db.AddAudit(ctx, []string{"a", "b"}[i/512%2], day[i:min(i+512, len(day))]); err != nil {
			b.Fatal(err)
		}
	}
	b.Run("Insert512", func(b *testing.B) {
		n := 0
		for b.Loop() {
			if _, _, err := db.AddAudit(ctx, "c", mk(512, time.Now(), time.Microsecond)); err != nil {
				b.Fatal(err)
			}
			n += 512
		}
		b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "lines/s")
	})
	for _, q := range []struct {
		name string
		q    audit.Query
	}{
		{"Hour", audit.Query{Since: t0.Add(12 * time.Hour), Until: t0.Add(13 * time.Hour), Limit: 1000}},
		{"HourUser", audit.Query{Since: t0.Add(12 * time.Hour), Until: t0.Add(13 * time.Hour), User: "user7", Limit: 1000}},
		{"DayEvent", audit.Query{Since: t0, Until: t0.Add(24 * time.Hour), Events: []string{audit.SessionEnd}, Limit: 1000}},
	} {
		b.Run("Query"+q.name, func(b *testing.B) {
			for b.Loop() {
				if _, err := db.AuditEvents(ctx, q.q); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
