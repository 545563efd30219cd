package daemon

import (
	"bytes"
	"compress/gzip"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	wire "github.com/bastiond/bastiond/api/admin"
	"github.com/bastiond/bastiond/api/adminclient"
	"github.com/bastiond/bastiond/daemon/adminapi"
	"github.com/bastiond/bastiond/daemon/auditship"
	"github.com/bastiond/bastiond/daemon/config"
	"github.com/bastiond/bastiond/internal/audit"
	"github.com/bastiond/bastiond/internal/pgtest"
	"github.com/bastiond/bastiond/internal/store/pgstore"
	"github.com/bastiond/bastiond/internal/store/pgstore/pgstoretest"
)

// stamped makes the chained lines of events, continuing prev.
func stamped(prev audit.Hash, events ...audit.Event) ([][]byte, audit.Hash) {
	lines := make([][]byte, len(events))
	for i, e := range events {
		lines[i] = audit.Stamp(audit.Marshal(e), prev)
		prev = audit.HashLine(lines[i])
	}
	return lines, prev
}

// serveAudit serves d's audit events on an admin socket, and returns a
// client of it.
func serveAudit(t *testing.T, d *daemon) *adminclient.Client {
	t.Helper()
	path := filepath.Join(t.TempDir(), "admin.sock")
	ln, err := adminapi.Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := adminapi.NewServer(adminapi.Config{Logger: zaptest.NewLogger(t), Status: func() adminapi.Status { return adminapi.Status{} },
		AuditEvents: auditAPI{d}})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	t.Cleanup(func() { srv.Shutdown(context.Background()); <-done })
	return adminclient.NewClient(path)
}

func joined(lines [][]byte) string { return string(bytes.Join(lines, []byte("\n"))) }

func rawJoined(ev wire.AuditEvents) string {
	return strings.Join(ev.Lines, "\n")
}

// TestAuditEventsFromFiles: on a single host, `audit events` reads the
// audit file and its rotated predecessors, compressed or not, oldest
// first, and leaves out a rotated file last written before the range.
func TestAuditEventsFromFiles(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "audit.jsonl")
	t0 := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	at := func(h int) time.Time { return t0.Add(time.Duration(h) * time.Hour) }
	ev := func(h int, event, user string) audit.Event {
		return audit.Event{Time: at(h), Event: event, Actor: user, Source: "2001:db8::7", User: user}
	}
	oldest, prev := stamped(audit.Zero, ev(0, audit.ChainStarted, ""), ev(1, audit.SigninFailed, "alice"))
	middle, prev := stamped(prev, ev(24, audit.ChainStarted, ""), ev(25, audit.SessionStart, "bob"))
	live, _ := stamped(prev, ev(48, audit.ChainStarted, ""), ev(49, audit.SessionEnd, "bob"), ev(50, audit.SigninSucceeded, "alice"))
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(append(bytes.Join(oldest, []byte("\n")), '\n'))
	zw.Close()
	write := func(name string, data []byte, mod time.Time) {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(filepath.Join(dir, name), mod, mod); err != nil {
			t.Fatal(err)
		}
	}
	write("audit.jsonl.2.gz", gz.Bytes(), at(2))
	write("audit.jsonl.1", append(bytes.Join(middle, []byte("\n")), '\n'), at(26))
	write("audit.jsonl", append(bytes.Join(live, []byte("\n")), '\n'), at(51))
	write("audit.jsonl.bak", []byte("not a rotated file\n"), at(51))

	d := &daemon{cfg: &config.Config{Logging: config.Logging{AuditFile: file}, Cluster: config.Cluster{Instance: "solo"}}}
	c := serveAudit(t, d)
	ctx := context.Background()
	get := func(q wire.AuditQuery) wire.AuditEvents {
		t.Helper()
		res, err := c.AuditEvents(ctx, q)
		if err != nil {
			t.Fatalf("%+v: %v", q, err)
		}
		if res.From != wire.AuditFromFiles {
			t.Errorf("from %q, want files", res.From)
		}
		return res
	}
	res := get(wire.AuditQuery{Since: t0, Until: at(72)})
	all := append(append(append([][]byte{}, oldest...), middle...), live...)
	if got := rawJoined(res); got != joined(all) {
		t.Errorf("every file, oldest first:\n%s\nwant\n%s", got, joined(all))
	}
	if want := []string{filepath.Join(dir, "audit.jsonl.2.gz"), filepath.Join(dir, "audit.jsonl.1"), file}; strings.Join(res.Files, " ") != strings.Join(want, " ") {
		t.Errorf("files %v, want %v", res.Files, want)
	}
	res = get(wire.AuditQuery{Since: at(20), Until: at(72), User: "bob"})
	if got, want := rawJoined(res), joined([][]byte{middle[1], live[1]}); got != want {
		t.Errorf("bob since 20h:\n%s\nwant\n%s", got, want)
	}
	if len(res.Files) != 2 {
		t.Errorf("the file last written before the range was read: %v", res.Files)
	}
	res = get(wire.AuditQuery{Since: t0, Until: at(72), Instances: []string{"solo"}, Events: []string{audit.SigninFailed, audit.SigninSucceeded}, Limit: 1})
	if got := rawJoined(res); got != string(oldest[1]) || !res.More || !res.Next.Equal(at(50)) {
		t.Errorf("limit 1: %s, more %v from %v", got, res.More, res.Next)
	}
	if res := get(wire.AuditQuery{Since: t0, Until: at(72), Instances: []string{"other"}}); len(res.Lines) != 0 {
		t.Errorf("another instance's events on a single host: %d", len(res.Lines))
	}
	if _, err := c.AuditEvents(ctx, wire.AuditQuery{Since: at(5), Until: at(1)}); err == nil || !strings.Contains(err.Error(), "ends") {
		t.Errorf("a range that ends before it starts: %v", err)
	}
	if _, err := c.AuditEvents(ctx, wire.AuditQuery{Since: at(1), Until: at(5), Limit: 10001}); err == nil || !strings.Contains(err.Error(), "limit") {
		t.Errorf("limit 10001: %v", err)
	}
}

// TestAuditEventsFromDatabase: in a cluster, `audit events` on one
// instance reads what both shipped; with the database down it says so,
// and --local still reads this instance's file.
func TestAuditEventsFromDatabase(t *testing.T) {
	s := pgtest.Start(t)
	name := s.NewDatabase(t)
	ctx := context.Background()
	now := time.Now()
	var lines [2][][]byte
	for i, inst := range []string{"a", "b"} {
		db := pgstoretest.On(t, s, []string{"127.0.0.1", "::1"}[i], name).(*pgstore.DB)
		dest, err := auditship.NewDatabase(auditship.DatabaseConfig{Table: db, Writer: inst})
		if err != nil {
			t.Fatal(err)
		}
		sh := auditship.New(dest)
		sh.Start()
		lines[i], _ = stamped(audit.Zero,
			audit.Event{Time: now.Add(-time.Duration(10-i) * time.Minute), Event: audit.ChainStarted, Actor: audit.ActorDaemon, Instance: inst},
			audit.Event{Time: now.Add(-time.Duration(5-i) * time.Minute), Event: audit.SessionStart, Actor: "alice", User: "alice",
				Source: "192.0.2.10", Target: "vm1", Protocol: "ssh", Session: "s" + inst, Instance: inst})
		sh.Ship(lines[i])
		sh.Close(10 * time.Second) // returns once the lines are in
	}
	file := filepath.Join(t.TempDir(), "audit.jsonl")
	if err := os.WriteFile(file, append(bytes.Join(lines[1], []byte("\n")), '\n'), 0o600); err != nil {
		t.Fatal(err)
	}
	b := pgstoretest.On(t, s, "::1", name).(*pgstore.DB)
	d := &daemon{state: pgState{b}, cfg: &config.Config{Logging: config.Logging{AuditFile: file}, Cluster: config.Cluster{Instance: "b"}}}
	c := serveAudit(t, d)

	res, err := c.AuditEvents(ctx, wire.AuditQuery{Since: now.Add(-time.Hour), Until: now.Add(time.Minute), Events: []string{audit.SessionStart}})
	if err != nil {
		t.Fatal(err)
	}
	if want := joined([][]byte{lines[0][1], lines[1][1]}); res.From != wire.AuditFromDatabase || rawJoined(res) != want {
		t.Errorf("b reads a's session_start and its own: from %s\n%s\nwant\n%s", res.From, rawJoined(res), want)
	}

	s.Stop(t)
	_, err = c.AuditEvents(ctx, wire.AuditQuery{Since: now.Add(-time.Hour), Until: now.Add(time.Minute)})
	if err == nil || !strings.Contains(err.Error(), "cannot be read now") || !strings.Contains(err.Error(), "--local") {
		t.Errorf("database down: %v", err)
	}
	res, err = c.AuditEvents(ctx, wire.AuditQuery{Since: now.Add(-time.Hour), Until: now.Add(time.Minute), Local: true})
	if err != nil || res.From != wire.AuditFromFiles || rawJoined(res) != joined(lines[1]) {
		t.Errorf("--local while the database is down: %v, from %s\n%s", err, res.From, rawJoined(res))
	}
	s.Restart(t)
}
