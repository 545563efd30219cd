package recording

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/bastiond/bastiond/internal/audit"
	"github.com/bastiond/bastiond/internal/pgtest"
	"github.com/bastiond/bastiond/internal/store"
	"github.com/bastiond/bastiond/internal/store/pgstore/pgstoretest"
)

// The recordings directory a cluster shares: what one instance writes,
// another's retention leaves alone, and the catalog in the shared store
// tells every instance about.

// lockedByAnotherProcess makes another process (util-linux flock(1)) hold
// the writer's lock on path, as an instance writing it would, until the
// returned function is called.
func lockedByAnotherProcess(t *testing.T, path string) (unlock func()) {
	t.Helper()
	if _, err := exec.LookPath("flock"); err != nil {
		t.Skip("flock(1) (util-linux) is not installed")
	}
	cmd := exec.Command("flock", "--exclusive", "--nonblock", path, "sh", "-c", "echo locked; exec cat")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := false
	unlock = func() {
		if done {
			return
		}
		done = true
		stdin.Close() // cat ends, flock(1) exits and its lock goes
		cmd.Wait()
	}
	t.Cleanup(func() {
		if !done {
			cmd.Process.Kill() // by its PID
		}
		unlock()
	})
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || line != "locked\n" {
		t.Fatalf("flock(1) did not take the lock of %s: %q %v", path, line, err)
	}
	return unlock
}

// TestRetentionSparesRecordingsOthersWrite: a recording another process
// writes (it holds the writer's lock) is never removed, for age or size,
// though this process did not write it; once its writer is gone, it is.
func TestRetentionSparesRecordingsOthersWrite(t *testing.T) {
	dir := t.TempDir()
	now := time.Now()
	old := now.Add(-48 * time.Hour)
	live := file(t, dir, "bbbbbbbbbbb1.cast.gz", 100, old)
	done := file(t, dir, "bbbbbbbbbbb2.rdp.gz", 100, old)
	unlock := lockedByAnotherProcess(t, live)
	if !Writing(live) || Writing(done) {
		t.Fatalf("Writing: %v for the locked file, %v for the other; want true, false", Writing(live), Writing(done))
	}
	removed, err := Prune(dir, Limits{Keep: time.Hour, MaxBytes: 1}, now)
	if err != nil {
		t.Fatal(err)
	}
	if len(removed) != 1 || removed[0].ID != "bbbbbbbbbbb2" {
		t.Fatalf("removed %v; want only bbbbbbbbbbb2", removed)
	}
	if _, err := os.Stat(live); err != nil {
		t.Fatalf("the recording being written elsewhere was removed: %v", err)
	}
	unlock()
	if Writing(live) {
		t.Fatal("Writing is still true once its writer is gone")
	}
	removed, err = Prune(dir, Limits{Keep: time.Hour}, now)
	if err != nil || len(removed) != 1 || removed[0].ID != "bbbbbbbbbbb1" {
		t.Fatalf("after its writer ended: removed %v, %v; want bbbbbbbbbbb1", removed, err)
	}
}

// TestRecordersLockTheirFiles: both recorders hold the writer's lock from
// Create to Close, so that another process sees them as being written.
func TestRecordersLockTheirFiles(t *testing.T) {
	dir := t.TempDir()
	ssh, err := Create(dir, "ccccccccccc1", Header{Width: 80, Height: 24})
	if err != nil {
		t.Fatal(err)
	}
	rdp, err := CreateRDP(dir, RDPHeader{Session: "ccccccccccc2", Width: 1024, Height: 768})
	if err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{ssh.Path(), rdp.Path()} {
		if !beingWritten(path) {
			t.Errorf("%s is not locked while being written", path)
		}
		// flock(1) in another process cannot take it either.
		out, err := exec.Command("flock", "--shared", "--nonblock", path, "true").CombinedOutput()
		if err == nil {
			t.Errorf("another process locked %s while it was being written (%s)", path, out)
		}
	}
	ssh.Close()
	rdp.Close()
	for _, path := range []string{ssh.Path(), rdp.Path()} {
		if beingWritten(path) {
			t.Errorf("%s is still locked after Close", path)
		}
	}
}

func TestCheckDir(t *testing.T) {
	base := t.TempDir()
	good := filepath.Join(base, "good")
	os.Mkdir(good, 0o700)
	notDir := filepath.Join(base, "file")
	os.WriteFile(notDir, nil, 0o600)
	if err := CheckDir(good); err != nil {
		t.Fatalf("CheckDir(a writable directory): %v", err)
	}
	if ents, _ := os.ReadDir(good); len(ents) != 0 {
		t.Errorf("CheckDir left %v behind", ents)
	}
	for _, tc := range []struct {
		name, dir, want string
	}{
		{"missing", filepath.Join(base, "not-mounted"), "does not exist"},
		{"not a directory", notDir, "is not a directory"},
		{"read-only", readOnlyDir(t), "is not writable by this process"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := CheckDir(tc.dir)
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), tc.dir) {
				t.Fatalf("CheckDir(%s): %v; want an error naming it and saying %q", tc.dir, err, tc.want)
			}
		})
	}
}

// readOnlyDir is a directory this process cannot write in: a read-only
// tmpfs for root (whom permissions do not stop), mode 0500 for others.
func readOnlyDir(t *testing.T) string {
	dir := t.TempDir()
	if os.Geteuid() != 0 {
		os.Chmod(dir, 0o500)
		t.Cleanup(func() { os.Chmod(dir, 0o700) })
		return dir
	}
	if err := unix.Mount("tmpfs", dir, "tmpfs", unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV, "size=64k"); err != nil {
		t.Skipf("cannot mount a read-only tmpfs for the test: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })
	return dir
}

// instances are two instances' handles on one state store: on PostgreSQL
// two connections, over 127.0.0.1 and ::1; on bbolt one file.
func instances(t *testing.T, backend string) (store.DB, store.DB) {
	if backend == "postgres" {
		s := pgtest.Start(t)
		db := s.NewDatabase(t)
		return pgstoretest.On(t, s, "127.0.0.1", db), pgstoretest.On(t, s, "::1", db)
	}
	db := pgstoretest.Backends[0].Open(t)
	return db, db
}

func TestCatalog(t *testing.T) {
	for _, b := range pgstoretest.Backends {
		t.Run(b.Name, func(t *testing.T) {
			dbA, dbB := instances(t, b.Name)
			a, bb := NewCatalog(dbA), NewCatalog(dbB)
			start := time.Date(2026, 12, 7, 5, 0, 0, 0, time.UTC)
			e := Entry{ID: "ddddddddddd1", Protocol: "ssh", File: "ddddddddddd1.cast.gz", Instance: "bastion-a", User: "alice",
				Target: "vm1", Login: "root", Client: "[2001:db8::7]:50001", Start: start}
			if err := a.Started(e); err != nil {
				t.Fatal(err)
			}
			got, ok, err := bb.Get(e.ID)
			if err != nil || !ok || got != e {
				t.Fatalf("B reads %+v, %v, %v; want %+v", got, ok, err, e)
			}
			end := start.Add(time.Minute)
			if err := a.Closed(e.ID, end, 1234, "ab12", Entry{}); err != nil {
				t.Fatal(err)
			}
			// A close whose start was never entered keeps what it knows.
			if err := a.Closed("ddddddddddd2", end, 10, "cd34", Entry{Protocol: "rdp", File: "ddddddddddd2.rdp.gz", Instance: "bastion-a",
				Client: "192.0.2.10:40000"}); err != nil {
				t.Fatal(err)
			}
			if err := bb.Removed(e.ID, end.Add(time.Hour), "bastion-b", RemovedAge, Entry{}); err != nil {
				t.Fatal(err)
			}
			list, err := bb.List()
			if err != nil || len(list) != 2 {
				t.Fatalf("List: %+v, %v", list, err)
			}
			// The orphan close has no start: it sorts first.
			o, c := list[0], list[1]
			if o.ID != "ddddddddddd2" || o.Protocol != "rdp" || o.SHA256 != "cd34" || o.Size != 10 || !o.End.Equal(end) {
				t.Errorf("the close without a start: %+v", o)
			}
			if c.End != end || c.Size != 1234 || c.SHA256 != "ab12" || c.User != "alice" || c.Instance != "bastion-a" ||
				c.RemovedBy != "bastion-b" || c.RemovedReason != RemovedAge || !c.Removed.Equal(end.Add(time.Hour)) {
				t.Errorf("the closed and removed recording: %+v", c)
			}
			for _, bad := range []Entry{{ID: "../x", File: "x", Instance: "a"}, {ID: "ddddddddddd3", File: "a/b", Instance: "a"},
				{ID: "ddddddddddd3", File: "f"}} {
				if err := a.Started(bad); err == nil {
					t.Errorf("Started(%+v) accepted", bad)
				}
			}
			if _, ok, err := a.Get("no/such"); ok || err != nil {
				t.Errorf("Get of an invalid ID: %v %v", ok, err)
			}
		})
	}
}

func TestLease(t *testing.T) {
	for _, b := range pgstoretest.Backends {
		t.Run(b.Name, func(t *testing.T) {
			dbA, dbB := instances(t, b.Name)
			a, bb := NewCatalog(dbA), NewCatalog(dbB)
			now := time.Date(2026, 12, 7, 5, 0, 0, 0, time.UTC)
			ttl := time.Minute
			steps := []struct {
				who  *Catalog
				name string
				at   time.Duration
				want bool
			}{
				{a, "a", 0, true},                  // free: A takes it
				{bb, "b", 30 * time.Second, false}, // A's
				{a, "a", 50 * time.Second, true},   // A renews, until 1m50s
				{bb, "b", 100 * time.Second, false},
				{bb, "b", 111 * time.Second, true}, // expired: B takes it
				{a, "a", 112 * time.Second, false},
			}
			for i, s := range steps {
				got, err := s.who.Lease("test", s.name, now.Add(s.at), ttl)
				if err != nil || got != s.want {
					t.Fatalf("step %d: %s at %s: %v, %v; want %v", i, s.name, s.at, got, err, s.want)
				}
			}
			// Released, it goes at once; another's release changes nothing.
			if err := a.Release("test", "a"); err != nil {
				t.Fatal(err)
			}
			if ok, _ := a.Lease("test", "a", now.Add(113*time.Second), ttl); ok {
				t.Fatal("A's release took B's lease")
			}
			if err := bb.Release("test", "b"); err != nil {
				t.Fatal(err)
			}
			if ok, err := a.Lease("test", "a", now.Add(114*time.Second), ttl); !ok || err != nil {
				t.Fatalf("after B's release, A: %v %v", ok, err)
			}
		})
	}
}

// TestSharedRetention: two instances' retention over one directory and one
// state store: one removes, the other skips; what is removed is an audit
// event on the remover's trail and marked in the catalog; a recording the
// other instance is writing stays.
func TestSharedRetention(t *testing.T) {
	for _, b := range pgstoretest.Backends {
		t.Run(b.Name, func(t *testing.T) {
			dbA, dbB := instances(t, b.Name)
			dir := t.TempDir()
			now := time.Now()
			old := now.Add(-48 * time.Hour)
			file(t, dir, "eeeeeeeeeee1.cast.gz", 10, old)
			file(t, dir, "eeeeeeeeeee2.rdp.gz", 10, old)
			live := file(t, dir, "eeeeeeeeeee3.cast.gz", 10, old)
			lockedByAnotherProcess(t, live)
			limits := Limits{Keep: time.Hour}
			var trailA, trailB events
			ra := NewRetention(dir, limits, &trailA, zap.NewNop())
			ra.Share(NewCatalog(dbA), "bastion-a")
			rb := NewRetention(dir, limits, &trailB, zap.NewNop())
			rb.Share(NewCatalog(dbB), "bastion-b")
			gotA := ra.Pass(now)
			gotB := rb.Pass(now)
			if len(gotA) != 2 || len(gotB) != 0 {
				t.Fatalf("A removed %v, B %v; want A both finished recordings and B nothing", gotA, gotB)
			}
			if n := len(trailA.Events()); n != 2 {
				t.Errorf("A's trail has %d events, want 2 recording_removed", n)
			}
			if n := len(trailB.Events()); n != 0 {
				t.Errorf("B's trail has %d events, want none", n)
			}
			if _, err := os.Stat(live); err != nil {
				t.Errorf("the recording another instance writes was removed: %v", err)
			}
			list, err := NewCatalog(dbB).List()
			if err != nil || len(list) != 2 {
				t.Fatalf("catalog: %+v %v", list, err)
			}
			for _, e := range list {
				if e.RemovedBy != "bastion-a" || e.RemovedReason != RemovedAge || e.Removed.IsZero() {
					t.Errorf("catalog entry %+v: want removed by bastion-a for age", e)
				}
			}
			// A stops (Run releases its lease): B takes over at its next pass.
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- ra.Run(ctx) }()
			cancel()
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			file(t, dir, "eeeeeeeeeee4.cast.gz", 10, old)
			if got := rb.Pass(now.Add(time.Second)); len(got) != 1 || got[0].ID != "eeeeeeeeeee4" {
				t.Fatalf("B after A stopped removed %v; want eeeeeeeeeee4", got)
			}
		})
	}
}

// events collects a trail's events.
type events struct {
	mu   sync.Mutex
	list []audit.Event
}

func (e *events) Audit(ev audit.Event) {
	e.mu.Lock()
	e.list = append(e.list, ev)
	e.mu.Unlock()
}

func (e *events) Events() []audit.Event {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]audit.Event(nil), e.list...)
}
