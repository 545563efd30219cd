package broker

import (
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

func TestRelayExactCounts(t *testing.T) {
	const up = 100 << 20
	const down = 3<<20 + 11
	for _, c := range []struct {
		name    string
		network string
		addr    string
		client  string
		reason  string
	}{
		{"splice/ipv4", "tcp4", "127.0.0.1:0", clientTCP, ReasonClientClosed},
		{"splice/ipv6", "tcp6", "[::1]:0", clientTCP, ReasonClientClosed},
		{"buffered/ipv4", "tcp4", "127.0.0.1:0", clientOpaque, ReasonClientClosed},
		{"buffered/ipv6", "tcp6", "[::1]:0", clientOpaque, ReasonClientClosed},
		// A client without half-close cannot say it is done sending: the
		// target answers and closes first, and the relay closes the client.
		{"pipe/ipv4", "tcp4", "127.0.0.1:0", clientPipe, ReasonTargetClosed},
		{"pipe/ipv6", "tcp6", "[::1]:0", clientPipe, ReasonTargetClosed},
	} {
		t.Run(c.name, func(t *testing.T) {
			srv := listen(t, c.network, c.addr)
			e := newEnv(t, Config{Targets: []Target{targetAt("vm1", srv.addrPort())}})
			s, user, done := relayed(t, e, srv, "alice", c.client)
			target := srv.next(t)

			// The target reads everything, then answers: after the user's
			// end of stream where there is one (the half-close must carry
			// the answer back), after the last byte otherwise.
			go func() {
				if c.client == clientPipe {
					io.CopyN(io.Discard, target, up)
				} else {
					io.Copy(io.Discard, target)
				}
				target.Write(make([]byte, down))
				target.Close()
			}()
			go func() {
				buf := make([]byte, 64<<10)
				for sent := 0; sent < up; sent += len(buf) {
					if _, err := user.Write(buf); err != nil {
						t.Error(err)
						return
					}
				}
				if cw, ok := user.(*net.TCPConn); ok {
					cw.CloseWrite()
				}
			}()
			got, err := io.Copy(io.Discard, user)
			if err != nil || got != down {
				t.Errorf("user read %d bytes (%v), want %d", got, err, down)
			}
			user.Close()
			waitDone(t, done)
			end := e.record(s.ID(), "session_end")
			if *end.BytesUp != up || *end.BytesDown != down || !*end.BytesExact {
				t.Errorf("end record: up %d down %d exact %v; want up %d down %d", *end.BytesUp, *end.BytesDown, *end.BytesExact, up, down)
			}
			if end.Reason != c.reason {
				t.Errorf("reason %q, want %q", end.Reason, c.reason)
			}
			if i := s.Info(); i.BytesUp != up || i.BytesDown != down {
				t.Errorf("live counters %d/%d", i.BytesUp, i.BytesDown)
			}
			start := e.record(s.ID(), "session_start")
			if start.User != "alice" || start.Address != srv.addrPort().String() || start.Via != "quic" || start.Token != "tok1" ||
				start.Client != "[2001:db8::10]:50000" || start.Protocol != Tunnel || start.Port != srv.addrPort().Port() ||
				len(start.Roles) != 1 || start.Roles[0] != "ops" {
				t.Errorf("start record: %+v", start)
			}
			if e.b.Live() != 0 || len(e.liveKeys()) != 0 {
				t.Errorf("%d sessions still live, live entries %v", e.b.Live(), e.liveKeys())
			}
		})
	}
}

// TestRelayReasons ends relays each way a session can end by itself and
// checks the recorded reason.
func TestRelayReasons(t *testing.T) {
	type sides struct{ user, target *net.TCPConn }
	reset := func(c *net.TCPConn) {
		c.SetLinger(0) // close sends a reset
		c.Close()
	}
	cases := []struct {
		name   string
		end    func(t *testing.T, s sides)
		reason string // a prefix
		up     int64
		down   int64
	}{
		{"client first", func(t *testing.T, s sides) {
			s.user.Write([]byte("exit\n"))
			s.user.CloseWrite()
			io.ReadFull(s.target, make([]byte, 5))
			if n, _ := s.target.Read(make([]byte, 1)); n != 0 {
				t.Error("the target got more than the user sent")
			}
			s.target.Write([]byte("bye"))
			s.target.Close()
		}, ReasonClientClosed, 5, 3},
		{"target first", func(t *testing.T, s sides) {
			s.target.Write([]byte("logout\n"))
			s.target.Close()
			// The user closes once it has read the target's end.
			if b, err := io.ReadAll(s.user); err != nil || string(b) != "logout\n" {
				t.Errorf("user read %q, %v", b, err)
			}
			s.user.Close()
		}, ReasonTargetClosed, 0, 7},
		{"the target resets mid-transfer", func(t *testing.T, s sides) {
			s.user.Write([]byte("hello"))
			io.ReadFull(s.target, make([]byte, 5))
			reset(s.target)
		}, ReasonTargetUnreachable, 5, 0},
		{"the client resets", func(t *testing.T, s sides) {
			s.target.Write([]byte("hi"))
			io.ReadFull(s.user, make([]byte, 2))
			reset(s.user)
		}, ReasonClientError, 0, 2},
		// A side that ended its stream and then closed without reading
		// what still came (xfreerdp +auth-only, ssh at exit) finished:
		// the reset or broken pipe the relay meets writing to it is not
		// a failure.
		{"the client ends, then resets", func(t *testing.T, s sides) {
			s.user.Write([]byte("exit\n"))
			s.user.CloseWrite()
			io.ReadAll(s.target)
			reset(s.user)
			writeUntilFails(s.target)
			s.target.Close()
		}, ReasonClientClosed, 5, -1},
		{"the target ends, then resets", func(t *testing.T, s sides) {
			s.target.Write([]byte("logout\n"))
			s.target.CloseWrite()
			io.ReadAll(s.user)
			reset(s.target)
			writeUntilFails(s.user)
			s.user.Close()
		}, ReasonTargetClosed, -1, 7},
	}
	for _, client := range []string{clientTCP, clientOpaque} {
		for _, c := range cases {
			t.Run(client+"/"+c.name, func(t *testing.T) {
				srv := listen(t, "tcp4", "127.0.0.1:0")
				e := newEnv(t, Config{Targets: []Target{targetAt("vm1", srv.addrPort())}})
				s, u, done := relayed(t, e, srv, "alice", client)
				target := srv.next(t)
				c.end(t, sides{u.(*net.TCPConn), target.(*net.TCPConn)})
				// Whatever the user still gets, the relay ends: drain it.
				u.SetReadDeadline(time.Now().Add(5 * time.Second))
				io.Copy(io.Discard, u)
				waitDone(t, done)
				r := e.record(s.ID(), "session_end")
				if !strings.HasPrefix(r.Reason, c.reason) || c.up >= 0 && *r.BytesUp != c.up || c.down >= 0 && *r.BytesDown != c.down {
					t.Errorf("end record: reason %q up %d down %d; want %q, %d, %d", r.Reason, *r.BytesUp, *r.BytesDown, c.reason, c.up, c.down)
				}
				if s.EndReason() != r.Reason {
					t.Errorf("EndReason %q, recorded %q", s.EndReason(), r.Reason)
				}
			})
		}
	}
}

// writeUntilFails writes to c until a write fails: the relay has stopped
// taking what c sends.
func writeUntilFails(c *net.TCPConn) {
	c.SetWriteDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 64<<10)
	for {
		if _, err := c.Write(buf); err != nil {
			return
		}
	}
}

// TestAdaptiveBuffers carries bursts of every size around the thresholds
// where the buffered paths switch between their small buffer (or none) and
// a pooled one, and checks the bytes and the counts.
func TestAdaptiveBuffers(t *testing.T) {
	srv := listen(t, "tcp4", "127.0.0.1:0")
	e := newEnv(t, Config{Targets: []Target{targetAt("vm1", srv.addrPort())}})
	s, u, done := relayed(t, e, srv, "alice", clientPipe)
	target := srv.next(t)
	// Bursts of every size both ways, with pauses between, so that each
	// path switches between its small and large buffers.
	var wantUp, wantDown int64
	for _, n := range []int{1, 1023, 1024, 2048, 2049, 40 << 10, 7, 1 << 20, 3} {
		msg := make([]byte, n)
		for i := range msg {
			msg[i] = byte(i * n)
		}
		go u.Write(msg)
		got := make([]byte, n)
		if _, err := io.ReadFull(target, got); err != nil || string(got) != string(msg) {
			t.Fatalf("%d bytes up: %v", n, err)
		}
		go target.Write(msg)
		if _, err := io.ReadFull(u, got); err != nil || string(got) != string(msg) {
			t.Fatalf("%d bytes down: %v", n, err)
		}
		wantUp += int64(n)
		wantDown += int64(n)
	}
	s.End(ReasonAccessRevoked)
	waitDone(t, done)
	r := e.record(s.ID(), "session_end")
	if *r.BytesUp != wantUp || *r.BytesDown != wantDown || r.Reason != ReasonAccessRevoked {
		t.Errorf("end record: %q up %d down %d, want %d %d", r.Reason, *r.BytesUp, *r.BytesDown, wantUp, wantDown)
	}
}
