package broker

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.etcd.io/bbolt"
	"go.uber.org/zap"

	"github.com/bastiond/bastiond/internal/audit"
)

// quick is the tuning of this package's tests: listeners on loopback are
// targets, and the sweeper and the audit writer's retries run every 50 ms.
// The tests of the dial guard's loopback rule use the daemon's tuning, the
// zero value, instead.
func quick() tuning {
	return tuning{allowLoopback: true, sweepTick: 50 * time.Millisecond, auditRetry: 50 * time.Millisecond}
}

// env is a broker over a fresh state store, live journal directory and
// audit file.
type env struct {
	t     testing.TB
	tn    tuning // of every broker open makes
	dir   string
	db    *bbolt.DB
	b     *Broker
	live  string
	audit string
}

// newEnv is an env whose brokers have the tests' tuning (quick).
func newEnv(t testing.TB, cfg Config) *env {
	t.Helper()
	return newEnvTuned(t, cfg, quick())
}

// newEnvTuned is an env whose brokers have the tuning tn.
func newEnvTuned(t testing.TB, cfg Config, tn tuning) *env {
	t.Helper()
	e := &env{t: t, tn: tn, dir: t.TempDir()}
	e.audit = filepath.Join(e.dir, "log", "audit.jsonl")
	e.live = filepath.Join(e.dir, "live")
	e.open(cfg)
	t.Cleanup(func() {
		if e.b != nil {
			e.b.Close(context.Background())
		}
		e.db.Close()
	})
	return e
}

func (e *env) open(cfg Config) {
	e.t.Helper()
	db, err := bbolt.Open(filepath.Join(e.dir, "state.db"), 0o600, nil)
	if err != nil {
		e.t.Fatal(err)
	}
	e.db = db
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	b, err := New(cfg, Options{LiveDir: e.live, DB: db, AuditFile: e.audit, tuning: e.tn})
	if err != nil {
		e.t.Fatal(err)
	}
	e.b = b
}

// records reads the audit file.
func (e *env) records() []record {
	e.t.Helper()
	return readRecords(e.t, e.audit)
}

func readRecords(t testing.TB, path string) []record {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	// Every test's trail must verify.
	if rep, err := audit.Verify(audit.File{Name: path, R: f}); err != nil || rep.Broken != nil {
		data, _ := os.ReadFile(path)
		t.Fatalf("the audit file does not verify: %v %v\n%s", err, rep.Broken, data)
	}
	f.Seek(0, 0)
	var out []record
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var r record
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("audit line %q: %v", sc.Text(), err)
		}
		if r.Event != audit.ChainStarted {
			out = append(out, r)
		}
	}
	return out
}

func (e *env) record(id, event string) record {
	e.t.Helper()
	for _, r := range e.records() {
		if r.Session == id && r.Event == event {
			return r
		}
	}
	e.t.Fatalf("no %s record for %s", event, id)
	return record{}
}

// liveKeys are the entries of the broker's live journal.
func (e *env) liveKeys() []string {
	e.t.Helper()
	return liveKeys(e.t, e.b)
}

func liveKeys(t testing.TB, b *Broker) []string {
	t.Helper()
	var keys []string
	if err := b.audit.db.View(func(tx *bbolt.Tx) error {
		return tx.Bucket(liveBucket).ForEach(func(k, _ []byte) error {
			keys = append(keys, string(k))
			return nil
		})
	}); err != nil {
		t.Fatal(err)
	}
	return keys
}

// journals are the names of the files in a live journal directory.
func journals(t testing.TB, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

// server is a target: a listener whose accepted conns queue in accepted.
type server struct {
	ln       net.Listener
	accepted chan net.Conn
}

func listen(t testing.TB, network, addr string) *server {
	t.Helper()
	ln, err := net.Listen(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	s := &server{ln: ln, accepted: make(chan net.Conn, 4096)}
	go func() {
		defer close(s.accepted)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.accepted <- c
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		for c := range s.accepted {
			c.Close()
		}
	})
	return s
}

func (s *server) addrPort() netip.AddrPort {
	return netip.MustParseAddrPort(s.ln.Addr().String())
}

func (s *server) next(t testing.TB) net.Conn {
	t.Helper()
	select {
	case c := <-s.accepted:
		t.Cleanup(func() { c.Close() })
		return c
	case <-time.After(5 * time.Second):
		t.Fatal("the target saw no connection")
		return nil
	}
}

// none checks that the target saw no connection. It is an absence check:
// a short wait, not a timing assertion.
func (s *server) none(t testing.TB) {
	t.Helper()
	select {
	case c := <-s.accepted:
		c.Close()
		t.Error("the target was dialled")
	case <-time.After(200 * time.Millisecond):
	}
}

// deadAddr is a loopback address and port nothing listens on.
func deadAddr(t testing.TB, network, addr string) netip.AddrPort {
	t.Helper()
	ln, err := net.Listen(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	ap := netip.MustParseAddrPort(ln.Addr().String())
	ln.Close()
	return ap
}

func targetAt(name string, ap netip.AddrPort) Target {
	return Target{Name: name, Addresses: []netip.Addr{ap.Addr()}, Tunnel: []uint16{ap.Port()}}
}

func tunnelTo(user, target string, port uint16) Request {
	return Request{User: user, Client: netip.MustParseAddrPort("[2001:db8::10]:50000"), Target: target, Protocol: Tunnel,
		Port: port, Via: "quic", Token: "tok1", Roles: []string{"ops"}}
}

// Client kinds for Relay.
const (
	clientTCP    = "tcp"    // a *net.TCPConn: both ends TCP, the splice path
	clientOpaque = "opaque" // a TCP conn hidden behind a wrapper: the buffered paths
	clientPipe   = "pipe"   // net.Pipe: no socket and no half-close
)

// clientPair is a client conn given to Relay and the user's end of it.
func clientPair(t testing.TB, kind string) (relaySide, userSide net.Conn) {
	t.Helper()
	if kind == clientPipe {
		a, b := net.Pipe()
		t.Cleanup(func() { a.Close(); b.Close() })
		return a, b
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	user, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	relay, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { user.Close(); relay.Close() })
	if kind == clientOpaque {
		return opaque{relay}, user
	}
	return relay, user
}

// opaque is a conn with half-close that is neither a *net.TCPConn nor a
// syscall.Conn, as a QUIC stream or a WebSocket is.
type opaque struct{ net.Conn }

func (o opaque) CloseWrite() error { return o.Conn.(*net.TCPConn).CloseWrite() }

func wantKind(t *testing.T, err error, kind ErrorKind, msg string) {
	t.Helper()
	var be *Error
	if !errors.As(err, &be) || be.Kind != kind || !strings.Contains(err.Error(), msg) {
		t.Errorf("got %v, want a %v refusal mentioning %q", err, kind, msg)
	}
}

// relayed opens a session to srv and relays it to a client of kind; it
// returns the session, the user's conn and a channel closed when Relay
// returns.
func relayed(t testing.TB, e *env, srv *server, user, kind string) (*Session, net.Conn, chan struct{}) {
	t.Helper()
	s, err := e.b.Open(context.Background(), tunnelTo(user, "vm1", srv.addrPort().Port()))
	if err != nil {
		t.Fatal(err)
	}
	relaySide, u := clientPair(t, kind)
	done := make(chan struct{})
	go func() { s.Relay(relaySide); close(done) }()
	return s, u, done
}

func waitDone(t testing.TB, done chan struct{}) {
	t.Helper()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the session did not end")
	}
}
