package broker

import (
	"context"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.etcd.io/bbolt"
	"go.uber.org/zap"
)

// newBroker is a broker for a test that runs several over the same
// directories, as processes do during an upgrade. The test's end closes it,
// ending what is still open.
func newBroker(t testing.TB, cfg Config, opt Options) *Broker {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	b, err := New(cfg, opt)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		b.Close(ctx)
	})
	return b
}

func sharedDirs(t testing.TB) Options {
	dir := t.TempDir()
	return Options{LiveDir: filepath.Join(dir, "live"), AuditFile: filepath.Join(dir, "audit.jsonl"), tuning: quick()}
}

// endRecords counts the end records of each session in the audit file.
func endRecords(t testing.TB, path string) map[string][]record {
	t.Helper()
	ends := map[string][]record{}
	for _, r := range readRecords(t, path) {
		if r.Event == "session_end" {
			ends[r.Session] = append(ends[r.Session], r)
		}
	}
	return ends
}

// TestLiveJournals runs two brokers on one LiveDir, as the old and the new
// process of an upgrade: the new one leaves the old one's sessions alone
// while it lives, and records them once it has crashed.
func TestLiveJournals(t *testing.T) {
	srv := listen(t, "tcp4", "127.0.0.1:0")
	cfg := Config{Targets: []Target{targetAt("vm1", srv.addrPort())}}
	opt := sharedDirs(t)
	old := newBroker(t, cfg, opt)
	var ids []string
	var users, targets []io.ReadWriter
	for i := range 2 {
		s, err := old.Open(context.Background(), tunnelTo("alice", "vm1", srv.addrPort().Port()))
		if err != nil {
			t.Fatal(err)
		}
		relaySide, u := clientPair(t, clientTCP)
		go s.Relay(relaySide)
		target := srv.next(t)
		n := 100 * (i + 1)
		u.Write(make([]byte, n))
		io.ReadFull(target, make([]byte, n))
		for deadline := time.Now().Add(5 * time.Second); s.Info().BytesUp != int64(n) && time.Now().Before(deadline); {
			time.Sleep(time.Millisecond) // the relay counts once its write returns
		}
		ids, users, targets = append(ids, s.ID()), append(users, u), append(targets, target)
	}
	// What the sweeper does every 10 s; the writer commits in order, so the
	// counts are durable once a later op is.
	old.saveCounts(old.list())
	if err := old.audit.submit(auditOp{}); err != nil {
		t.Fatal(err)
	}

	// The new process starts while the old one lives.
	b := newBroker(t, cfg, opt)
	if b.Recovered() != 0 {
		t.Errorf("the new broker recovered %d of the old one's live sessions", b.Recovered())
	}
	if n, err := b.RecoverOrphans(); n != 0 || err != nil {
		t.Errorf("RecoverOrphans with the old broker alive: %d, %v", n, err)
	}
	if old.Live() != 2 || len(liveKeys(t, old)) != 2 {
		t.Errorf("the old broker has %d sessions, %d live entries; want 2, 2", old.Live(), len(liveKeys(t, old)))
	}
	users[0].Write([]byte("ping"))
	if _, err := io.ReadFull(targets[0], make([]byte, 4)); err != nil {
		t.Errorf("the old broker's session stopped relaying: %v", err)
	}
	if names := journals(t, opt.LiveDir); len(names) != 2 {
		t.Errorf("live journals %v, want one per broker", names)
	}
	if ends := endRecords(t, opt.AuditFile); len(ends) != 0 {
		t.Errorf("end records while every session is live: %v", ends)
	}

	// The old process dies; a third starts; both survivors recover at once.
	third := newBroker(t, cfg, opt)
	old.crashForTest()
	var wg sync.WaitGroup
	var total atomic.Int64
	for _, b := range []*Broker{b, third} {
		wg.Go(func() {
			n, err := b.RecoverOrphans()
			if err != nil {
				t.Error(err)
			}
			total.Add(int64(n))
		})
	}
	wg.Wait()
	if total.Load() != 2 {
		t.Errorf("recovered %d sessions in all, want 2", total.Load())
	}
	ends := endRecords(t, opt.AuditFile)
	for i, id := range ids {
		if len(ends[id]) != 1 {
			t.Errorf("session %s has %d end records, want 1", id, len(ends[id]))
			continue
		}
		r := ends[id][0]
		if r.Reason != ReasonAbandoned || *r.BytesExact || *r.BytesUp != int64(100*(i+1)) || r.User != "alice" {
			t.Errorf("abandoned record: %+v", r)
		}
	}
	if names := journals(t, opt.LiveDir); len(names) != 2 {
		t.Errorf("live journals %v, want the two survivors'", names)
	}
	if n, err := b.RecoverOrphans(); n != 0 || err != nil {
		t.Errorf("second RecoverOrphans: %d, %v", n, err)
	}

	// Clean closes remove their journals.
	for _, b := range []*Broker{b, third} {
		if err := b.Close(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	if names := journals(t, opt.LiveDir); len(names) != 0 {
		t.Errorf("live journals left after clean closes: %v", names)
	}
}

// TestRecoverOrphansRace has several brokers recover the journals of
// crashed ones at the same moment, a few rounds over: every session is
// recorded once.
func TestRecoverOrphansRace(t *testing.T) {
	srv := listen(t, "tcp4", "127.0.0.1:0")
	go func() {
		for c := range srv.accepted {
			c.Close()
		}
	}()
	cfg := Config{Targets: []Target{targetAt("vm1", srv.addrPort())}}
	opt := sharedDirs(t)
	var survivors []*Broker
	for range 4 {
		survivors = append(survivors, newBroker(t, cfg, opt))
	}
	var ids []string
	for round := range 3 {
		// Two processes per round, both started before either crashes (a
		// later start would recover the first itself).
		dead := []*Broker{newBroker(t, cfg, opt), newBroker(t, cfg, opt)}
		for _, d := range dead {
			for range 3 {
				s, err := d.Open(context.Background(), tunnelTo("alice", "vm1", srv.addrPort().Port()))
				if err != nil {
					t.Fatal(err)
				}
				ids = append(ids, s.ID())
			}
		}
		for _, d := range dead {
			d.crashForTest()
		}
		var wg sync.WaitGroup
		var total atomic.Int64
		start := make(chan struct{})
		for _, b := range survivors {
			wg.Go(func() {
				<-start
				n, err := b.RecoverOrphans()
				if err != nil {
					t.Error(err)
				}
				total.Add(int64(n))
			})
		}
		close(start)
		wg.Wait()
		if total.Load() != 6 {
			t.Errorf("round %d: recovered %d sessions, want 6", round, total.Load())
		}
	}
	ends := endRecords(t, opt.AuditFile)
	for _, id := range ids {
		if len(ends[id]) != 1 {
			t.Errorf("session %s has %d end records, want 1", id, len(ends[id]))
		}
	}
	if names := journals(t, opt.LiveDir); len(names) != len(survivors) {
		t.Errorf("live journals %v, want the survivors' only", names)
	}
}

// TestSweeperRecoversOrphans: a process that dies while another runs has
// its sessions recorded by the other's sweeper, not only at the next start.
func TestSweeperRecoversOrphans(t *testing.T) {
	srv := listen(t, "tcp4", "127.0.0.1:0")
	cfg := Config{Targets: []Target{targetAt("vm1", srv.addrPort())}}
	opt := sharedDirs(t)
	old := newBroker(t, cfg, opt)
	s, err := old.Open(context.Background(), tunnelTo("alice", "vm1", srv.addrPort().Port()))
	if err != nil {
		t.Fatal(err)
	}
	srv.next(t)
	scanning := opt
	scanning.tuning.orphanScan = 100 * time.Millisecond
	newBroker(t, cfg, scanning)
	old.crashForTest()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if ends := endRecords(t, opt.AuditFile)[s.ID()]; len(ends) > 0 {
			if len(ends) != 1 || ends[0].Reason != ReasonAbandoned {
				t.Errorf("end records %+v", ends)
			}
			return
		}
	}
	t.Fatal("the sweeper did not record the dead broker's session")
}

// TestLegacyLiveSessions: entries that a version before live journals left
// in the state store are recorded as abandoned once, and the bucket goes.
func TestLegacyLiveSessions(t *testing.T) {
	opt := sharedDirs(t)
	db, err := bbolt.Open(filepath.Join(t.TempDir(), "state.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	start := startRecord(Info{ID: "0123456789ab", User: "bob", Target: "vm1", Protocol: SSH, Port: 22, Via: "browser",
		Start: time.Now().Add(-time.Hour)})
	entry, _ := json.Marshal(liveEntry{Start: start, BytesUp: 7, BytesDown: 9})
	if err := db.Update(func(tx *bbolt.Tx) error {
		b, err := tx.CreateBucket(liveBucket)
		if err != nil {
			return err
		}
		if err := b.Put([]byte("0123456789ab"), entry); err != nil {
			return err
		}
		return b.Put([]byte("junk"), []byte("{"))
	}); err != nil {
		t.Fatal(err)
	}
	opt.DB = db
	b := newBroker(t, Config{}, opt)
	if b.Recovered() != 1 {
		t.Errorf("recovered %d, want 1", b.Recovered())
	}
	recs := readRecords(t, opt.AuditFile)
	if len(recs) != 1 {
		t.Fatalf("records %+v", recs)
	}
	if r := recs[0]; r.Event != "session_end" || r.Session != "0123456789ab" || r.Reason != ReasonAbandoned || *r.BytesExact ||
		*r.BytesUp != 7 || *r.BytesDown != 9 || r.User != "bob" || r.Start == nil {
		t.Errorf("abandoned record: %+v", r)
	}
	db.View(func(tx *bbolt.Tx) error {
		if tx.Bucket(liveBucket) != nil {
			t.Error("the bucket live_sessions is still in the state store")
		}
		return nil
	})
	b.Close(context.Background())
	if b := newBroker(t, Config{}, opt); b.Recovered() != 0 {
		t.Errorf("second start recovered %d", b.Recovered())
	}
}

// TestJournalFiles checks the journal's name, mode and lock, and that a
// journal left half made (.new) by a process that died creating it is
// cleared once it is old, not while it may be being made.
func TestJournalFiles(t *testing.T) {
	opt := sharedDirs(t)
	b := newBroker(t, Config{}, opt)
	name := filepath.Base(b.journal)
	if !strings.HasPrefix(name, "live-") || !strings.HasSuffix(name, ".db") {
		t.Errorf("journal name %q", name)
	}
	for path, mode := range map[string]os.FileMode{opt.LiveDir: 0o750, b.journal: 0o600} {
		if st, err := os.Stat(path); err != nil || st.Mode().Perm() != mode {
			t.Errorf("%s: %v %v, want %v", path, st.Mode(), err, mode)
		}
	}
	if _, err := bbolt.Open(b.journal, 0o600, &bbolt.Options{Timeout: lockWait}); err != bbolt.ErrTimeout {
		t.Errorf("taking the live broker's journal lock: %v, want a timeout", err)
	}

	// A damaged journal is said, and kept for an admin; it does not stop a
	// start.
	damaged := filepath.Join(opt.LiveDir, "live-2-00000000.db")
	if err := os.WriteFile(damaged, make([]byte, 8192), 0o600); err != nil {
		t.Fatal(err)
	}
	b2 := newBroker(t, Config{}, opt)
	if n, err := b2.RecoverOrphans(); n != 0 || err == nil || !strings.Contains(err.Error(), damaged) {
		t.Errorf("RecoverOrphans with a damaged journal: %d, %v", n, err)
	}
	if _, err := os.Stat(damaged); err != nil {
		t.Errorf("the damaged journal: %v", err)
	}
	os.Remove(damaged)

	half := filepath.Join(opt.LiveDir, "live-1-00000000.db.new")
	if err := os.WriteFile(half, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if n, err := b.RecoverOrphans(); n != 0 || err != nil {
		t.Errorf("RecoverOrphans: %d, %v", n, err)
	}
	if _, err := os.Stat(half); err != nil {
		t.Errorf("a journal being made was removed: %v", err)
	}
	past := time.Now().Add(-2 * newJournalAge)
	if err := os.Chtimes(half, past, past); err != nil {
		t.Fatal(err)
	}
	if n, err := b.RecoverOrphans(); n != 0 || err != nil {
		t.Errorf("RecoverOrphans: %d, %v", n, err)
	}
	if _, err := os.Stat(half); !os.IsNotExist(err) {
		t.Errorf("an old half-made journal was left: %v", err)
	}
}
