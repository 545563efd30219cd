package broker

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.etcd.io/bbolt"
	"go.uber.org/zap"
)

func TestMain(m *testing.M) {
	// Unit tests dial listeners on loopback; TestGuardRefusesLoopback
	// turns this off again to prove the guard.
	allowLoopbackForTest = true
	sweepTick = 50 * time.Millisecond
	os.Exit(m.Run())
}

// env is a broker over a fresh state store and audit file.
type env struct {
	t     testing.TB
	dir   string
	db    *bbolt.DB
	b     *Broker
	audit string
}

func newEnv(t testing.TB, cfg Config) *env {
	t.Helper()
	e := &env{t: t, dir: t.TempDir()}
	e.audit = filepath.Join(e.dir, "log", "audit.jsonl")
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
	b, err := New(cfg, Options{DB: db, AuditFile: e.audit})
	if err != nil {
		e.t.Fatal(err)
	}
	e.b = b
}

// records reads the audit file.
func (e *env) records() []record {
	e.t.Helper()
	f, err := os.Open(e.audit)
	if err != nil {
		e.t.Fatal(err)
	}
	defer f.Close()
	var out []record
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var r record
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			e.t.Fatalf("audit line %q: %v", sc.Text(), err)
		}
		out = append(out, r)
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

// server is a target: a listener that hands each accepted conn to handle.
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
		for {
			c, err := ln.Accept()
			if err != nil {
				close(s.accepted)
				return
			}
			s.accepted <- c
		}
	}()
	t.Cleanup(func() { ln.Close() })
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

// none checks that the target saw no connection (an absence check: a
// short wait, no timing assertion).
func (s *server) none(t testing.TB) {
	t.Helper()
	select {
	case c := <-s.accepted:
		c.Close()
		t.Error("the target was dialled")
	case <-time.After(200 * time.Millisecond):
	}
}

func targetAt(name string, ap netip.AddrPort) Target {
	return Target{Name: name, Addresses: []netip.Addr{ap.Addr()}, Tunnel: []uint16{ap.Port()}}
}

func tunnelTo(user, target string, port uint16) Request {
	return Request{User: user, Client: netip.MustParseAddrPort("[2001:db8::10]:50000"), Target: target, Protocol: Tunnel, Port: port, Via: "quic", Token: "tok1", Roles: []string{"ops"}}
}

// clientPair is a client conn given to Relay and the user's end of it,
// over TCP. Unless splice is true the relay's side hides that it is a
// socket, as a QUIC stream or a WebSocket would: the buffered path.
func clientPair(t testing.TB, splice bool) (relaySide, userSide net.Conn) {
	t.Helper()
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
	if !splice {
		return opaque{relay}, user
	}
	return relay, user
}

// opaque is a conn with half-close that is not a *net.TCPConn and has no
// syscall.Conn.
type opaque struct{ net.Conn }

func (o opaque) CloseWrite() error { return o.Conn.(*net.TCPConn).CloseWrite() }

func wantKind(t *testing.T, err error, kind ErrorKind, msg string) {
	t.Helper()
	var be *Error
	if !errors.As(err, &be) || be.Kind != kind || !strings.Contains(err.Error(), msg) {
		t.Errorf("got %v, want a %v refusal mentioning %q", err, kind, msg)
	}
}

func TestRelayExactCounts(t *testing.T) {
	for _, c := range []struct {
		name    string
		network string
		addr    string
		tcp     bool
	}{
		{"splice/ipv4", "tcp4", "127.0.0.1:0", true},
		{"splice/ipv6", "tcp6", "[::1]:0", true},
		{"buffered/ipv4", "tcp4", "127.0.0.1:0", false},
		{"buffered/ipv6", "tcp6", "[::1]:0", false},
	} {
		t.Run(c.name, func(t *testing.T) {
			srv := listen(t, c.network, c.addr)
			e := newEnv(t, Config{Targets: []Target{targetAt("vm1", srv.addrPort())}})
			s, err := e.b.Open(context.Background(), tunnelTo("alice", "vm1", srv.addrPort().Port()))
			if err != nil {
				t.Fatal(err)
			}
			relaySide, user := clientPair(t, c.tcp)
			done := make(chan struct{})
			go func() { s.Relay(relaySide); close(done) }()
			target := srv.next(t)

			const up = 100 << 20
			const down = 3<<20 + 11
			// The target reads everything, then answers after the user's
			// end of stream: the half-close must carry both ways.
			go func() {
				io.Copy(io.Discard, target)
				target.Write(make([]byte, down))
				target.Close()
			}()
			go func() {
				buf := make([]byte, 64<<10)
				for sent := 0; sent < up; sent += len(buf) {
					user.Write(buf)
				}
				user.(*net.TCPConn).CloseWrite()
			}()
			got, _ := io.Copy(io.Discard, user)
			if got != down {
				t.Errorf("user read %d bytes, want %d", got, down)
			}
			user.Close()
			<-done
			end := e.record(s.ID(), "session_end")
			if *end.BytesUp != up || *end.BytesDown != down || !*end.BytesExact {
				t.Errorf("end record: up %d down %d exact %v; want up %d down %d", *end.BytesUp, *end.BytesDown, *end.BytesExact, up, down)
			}
			if end.Reason != ReasonClientClosed {
				t.Errorf("reason %q, want %q", end.Reason, ReasonClientClosed)
			}
			if start := e.record(s.ID(), "session_start"); start.User != "alice" || start.Address != srv.addrPort().String() || start.Via != "quic" || start.Token != "tok1" {
				t.Errorf("start record: %+v", start)
			}
			if e.b.Live() != 0 {
				t.Errorf("%d sessions still live", e.b.Live())
			}
		})
	}
}

func TestDialGuard(t *testing.T) {
	srv := listen(t, "tcp4", "127.0.0.1:0")
	port := srv.addrPort().Port()
	local := netip.MustParseAddr("192.0.2.7")
	cases := []struct {
		name string
		addr string
		why  string
	}{
		{"unspecified v4", "0.0.0.0", "unspecified"},
		{"unspecified v6", "::", "unspecified"},
		{"link-local v4", "169.254.1.1", "link-local"},
		{"link-local v6", "fe80::1", "link-local"},
		{"multicast v4", "224.0.0.1", "multicast"},
		{"multicast v6", "ff02::1", "multicast"},
		{"mapped link-local", "::ffff:169.254.1.1", "link-local"},
		{"broadcast", "255.255.255.255", "broadcast"},
		{"own address", local.String(), "bastion's own"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			tg := Target{Name: "vm1", Addresses: []netip.Addr{netip.MustParseAddr(c.addr)}, Tunnel: []uint16{port}}
			e := newEnv(t, Config{Targets: []Target{tg}, LocalAddrs: func() ([]netip.Addr, error) { return []netip.Addr{local}, nil }})
			_, err := e.b.Open(context.Background(), tunnelTo("alice", "vm1", port))
			wantKind(t, err, KindRefused, c.why)
		})
	}
	t.Run("an address or port outside the inventory is never dialled", func(t *testing.T) {
		e := newEnv(t, Config{Targets: []Target{targetAt("vm1", srv.addrPort())}})
		// The control function sees the real address: an allowed list
		// that does not hold it refuses.
		ctl := e.b.control([]netip.AddrPort{netip.MustParseAddrPort("198.18.1.11:22")}, time.Second)
		d := net.Dialer{Control: ctl}
		if _, err := d.Dial("tcp", srv.ln.Addr().String()); err == nil || !strings.Contains(err.Error(), "not an inventory address") {
			t.Errorf("dial outside the allowed list: %v", err)
		}
		_, err := e.b.Open(context.Background(), tunnelTo("alice", "vm1", port+1))
		wantKind(t, err, KindUnknownTarget, "does not offer port")
		_, err = e.b.Open(context.Background(), tunnelTo("alice", "127.0.0.1", port))
		wantKind(t, err, KindUnknownTarget, "no machine called")
		_, err = e.b.Open(context.Background(), Request{User: "alice", Target: "vm1", Protocol: SSH})
		wantKind(t, err, KindUnknownTarget, "does not offer ssh")
		srv.none(t)
	})
	t.Run("loopback is refused", func(t *testing.T) {
		allowLoopbackForTest = false
		defer func() { allowLoopbackForTest = true }()
		e := newEnv(t, Config{Targets: []Target{targetAt("vm1", srv.addrPort())}})
		_, err := e.b.Open(context.Background(), tunnelTo("alice", "vm1", port))
		wantKind(t, err, KindRefused, "loopback")
		srv.none(t)
		if n := testutil.ToFloat64(e.b.metrics.dialErrors.WithLabelValues("vm1")); n != 1 {
			t.Errorf("dial errors %v, want 1", n)
		}
	})
	t.Run("unreachable names every address", func(t *testing.T) {
		ln, _ := net.Listen("tcp", "[::1]:0")
		dead := netip.MustParseAddrPort(ln.Addr().String())
		ln.Close()
		tg := Target{Name: "vm1", Addresses: []netip.Addr{netip.MustParseAddr("127.0.0.1"), dead.Addr()}, Tunnel: []uint16{dead.Port()}}
		e := newEnv(t, Config{Targets: []Target{tg}})
		_, err := e.b.Open(context.Background(), tunnelTo("alice", "vm1", dead.Port()))
		wantKind(t, err, KindUnreachable, "connection refused")
		if !strings.Contains(err.Error(), "127.0.0.1:") || !strings.Contains(err.Error(), "[::1]:") {
			t.Errorf("the error must name both addresses: %v", err)
		}
	})
}

func TestAdmission(t *testing.T) {
	srv := listen(t, "tcp4", "127.0.0.1:0")
	tg := targetAt("vm1", srv.addrPort())
	tg.RDP = srv.addrPort().Port()
	e := newEnv(t, Config{Targets: []Target{tg}, Capacity: 3, PerUser: 2})
	open := func(user, proto string) (*Session, error) {
		r := tunnelTo(user, "vm1", srv.addrPort().Port())
		r.Protocol = proto
		if proto == RDP {
			r.Port = 0
		}
		return e.b.Open(context.Background(), r)
	}
	a1, err := open("alice", RDP) // 2 units
	if err != nil {
		t.Fatal(err)
	}
	b1, err := open("bob", Tunnel) // 3 units
	if err != nil {
		t.Fatal(err)
	}
	_, err = open("carol", Tunnel)
	wantKind(t, err, KindCapacity, "bastion at capacity")
	a1.End("test")
	a2, err := open("alice", Tunnel)
	if err != nil {
		t.Fatalf("units not released by End: %v", err)
	}
	a3, err := open("alice", Tunnel)
	if err != nil {
		t.Fatal(err)
	}
	b1.End("test")
	_, err = open("alice", Tunnel)
	wantKind(t, err, KindUserLimit, "2 sessions open")
	if n := testutil.ToFloat64(e.b.metrics.refusals.WithLabelValues("capacity")); n != 1 {
		t.Errorf("capacity refusals %v", n)
	}
	if n := testutil.ToFloat64(e.b.metrics.refusals.WithLabelValues("user_limit")); n != 1 {
		t.Errorf("user limit refusals %v", n)
	}
	a2.End("test")
	a3.End("test")

	// A failed dial gives its units back.
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	dead := netip.MustParseAddrPort(ln.Addr().String())
	ln.Close()
	e.b.SetConfig(Config{Logger: zap.NewNop(), Targets: []Target{targetAt("dead", dead)}, Capacity: 1})
	for range 3 {
		_, err := e.b.Open(context.Background(), tunnelTo("alice", "dead", dead.Port()))
		wantKind(t, err, KindUnreachable, "does not answer")
	}
	e.b.mu.Lock()
	used := e.b.used
	e.b.mu.Unlock()
	if used != 0 {
		t.Errorf("%d units held after failed dials", used)
	}
}

func TestConcurrentOpens(t *testing.T) {
	srv := listen(t, "tcp4", "127.0.0.1:0")
	go func() {
		for c := range srv.accepted {
			defer c.Close()
		}
	}()
	e := newEnv(t, Config{Targets: []Target{targetAt("vm1", srv.addrPort())}, Capacity: 5000, PerUser: 5000})
	const n = 2000
	var wg sync.WaitGroup
	sessions := make(chan *Session, n)
	for range n {
		wg.Go(func() {
			s, err := e.b.Open(context.Background(), tunnelTo("alice", "vm1", srv.addrPort().Port()))
			if err != nil {
				t.Error(err)
				return
			}
			sessions <- s
		})
	}
	wg.Wait()
	close(sessions)
	if got := e.b.Live(); got != n {
		t.Fatalf("%d live, want %d", got, n)
	}
	var list []*Session
	for s := range sessions {
		list = append(list, s)
	}
	e.b.endAll(list, "test")
	starts, ends := 0, 0
	for _, r := range e.records() {
		switch r.Event {
		case "session_start":
			starts++
		case "session_end":
			ends++
		}
	}
	if starts != n || ends != n {
		t.Errorf("%d start and %d end records, want %d each", starts, ends, n)
	}
	e.b.mu.Lock()
	defer e.b.mu.Unlock()
	if e.b.used != 0 || len(e.b.perUser) != 0 {
		t.Errorf("units %d, per-user %v after all ended", e.b.used, e.b.perUser)
	}
}

// relayed opens a session to srv and relays it to a TCP client; it returns
// the session, the user's conn and a channel closed when Relay returns.
func relayed(t *testing.T, e *env, srv *server, user string) (*Session, net.Conn, chan struct{}) {
	t.Helper()
	s, err := e.b.Open(context.Background(), tunnelTo(user, "vm1", srv.addrPort().Port()))
	if err != nil {
		t.Fatal(err)
	}
	relaySide, u := clientPair(t, true)
	done := make(chan struct{})
	go func() { s.Relay(relaySide); close(done) }()
	t.Cleanup(func() { u.Close() })
	return s, u, done
}

func waitDone(t *testing.T, done chan struct{}) {
	t.Helper()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the session did not end")
	}
}

func TestEndingSessions(t *testing.T) {
	srv := listen(t, "tcp6", "[::1]:0")
	e := newEnv(t, Config{Targets: []Target{targetAt("vm1", srv.addrPort())}, PerUser: 100,
		Timeouts: map[string]Timeouts{Tunnel: {Idle: 300 * time.Millisecond}}})

	t.Run("kill", func(t *testing.T) {
		s, u, done := relayed(t, e, srv, "alice")
		srv.next(t)
		if err := e.b.Kill(s.ID(), "by root: maintenance"); err != nil {
			t.Fatal(err)
		}
		waitDone(t, done)
		u.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.Copy(io.Discard, u); err != nil {
			t.Errorf("the user's conn: %v", err)
		}
		if r := e.record(s.ID(), "session_end"); r.Reason != "killed: by root: maintenance" {
			t.Errorf("reason %q", r.Reason)
		}
		if err := e.b.Kill(s.ID(), "again"); !errors.Is(err, ErrNoSession) {
			t.Errorf("second kill: %v", err)
		}
	})
	t.Run("idle timeout", func(t *testing.T) {
		s, _, done := relayed(t, e, srv, "alice")
		srv.next(t)
		waitDone(t, done)
		if r := e.record(s.ID(), "session_end"); r.Reason != ReasonIdle {
			t.Errorf("reason %q", r.Reason)
		}
	})
	t.Run("max duration applies to live sessions after a reload", func(t *testing.T) {
		s, u, done := relayed(t, e, srv, "alice")
		target := srv.next(t)
		go io.Copy(target, target) // echo: the session is never idle
		go func() {
			for {
				if _, err := u.Write([]byte("x")); err != nil {
					return
				}
				time.Sleep(20 * time.Millisecond)
			}
		}()
		go io.Copy(io.Discard, u)
		e.b.SetConfig(Config{Logger: zap.NewNop(), Targets: []Target{targetAt("vm1", srv.addrPort())}, PerUser: 100,
			Timeouts: map[string]Timeouts{Tunnel: {Max: 500 * time.Millisecond}}})
		waitDone(t, done)
		if r := e.record(s.ID(), "session_end"); r.Reason != ReasonMaxDuration {
			t.Errorf("reason %q", r.Reason)
		}
	})
	e.b.SetConfig(Config{Logger: zap.NewNop(), Targets: []Target{targetAt("vm1", srv.addrPort())}, PerUser: 100})
	t.Run("EndWhere", func(t *testing.T) {
		a, _, da := relayed(t, e, srv, "alice")
		b, _, db := relayed(t, e, srv, "bob")
		srv.next(t)
		srv.next(t)
		if n := e.b.EndWhere(func(i Info) bool { return i.User == "alice" }, ReasonAccessRevoked); n != 1 {
			t.Errorf("EndWhere ended %d", n)
		}
		waitDone(t, da)
		if r := e.record(a.ID(), "session_end"); r.Reason != ReasonAccessRevoked {
			t.Errorf("reason %q", r.Reason)
		}
		if e.b.Live() != 1 {
			t.Errorf("bob's session must go on")
		}
		b.End("test")
		waitDone(t, db)
	})
	t.Run("the target resets", func(t *testing.T) {
		s, u, done := relayed(t, e, srv, "alice")
		target := srv.next(t).(*net.TCPConn)
		u.Write([]byte("hello"))
		buf := make([]byte, 5)
		io.ReadFull(target, buf)
		target.SetLinger(0)
		target.Close()
		// The user sees the end and closes.
		u.SetReadDeadline(time.Now().Add(5 * time.Second))
		io.Copy(io.Discard, u)
		u.Close()
		waitDone(t, done)
		if r := e.record(s.ID(), "session_end"); !strings.HasPrefix(r.Reason, ReasonTargetError) || *r.BytesUp != 5 {
			t.Errorf("end record: %q, up %d", r.Reason, *r.BytesUp)
		}
	})
	t.Run("Close drains, then ends the rest", func(t *testing.T) {
		s, _, done := relayed(t, e, srv, "alice")
		srv.next(t)
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		if err := e.b.Close(ctx); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Close: %v", err)
		}
		waitDone(t, done)
		if r := e.record(s.ID(), "session_end"); r.Reason != ReasonShutdown {
			t.Errorf("reason %q", r.Reason)
		}
		_, err := e.b.Open(context.Background(), tunnelTo("alice", "vm1", srv.addrPort().Port()))
		wantKind(t, err, KindClosed, "shutting down")
		e.b.Close(context.Background()) // a second Close returns at once
	})
}

func TestCrashRecovery(t *testing.T) {
	srv := listen(t, "tcp4", "127.0.0.1:0")
	cfg := Config{Targets: []Target{targetAt("vm1", srv.addrPort())}}
	e := newEnv(t, cfg)
	var ids []string
	for range 3 {
		s, u, _ := relayed(t, e, srv, "alice")
		target := srv.next(t)
		u.Write([]byte("twelve bytes"))
		io.ReadFull(target, make([]byte, 12))
		ids = append(ids, s.ID())
	}
	e.b.saveCounts(e.b.list())
	// The writer commits in order: once a later op is durable the counts are.
	e.b.audit.submit(auditOp{})
	// One session's end record reached the file, but not its delete.
	s := e.b.sessions[ids[2]]
	end := endOf(startRecord(s.info), time.Now(), 12, 0, ReasonClientClosed, true)
	e.b.audit.submit(auditOp{lines: [][]byte{marshalLine(end)}})

	// A crash: nothing else is written.
	e.b.crashForTest()
	e.db.Close()

	e.open(cfg)
	if n := e.b.Recovered(); n != 2 {
		t.Errorf("recovered %d, want 2", n)
	}
	for _, id := range ids[:2] {
		r := e.record(id, "session_end")
		if r.Reason != ReasonAbandoned || *r.BytesExact || *r.BytesUp != 12 || r.User != "alice" || r.Start == nil {
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
	// And nothing is recovered twice.
	e.b.Close(context.Background())
	e.db.Close()
	e.open(cfg)
	if n := e.b.Recovered(); n != 0 {
		t.Errorf("second start recovered %d", n)
	}
}

func TestAuditFileReopenedAfterRotation(t *testing.T) {
	srv := listen(t, "tcp4", "127.0.0.1:0")
	e := newEnv(t, Config{Targets: []Target{targetAt("vm1", srv.addrPort())}})
	s1, err := e.b.Open(context.Background(), tunnelTo("alice", "vm1", srv.addrPort().Port()))
	if err != nil {
		t.Fatal(err)
	}
	s1.End("test")
	if err := os.Rename(e.audit, e.audit+".1"); err != nil {
		t.Fatal(err)
	}
	e.b.audit.checked = time.Time{} // do not wait the second between checks
	s2, err := e.b.Open(context.Background(), tunnelTo("alice", "vm1", srv.addrPort().Port()))
	if err != nil {
		t.Fatal(err)
	}
	s2.End("test")
	if r := e.record(s2.ID(), "session_end"); r.Reason != "test" {
		t.Errorf("after rotation: %+v", r)
	}
	for _, r := range e.records() {
		if r.Session == s1.ID() {
			t.Errorf("the new file holds the old session")
		}
	}
}

func TestMetrics(t *testing.T) {
	srv := listen(t, "tcp4", "127.0.0.1:0")
	e := newEnv(t, Config{Targets: []Target{targetAt("vm1", srv.addrPort())}})
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(e.b)
	s, u, done := relayed(t, e, srv, "alice")
	target := srv.next(t)
	u.Write(make([]byte, 1000))
	io.ReadFull(target, make([]byte, 1000))
	e.b.HandshakeFailed("tunnel")
	want := `
# HELP bastiond_sessions_active Sessions open now.
# TYPE bastiond_sessions_active gauge
bastiond_sessions_active{protocol="tunnel"} 1
# HELP bastiond_session_bytes_total Bytes carried by sessions, live ones included: up is from users to machines.
# TYPE bastiond_session_bytes_total counter
bastiond_session_bytes_total{direction="down",protocol="tunnel"} 0
bastiond_session_bytes_total{direction="up",protocol="tunnel"} 1000
# HELP bastiond_handshake_failures_total Handshakes that failed, by layer: tls, quic, tunnel, ssh, rdp.
# TYPE bastiond_handshake_failures_total counter
bastiond_handshake_failures_total{layer="tunnel"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "bastiond_sessions_active", "bastiond_session_bytes_total", "bastiond_handshake_failures_total"); err != nil {
		t.Error(err)
	}
	s.End(ReasonAccessRevoked)
	waitDone(t, done)
	want = `
# HELP bastiond_sessions_ended_total Sessions ended, by why.
# TYPE bastiond_sessions_ended_total counter
bastiond_sessions_ended_total{protocol="tunnel",reason="access_revoked"} 1
# HELP bastiond_session_bytes_total Bytes carried by sessions, live ones included: up is from users to machines.
# TYPE bastiond_session_bytes_total counter
bastiond_session_bytes_total{direction="down",protocol="tunnel"} 0
bastiond_session_bytes_total{direction="up",protocol="tunnel"} 1000
# HELP bastiond_capacity_units Capacity in weighted units: used by open sessions, and the total (limits.capacity).
# TYPE bastiond_capacity_units gauge
bastiond_capacity_units{state="total"} 100
bastiond_capacity_units{state="used"} 0
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "bastiond_sessions_ended_total", "bastiond_session_bytes_total", "bastiond_capacity_units"); err != nil {
		t.Error(err)
	}
}
