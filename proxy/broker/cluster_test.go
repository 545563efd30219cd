package broker

import (
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/bastiond/bastiond/internal/audit"
	"github.com/bastiond/bastiond/internal/statedb"
	"github.com/bastiond/bastiond/internal/store"
	"github.com/bastiond/bastiond/proxy/registry"
)

// handler is the registry's Handler made of a broker alone, as the daemon
// makes it of its broker and its predecessor's.
type handler struct{ *Broker }

func (handler) Recheck(string) {}

var _ registry.Handler = handler{}

// instance is one bastiond of a cluster in a test: its own live journals
// and audit file (its own host), the cluster's store shared.
type instance struct {
	name string
	opt  Options
	reg  *registry.Registry
	b    *Broker
	stop context.CancelFunc
	done chan struct{}
}

func newInstance(t *testing.T, db store.DB, name string, cfg Config, dead time.Duration) *instance {
	t.Helper()
	return newInstanceTuned(t, db, name, cfg, dead, quick())
}

func newInstanceTuned(t *testing.T, db store.DB, name string, cfg Config, dead time.Duration, tn tuning) *instance {
	t.Helper()
	dir := t.TempDir()
	tn.saveEvery = 50 * time.Millisecond
	in := &instance{name: name, opt: Options{LiveDir: filepath.Join(dir, "live"), AuditFile: filepath.Join(dir, "audit.jsonl"),
		Instance: name, tuning: tn}}
	in.start(t, db, cfg, dead)
	return in
}

// start opens the instance's registry and broker (again, after a crash),
// and runs the registry.
func (in *instance) start(t *testing.T, db store.DB, cfg Config, dead time.Duration) {
	t.Helper()
	reg, err := registry.New(registry.Config{DB: db, Instance: in.name, Logger: zap.NewNop(), Beat: 20 * time.Millisecond,
		Dead: dead, Poll: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	in.reg = reg
	in.opt.Registry = reg
	in.b = newBroker(t, cfg, in.opt)
	ctx, cancel := context.WithCancel(context.Background())
	in.stop, in.done = cancel, make(chan struct{})
	go func() {
		reg.Run(ctx, handler{in.b})
		close(in.done)
	}()
	t.Cleanup(in.halt)
}

// halt stops the registry's heartbeat, as a crash would.
func (in *instance) halt() {
	in.stop()
	<-in.done
}

// waitUntil polls cond for up to 10 s; a bound on a loop, not a timing
// assertion.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting for %s", what)
		}
	}
}

func clusterTargets(t *testing.T) (Config, *server, *server) {
	v4, v6 := listen(t, "tcp4", "127.0.0.1:0"), listen(t, "tcp6", "[::1]:0")
	return Config{Targets: []Target{targetAt("vm4", v4.addrPort()), targetAt("vm6", v6.addrPort())}}, v4, v6
}

func openTo(t *testing.T, b *Broker, target string, srv *server, client string) *Session {
	t.Helper()
	req := tunnelTo("alice", target, srv.addrPort().Port())
	req.Client = netip.MustParseAddrPort(client)
	s, err := b.Open(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	srv.next(t)
	return s
}

// TestClusterSessions: sessions enter the registry with their instance
// before they carry a byte and leave it with their end record; every line
// names the instance; another instance lists them and kills one.
func TestClusterSessions(t *testing.T) {
	db, err := statedb.Open(filepath.Join(t.TempDir(), "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	cfg, v4, v6 := clusterTargets(t)
	a := newInstance(t, db, "bastion-a", cfg, time.Hour)
	b := newInstance(t, db, "bastion-b", cfg, time.Hour)
	s4 := openTo(t, a.b, "vm4", v4, "192.0.2.10:50000")
	s6 := openTo(t, a.b, "vm6", v6, "[2001:db8::10]:50001")
	list, err := b.reg.List()
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 2 || list[0].Instance != "bastion-a" || list[1].Instance != "bastion-a" {
		t.Fatalf("registry lists %+v", list)
	}
	a.b.Audit(audit.Event{Event: audit.ConfigReloaded, Actor: "root", Source: audit.SourceLocal})

	owner, err := b.reg.Kill(context.Background(), s4.ID(), "by root on instance bastion-b: left open")
	if err != nil || owner != "bastion-a" {
		t.Fatalf("kill from b: %q %v", owner, err)
	}
	if got := s4.EndReason(); got != ReasonKilled+"by root on instance bastion-b: left open" {
		t.Errorf("end reason %q", got)
	}
	s6.End(ReasonClientClosed)
	if list, _ := b.reg.List(); len(list) != 0 {
		t.Errorf("registry after both ended: %+v", list)
	}
	recs := readRecords(t, a.opt.AuditFile)
	var clients []string
	for _, r := range recs {
		if r.Instance != "bastion-a" {
			t.Errorf("line without its instance: %+v", r)
		}
		if r.Event == audit.SessionStart {
			clients = append(clients, r.Client)
		}
	}
	if !slices.Equal(clients, []string{"192.0.2.10:50000", "[2001:db8::10]:50001"}) {
		t.Errorf("start records' clients %v", clients)
	}
	data := readFile(t, a.opt.AuditFile)
	if !containsLine(data, `"event":"audit_chain_started","actor":"bastiond","source":"local","instance":"bastion-a"`) {
		t.Errorf("the chain's first line has no instance:\n%s", data)
	}
}

// TestClusterDeadInstance: an instance dies with live sessions (IPv4 and
// IPv6 clients). Either a survivor notices first and records them, naming
// the dead instance and itself, and the dead one's journal recovery at its
// restart records nothing; or the dead one restarts first and records them
// itself, and the survivor takes nothing. Exactly one end record each.
func TestClusterDeadInstance(t *testing.T) {
	for _, tc := range []struct {
		name         string
		survivorDead time.Duration // the survivor's Dead: short, it notices; long, it never does
		restartFirst bool
	}{
		{"survivor first", 150 * time.Millisecond, false},
		{"restart first", time.Hour, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			db, err := statedb.Open(filepath.Join(t.TempDir(), "state.db"))
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			cfg, v4, v6 := clusterTargets(t)
			a := newInstance(t, db, "bastion-a", cfg, time.Hour)
			s4, s6 := openTo(t, a.b, "vm4", v4, "192.0.2.10:50000"), openTo(t, a.b, "vm6", v6, "[2001:db8::10]:50001")
			ids := []string{s4.ID(), s6.ID()}
			s4.AddUp(1000)
			s6.AddDown(2000)
			waitUntil(t, "a's heartbeat", func() bool { hbs, _ := a.reg.Instances(); return len(hbs) == 1 })
			// The byte counts reach the registry with the journal's save.
			waitUntil(t, "the byte counts in the registry", func() bool {
				list, _ := a.reg.List()
				return len(list) == 2 && list[0].BytesUp+list[1].BytesUp == 1000 && list[0].BytesDown+list[1].BytesDown == 2000
			})
			a.halt()
			a.b.crashForTest()
			b := newInstance(t, db, "bastion-b", cfg, tc.survivorDead)

			if !tc.restartFirst {
				waitUntil(t, "b to record a's sessions", func() bool { return len(endRecords(t, b.opt.AuditFile)) == 2 })
			}
			a.start(t, db, cfg, time.Hour) // the same host: a's journal is recovered
			if tc.restartFirst {
				waitUntil(t, "a to record its own sessions", func() bool { return len(endRecords(t, a.opt.AuditFile)) == 2 })
			}
			recorder, other := b, a
			if tc.restartFirst {
				recorder, other = a, b
			}
			ends := endRecords(t, recorder.opt.AuditFile)
			for _, id := range ids {
				if len(ends[id]) != 1 {
					t.Fatalf("session %s: %d end records by %s", id, len(ends[id]), recorder.name)
				}
				r := ends[id][0]
				wantBy := "bastion-b"
				if tc.restartFirst {
					wantBy = ""
				}
				if r.Reason != ReasonAbandoned || r.Instance != "bastion-a" || r.RecordedBy != wantBy || *r.BytesExact {
					t.Errorf("abandoned record %+v", r)
				}
				if *r.BytesUp+*r.BytesDown != 1000+1000*int64(slices.Index(ids, id)) {
					t.Errorf("abandoned record of %s: %d bytes up, %d down, not the counts last saved", id, *r.BytesUp, *r.BytesDown)
				}
			}
			if r := endRecords(t, other.opt.AuditFile); len(r) != 0 {
				t.Errorf("%s recorded too: %v", other.name, r)
			}
			if list, _ := b.reg.List(); len(list) != 0 {
				t.Errorf("left in the registry: %+v", list)
			}
		})
	}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

func containsLine(data, part string) bool { return strings.Contains(data, part) }

// down is a state store that is unreachable.
type down struct{ store.DB }

func (down) View(func(store.Tx) error) error   { return store.ErrUnavailable }
func (down) Update(func(store.Tx) error) error { return store.ErrUnavailable }

// TestClusterRegistryDown: while the cluster's store cannot be reached, a
// session is refused before a byte flows, with a clear message, and leaves
// no record.
func TestClusterRegistryDown(t *testing.T) {
	db, err := statedb.Open(filepath.Join(t.TempDir(), "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	cfg, v4, v6 := clusterTargets(t)
	a := newInstance(t, down{db}, "bastion-a", cfg, time.Hour)
	for _, c := range []struct {
		target string
		srv    *server
		client string
	}{{"vm4", v4, "192.0.2.10:50000"}, {"vm6", v6, "[2001:db8::10]:50001"}} {
		req := tunnelTo("alice", c.target, c.srv.addrPort().Port())
		req.Client = netip.MustParseAddrPort(c.client)
		_, err := a.b.Open(context.Background(), req)
		wantKind(t, err, KindInternal, "cannot register the session at the moment")
		conn := c.srv.next(t) // dialled, then closed unused
		conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		if n, err := conn.Read(make([]byte, 1)); n != 0 || err == nil {
			t.Errorf("the target's connection carried %d bytes, %v", n, err)
		}
	}
	if a.b.Live() != 0 {
		t.Errorf("%d sessions live", a.b.Live())
	}
	for _, r := range readRecords(t, a.opt.AuditFile) {
		if r.Event == audit.SessionStart || r.Event == audit.SessionEnd {
			t.Errorf("a refused session left a record: %+v", r)
		}
	}
}

// TestClusterAuditUnwritable: while the audit file refuses lines, an ended
// session and a refused one stay in the registry (their records wait in
// memory, their journal entries stay: a crash now would make them
// abandoned); once the file takes the records, they leave it.
func TestClusterAuditUnwritable(t *testing.T) {
	db, err := statedb.Open(filepath.Join(t.TempDir(), "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	cfg, v4, v6 := clusterTargets(t)
	faults := &auditFaults{}
	a := newInstanceTuned(t, db, "bastion-a", cfg, time.Hour, faults.tuning())
	s4 := openTo(t, a.b, "vm4", v4, "192.0.2.10:50000")
	// The disk fills: the next session is dialled and registered before
	// its start record is refused.
	faults.set(syscall.ENOSPC, false, nil)
	req := tunnelTo("alice", "vm6", v6.addrPort().Port())
	req.Client = netip.MustParseAddrPort("[2001:db8::10]:50001")
	_, err = a.b.Open(context.Background(), req)
	wantKind(t, err, KindAuditUnavailable, "cannot record new sessions")
	v6.next(t)
	s4.End(ReasonClientClosed)
	if list, _ := a.reg.List(); len(list) != 2 {
		t.Errorf("registry while the records wait: %+v", list)
	}
	faults.set(nil, false, nil)
	waitUntil(t, "the registry to empty", func() bool { list, _ := a.reg.List(); return len(list) == 0 })
	ends := endRecords(t, a.opt.AuditFile)
	if len(ends) != 2 || len(ends[s4.ID()]) != 1 {
		t.Errorf("end records %v", ends)
	}
}
