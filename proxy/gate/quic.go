package gate

import (
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"os"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/quic-go/quic-go"
	"go.uber.org/zap"
	"golang.org/x/net/ipv4"

	"github.com/bastiond/bastiond/internal/addrport"
	"github.com/bastiond/bastiond/internal/source"
	"github.com/bastiond/bastiond/internal/udpgro"
	"github.com/bastiond/bastiond/proxy/gate/quicinitial"
	"github.com/bastiond/bastiond/proxy/handover"
	"github.com/bastiond/bastiond/proxy/internal/servername"
)

// QUIC is to QUIC what TCP is to TLS over TCP: it sits between the UDP
// socket and quic-go and reads every client's ClientHello before quic-go
// sees a single datagram of the connection. It decrypts the client's
// Initial packets (anyone can: the keys derive from the packet's own
// Destination Connection ID), holds them until the ClientHello is whole, and
// then either releases them, in order, to quic-go, if the hello names the
// server and offers the tunnel's ALPN, or drops them. (Of a flight quic-go
// will answer with a Retry, it releases the first datagram only.) A scanner that does not know
// the server name therefore gets nothing back at all: no Version
// Negotiation, no Retry, no CONNECTION_CLOSE, no certificate; a datagram
// that is not QUIC version 1 is dropped too. Retry, which the front door
// requires of every source without a token (see proxy.Server), comes from
// quic-go and so only after the gate admitted the hello.
//
// What passes unread: short-header packets, v1 0-RTT, Handshake and Retry
// packets (quic-go answers none of them for a connection it does not have,
// as long as the Transport has no StatelessResetKey), Initial packets of a
// (source, DCID) already admitted, and Initial packets to a connection ID
// the server issued (see handover.ConnIDs) that the keys of that ID do not open: the
// client's later Initials of a handshake quic-go runs. The gate reads only
// the first packet of a datagram; packets coalesced behind it reach quic-go
// unread, which matters only to a client that sent the right name in the
// first ones.
//
// Across upgrades (see handover.Lineage), the gate also routes: a datagram whose
// Destination Connection ID an earlier generation issued goes to the
// predecessor's link instead of quic-go. Paused, the gate drops the
// Initials that could start a connection; retired, it reads the
// successor's link instead of the socket.
type QUIC struct {
	pc   net.PacketConn
	udp  *net.UDPConn                         // pc, when it is one
	read func(ms []ipv4.Message) (int, error) // reads the socket
	gro  *udpgro.Reader                       // under read, when the socket has UDP_GRO
	d    *Door
	ids  *handover.ConnIDs
	pred *handover.Link // to the predecessor, for its datagrams; nil drops them
	now  func() time.Time

	maxPending, maxPerSource, maxDecided int

	// rbuf and wbuf hold a link message read or written; only the one
	// goroutine that reads the gate (quic-go's) uses them.
	rbuf, wbuf []byte

	mu        sync.Mutex
	pending   map[gateKey]*pendingHello
	perSource map[netip.Prefix]int // pending entries per source (source.Of)
	decided   map[gateKey]decision
	evicted   int64          // pending entries forgotten to make room, for the metrics
	refused   int64          // Initials dropped at their source's cap, for the metrics
	queue     []heldDatagram // admitted, for quic-go's next reads
	swept     time.Time
	// link is the successor's, which the gate reads instead of the socket
	// once retired; readDeadline is the last one quic-go set, for whichever
	// of the two the gate reads.
	link         *handover.Link
	readDeadline time.Time
}

// Bounds of the gate's state.
const (
	maxPendingHellos   = 4096  // Initials whose ClientHello is incomplete
	maxPendingPerSrc   = 16    // of them from one source (an IPv4 address, an IPv6 /64)
	maxDecidedHellos   = 16384 // (source, DCID) admitted or rejected
	maxHelloDatagrams  = 4     // datagrams held for one ClientHello
	minInitialDatagram = 1200  // RFC 9000 section 14.1
	// maxHelloSpan bounds the crypto stream offsets the gate assembles:
	// quic-go reads at most 1452 bytes of a datagram, so a ClientHello
	// in 4 of them ends before this.
	maxHelloSpan = maxHelloDatagrams * 1452
)

// gateKey is a client's first flight: its source and the DCID it chose.
type gateKey struct {
	src  netip.AddrPort
	n    uint8
	dcid [20]byte
}

type pendingHello struct {
	start time.Time
	asm   quicinitial.Assembler
	held  []heldDatagram
}

type heldDatagram struct {
	data, oob []byte
	flags     int
	addr      net.Addr
}

type decision struct {
	admit bool
	at    time.Time
}

// QUIC puts a gate in front of pc, with the link to this process's
// predecessor, if it has one. Give quic-go its Conn, not pc.
func (d *Door) QUIC(pc net.PacketConn, pred *handover.Link) *QUIC {
	g := &QUIC{
		pc: pc, d: d, ids: d.cfg.IDs, pred: pred, now: time.Now,
		maxPending: maxPendingHellos, maxPerSource: maxPendingPerSrc, maxDecided: maxDecidedHellos,
		pending: map[gateKey]*pendingHello{}, perSource: map[netip.Prefix]int{}, decided: map[gateKey]decision{},
	}
	if udp, ok := pc.(*net.UDPConn); ok {
		// As quic-go does for a *net.UDPConn: recvmmsg, with the control
		// messages (ECN, packet info) it asked the socket for. The ipv4
		// Message is the same type as ipv6's and reads either family.
		bc := ipv4.NewPacketConn(udp)
		g.udp, g.read = udp, func(ms []ipv4.Message) (int, error) { return bc.ReadBatch(ms, 0) }
		// With UDP_GRO, through a reader that cuts the kernel's trains of
		// datagrams back into datagrams (package udpgro).
		if g.gro = udpgro.New(udp); g.gro != nil {
			g.read = g.gro.Read
		}
	} else {
		g.read = func(ms []ipv4.Message) (int, error) {
			n, addr, err := pc.ReadFrom(ms[0].Buffers[0])
			if err != nil {
				return 0, err
			}
			ms[0].N, ms[0].NN, ms[0].Flags, ms[0].Addr = n, 0, 0, addr
			return 1, nil
		}
	}
	d.mu.Lock()
	d.quic = append(d.quic, g)
	d.mu.Unlock()
	return g
}

// Conn is the net.PacketConn to give quic-go: for a UDP socket, one that
// keeps quic-go's optimizations (batched reads, ECN, packet info, GSO, DF).
func (g *QUIC) Conn() net.PacketConn {
	if g.udp != nil {
		return udpGate{g}
	}
	return g
}

// readBatch fills ms with the datagrams that pass: those the gate released
// first, else those it reads from the socket, or once retired, from the
// successor's link. It holds no lock while it reads, and never reads while
// released datagrams wait. Each message must have a single buffer, as
// quic-go's do.
func (g *QUIC) readBatch(ms []ipv4.Message) (int, error) {
	if len(ms) == 0 {
		return 0, nil
	}
	for {
		g.mu.Lock()
		if len(g.queue) > 0 {
			n := g.unqueue(ms)
			g.mu.Unlock()
			return n, nil
		}
		link := g.link
		g.mu.Unlock()
		var n int
		var err error
		if link != nil && !g.gro.Holds() {
			n, err = g.readLink(link, ms)
		} else if n, err = g.read(ms); errors.Is(err, os.ErrDeadlineExceeded) && g.Retired() {
			// retire interrupted the read: the next one is from the link,
			// and quic-go, which would take this for a closing, never
			// hears of it.
			n, err = 0, nil
		}
		if err != nil {
			return 0, err
		}
		if n = g.filter(ms[:n]); n > 0 {
			return n, nil
		}
	}
}

// Retire makes the gate read the successor's link instead of the socket,
// for good: the old process's half of a hand-over.
func (g *QUIC) Retire(link *handover.Link) {
	g.mu.Lock()
	g.rbuf = make([]byte, handover.MaxMessage)
	g.link = link
	// A deadline quic-go set to stop its reads applies to the link now.
	link.SetReadDeadline(g.readDeadline)
	g.mu.Unlock()
	// Wake a read of the socket under way. An error means the socket is
	// closed, and then nothing reads it anyway.
	g.pc.SetReadDeadline(aLongTimeAgo)
}

// readLink fills ms with the datagrams waiting on the successor's link,
// waiting for one if there are none; a message that does not decode is
// dropped.
func (g *QUIC) readLink(l *handover.Link, ms []ipv4.Message) (int, error) {
	n, err := l.ReadBatch(g.rbuf, ms, func(err error) { g.debug("dropped a link message", nil, err) })
	if err != nil {
		g.d.cfg.Log.Warn("quic: the successor's link failed: this process's QUIC connections end", zap.Error(err))
	}
	return n, err
}

// connIDMargin is how long an issued ID outlives twice the handshake
// timeout, for Initials late on the wire.
const connIDMargin = 10 * time.Second

// aLongTimeAgo is a deadline that has passed.
var aLongTimeAgo = time.Unix(1, 0)

// Retired reports whether the gate reads its successor's link, not the socket.
func (g *QUIC) Retired() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.link != nil
}

// filter screens the datagrams in ms and moves those that pass to the front,
// copying bytes: the buffers stay with their slots, as quic-go pairs each
// slot with its own buffer. Once the gate released datagrams, the ones that
// pass after them join the queue, so that quic-go gets them all in order.
func (g *QUIC) filter(ms []ipv4.Message) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := 0
	for i := range ms {
		m := &ms[i]
		if !g.screen(m) {
			continue
		}
		if len(g.queue) > 0 {
			g.queue = append(g.queue, hold(m))
			continue
		}
		if out != i {
			d := &ms[out]
			d.N = copy(d.Buffers[0], m.Buffers[0][:m.N])
			d.NN = copy(d.OOB, m.OOB[:m.NN])
			d.Flags, d.Addr = m.Flags, m.Addr
		}
		out++
	}
	return out
}

// unqueue moves released datagrams into ms.
func (g *QUIC) unqueue(ms []ipv4.Message) int {
	n := 0
	for ; n < len(ms) && n < len(g.queue); n++ {
		m, h := &ms[n], &g.queue[n]
		m.N = copy(m.Buffers[0], h.data)
		m.NN = 0
		if len(h.oob) <= len(m.OOB) { // half a control message would be worse than none
			m.NN = copy(m.OOB, h.oob)
		}
		m.Flags, m.Addr = h.flags, h.addr
	}
	g.queue = g.queue[n:]
	if len(g.queue) == 0 {
		g.queue = nil
	}
	return n
}

func hold(m *ipv4.Message) heldDatagram {
	return heldDatagram{
		data:  slices.Clone(m.Buffers[0][:m.N]),
		oob:   slices.Clone(m.OOB[:m.NN]),
		flags: m.Flags,
		addr:  m.Addr,
	}
}

// screen decides on one datagram: true to pass it on now; false when it is
// dropped, handed to the predecessor, or held or released by the gate,
// which then keeps a copy.
func (g *QUIC) screen(m *ipv4.Message) bool {
	b := m.Buffers[0][:m.N]
	switch {
	case len(b) == 0:
		return false
	case b[0]&0x80 == 0: // short header: a connection quic-go or a predecessor has, or nothing
		return g.route(m, b[1:min(len(b), 1+handover.ConnIDLen)])
	case len(b) < 5 || binary.BigEndian.Uint32(b[1:5]) != quicinitial.Version1:
		g.debug("dropped a datagram of another QUIC version", m.Addr, nil)
		return false
	case b[0]>>4&3 != 0: // 0-RTT, Handshake, Retry
		return g.route(m, longDCID(b))
	}
	hdr, err := quicinitial.ParseLongHeader(b)
	if err != nil {
		g.debug("dropped an unreadable Initial", m.Addr, err)
		return false
	}
	if !g.route(m, hdr.DCID) {
		return false
	}
	k := gateKey{src: addrPort(m.Addr), n: uint8(len(hdr.DCID))}
	copy(k.dcid[:], hdr.DCID)
	cfg := g.d.settings()
	now := g.now()
	issued := g.ids.Issued(hdr.DCID, now, 2*cfg.HandshakeTimeout+connIDMargin)
	if !issued && g.d.paused.Load() {
		g.debug("dropped an Initial: paused", m.Addr, nil)
		return false
	}
	if !issued && g.d.limits.handshakesFull(k.src.Addr()) {
		// It could only start a handshake that ConnContext refuses; quic-go
		// would first answer it with a Retry, and then the answer to the
		// Retry with CONNECTION_REFUSED, both from the one goroutine that
		// sends every Retry, whose queue of 8 a flood fills. Nothing is
		// sent: the client tries again a moment later.
		g.d.limits.refused[refusedHandshakeSource].Add(1)
		g.debug("dropped an Initial: too many handshakes under way from its source", m.Addr, nil)
		return false
	}
	g.sweep(now, cfg.HandshakeTimeout)
	if d, ok := g.decided[k]; ok && now.Sub(d.at) <= 2*cfg.HandshakeTimeout {
		return d.admit
	}
	if !issued && len(b) < minInitialDatagram {
		g.debug("dropped a short Initial", m.Addr, nil)
		return false
	}
	_, frames, err := quicinitial.OpenInitial(b)
	switch {
	case err != nil && issued:
		// A later Initial of a handshake quic-go runs, sealed with the
		// keys of the client's first DCID.
		return true
	case err != nil:
		g.debug("dropped an Initial that does not open", m.Addr, err)
		return false
	case len(b) < minInitialDatagram:
		g.debug("dropped a short Initial", m.Addr, nil)
		return false
	}
	// quic-go answers an Initial without a token, to a connection ID it
	// did not issue, with a Retry (proxy.Server asks it to of every
	// source), whatever the rest of the first flight holds: the client
	// sends all of it again, with the token.
	g.assemble(k, m, frames, cfg, now, !issued && len(hdr.Token) == 0)
	return false
}

// assemble holds a copy of m, an Initial of the first flight k, adds its
// CRYPTO frames to the flight's ClientHello, and once that is whole,
// releases or drops the flight's datagrams. Of a flight quic-go answers
// with a Retry (retried), it releases the first datagram only: each of the
// others would cost quic-go one more Retry, which the client ignores, sent
// from the one goroutine that sends every Retry behind a queue of 8; under
// a flood, what does not fit is dropped, a real client's Retry among them.
func (g *QUIC) assemble(k gateKey, m *ipv4.Message, frames []quicinitial.CryptoFrame, cfg Settings, now time.Time, retried bool) {
	p := g.pending[k]
	if p != nil && now.Sub(p.start) > cfg.HandshakeTimeout {
		g.unpend(k)
		p = nil
	}
	if p == nil {
		src := source.Of(k.src.Addr())
		if g.perSource[src] >= g.maxPerSource {
			g.refused++
			g.debug("dropped an Initial: too many incomplete ClientHellos from its source", m.Addr, nil)
			return
		}
		if len(g.pending) >= g.maxPending {
			// Evict one at random rather than refuse: a spoofed trickle
			// could otherwise keep the table full and every client out,
			// where now it has to outpace the few milliseconds a client
			// takes to send its whole first flight.
			for old := range g.pending {
				g.unpend(old)
				g.evicted++
				break
			}
		}
		p = &pendingHello{start: now}
		g.pending[k] = p
		g.perSource[src]++
	}
	p.held = append(p.held, hold(m))
	var err error
	for _, f := range frames {
		if f.Offset+uint64(len(f.Data)) > maxHelloSpan {
			err = errHelloSpan
		}
	}
	if err == nil {
		err = p.asm.Add(frames)
	}
	var msg []byte
	complete := false
	if err == nil {
		msg, complete, err = p.asm.ClientHello()
	}
	if err == nil && !complete {
		if len(p.held) < maxHelloDatagrams {
			return // wait for the rest
		}
		err = errHelloDatagrams
	}
	var hello clientHello
	if err == nil {
		hello, err = parseClientHello(msg[4:])
	}
	admit := err == nil && servername.Same(hello.serverName, cfg.ServerName) && slices.Contains(hello.alpn, g.d.cfg.ALPN)
	switch {
	case admit && retried:
		g.queue = append(g.queue, p.held[0])
	case admit:
		g.queue = append(g.queue, p.held...)
	default:
		g.debug("dropped a QUIC ClientHello", m.Addr, err, zap.String("server_name", hello.serverName), zap.Strings("alpn", hello.alpn))
	}
	g.unpend(k)
	if len(g.decided) < g.maxDecided {
		g.decided[k] = decision{admit: admit, at: now}
	}
}

var (
	errHelloDatagrams = errors.New("ClientHello incomplete after 4 datagrams")
	errHelloSpan      = errors.New("CRYPTO data beyond what 4 datagrams carry")
)

// route says whether m, a datagram to the connection ID dcid, is this
// process's to screen. A datagram for an earlier generation goes to the
// predecessor instead; in a retired gate, which reads what its successor
// sends, one for no generation of the lineage or a later one is dropped.
// Datagrams only ever go to an earlier generation than the one that
// routes them, so none can loop.
func (g *QUIC) route(m *ipv4.Message, dcid []byte) bool {
	if g.pred == nil && g.link == nil {
		// Neither upgraded from nor retired: every datagram is this
		// process's (an earlier generation's would be dropped anyway),
		// and the hot path decrypts no connection ID.
		return true
	}
	gen, ok := g.ids.GenerationOf(dcid)
	switch {
	case ok && gen < g.ids.Generation():
		g.forward(m)
		return false
	case g.link != nil && (!ok || gen != g.ids.Generation()):
		g.debug("dropped a datagram from the successor's link: not of this generation", m.Addr, nil)
		return false
	}
	return true
}

// forward writes m to the predecessor's link, or drops it if there is none
// or the link is full.
func (g *QUIC) forward(m *ipv4.Message) {
	if g.pred == nil {
		g.debug("dropped a datagram of an earlier generation: no predecessor", m.Addr, nil)
		return
	}
	var err error
	g.wbuf, err = handover.AppendDatagram(g.wbuf[:0], rawAddrPort(m.Addr), m.OOB[:m.NN], m.Buffers[0][:m.N])
	if err == nil {
		err = g.pred.Send(g.wbuf)
	}
	if err != nil {
		g.debug("dropped a datagram for the predecessor", m.Addr, err)
	}
}

// longDCID is the Destination Connection ID of a long-header packet, or
// nil if b is too short to hold it.
func longDCID(b []byte) []byte {
	if len(b) < 6 || len(b) < 6+int(b[5]) {
		return nil
	}
	return b[6 : 6+int(b[5])]
}

func (g *QUIC) unpend(k gateKey) {
	delete(g.pending, k)
	src := source.Of(k.src.Addr())
	if g.perSource[src]--; g.perSource[src] <= 0 {
		delete(g.perSource, src)
	}
}

// gateStats are the sizes of a gate's tables and what its caps did, for
// the metrics.
type gateStats struct {
	pending, sources, decided int
	evicted, refused          int64
}

func (a *gateStats) add(b gateStats) {
	a.pending += b.pending
	a.sources += b.sources
	a.decided += b.decided
	a.evicted += b.evicted
	a.refused += b.refused
}

func (g *QUIC) stats() gateStats {
	g.mu.Lock()
	defer g.mu.Unlock()
	return gateStats{pending: len(g.pending), sources: len(g.perSource), decided: len(g.decided), evicted: g.evicted, refused: g.refused}
}

// sweep forgets, now and then, hellos that did not complete within the
// handshake timeout and decisions older than twice that.
func (g *QUIC) sweep(now time.Time, timeout time.Duration) {
	if now.Sub(g.swept) < min(time.Second, timeout/4) {
		return
	}
	g.swept = now
	for k, p := range g.pending {
		if now.Sub(p.start) > timeout {
			g.unpend(k)
		}
	}
	for k, d := range g.decided {
		if now.Sub(d.at) > 2*timeout {
			delete(g.decided, k)
		}
	}
}

func (g *QUIC) debug(msg string, from net.Addr, err error, fields ...zap.Field) {
	if ce := g.d.cfg.Log.Check(zap.DebugLevel, "quic: "+msg); ce != nil {
		if from != nil {
			fields = append(fields, zap.Stringer("remote", from))
		}
		ce.Write(append(fields, zap.Error(err))...)
	}
}

// addrPort is a's address, unmapped, and port.
func addrPort(a net.Addr) netip.AddrPort {
	return addrport.Unmap(rawAddrPort(a))
}

// rawAddrPort is a's address and port as the socket gave them, IPv4-mapped
// or with a zone.
func rawAddrPort(a net.Addr) netip.AddrPort {
	switch a := a.(type) {
	case nil:
		return netip.AddrPort{}
	case *net.UDPAddr:
		return a.AddrPort()
	}
	ap, _ := netip.ParseAddrPort(a.String())
	return ap
}

// ReadFrom reads the next datagram that passes the gate.
func (g *QUIC) ReadFrom(p []byte) (int, net.Addr, error) {
	ms := []ipv4.Message{{Buffers: [][]byte{p}}}
	if _, err := g.readBatch(ms); err != nil {
		return 0, nil, err
	}
	return ms[0].N, ms[0].Addr, nil
}

// Close forgets every hello and closes the socket. The links are the
// Server's to close.
func (g *QUIC) Close() error {
	g.mu.Lock()
	clear(g.pending)
	clear(g.perSource)
	clear(g.decided)
	g.queue = nil
	g.mu.Unlock()
	return g.pc.Close()
}

// SetReadDeadline sets the deadline of the gate's reads, from the socket
// or the link: quic-go sets one to stop reading when it closes.
func (g *QUIC) SetReadDeadline(t time.Time) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.readDeadline = t
	if g.link != nil {
		return g.link.SetReadDeadline(t)
	}
	return g.pc.SetReadDeadline(t)
}

func (g *QUIC) SetDeadline(t time.Time) error {
	if err := g.SetReadDeadline(t); err != nil {
		return err
	}
	return g.pc.SetWriteDeadline(t)
}

func (g *QUIC) WriteTo(p []byte, addr net.Addr) (int, error) { return g.pc.WriteTo(p, addr) }
func (g *QUIC) LocalAddr() net.Addr                          { return g.pc.LocalAddr() }
func (g *QUIC) SetWriteDeadline(t time.Time) error           { return g.pc.SetWriteDeadline(t) }

// udpGate is the gate on a *net.UDPConn. It is a quic.OOBCapablePacketConn
// with ReadBatch, so quic-go reads through the gate in batches, and finds
// the socket itself through SyscallConn for its socket options: ECN, packet
// info, DF, GSO and buffer sizes all work as on the bare socket.
type udpGate struct{ *QUIC }

var _ quic.OOBCapablePacketConn = udpGate{}

// ReadBatch reads the datagrams that pass the gate; flags are ignored.
func (g udpGate) ReadBatch(ms []ipv4.Message, _ int) (int, error) { return g.readBatch(ms) }

// ReadMsgUDP reads the next datagram that passes the gate.
func (g udpGate) ReadMsgUDP(b, oob []byte) (n, oobn, flags int, addr *net.UDPAddr, err error) {
	ms := []ipv4.Message{{Buffers: [][]byte{b}, OOB: oob}}
	if _, err := g.readBatch(ms); err != nil {
		return 0, 0, 0, nil, err
	}
	addr, _ = ms[0].Addr.(*net.UDPAddr)
	return ms[0].N, ms[0].NN, ms[0].Flags, addr, nil
}

func (g udpGate) WriteMsgUDP(b, oob []byte, addr *net.UDPAddr) (int, int, error) {
	return g.udp.WriteMsgUDP(b, oob, addr)
}
func (g udpGate) SyscallConn() (syscall.RawConn, error) { return g.udp.SyscallConn() }
func (g udpGate) SetReadBuffer(n int) error             { return g.udp.SetReadBuffer(n) }
func (g udpGate) SetWriteBuffer(n int) error            { return g.udp.SetWriteBuffer(n) }
