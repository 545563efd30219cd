package broker

import (
	"context"
	"net/netip"
	"slices"
	"testing"
)

// TestWatchersInEndRecord: the end record lists everyone who watched the
// session, once each, sorted, whoever left before the end; a session no
// one watched has no watchers field.
func TestWatchersInEndRecord(t *testing.T) {
	for _, network := range []string{"tcp4", "tcp6"} {
		t.Run(network, func(t *testing.T) {
			addr := map[string]string{"tcp4": "127.0.0.1:0", "tcp6": "[::1]:0"}[network]
			srv := listen(t, network, addr)
			tg := Target{Name: "vm1", Addresses: []netip.Addr{srv.addrPort().Addr()}, SSH: srv.addrPort().Port()}
			e := newEnv(t, Config{Targets: []Target{tg}})
			open := func() *Session {
				s, err := e.b.Open(context.Background(), Request{User: "alice", Target: "vm1", Protocol: SSH, Via: "browser"})
				if err != nil {
					t.Fatal(err)
				}
				srv.next(t)
				return s
			}
			s := open()
			s.AddWatchers([]string{"carol"})
			s.AddWatchers([]string{"carol", "dave"})
			s.AddWatchers(nil) // both left
			s.AddWatchers([]string{"bob"})
			s.End(ReasonClientClosed)
			if r := e.record(s.ID(), "session_end"); !slices.Equal(r.Watchers, []string{"bob", "carol", "dave"}) {
				t.Errorf("watchers %q", r.Watchers)
			}
			u := open()
			u.End(ReasonClientClosed)
			if r := e.record(u.ID(), "session_end"); r.Watchers != nil {
				t.Errorf("an unwatched session's watchers %q", r.Watchers)
			}
		})
	}
}
