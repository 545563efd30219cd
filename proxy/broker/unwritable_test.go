package broker

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/bastiond/bastiond/internal/audit"
)

// auditLines reads the audit file leniently: the records, and how many
// lines are not records (what failed writes left).
func auditLines(t testing.TB, path string) (recs []record, torn int) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var r record
		if json.Unmarshal(sc.Bytes(), &r) != nil {
			torn++
			continue
		}
		if r.Event != audit.ChainStarted {
			recs = append(recs, r)
		}
	}
	return recs, torn
}

// countRecords counts the records of session id by event.
func countRecords(recs []record, id string) map[string]int {
	n := map[string]int{}
	for _, r := range recs {
		if r.Session == id {
			n[r.Event]++
		}
	}
	return n
}

func waitWritable(t testing.TB, b *Broker) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if metricValue(t, b, "bastiond_audit_writable", "") == 1 {
			return
		}
	}
	t.Fatal("the audit file was not written again")
}

// TestAuditUnwritable fails the audit file's writes or syncs while two
// sessions are live: new sessions are refused and said why, the live ones
// go on, their end records wait and are written once each when the fault
// clears, and sessions are admitted again.
func TestAuditUnwritable(t *testing.T) {
	for _, c := range []struct {
		name    string
		write   error
		partial bool
		sync    error
		cause   string
	}{
		{"disk full", syscall.ENOSPC, false, nil, "no space left on device"},
		{"torn write", syscall.ENOSPC, true, nil, "no space left on device"},
		{"failed fsync", nil, false, syscall.EIO, "input/output error"},
		{"read-only", syscall.EROFS, false, nil, "read-only file system"},
	} {
		t.Run(c.name, func(t *testing.T) {
			faults := &auditFaults{}
			srv := listen(t, "tcp4", "127.0.0.1:0")
			core, logs := observer.New(zap.InfoLevel)
			e := newEnvTuned(t, Config{Logger: zap.New(core), Targets: []Target{targetAt("vm1", srv.addrPort())}}, faults.tuning())
			writable := func() float64 { return metricValue(t, e.b, "bastiond_audit_writable", "") }
			open := func() (*Session, error) {
				return e.b.Open(context.Background(), tunnelTo("alice", "vm1", srv.addrPort().Port()))
			}
			s1, u1, done1 := relayed(t, e, srv, "alice", clientTCP)
			t1 := srv.next(t)
			s2, _, done2 := relayed(t, e, srv, "alice", clientOpaque)
			srv.next(t)
			if writable() != 1 {
				t.Errorf("bastiond_audit_writable %v before the fault", writable())
			}

			faults.set(c.write, c.partial, c.sync)
			// The first session to open after the fault finds it: dialled,
			// then refused when its start record fails.
			_, err := open()
			want := "audit log unwritable (" + e.audit + ": " + c.cause + "): new sessions are refused until it can be written"
			wantKind(t, err, KindAuditUnavailable, want)
			if !errors.Is(err, ErrAuditUnavailable) {
				t.Errorf("%v is not ErrAuditUnavailable", err)
			}
			refusedConn := srv.next(t)
			refusedConn.SetReadDeadline(time.Now().Add(5 * time.Second))
			if _, err := refusedConn.Read(make([]byte, 1)); err != io.EOF {
				t.Errorf("the refused session's target conn: %v", err)
			}
			var refused string
			for _, r := range readRecordsLenient(t, e.audit) {
				if r.Event == "session_start" && r.Session != s1.ID() && r.Session != s2.ID() {
					refused = r.Session
				}
			}
			if writable() != 0 {
				t.Errorf("bastiond_audit_writable %v during the fault", writable())
			}
			// The next ones are refused before anything is dialled.
			_, err = open()
			wantKind(t, err, KindAuditUnavailable, want)
			srv.none(t)

			// The live sessions go on, and end without waiting for the file.
			u1.Write([]byte("ping"))
			if _, err := io.ReadFull(t1, make([]byte, 4)); err != nil {
				t.Errorf("a live session stopped relaying: %v", err)
			}
			s1.End(ReasonAccessRevoked)
			waitDone(t, done1)
			s2.End(ReasonAccessRevoked)
			waitDone(t, done2)
			if e.b.Live() != 0 {
				t.Errorf("%d sessions live after End", e.b.Live())
			}
			if keys := e.liveKeys(); len(keys) != 3 {
				t.Errorf("live entries %v, want the three sessions whose end records wait", keys)
			}
			// A few retries while the fault lasts write nothing, unless the
			// failed writes and syncs put lines in the file.
			time.Sleep(3 * e.tn.auditRetry)
			if c.sync == nil && !c.partial {
				recs, _ := auditLines(t, e.audit)
				if n := countRecords(recs, s1.ID())["session_end"]; n != 0 {
					t.Errorf("%d end records written during the fault", n)
				}
			}

			faults.set(nil, false, nil)
			waitWritable(t, e.b)
			recs, torn := auditLines(t, e.audit)
			for _, id := range []string{s1.ID(), s2.ID()} {
				if n := countRecords(recs, id); n["session_start"] != 1 || n["session_end"] != 1 {
					t.Errorf("session %s: records %v, want one start and one end", id, n)
				}
			}
			if refused == "" && c.sync == nil {
				// Its start record did not reach the file: find it now.
				for _, r := range recs {
					if r.Reason == ReasonAuditUnavailable {
						refused = r.Session
					}
				}
			}
			if n := countRecords(recs, refused); n["session_start"] != 1 || n["session_end"] != 1 {
				t.Errorf("refused session %q: records %v, want one start and one end", refused, n)
			}
			for _, r := range recs {
				if r.Event == "session_end" && r.Session == refused && (r.Reason != ReasonAuditUnavailable || *r.BytesUp != 0) {
					t.Errorf("the refused session's end record: %+v", r)
				}
			}
			if torn > 0 {
				// A partial write is cut back: the file holds whole lines.
				t.Errorf("%d lines that are not records", torn)
			}
			if keys := e.liveKeys(); len(keys) != 0 {
				t.Errorf("live entries left: %v", keys)
			}
			again := logs.FilterMessage("audit file writable again").All()
			if len(again) != 1 || again[0].ContextMap()["records"] != int64(4) {
				t.Errorf("logged %v, want one \"audit file writable again\" with 4 records", again)
			}
			if n := metricValue(t, e.b, "bastiond_admission_refusals_total", "audit_unavailable"); n != 2 {
				t.Errorf("%v refusals counted", n)
			}
			if c.sync != nil && faults.opened() < 2 {
				t.Error("the audit file was not reopened after a failed fsync")
			}
			s, err := open()
			if err != nil {
				t.Fatalf("sessions are not admitted again: %v", err)
			}
			srv.next(t)
			s.End("test")
		})
	}
}

// readRecordsLenient is the records of the audit file, skipping what is not
// one, and none if there is no file yet.
func readRecordsLenient(t testing.TB, path string) []record {
	t.Helper()
	if _, err := os.Stat(path); err != nil {
		return nil
	}
	recs, _ := auditLines(t, path)
	return recs
}

// TestCloseWithUnwrittenRecords: what the audit file still refuses at Close
// stays in the live journal, and the next start records it as abandoned.
func TestCloseWithUnwrittenRecords(t *testing.T) {
	faults := &auditFaults{}
	srv := listen(t, "tcp4", "127.0.0.1:0")
	core, logs := observer.New(zap.InfoLevel)
	cfg := Config{Logger: zap.New(core), Targets: []Target{targetAt("vm1", srv.addrPort())}}
	e := newEnvTuned(t, cfg, faults.tuning())
	s, err := e.b.Open(context.Background(), tunnelTo("alice", "vm1", srv.addrPort().Port()))
	if err != nil {
		t.Fatal(err)
	}
	srv.next(t)
	faults.set(syscall.ENOSPC, false, nil)
	s.End(ReasonClientClosed)
	if err := e.b.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if len(logs.FilterMessageSnippet("still unwritable at shutdown").All()) != 1 {
		t.Error("Close did not log the records it could not write")
	}
	if names := journals(t, e.live); len(names) != 1 {
		t.Fatalf("live journals %v, want the one kept", names)
	}
	faults.set(nil, false, nil)
	e.db.Close()
	e.open(cfg)
	if e.b.Recovered() != 1 {
		t.Errorf("recovered %d, want 1", e.b.Recovered())
	}
	n := countRecords(e.records(), s.ID())
	if r := e.record(s.ID(), "session_end"); n["session_end"] != 1 || r.Reason != ReasonAbandoned {
		t.Errorf("records %v, end %+v", n, r)
	}
}

// TestAuditDirReadOnly is a real fault: the audit file is removed and its
// directory is read-only, so the file cannot be made again.
func TestAuditDirReadOnly(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("root ignores directory modes; TestAuditUnwritable injects the faults instead")
	}
	srv := listen(t, "tcp4", "127.0.0.1:0")
	e := newEnv(t, Config{Targets: []Target{targetAt("vm1", srv.addrPort())}})
	s, err := e.b.Open(context.Background(), tunnelTo("alice", "vm1", srv.addrPort().Port()))
	if err != nil {
		t.Fatal(err)
	}
	srv.next(t)
	dir := filepath.Dir(e.audit)
	if err := os.Rename(e.audit, e.audit+".1"); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o500); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Chmod(dir, 0o750) })
	time.Sleep(1100 * time.Millisecond) // the writer compares the file with its path at most once a second
	s.End(ReasonClientClosed)
	_, err = e.b.Open(context.Background(), tunnelTo("alice", "vm1", srv.addrPort().Port()))
	wantKind(t, err, KindAuditUnavailable, "audit log unwritable ("+e.audit+": permission denied)")
	if !strings.Contains(err.Error(), "new sessions are refused until it can be written") || !errors.Is(err, ErrAuditUnavailable) {
		t.Errorf("refusal: %v", err)
	}
	if err := os.Chmod(dir, 0o750); err != nil {
		t.Fatal(err)
	}
	waitWritable(t, e.b)
	if n := countRecords(e.records(), s.ID()); n["session_end"] != 1 || n["session_start"] != 0 {
		t.Errorf("the new file holds %v of the session's records, want its end", n)
	}
	s, err = e.b.Open(context.Background(), tunnelTo("alice", "vm1", srv.addrPort().Port()))
	if err != nil {
		t.Fatalf("sessions are not admitted again: %v", err)
	}
	srv.next(t)
	s.End("test")
}
