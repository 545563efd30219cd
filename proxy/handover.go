package proxy

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"slices"
	"syscall"
	"time"

	"go.uber.org/zap"
	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"
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
// holds, which it tells by their Destination Connection ID (see connIDs).
// The predecessor writes its replies to the socket itself.

// Lineage is what the QUIC connection IDs of a line of bastiond processes
// share across upgrades. Key is a secret: it travels only to the
// successor, over a private channel.
type Lineage struct {
	Key        [16]byte  // AES key of the connection IDs
	Born       time.Time // epoch of the IDs' seconds field
	Generation uint16    // this process's generation; its successor's is Generation+1
}

// NewLineage starts a line: a random key, born now, generation 0.
func NewLineage() Lineage {
	l := Lineage{Born: time.Now()}
	rand.Read(l.Key[:]) // never fails (crypto/rand, Go 1.24+)
	return l
}

// Next is the lineage of the successor: same key and birth, the next
// generation. After 65535 upgrades without a restart the count wraps, and
// a process no longer takes its predecessors' IDs for earlier ones: their
// connections end, as on a restart.
func (l Lineage) Next() Lineage {
	l.Generation++
	return l
}

const (
	lineageVersion = 1
	lineageLen     = 1 + 16 + 8 + 2
)

// MarshalBinary encodes l: a version byte (1), the key, Born in Unix
// nanoseconds and the generation, big-endian.
func (l Lineage) MarshalBinary() ([]byte, error) {
	if l.Born.IsZero() {
		return nil, errors.New("proxy: lineage: no Born time")
	}
	b := append(make([]byte, 0, lineageLen), lineageVersion)
	b = append(b, l.Key[:]...)
	b = binary.BigEndian.AppendUint64(b, uint64(l.Born.UnixNano()))
	return binary.BigEndian.AppendUint16(b, l.Generation), nil
}

// UnmarshalBinary decodes what MarshalBinary encoded.
func (l *Lineage) UnmarshalBinary(b []byte) error {
	if len(b) != lineageLen || b[0] != lineageVersion {
		return errors.New("proxy: lineage: not a version 1 encoding")
	}
	copy(l.Key[:], b[1:17])
	l.Born = time.Unix(0, int64(binary.BigEndian.Uint64(b[17:25])))
	l.Generation = binary.BigEndian.Uint16(b[25:])
	return nil
}

// Lineage is the lineage of s's QUIC connection IDs.
func (s *Server) Lineage() Lineage { return s.lineage }

// Pause stops taking new connections without closing anything: the TCP
// accept loops stop calling Accept (the kernel queues connections in the
// backlog) and the QUIC gates drop the Initial packets that could open a
// new connection (DCID not issued by this process's generation).
// Datagrams of live connections, handshakes under way and everything of
// live sessions go on. Once Pause returns, no Accept is under way: a
// connection accepted in the meantime was taken before. Resume undoes it.
func (s *Server) Pause() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pauseLocked()
}

// pauseLocked pauses s, whose mu is held.
func (s *Server) pauseLocked() {
	if s.resume != nil {
		return
	}
	s.resume = make(chan struct{})
	s.paused.Store(true)
	for _, g := range s.gates {
		g.pause()
	}
}

// Resume takes new connections again after Pause, unless s retired.
func (s *Server) Resume() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.resume == nil || s.retired {
		return
	}
	for _, g := range s.gates {
		g.setAcceptDeadline(time.Time{})
	}
	s.paused.Store(false)
	close(s.resume)
	s.resume = nil
}

// pausedUntil returns, while s is paused, a channel that Resume closes,
// and nil otherwise.
func (s *Server) pausedUntil() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.resume
}

// QUICLinkPair returns the two ends of a link (an AF_UNIX SOCK_SEQPACKET
// socketpair, close-on-exec) that carries QUIC datagrams from a successor
// process to its predecessor, one datagram per message. The daemon passes
// one end to the other process as an *os.File (via File) and rebuilds it
// there with net.FileConn.
func QUICLinkPair() (a, b *net.UnixConn, err error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("proxy: quic link: %w", os.NewSyscallError("socketpair", err))
	}
	for _, fd := range fds {
		// What a sender may have in flight on a Unix socket is its send
		// buffer: the default (about 200 KiB) would drop a burst of a busy
		// QUIC connection. Past net.core.wmem_max needs CAP_NET_ADMIN,
		// which the daemon has; without it the kernel's maximum is taken.
		if unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, linkBuffer) != nil {
			unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, linkBuffer)
		}
	}
	a, err = linkEnd(fds[0])
	if err != nil {
		unix.Close(fds[1])
		return nil, nil, err
	}
	if b, err = linkEnd(fds[1]); err != nil {
		a.Close()
		return nil, nil, err
	}
	return a, b, nil
}

// linkEnd makes a *net.UnixConn of fd, which it closes.
// linkBuffer is the send buffer of a QUIC link's ends: 4 MiB, some 3,000
// full-size datagrams.
const linkBuffer = 4 << 20

func linkEnd(fd int) (*net.UnixConn, error) {
	f := os.NewFile(uintptr(fd), "quic-link")
	defer f.Close()
	c, err := net.FileConn(f) // a close-on-exec duplicate
	if err != nil {
		return nil, fmt.Errorf("proxy: quic link: %w", err)
	}
	uc, ok := c.(*net.UnixConn)
	if !ok {
		c.Close()
		return nil, fmt.Errorf("proxy: quic link: a %T, not a Unix socket", c)
	}
	return uc, nil
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
	ql := make([]*quicLink, len(links))
	for i, c := range links {
		var err error
		if ql[i], err = newQUICLink(c); err != nil {
			return err
		}
	}
	s.retired, s.closed = true, true
	s.links = append(s.links, links...)
	s.pauseLocked()
	for i, e := range s.quic {
		e.gate.retire(ql[i])
	}
	return nil
}

// quicLink is a gate's end of a link.
type quicLink struct {
	conn *net.UnixConn
	raw  syscall.RawConn
}

func newQUICLink(c *net.UnixConn) (*quicLink, error) {
	if c == nil {
		return nil, errors.New("proxy: quic link: nil")
	}
	raw, err := c.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("proxy: quic link: %w", err)
	}
	return &quicLink{conn: c, raw: raw}, nil
}

// send writes one message without waiting: a full link drops it, as a
// full socket buffer drops a datagram.
func (l *quicLink) send(msg []byte) error {
	var err error
	if werr := l.raw.Write(func(fd uintptr) bool {
		err = unix.Send(int(fd), msg, unix.MSG_DONTWAIT|unix.MSG_NOSIGNAL)
		return true
	}); werr != nil {
		return werr
	}
	return err
}

// readLink fills ms with the datagrams waiting on the link, waiting for
// one if there are none; a message that does not decode is dropped.
func (g *quicGate) readLink(l *quicLink, ms []ipv4.Message) (int, error) {
	n := 0
	var rerr error
	err := l.raw.Read(func(fd uintptr) bool {
		for range len(ms) {
			k, _, flags, _, err := unix.Recvmsg(int(fd), g.rbuf, nil, unix.MSG_DONTWAIT)
			switch {
			case err == unix.EAGAIN:
				return n > 0 // wait, if nothing came
			case err == unix.EINTR: // try again
			case err != nil:
				rerr = os.NewSyscallError("recvmsg", err)
				return true
			case k == 0:
				// A link message is never empty: the successor closed its end.
				rerr = io.EOF
				return true
			case flags&unix.MSG_TRUNC != 0:
				g.debug("dropped a link message: too long", nil, nil)
			default:
				if err := decodeLinkDatagram(g.rbuf[:k], &ms[n]); err != nil {
					g.debug("dropped a link message", nil, err)
				} else {
					n++
				}
			}
		}
		return true
	})
	switch {
	case err != nil:
		return 0, err
	case n == 0 && rerr != nil:
		g.s.log.Warn("quic: the successor's link failed: this process's QUIC connections end", zap.Error(rerr))
		return 0, fmt.Errorf("proxy: quic link: %w", rerr)
	}
	return n, nil
}

// A link message is one datagram the successor read:
//
//	version                 1 byte, 1
//	address length          1 byte
//	address                 the client's netip.AddrPort in binary form
//	control messages length 2 bytes, big-endian
//	control messages        as the socket gave them (ECN, packet info)
//	datagram                to the end of the message
//
// The address and control messages are the socket's own, so that quic-go
// sees the datagram as if it had read it, and replies from the address the
// client sent to.
const (
	linkVersion = 1
	// maxLinkMessage bounds a link message: quic-go reads datagrams of at
	// most 1452 bytes with 128 bytes of control messages; this leaves room.
	maxLinkMessage = 1 << 16
)

var errLinkMessage = errors.New("malformed link message, or too large for quic-go's buffers")

// appendLinkDatagram appends to b the link message of the datagram data
// from addr, with the control messages oob.
func appendLinkDatagram(b []byte, addr netip.AddrPort, oob, data []byte) ([]byte, error) {
	if !addr.Addr().IsValid() || len(oob) > 0xffff {
		return b, errLinkMessage
	}
	b = append(b, linkVersion, 0)
	at := len(b)
	b, _ = addr.AppendBinary(b) // never fails
	if len(b)-at > 0xff {       // a long zone
		return b[:at-2], errLinkMessage
	}
	b[at-1] = byte(len(b) - at)
	b = binary.BigEndian.AppendUint16(b, uint16(len(oob)))
	b = append(b, oob...)
	return append(b, data...), nil
}

// decodeLinkDatagram fills m, which must have a single buffer, with the
// datagram of the link message p, as a read of the socket would have.
func decodeLinkDatagram(p []byte, m *ipv4.Message) error {
	if len(p) < 2 || p[0] != linkVersion || len(p) < 2+int(p[1])+2 {
		return errLinkMessage
	}
	var addr netip.AddrPort
	alen := int(p[1])
	if err := addr.UnmarshalBinary(p[2 : 2+alen]); err != nil || !addr.Addr().IsValid() {
		return errLinkMessage
	}
	olen, p := int(binary.BigEndian.Uint16(p[2+alen:])), p[2+alen+2:]
	if olen > len(p) {
		return errLinkMessage
	}
	oob, data := p[:olen], p[olen:]
	if len(data) == 0 || len(data) > len(m.Buffers[0]) || len(oob) > len(m.OOB) {
		return errLinkMessage
	}
	m.N = copy(m.Buffers[0], data)
	m.NN = copy(m.OOB, oob)
	m.Flags, m.Addr = 0, net.UDPAddrFromAddrPort(addr)
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
func (s *Server) handingOver() bool { return s.paused.Load() }
