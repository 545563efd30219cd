package daemon

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/bastiond/bastiond/internal/audit"
	"github.com/bastiond/bastiond/internal/pgtest"
	"github.com/bastiond/bastiond/internal/store/pgstore"
	"github.com/bastiond/bastiond/internal/store/pgstore/pgstoretest"
)

// TestCatchUpAuditCopy: a starting instance finds, in its file and the
// rotated one before, the lines written after the last one the database
// got from it, and nothing when it cannot tell which.
func TestCatchUpAuditCopy(t *testing.T) {
	s := pgtest.Start(t)
	name := s.NewDatabase(t)
	db := pgstoretest.On(t, s, "127.0.0.1", name).(*pgstore.DB)
	ctx := context.Background()
	t0 := time.Now().Add(-time.Hour)
	events := make([]audit.Event, 15)
	for i := range events {
		events[i] = audit.Event{Time: t0.Add(time.Duration(i) * time.Second), Event: audit.SigninFailed, User: "mallory", Instance: "a"}
	}
	lines, _ := stamped(audit.Zero, events...)
	dir := t.TempDir()
	file := filepath.Join(dir, "audit.jsonl")
	write := func(name string, ls [][]byte, tail string, mod time.Time) {
		data := append(bytes.Join(ls, []byte("\n")), '\n')
		if err := os.WriteFile(filepath.Join(dir, name), append(data, tail...), 0o600); err != nil {
			t.Fatal(err)
		}
		os.Chtimes(filepath.Join(dir, name), mod, mod)
	}
	write("audit.jsonl.1", lines[:5], "", t0)
	write("audit.jsonl", lines[5:], `{"v":2,"time":"torn`, t0.Add(time.Minute))

	if got, err := catchUpAuditCopy(ctx, db, file, "a", 100); err != nil || got != nil {
		t.Fatalf("nothing of a in the database: %d lines, %v; want none", len(got), err)
	}
	if _, _, err := db.AddAudit(ctx, "a", lines[:3]); err != nil {
		t.Fatal(err)
	}
	other, _ := stamped(audit.Zero, audit.Event{Event: audit.SigninFailed, Instance: "b"})
	if _, _, err := db.AddAudit(ctx, "b", other); err != nil { // copied later, by another instance
		t.Fatal(err)
	}
	got, err := catchUpAuditCopy(ctx, db, file, "a", 100)
	if err != nil || joined(got) != joined(lines[3:]) {
		t.Fatalf("after line 3 of 15, across the rotation: %d lines, %v; want 12", len(got), err)
	}
	if got, _ := catchUpAuditCopy(ctx, db, file, "a", 5); joined(got) != joined(lines[10:]) {
		t.Errorf("limit 5: %d lines, want the newest 5", len(got))
	}
	if _, _, err := db.AddAudit(ctx, "a", lines[3:]); err != nil {
		t.Fatal(err)
	}
	if got, err := catchUpAuditCopy(ctx, db, file, "a", 100); err != nil || len(got) != 0 {
		t.Errorf("all copied: %d lines, %v", len(got), err)
	}
	// The last line copied is in no file read: nothing.
	gone, _ := stamped(audit.HashLine(lines[14]), audit.Event{Event: audit.SigninFailed, Instance: "a"})
	if _, _, err := db.AddAudit(ctx, "a", gone); err != nil {
		t.Fatal(err)
	}
	if got, err := catchUpAuditCopy(ctx, db, file, "a", 100); err != nil || got != nil {
		t.Errorf("the last line copied is not in the files: %d lines, %v", len(got), err)
	}
	s.Stop(t)
	if _, err := catchUpAuditCopy(ctx, db, file, "a", 100); err == nil {
		t.Error("the database down: no error")
	}
	s.Restart(t)
}
