package broker

import (
	"context"
	"errors"
	"io"
	"net/netip"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"
)

func TestOpenRefusals(t *testing.T) {
	srv := listen(t, "tcp4", "127.0.0.1:0")
	port := srv.addrPort().Port()
	tg := Target{Name: "vm1", Addresses: []netip.Addr{srv.addrPort().Addr()}, SSH: port, Tunnel: []uint16{port + 1}}
	tunnelOnly := Target{Name: "vm2", Addresses: []netip.Addr{srv.addrPort().Addr()}, Tunnel: []uint16{port}}
	e := newEnv(t, Config{Targets: []Target{tg, tunnelOnly}})
	for _, c := range []struct {
		name string
		req  Request
		msg  string
	}{
		{"unknown target", Request{Target: "vm9", Protocol: SSH}, `there is no machine called "vm9"`},
		{"an address is not a target", Request{Target: "127.0.0.1", Protocol: SSH}, "no machine called"},
		{"tunnel port not offered", Request{Target: "vm1", Protocol: Tunnel, Port: 8080}, "target vm1 does not offer port 8080"},
		{"tunnel without a port", Request{Target: "vm1", Protocol: Tunnel}, "target vm1 does not offer a tunnel without a port"},
		{"rdp not offered", Request{Target: "vm1", Protocol: RDP}, "target vm1 does not offer rdp"},
		{"ssh not offered", Request{Target: "vm2", Protocol: SSH}, "target vm2 does not offer ssh"},
		{"ssh on another port", Request{Target: "vm1", Protocol: SSH, Port: port + 1}, "does not offer port"},
		{"unknown protocol", Request{Target: "vm1", Protocol: "vnc"}, `does not offer the protocol "vnc"`},
	} {
		t.Run(c.name, func(t *testing.T) {
			c.req.User = "alice"
			_, err := e.b.Open(context.Background(), c.req)
			wantKind(t, err, KindUnknownTarget, c.msg)
		})
	}
	srv.none(t)
	if e.b.Live() != 0 || e.b.used != 0 {
		t.Errorf("refusals hold sessions or units")
	}
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
	units := func() float64 { return metricValue(t, e.b, "bastiond_capacity_units", "used") }
	a1, err := open("alice", RDP) // 2 units
	if err != nil {
		t.Fatal(err)
	}
	b1, err := open("bob", Tunnel) // 3 units
	if err != nil {
		t.Fatal(err)
	}
	if u := units(); u != 3 {
		t.Errorf("units used %v, want 3", u)
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
	wantKind(t, err, KindUserLimit, "you have 2 sessions open, the most allowed")
	if n := testutil.ToFloat64(e.b.metrics.refusals.WithLabelValues("capacity")); n != 1 {
		t.Errorf("capacity refusals %v", n)
	}
	if n := testutil.ToFloat64(e.b.metrics.refusals.WithLabelValues("user_limit")); n != 1 {
		t.Errorf("user limit refusals %v", n)
	}
	a2.End("test")
	a3.End("test")

	// A failed dial gives its units back.
	dead := deadAddr(t, "tcp4", "127.0.0.1:0")
	if err := e.b.SetConfig(Config{Logger: zap.NewNop(), Targets: []Target{targetAt("dead", dead)}, Capacity: 1}); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		_, err := e.b.Open(context.Background(), tunnelTo("alice", "dead", dead.Port()))
		wantKind(t, err, KindUnreachable, "is not reachable")
	}
	if u := units(); u != 0 {
		t.Errorf("%v units held after failed dials", u)
	}
	if n := testutil.ToFloat64(e.b.metrics.dialErrors.WithLabelValues("dead")); n != 3 {
		t.Errorf("dial errors %v, want 3", n)
	}
}

// TestAdmissionUnderLoad opens and ends sessions from many goroutines at
// once and checks that admitted sessions never exceed the capacity or a
// user's cap, and that every unit comes back.
func TestAdmissionUnderLoad(t *testing.T) {
	srv := listen(t, "tcp4", "127.0.0.1:0")
	go func() {
		for c := range srv.accepted {
			c.Close()
		}
	}()
	tg := targetAt("vm1", srv.addrPort())
	tg.RDP = srv.addrPort().Port()
	const capacity, perUser = 12, 3
	e := newEnv(t, Config{Targets: []Target{tg}, Capacity: capacity, PerUser: perUser})
	var units atomic.Int64
	var mu sync.Mutex
	byUser := map[string]int{}
	var admitted, refused atomic.Int64
	var wg sync.WaitGroup
	for g := range 40 {
		wg.Go(func() {
			user := []string{"alice", "bob", "carol", "dave", "erin", "frank"}[g%6]
			proto, weight := Tunnel, int64(1)
			if g%3 == 0 {
				proto, weight = RDP, 2
			}
			for range 15 {
				r := tunnelTo(user, "vm1", srv.addrPort().Port())
				r.Protocol = proto
				s, err := e.b.Open(context.Background(), r)
				var be *Error
				if errors.As(err, &be) && (be.Kind == KindCapacity || be.Kind == KindUserLimit) {
					refused.Add(1)
					continue
				}
				if err != nil {
					t.Error(err)
					return
				}
				admitted.Add(1)
				if u := units.Add(weight); u > capacity {
					t.Errorf("%d units admitted, capacity %d", u, capacity)
				}
				mu.Lock()
				if byUser[user]++; byUser[user] > perUser {
					t.Errorf("%s has %d sessions", user, byUser[user])
				}
				mu.Unlock()
				runtime.Gosched()
				mu.Lock()
				byUser[user]--
				mu.Unlock()
				units.Add(-weight)
				s.End("test")
			}
		})
	}
	wg.Wait()
	if admitted.Load() == 0 || refused.Load() == 0 {
		t.Errorf("admitted %d, refused %d: the test did not reach the limits", admitted.Load(), refused.Load())
	}
	e.b.mu.Lock()
	defer e.b.mu.Unlock()
	if e.b.used != 0 || len(e.b.perUser) != 0 || e.b.opening != 0 || len(e.b.sessions) != 0 {
		t.Errorf("after all ended: units %d, per-user %v, opening %d, sessions %d", e.b.used, e.b.perUser, e.b.opening, len(e.b.sessions))
	}
}

// TestConcurrentOpens opens 2000 sessions at once: group commit must carry
// them all, each with its start record and live entry.
func TestConcurrentOpens(t *testing.T) {
	srv := listen(t, "tcp4", "127.0.0.1:0")
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
	if got := len(e.liveKeys()); got != n {
		t.Errorf("%d live entries, want %d", got, n)
	}
	starts := 0
	for _, r := range e.records() {
		if r.Event == "session_start" {
			starts++
		}
	}
	if starts != n {
		t.Errorf("%d start records, want %d", starts, n)
	}
	ids := map[string]bool{}
	for _, i := range e.b.Sessions() {
		ids[i.ID] = true
	}
	if len(ids) != n {
		t.Errorf("%d distinct IDs", len(ids))
	}
	var list []*Session
	for s := range sessions {
		list = append(list, s)
	}
	endAll(list, "test")
	ends := 0
	for _, r := range e.records() {
		if r.Event == "session_end" {
			ends++
		}
	}
	if ends != n || len(e.liveKeys()) != 0 {
		t.Errorf("%d end records (want %d), %d live entries left", ends, n, len(e.liveKeys()))
	}
}

func TestEndingSessions(t *testing.T) {
	srv := listen(t, "tcp6", "[::1]:0")
	cfg := Config{Logger: zap.NewNop(), Targets: []Target{targetAt("vm1", srv.addrPort())}, PerUser: 100,
		Timeouts: map[string]Timeouts{Tunnel: {Idle: 300 * time.Millisecond}, SSH: {Max: time.Hour}}}
	e := newEnv(t, cfg)

	t.Run("kill", func(t *testing.T) {
		s, u, done := relayed(t, e, srv, "alice", clientTCP)
		srv.next(t)
		if err := e.b.Kill(s.ID(), ""); err == nil {
			t.Error("a kill without a reason was accepted")
		}
		if err := e.b.Kill(s.ID(), "by root: maintenance"); err != nil {
			t.Fatal(err)
		}
		waitDone(t, done)
		u.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.Copy(io.Discard, u); err != nil {
			t.Errorf("the user's conn: %v", err)
		}
		if r := e.record(s.ID(), "session_end"); r.Reason != "killed: by root: maintenance" || !*r.BytesExact {
			t.Errorf("end record: %+v", r)
		}
		var ee *EndedError
		if s.Context().Err() == nil || !errors.As(context.Cause(s.Context()), &ee) || ee.Reason != "killed: by root: maintenance" {
			t.Errorf("context: %v, cause %v", s.Context().Err(), context.Cause(s.Context()))
		}
		if err := e.b.Kill(s.ID(), "again"); !errors.Is(err, ErrNoSession) {
			t.Errorf("second kill: %v", err)
		}
		s.End("ignored") // idempotent
		if s.EndReason() != "killed: by root: maintenance" {
			t.Errorf("EndReason %q", s.EndReason())
		}
	})
	t.Run("idle timeout", func(t *testing.T) {
		s, _, done := relayed(t, e, srv, "alice", clientTCP)
		srv.next(t)
		waitDone(t, done)
		if r := e.record(s.ID(), "session_end"); r.Reason != ReasonIdle {
			t.Errorf("reason %q", r.Reason)
		}
	})
	t.Run("activity keeps a session, and max duration applies to live sessions after a reload", func(t *testing.T) {
		s, u, done := relayed(t, e, srv, "alice", clientTCP)
		target := srv.next(t)
		go io.Copy(target, target) // echo
		go func() {
			for {
				if _, err := u.Write([]byte("x")); err != nil {
					return
				}
				time.Sleep(20 * time.Millisecond)
			}
		}()
		go io.Copy(io.Discard, u)
		time.Sleep(600 * time.Millisecond) // twice the idle timeout
		if s.EndReason() != "" {
			t.Fatalf("an active session ended: %q", s.EndReason())
		}
		c := cfg
		c.Timeouts = map[string]Timeouts{Tunnel: {Max: 500 * time.Millisecond}}
		if err := e.b.SetConfig(c); err != nil {
			t.Fatal(err)
		}
		waitDone(t, done)
		if r := e.record(s.ID(), "session_end"); r.Reason != ReasonMaxDuration {
			t.Errorf("reason %q", r.Reason)
		}
	})
	c := cfg
	c.Timeouts = nil
	if err := e.b.SetConfig(c); err != nil {
		t.Fatal(err)
	}
	t.Run("SetConfig ends nothing", func(t *testing.T) {
		s, _, done := relayed(t, e, srv, "alice", clientTCP)
		srv.next(t)
		// Even an inventory without the target leaves its sessions alone.
		if err := e.b.SetConfig(Config{Logger: zap.NewNop(), Targets: nil}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(200 * time.Millisecond)
		if e.b.Live() != 1 {
			t.Error("SetConfig ended a session")
		}
		if err := e.b.SetConfig(Config{Logger: zap.NewNop(), Capacity: -1}); err == nil {
			t.Error("a negative capacity was accepted")
		}
		if err := e.b.SetConfig(c); err != nil {
			t.Fatal(err)
		}
		s.End("test")
		waitDone(t, done)
	})
	t.Run("EndWhere", func(t *testing.T) {
		a, _, da := relayed(t, e, srv, "alice", clientTCP)
		a2, _, da2 := relayed(t, e, srv, "alice", clientOpaque)
		b, _, db := relayed(t, e, srv, "bob", clientTCP)
		for range 3 {
			srv.next(t)
		}
		if n := e.b.EndWhere(func(i Info) bool { return i.User == "alice" }, ReasonAccessRevoked); n != 2 {
			t.Errorf("EndWhere ended %d", n)
		}
		waitDone(t, da)
		waitDone(t, da2)
		for _, s := range []*Session{a, a2} {
			if r := e.record(s.ID(), "session_end"); r.Reason != ReasonAccessRevoked {
				t.Errorf("reason %q", r.Reason)
			}
		}
		if l := e.b.Sessions(); len(l) != 1 || l[0].ID != b.ID() {
			t.Errorf("bob's session must go on: %+v", l)
		}
		b.End("test")
		waitDone(t, db)
	})
	t.Run("End before Relay", func(t *testing.T) {
		s, err := e.b.Open(context.Background(), tunnelTo("alice", "vm1", srv.addrPort().Port()))
		if err != nil {
			t.Fatal(err)
		}
		srv.next(t)
		s.End(ReasonAccessRevoked)
		relaySide, u := clientPair(t, clientTCP)
		s.Relay(relaySide) // closes the client and returns
		u.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := u.Read(make([]byte, 1)); err != io.EOF {
			t.Errorf("the client was not closed: %v", err)
		}
	})
}

// TestAddCounts covers relays that are not byte copies: the caller reads
// and writes the target itself and counts.
func TestAddCounts(t *testing.T) {
	srv := listen(t, "tcp4", "127.0.0.1:0")
	tg := Target{Name: "vm1", Addresses: []netip.Addr{srv.addrPort().Addr()}, SSH: srv.addrPort().Port()}
	e := newEnv(t, Config{Targets: []Target{tg}, Timeouts: map[string]Timeouts{SSH: {Idle: 300 * time.Millisecond}}})
	s, err := e.b.Open(context.Background(), Request{User: "alice", Target: "vm1", Protocol: SSH, Login: "root", Via: "browser"})
	if err != nil {
		t.Fatal(err)
	}
	target := srv.next(t)
	s.Target().Write([]byte("SSH-2.0-x\r\n"))
	io.ReadFull(target, make([]byte, 11))
	for range 10 {
		s.AddUp(11)
		s.AddDown(100)
		time.Sleep(60 * time.Millisecond) // activity keeps it past the idle timeout
	}
	i := s.Info()
	if i.BytesUp != 110 || i.BytesDown != 1000 || time.Since(i.LastActive) > time.Second || i.Login != "root" || i.Port != srv.addrPort().Port() {
		t.Errorf("info: %+v", i)
	}
	select {
	case <-s.Context().Done():
	case <-time.After(5 * time.Second):
		t.Fatal("the idle timeout did not end the session")
	}
	s.End("ignored") // waits for the record
	r := e.record(s.ID(), "session_end")
	if r.Reason != ReasonIdle || *r.BytesUp != 110 || *r.BytesDown != 1000 || r.Login != "root" || r.Via != "browser" {
		t.Errorf("end record: %+v", r)
	}
	if n, err := target.Read(make([]byte, 1)); n != 0 || err == nil {
		t.Errorf("End left the target conn open")
	}
}

func TestClose(t *testing.T) {
	srv := listen(t, "tcp4", "127.0.0.1:0")
	t.Run("waits for sessions that end by themselves", func(t *testing.T) {
		e := newEnv(t, Config{Targets: []Target{targetAt("vm1", srv.addrPort())}})
		s, u, done := relayed(t, e, srv, "alice", clientTCP)
		target := srv.next(t)
		closed := make(chan error, 1)
		go func() { closed <- e.b.Close(context.Background()) }()
		time.Sleep(50 * time.Millisecond)
		_, err := e.b.Open(context.Background(), tunnelTo("alice", "vm1", srv.addrPort().Port()))
		wantKind(t, err, KindClosed, "shutting down")
		if e.b.Live() != 1 {
			t.Error("draining ended the session")
		}
		u.Close()
		io.Copy(io.Discard, target) // the user's end of stream arrives
		target.Close()
		waitDone(t, done)
		if err := <-closed; err != nil {
			t.Errorf("Close: %v", err)
		}
		if r := e.record(s.ID(), "session_end"); r.Reason != ReasonClientClosed {
			t.Errorf("reason %q", r.Reason)
		}
	})
	t.Run("ends the rest when ctx is done", func(t *testing.T) {
		e := newEnv(t, Config{Targets: []Target{targetAt("vm1", srv.addrPort())}})
		var list []*Session
		var dones []chan struct{}
		for range 5 {
			s, _, done := relayed(t, e, srv, "alice", clientOpaque)
			srv.next(t)
			list, dones = append(list, s), append(dones, done)
		}
		e.b.Drain()
		_, err := e.b.Open(context.Background(), tunnelTo("alice", "vm1", srv.addrPort().Port()))
		wantKind(t, err, KindClosed, "shutting down")
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		if err := e.b.Close(ctx); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Close: %v", err)
		}
		for i, s := range list {
			waitDone(t, dones[i])
			if r := e.record(s.ID(), "session_end"); r.Reason != ReasonShutdown {
				t.Errorf("reason %q", r.Reason)
			}
		}
		if names := journals(t, e.live); len(names) != 0 {
			t.Errorf("a clean Close left live journals: %v", names)
		}
		if err := e.b.Close(context.Background()); err != nil { // again: returns at once
			t.Errorf("second Close: %v", err)
		}
	})
}

// TestCloseLeaksNothing checks that a closed broker leaves no goroutine
// behind: the sweeper, the writer, the relays.
func TestCloseLeaksNothing(t *testing.T) {
	settle := func(want int) int {
		deadline := time.Now().Add(5 * time.Second)
		n := runtime.NumGoroutine()
		for n > want && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
			n = runtime.NumGoroutine()
		}
		return n
	}
	before := runtime.NumGoroutine()
	t.Run("broker", func(t *testing.T) {
		srv := listen(t, "tcp4", "127.0.0.1:0")
		e := newEnv(t, Config{Targets: []Target{targetAt("vm1", srv.addrPort())}})
		for _, kind := range []string{clientTCP, clientOpaque, clientPipe, clientTCP} {
			relayed(t, e, srv, "alice", kind)
			srv.next(t)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		e.b.Close(ctx)
	})
	if after := settle(before); after > before {
		buf := make([]byte, 1<<20)
		t.Errorf("%d goroutines before, %d after:\n%s", before, after, buf[:runtime.Stack(buf, true)])
	}
}

func TestSessionsSorted(t *testing.T) {
	srv := listen(t, "tcp4", "127.0.0.1:0")
	e := newEnv(t, Config{Targets: []Target{targetAt("vm1", srv.addrPort())}})
	var ids []string
	for range 5 {
		s, err := e.b.Open(context.Background(), tunnelTo("alice", "vm1", srv.addrPort().Port()))
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, s.ID())
		if len(s.ID()) != 12 || s.ID() != lowerHex(s.ID()) {
			t.Errorf("ID %q", s.ID())
		}
		defer s.End("test")
	}
	var got []string
	for _, i := range e.b.Sessions() {
		got = append(got, i.ID)
	}
	if !slices.Equal(got, ids) {
		t.Errorf("Sessions %v, want the order of opening %v", got, ids)
	}
}

func lowerHex(s string) string {
	b := []byte(s)
	for i, c := range b {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			b[i] = '!'
		}
	}
	return string(b)
}

func TestRecordingInRecords(t *testing.T) {
	srv := listen(t, "tcp6", "[::1]:0")
	tg := Target{Name: "vm1", Addresses: []netip.Addr{srv.addrPort().Addr()}, SSH: srv.addrPort().Port()}
	e := newEnv(t, Config{Targets: []Target{tg}})
	s, err := e.b.Open(context.Background(), Request{User: "alice", Target: "vm1", Protocol: SSH, Via: "browser"})
	if err != nil {
		t.Fatal(err)
	}
	srv.next(t)
	const path = "/var/lib/bastiond/recordings/x.cast"
	s.SetRecording(path)
	if got := s.Info().Recording; got != path {
		t.Errorf("Info().Recording = %q", got)
	}
	s.End(ReasonRemoteExit + " (status 0)")
	if r := e.record(s.ID(), "session_end"); r.Recording != path || r.Reason != "remote exit (status 0)" {
		t.Errorf("end record: recording %q, reason %q", r.Recording, r.Reason)
	}
}

func TestProbe(t *testing.T) {
	for _, network := range []string{"tcp4", "tcp6"} {
		t.Run(network, func(t *testing.T) {
			addr := map[string]string{"tcp4": "127.0.0.1:0", "tcp6": "[::1]:0"}[network]
			srv := listen(t, network, addr)
			tg := Target{Name: "vm1", Addresses: []netip.Addr{srv.addrPort().Addr()}, SSH: srv.addrPort().Port()}
			e := newEnv(t, Config{Targets: []Target{tg}})
			c, err := e.b.Probe(context.Background(), "vm1", SSH)
			if err != nil {
				t.Fatal(err)
			}
			srv.next(t)
			c.Close()
			if e.b.Live() != 0 || len(e.records()) != 0 {
				t.Errorf("a probe is not a session: %d live, %d records", e.b.Live(), len(e.records()))
			}
			_, err = e.b.Probe(context.Background(), "rogue", SSH)
			wantKind(t, err, KindUnknownTarget, `no machine called "rogue"`)
			_, err = e.b.Probe(context.Background(), "vm1", RDP)
			wantKind(t, err, KindUnknownTarget, "does not offer rdp")

			// The same target for a broker the daemon's way.
			product := newEnvTuned(t, Config{Targets: []Target{tg}}, tuning{})
			_, err = product.b.Probe(context.Background(), "vm1", SSH)
			wantKind(t, err, KindRefused, "loopback")
			srv.none(t)
		})
	}
}
