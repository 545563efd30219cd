package proxy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"slices"

	"github.com/bastiond/bastiond/proxy/handover"
)

// A binary upgrade hands the listening sockets over from a process to its
// successor while the old process carries its live sessions to their end:
//
//	old.Pause()                          // stop taking connections
//	new := New(Config{Lineage: &next})   // next = old.Lineage().Next()
//	new.ImportSessions(old.ExportSessions())
//	new.SetPredecessor(links); new.Serve(dups of old's sockets)
//	old.Retire(links' other ends)        // stop for good, read the link
//
// TCP needs nothing more: an accepted connection is the process's that
// accepted it. A UDP socket, though, delivers every datagram to whichever
// process reads it, so the successor alone reads, and hands on over a
// link (QUICLinkPair) the datagrams of the connections its predecessor
// holds, which it tells by their Destination Connection ID (see
// handover.ConnIDs). The predecessor writes its replies to the socket
// itself. The pieces are in proxy/handover; the gates (proxy/gate) route.

// Lineage is the lineage of s's QUIC connection IDs.
func (s *Server) Lineage() handover.Lineage { return s.lineage }

// Pause stops taking new connections without closing anything (see
// gate.Door.Pause): new connections wait in the kernel's backlog, and the
// QUIC gates drop the Initials that could open one. Resume undoes it.
func (s *Server) Pause() { s.door.Pause() }

// Resume takes new connections again after Pause, unless s retired.
func (s *Server) Resume() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.retired {
		s.door.Resume()
	}
}

// SetPredecessor gives a successor, before Serve, one link per UDP socket
// (in the order of Serve's udp) to its predecessor: every datagram a gate
// reads whose Destination Connection ID an earlier generation of the
// lineage issued, of any packet type, goes to the link instead of quic-go,
// without waiting: a full or closed link drops it. An Initial to an ID
// that is not of the lineage, a client's first flight, is for this
// process, whose gate screens it. s owns the links from then on: Close
// closes them.
func (s *Server) SetPredecessor(links []*net.UnixConn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pred = slices.Clone(links)
	s.links = append(s.links, links...)
}

// Retire is the old process's half of the hand-over, once the successor
// serves. It stops taking connections for good: the TCP listeners' and
// idle connections' descriptors of this process are closed and HTTP
// requests in flight finish, as with Shutdown; the QUIC gates take no new
// connection (Retire implies Pause). The QUIC listeners stay open for the
// handshakes under way, which the successor hands on; Serve returns after
// Shutdown closes them.
//
// From then on the QUIC gates never read the UDP sockets again: they read
// the datagrams the successor writes to links, one per UDP socket in the
// order of Serve's udp. Those of this process's generation go to quic-go;
// those of an earlier one go on to this process's predecessor, if it has
// one (a chain of upgrades), else are dropped; nothing goes back on the
// link it came from. Replies go straight to the UDP sockets. Live
// sessions, WebSockets and QUIC connections with their streams, go on.
// s owns the links from then on (Close closes them); on an error, nothing
// changed. A process must live while its predecessors do: it carries
// their datagrams.
func (s *Server) Retire(links []*net.UnixConn) error {
	if err := s.retire(links); err != nil {
		return err
	}
	// With a done context, Shutdown closes the listeners and idle
	// connections and returns at once; requests in flight finish, and
	// their connections close after them.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	s.http.Shutdown(ctx)
	return nil
}

// retire pauses s and switches its QUIC gates to links, for good.
func (s *Server) retire(links []*net.UnixConn) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.retired:
		return errors.New("proxy: retire: retired already")
	case s.closed:
		return errors.New("proxy: retire: the server is shut down")
	case len(links) != len(s.quic):
		return fmt.Errorf("proxy: retire: %d links for %d QUIC sockets", len(links), len(s.quic))
	}
	ql := make([]*handover.Link, len(links))
	for i, c := range links {
		var err error
		if ql[i], err = handover.NewLink(c); err != nil {
			return err
		}
	}
	s.retired, s.closed = true, true
	s.links = append(s.links, links...)
	s.door.Pause()
	for i, e := range s.quic {
		e.gate.Retire(ql[i])
	}
	return nil
}

// handedSessions is what ExportSessions writes and ImportSessions reads.
type handedSessions struct {
	Version     int    `json:"version"`
	WebSessions []byte `json:"web_sessions"`
	Tickets     []byte `json:"tickets"`
}

// ExportSessions returns the signed-in web sessions and the unredeemed
// tickets, for ImportSessions in the successor, so that nobody is signed
// out by an upgrade. Sessions and tickets made afterwards are not in it:
// call it once s is paused. The bytes hold secrets (the sessions' CSRF
// tokens): they travel over a private channel and are never logged.
func (s *Server) ExportSessions() ([]byte, error) {
	web, tickets, err := s.portal.ExportSessions()
	if err != nil {
		return nil, fmt.Errorf("proxy: export sessions: %w", err)
	}
	return json.Marshal(handedSessions{Version: 1, WebSessions: web, Tickets: tickets})
}

// ImportSessions adds what ExportSessions returned in the predecessor.
// Each session and ticket keeps its times: one already expired by this
// server's limits is left out. On an error, the web sessions may be in and
// the tickets not; a ticket without its session is of no use anyway.
func (s *Server) ImportSessions(b []byte) error {
	var h handedSessions
	if err := json.Unmarshal(b, &h); err != nil {
		return fmt.Errorf("proxy: import sessions: %w", err)
	}
	if h.Version != 1 {
		return fmt.Errorf("proxy: import sessions: version %d", h.Version)
	}
	if err := s.portal.ImportSessions(h.WebSessions, h.Tickets); err != nil {
		return fmt.Errorf("proxy: import sessions: %w", err)
	}
	return nil
}

// handingOver says whether s is paused or retired: its state store may be
// another process's, so new sessions on connections it already holds are
// sent to the new process.
func (s *Server) handingOver() bool { return s.door.Paused() }
