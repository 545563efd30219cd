package daemon

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/bastiond/bastiond/api/adminclient"
	"github.com/bastiond/bastiond/daemon/adminapi"
	"github.com/bastiond/bastiond/daemon/config"
	"github.com/bastiond/bastiond/internal/audit"
	"github.com/bastiond/bastiond/proxy/recording"
)

// TestRecordingsAPI: list, export and verify over the admin socket, with
// the recordings directory and an audit trail holding the sessions' end
// records.
func TestRecordingsAPI(t *testing.T) {
	log := zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel))
	dir := t.TempDir()
	cfg := &config.Config{StateDir: dir}
	cfg.Logging.AuditFile = filepath.Join(dir, "audit.jsonl")
	rdir := defaultRecordDir(cfg)
	var mu sync.Mutex
	var events []audit.Event
	tr := newTrail(log)
	t.Cleanup(tr.close)
	tr.attach(audit.SinkFunc(func(e audit.Event) { mu.Lock(); events = append(events, e); mu.Unlock() }))
	d := &daemon{log: log, cfg: cfg, trail: tr, recordDir: rdir}

	record := func(id, text string) *recording.Recorder {
		r, err := recording.Create(rdir, id, recording.Header{Width: 80, Height: 24, Title: "lab@vm1 by alice"})
		if err != nil {
			t.Fatal(err)
		}
		r.Output([]byte(text))
		if err := r.Close(); err != nil {
			t.Fatal(err)
		}
		return r
	}
	good := record("aaaaaaaaaaa1", "good output")
	changed := record("aaaaaaaaaaa2", "changed output")
	gone := record("aaaaaaaaaaa3", "gone")
	removed := record("aaaaaaaaaaa4", "removed")
	os.WriteFile(filepath.Join(rdir, "aaaaaaaaaaa5.cast"), []byte(`{"version":2,"width":80,"height":24,"timestamp":1700000000}`+"\n"), 0o600)
	start := time.Date(2026, 12, 6, 9, 0, 0, 0, time.UTC)
	var trail bytes.Buffer
	for _, r := range []*recording.Recorder{good, changed, gone, removed} {
		id := strings.TrimSuffix(filepath.Base(r.Path()), ".cast.gz")
		end := start.Add(75 * time.Second)
		dur := int64(75000)
		trail.Write(audit.Marshal(audit.Event{Event: audit.SessionStart, Time: start, Actor: "alice", Source: "2001:db8::10",
			Session: id, User: "alice", Target: "vm1", Login: "lab", Protocol: "ssh", Recording: r.Path()}))
		trail.WriteString("\n")
		trail.Write(audit.Marshal(audit.Event{Event: audit.SessionEnd, Time: end, Actor: "alice", Source: "2001:db8::10",
			Session: id, User: "alice", Target: "vm1", Login: "lab", Protocol: "ssh", Start: &start, End: &end, DurationMS: &dur,
			Recording: r.Path(), RecordingSHA256: r.SHA256()}))
		trail.WriteString("\n")
	}
	trail.Write(audit.Marshal(audit.Event{Event: audit.RecordingRemoved, Actor: audit.ActorDaemon, Source: audit.SourceLocal,
		Session: "aaaaaaaaaaa4", Recording: removed.Path(), Reason: "age"}))
	trail.WriteString("\n")
	if err := os.WriteFile(cfg.Logging.AuditFile, trail.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	os.Remove(gone.Path())
	os.Remove(removed.Path())
	f, _ := os.OpenFile(changed.Path(), os.O_WRONLY|os.O_APPEND, 0)
	f.Write([]byte("tampered"))
	f.Close()

	path := filepath.Join(dir, "admin.sock")
	ln, err := adminapi.Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := adminapi.NewServer(adminapi.Config{Logger: log, Status: func() adminapi.Status { return adminapi.Status{} },
		Recordings: recordingsAPI{d}})
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Shutdown(context.Background()) })
	c := adminclient.NewClient(path)
	ctx := context.Background()

	list, err := c.Recordings(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 3 {
		t.Fatalf("list: %+v", list)
	}
	for _, r := range list {
		switch r.ID {
		case "aaaaaaaaaaa1", "aaaaaaaaaaa2":
			if r.User != "alice" || r.Target != "vm1" || r.Login != "lab" || !r.Start.Equal(start) || r.Duration != 75*time.Second ||
				r.Protocol != "ssh" || !r.Compressed || r.Size == 0 {
				t.Errorf("listed %+v", r)
			}
		case "aaaaaaaaaaa5":
			if r.User != "" || r.Compressed || r.Start.Unix() != 1700000000 {
				t.Errorf("listed %+v", r)
			}
		default:
			t.Errorf("listed %+v", r)
		}
	}

	var out bytes.Buffer
	if _, err := c.ExportRecording(ctx, "aaaaaaaaaaa1", false, &out); err != nil || !strings.Contains(out.String(), "good output") ||
		!strings.HasPrefix(out.String(), `{"version":2`) {
		t.Errorf("export: %q %v", out.String(), err)
	}
	out.Reset()
	want, _ := os.ReadFile(good.Path())
	if _, err := c.ExportRecording(ctx, "aaaaaaaaaaa1", true, &out); err != nil || !bytes.Equal(out.Bytes(), want) {
		t.Errorf("raw export: %d bytes, want %d (%v)", out.Len(), len(want), err)
	}
	if _, err := c.ExportRecording(ctx, "nope", false, &out); err == nil || !strings.Contains(err.Error(), `no recording "nope"`) {
		t.Errorf("export of an unknown recording: %v", err)
	}
	tr.limiter.Flush()
	mu.Lock()
	if len(events) != 2 || events[0].Event != audit.RecordingExported || events[0].Source != audit.SourceLocal ||
		events[0].Session != "aaaaaaaaaaa1" || events[0].Detail != "decompressed" || events[1].Detail != "raw" || events[0].Actor == "" {
		t.Errorf("events %+v", events)
	}
	t.Logf("example line: %s", audit.Marshal(events[0]))
	mu.Unlock()

	checks, err := c.VerifyRecordings(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, ch := range checks {
		got[ch.ID] = ch.Outcome
	}
	wantChecks := map[string]string{"aaaaaaaaaaa1": adminapi.CheckOK, "aaaaaaaaaaa2": adminapi.CheckMismatch,
		"aaaaaaaaaaa3": adminapi.CheckMissing, "aaaaaaaaaaa4": adminapi.CheckRemoved, "aaaaaaaaaaa5": adminapi.CheckNoRecord}
	if len(got) != len(wantChecks) {
		t.Errorf("checks %+v", checks)
	}
	for id, w := range wantChecks {
		if got[id] != w {
			t.Errorf("%s: %q, want %q", id, got[id], w)
		}
	}
	one, err := c.VerifyRecordings(ctx, []string{"aaaaaaaaaaa1"})
	if err != nil || len(one) != 1 || one[0].Outcome != adminapi.CheckOK || one[0].Got != good.SHA256() {
		t.Errorf("verify one: %+v %v", one, err)
	}
}

// TestExportLive: a recording still being written exports up to its
// last flush.
func TestExportLive(t *testing.T) {
	log := zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel))
	dir := t.TempDir()
	cfg := &config.Config{StateDir: dir}
	cfg.Logging.AuditFile = filepath.Join(dir, "audit.jsonl")
	tr := newTrail(log)
	t.Cleanup(tr.close)
	tr.attach(audit.Discard)
	d := &daemon{log: log, cfg: cfg, trail: tr, recordDir: defaultRecordDir(cfg)}
	r, err := recording.Create(d.recordDir, "aaaaaaaaaaa1", recording.Header{Width: 80, Height: 24})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	r.Output([]byte("live output"))
	time.Sleep(recording.FlushInterval + 500*time.Millisecond)
	rc, _, err := recordingsAPI{d}.Export("aaaaaaaaaaa1", "root", false)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil || !strings.Contains(string(b), "live output") {
		t.Errorf("export of a live recording: %q %v", b, err)
	}
}
