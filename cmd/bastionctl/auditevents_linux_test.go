//go:build linux

package main

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/bastiond/bastiond/api/admin"
	"github.com/bastiond/bastiond/daemon/adminapi"
	"github.com/bastiond/bastiond/internal/audit"
)

// fakeTrail answers audit queries with lines, and keeps the last query.
type fakeTrail struct {
	mu    sync.Mutex
	q     audit.Query
	local bool
	lines []string
	err   error
}

func (f *fakeTrail) Events(_ context.Context, q audit.Query, local bool) (admin.AuditEvents, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.q, f.local = q, local
	return admin.AuditEvents{From: admin.AuditFromDatabase, Lines: f.lines}, f.err
}

func auditServer(t *testing.T, f *fakeTrail) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "admin.sock")
	ln, err := adminapi.Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := adminapi.NewServer(adminapi.Config{Logger: zaptest.NewLogger(t), Status: func() admin.Status { return admin.Status{} },
		AuditEvents: f})
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Shutdown(context.Background()) })
	return path
}

// TestAuditEventsCommand: the flags reach the daemon as the query they
// say, --json prints the lines exactly, and the daemon's errors are told.
func TestAuditEventsCommand(t *testing.T) {
	line := `{"v":2,"time":"2026-12-07T04:30:00Z","event":"session_start","actor":"alice","source":"2001:db8::7","instance":"b","user":"alice","prev":""}`
	f := &fakeTrail{lines: []string{line}}
	socket := auditServer(t, f)
	out, errOut, err := run(t, socket, "", "audit", "events", "--since", "2026-12-07T04:00:00Z", "--until", "2026-12-07T06:00:00+01:00",
		"--instance", "a,b", "--instance", "c", "--event", "session_start", "--user", "alice", "--limit", "5", "--json")
	if err != nil {
		t.Fatal(err)
	}
	if out != line+"\n" {
		t.Errorf("--json: %q, want the line as written", out)
	}
	if errOut != "1 events, from the cluster's database\n" {
		t.Errorf("stderr %q", errOut)
	}
	q := f.q
	if !q.Since.Equal(time.Date(2026, 12, 7, 4, 0, 0, 0, time.UTC)) || !q.Until.Equal(time.Date(2026, 12, 7, 5, 0, 0, 0, time.UTC)) ||
		fmt.Sprint(q.Instances) != "[a b c]" || fmt.Sprint(q.Events) != "[session_start]" || q.User != "alice" || q.Limit != 5 || f.local {
		t.Errorf("the daemon got %+v (local %v)", q, f.local)
	}

	out, _, err = run(t, socket, "", "audit", "events", "--local")
	if err != nil || !strings.Contains(out, "session_start") || !f.local || q.Limit != 5 {
		t.Errorf("the table: %q, %v (local %v)", out, err, f.local)
	}
	if f.q.Limit != audit.DefaultLimit || f.q.Until.Sub(f.q.Since) != time.Hour {
		t.Errorf("defaults: %+v, want the last hour, limit %d", f.q, audit.DefaultLimit)
	}

	f.err = fmt.Errorf("%w: pgstore: read audit lines: connection refused", adminapi.ErrAuditUnavailable)
	if _, _, err := run(t, socket, "", "audit", "events"); err == nil || !strings.Contains(err.Error(), "audit events: the audit lines cannot be read now: pgstore") {
		t.Errorf("database down: %v", err)
	}
	if _, _, err := run(t, socket, "", "audit", "events", "--since", "1h", "--until", "2h"); err == nil || !strings.Contains(err.Error(), "range is empty") {
		t.Errorf("an empty range: %v", err)
	}
	out, code := runCtlOn(t, "darwin", "--socket", socket, "audit", "events")
	if code != 1 || !strings.Contains(out, "admin commands run on the bastion host") {
		t.Errorf("audit events on macOS: exit %d, %q", code, out)
	}
}
