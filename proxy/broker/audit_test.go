package broker

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap"
)

func TestCrashRecovery(t *testing.T) {
	srv := listen(t, "tcp4", "127.0.0.1:0")
	cfg := Config{Targets: []Target{targetAt("vm1", srv.addrPort())}}
	e := newEnv(t, cfg)
	var ids []string
	for range 3 {
		s, u, _ := relayed(t, e, srv, "alice", clientTCP)
		target := srv.next(t)
		u.Write([]byte("twelve bytes"))
		io.ReadFull(target, make([]byte, 12))
		ids = append(ids, s.ID())
	}
	e.b.saveCounts(e.b.list()) // what the sweeper does every 10 s
	// The writer commits in order: once a later op is durable, so are the
	// counts.
	if err := e.b.audit.submit(auditOp{}); err != nil {
		t.Fatal(err)
	}
	// The third session's end record reached the file, but not its delete.
	e.b.mu.Lock()
	s := e.b.sessions[ids[2]]
	e.b.mu.Unlock()
	end := endOf(startRecord(s.info), time.Now(), 12, 0, ReasonClientClosed, true)
	if err := e.b.audit.submit(auditOp{lines: [][]byte{marshalLine(end)}}); err != nil {
		t.Fatal(err)
	}

	// A crash: nothing else is written.
	e.b.crashForTest()
	e.db.Close()

	e.open(cfg)
	if n := e.b.Recovered(); n != 2 {
		t.Errorf("recovered %d, want 2", n)
	}
	for _, id := range ids[:2] {
		r := e.record(id, "session_end")
		if r.Reason != ReasonAbandoned || *r.BytesExact || *r.BytesUp != 12 || *r.BytesDown != 0 || r.User != "alice" ||
			r.Start == nil || r.Address != srv.addrPort().String() || r.Via != "quic" {
			t.Errorf("abandoned record: %+v", r)
		}
	}
	ends := 0
	for _, r := range e.records() {
		if r.Session == ids[2] && r.Event == "session_end" {
			ends++
		}
	}
	if ends != 1 {
		t.Errorf("%d end records for the session that had one, want 1", ends)
	}
	if keys := e.liveKeys(); len(keys) != 0 {
		t.Errorf("live entries left after recovery: %v", keys)
	}
	if names := journals(t, e.live); len(names) != 1 {
		t.Errorf("live journals after recovery: %v, want the new broker's only", names)
	}
	// Nothing is recovered twice.
	e.b.Close(context.Background())
	e.db.Close()
	e.open(cfg)
	if n := e.b.Recovered(); n != 0 {
		t.Errorf("second start recovered %d", n)
	}
}

// TestRecoveryWithoutCounts is a crash before the sweeper ever saved the
// counts: the record says 0, not exact.
func TestRecoveryWithoutCounts(t *testing.T) {
	srv := listen(t, "tcp6", "[::1]:0")
	cfg := Config{Targets: []Target{targetAt("vm1", srv.addrPort())}}
	e := newEnv(t, cfg)
	s, err := e.b.Open(context.Background(), tunnelTo("bob", "vm1", srv.addrPort().Port()))
	if err != nil {
		t.Fatal(err)
	}
	srv.next(t)
	s.AddUp(5)
	e.b.crashForTest()
	e.db.Close()
	e.open(cfg)
	if e.b.Recovered() != 1 {
		t.Fatalf("recovered %d", e.b.Recovered())
	}
	r := e.record(s.ID(), "session_end")
	if r.Reason != ReasonAbandoned || *r.BytesExact || *r.BytesUp != 0 || r.User != "bob" {
		t.Errorf("abandoned record: %+v", r)
	}
}

func TestAuditFileReopened(t *testing.T) {
	srv := listen(t, "tcp4", "127.0.0.1:0")
	for _, c := range []struct {
		name string
		move func(path string) error
	}{
		{"renamed", func(path string) error { return os.Rename(path, path+".1") }},
		{"removed", os.Remove},
	} {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t, Config{Targets: []Target{targetAt("vm1", srv.addrPort())}})
			s1, err := e.b.Open(context.Background(), tunnelTo("alice", "vm1", srv.addrPort().Port()))
			if err != nil {
				t.Fatal(err)
			}
			s1.End("test")
			if err := c.move(e.audit); err != nil {
				t.Fatal(err)
			}
			time.Sleep(1100 * time.Millisecond) // the writer compares at most once a second
			s2, err := e.b.Open(context.Background(), tunnelTo("alice", "vm1", srv.addrPort().Port()))
			if err != nil {
				t.Fatal(err)
			}
			s2.End("test")
			recs := e.records()
			if len(recs) != 2 || recs[0].Session != s2.ID() || recs[1].Session != s2.ID() {
				t.Errorf("the new file holds %+v", recs)
			}
			st, err := os.Stat(e.audit)
			if err != nil || st.Mode().Perm() != 0o640 {
				t.Errorf("audit file mode: %v %v", st.Mode(), err)
			}
		})
	}
}

func TestAuditFileCreated(t *testing.T) {
	srv := listen(t, "tcp4", "127.0.0.1:0")
	e := newEnv(t, Config{Targets: []Target{targetAt("vm1", srv.addrPort())}})
	st, err := os.Stat(filepath.Dir(e.audit))
	if err != nil || st.Mode().Perm() != 0o750 {
		t.Errorf("audit directory: %v %v", st.Mode(), err)
	}
	s, err := e.b.Open(context.Background(), Request{User: "alice", Client: netip.MustParseAddrPort("192.0.2.1:4000"), Target: "vm1", Protocol: Tunnel,
		Port: srv.addrPort().Port(), Via: "websocket"})
	if err != nil {
		t.Fatal(err)
	}
	s.End(ReasonKilled + "by root: maintenance")
	data, err := os.ReadFile(e.audit)
	if err != nil {
		t.Fatal(err)
	}
	lines := bytes.Split(bytes.TrimSuffix(data, []byte("\n")), []byte("\n"))
	if len(lines) != 3 {
		t.Fatalf("%d lines", len(lines))
	}
	lines = lines[1:] // after audit_chain_started
	// The exact keys: a reader of the file depends on them.
	keys := func(line []byte) string {
		var m map[string]any
		if err := json.Unmarshal(line, &m); err != nil {
			t.Fatal(err)
		}
		var ks []string
		for _, k := range []string{"v", "time", "event", "actor", "source", "session", "user", "client", "target", "address", "protocol", "port", "login",
			"via", "token", "roles", "start", "end", "duration_ms", "bytes_up", "bytes_down", "reason", "bytes_exact", "prev"} {
			if _, ok := m[k]; ok {
				ks = append(ks, k)
			}
		}
		if len(ks) != len(m) {
			t.Errorf("unexpected keys in %s", line)
		}
		return strings.Join(ks, ",")
	}
	if k := keys(lines[0]); k != "v,time,event,actor,source,session,user,client,target,address,protocol,port,via,prev" {
		t.Errorf("start keys %s", k)
	}
	if k := keys(lines[1]); k != "v,time,event,actor,source,session,user,client,target,address,protocol,port,via,start,end,duration_ms,bytes_up,bytes_down,reason,bytes_exact,prev" {
		t.Errorf("end keys %s", k)
	}
	if !bytes.Contains(lines[0], []byte(`"v":2`)) || !bytes.Contains(lines[1], []byte(`"reason":"killed: by root: maintenance"`)) ||
		!bytes.Contains(lines[1], []byte(`"bytes_exact":true`)) || !bytes.Contains(lines[0], []byte(`"client":"192.0.2.1:4000"`)) {
		t.Errorf("records:\n%s", data)
	}
}

// TestNoSessionWithoutItsRecord: when the start record cannot be written,
// the session is refused, its target conn closed and its units given back;
// its live entry stays until its records (start, and an end saying why) can
// be written, and with the file never writable Close leaves it to the next
// start.
func TestNoSessionWithoutItsRecord(t *testing.T) {
	if _, err := os.Stat("/dev/full"); err != nil {
		t.Skip("no /dev/full")
	}
	srv := listen(t, "tcp4", "127.0.0.1:0")
	cfg := Config{Logger: zap.NewNop(), Targets: []Target{targetAt("vm1", srv.addrPort())}}
	live := filepath.Join(t.TempDir(), "live")
	// Every write to /dev/full fails with ENOSPC.
	b, err := New(cfg, Options{LiveDir: live, AuditFile: "/dev/full", tuning: quick()})
	if err != nil {
		t.Fatal(err)
	}
	_, err = b.Open(context.Background(), tunnelTo("alice", "vm1", srv.addrPort().Port()))
	wantKind(t, err, KindAuditUnavailable, "audit log unwritable (/dev/full: no space left on device): new sessions are refused until it can be written")
	if !errors.Is(err, ErrAuditUnavailable) || !errors.Is(err, syscall.ENOSPC) {
		t.Errorf("%v is not ErrAuditUnavailable and ENOSPC", err)
	}
	target := srv.next(t)
	target.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := target.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Errorf("the target conn was not closed: %d, %v", n, err)
	}
	if b.Live() != 0 || b.used != 0 || len(b.perUser) != 0 {
		t.Errorf("a refused session holds: live %d, units %d", b.Live(), b.used)
	}
	if keys := liveKeys(t, b); len(keys) != 1 {
		t.Errorf("live entries %v, want the refused session's until its records are written", keys)
	}
	b.Close(context.Background())
	if names := journals(t, live); len(names) != 1 {
		t.Fatalf("live journals after Close: %v, want the one kept", names)
	}

	audit := filepath.Join(t.TempDir(), "audit.jsonl")
	b2, err := New(cfg, Options{LiveDir: live, AuditFile: audit, tuning: quick()})
	if err != nil {
		t.Fatal(err)
	}
	defer b2.Close(context.Background())
	if b2.Recovered() != 1 {
		t.Errorf("recovered %d, want the refused session", b2.Recovered())
	}
	if recs := readRecords(t, audit); len(recs) != 1 || recs[0].Reason != ReasonAbandoned || recs[0].User != "alice" {
		t.Errorf("records %+v", recs)
	}
}

func TestEndedInTail(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "audit.jsonl")
	var buf bytes.Buffer
	buf.WriteString(`{"event":"session_end","session":"old"}` + "\n")
	buf.Write(bytes.Repeat([]byte("x"), 2<<20)) // pushes "old" out of the tail
	buf.WriteString("\n" + `{"event":"session_start","session":"s1"}` + "\n")
	buf.WriteString(`{"event":"session_end","session":"s2"}` + "\n")
	buf.WriteString(`{"event":"session_end","sess`) // a torn last line
	if err := os.WriteFile(path, buf.Bytes(), 0o640); err != nil {
		t.Fatal(err)
	}
	a := &auditLog{path: path}
	got := a.endedInTail(1 << 20)
	if !got["s2"] || got["s1"] || got["old"] || len(got) != 1 {
		t.Errorf("ended in tail: %v", got)
	}
}
