package gate

import (
	"container/list"
	"context"
	"errors"
	"net/netip"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/quic-go/quic-go"
	"go.uber.org/zap"

	"github.com/bastiond/bastiond/internal/addrport"
	"github.com/bastiond/bastiond/internal/source"
	"github.com/bastiond/bastiond/tunnel"
)

// What one QUIC connection may cost before it has shown a valid token.
// Every client must answer a Retry before quic-go keeps any state for it
// (see proxy.Server), so the source these limits count is one that receives
// at its address.
const (
	// PendingPerConn is how many streams of one connection may be waiting
	// for their tunnel request at once. A client sends the request as soon
	// as it opens a stream, so only a client that opens many tunnels at
	// the same instant has more than one or two waiting; it is told to
	// try again (tunnel.ErrCodeBusy).
	PendingPerConn = 8
	// pendingPerSource is how many streams of one source's connections
	// may be waiting at once: a sixteenth of the default global cap, so
	// that no one source fills it.
	pendingPerSource = 64
	// maxUnauthConns is how many QUIC connections that have not shown a
	// valid token yet the bastion holds, from every source; at the cap, the
	// oldest is closed to make room. A real client sends its token as soon
	// as it has a tunnel to open (bastionctl tunnel connects first and
	// then waits for one; closed, it connects again), so a flood from many
	// sources costs at most this many connections, about 70 KiB each.
	maxUnauthConns = 2048
	// BadTokensPerConn is how many requests with a bad token one
	// connection may send; the next ends the connection. A client sends
	// one token per process, so a second bad one is already a guesser.
	BadTokensPerConn = 4
)

// errQUICSourceFull refuses a QUIC connection over its source's cap.
var errQUICSourceFull = errors.New("gate: quic: too many connections from this source")

// limits bounds what QUIC clients hold before they are authorized:
// connections per source (an IPv4 address or an IPv6 /64) and streams
// whose tunnel request has not arrived, per connection, per source and in
// all. A stream over its connection's or its source's cap is reset at
// once, before any goroutine waits on it. At the global cap, the stream
// that has waited longest is reset to make room: a real client sends its
// request within a round trip of opening the stream, so to keep others
// out, a flood would have to open streams faster than that, from many
// sources.
type limits struct {
	perSource int // Config.PendingPerSource, or pendingPerSource
	maxUnauth int // Config.MaxUnauthConns, or maxUnauthConns

	mu        sync.Mutex           // guards the fields below
	sources   map[netip.Prefix]int // open QUIC connections per source
	shaking   map[netip.Prefix]int // of them, those whose handshake is under way
	conns     int                  // the sum of sources
	pending   list.List            // of *pendingStream, oldest first
	pendingBy map[netip.Prefix]int // pending streams per source
	unauth    list.List            // of *QUICConn without a valid token yet, oldest first

	refused [numQUICRefusals]atomic.Int64
}

// The refusals limits counts, a label of bastiond_quic_refused_total.
const (
	refusedConnSource      = iota // a connection over its source's cap
	refusedStreamConn             // a stream over its connection's pending cap
	refusedStreamSource           // a stream over its source's pending cap
	evictedStream                 // a pending stream reset to make room at the global cap
	evictedConn                   // a connection without a valid token closed to make room
	closedBadTokens               // a connection closed after too many bad tokens
	refusedHandshakeSource        // a first flight dropped, or a connection refused, over its source's cap of handshakes under way
	numQUICRefusals
)

var quicRefusalNames = [numQUICRefusals]string{
	refusedConnSource:      "connection_per_source",
	refusedStreamConn:      "stream_per_connection",
	refusedStreamSource:    "stream_per_source",
	evictedStream:          "stream_evicted",
	evictedConn:            "connection_evicted",
	closedBadTokens:        "bad_tokens",
	refusedHandshakeSource: "handshake_per_source",
}

// newLimits returns the limits with the caps perSource (pending
// streams per source) and maxUnauth (connections without a valid token);
// zero is the default, pendingPerSource and maxUnauthConns.
func newLimits(perSource, maxUnauth int) *limits {
	if perSource == 0 {
		perSource = pendingPerSource
	}
	if maxUnauth == 0 {
		maxUnauth = maxUnauthConns
	}
	return &limits{perSource: perSource, maxUnauth: maxUnauth, sources: map[netip.Prefix]int{}, shaking: map[netip.Prefix]int{}, pendingBy: map[netip.Prefix]int{}}
}

// ConnContext is the quic.Transport's ConnContext: quic-go calls it for a new
// connection after the address validation, before the TLS handshake, and
// refuses the connection (CONNECTION_REFUSED, no TLS state) when it
// returns an error: over its source's cap of connections, or of
// handshakes under way (HandshakesPerSource). The connection's place is
// given back when its context ends, which quic-go does when the connection
// closes or its handshake fails; its place among the handshakes, at the
// latest then, or when Accepted is called.
func (d *Door) ConnContext(ctx context.Context, info *quic.ClientInfo) (context.Context, error) {
	src := source.Of(addrport.Parse(info.RemoteAddr.String()).Addr())
	limit := d.settings().MaxConnsPerSource
	l := d.limits
	l.mu.Lock()
	if l.sources[src] >= limit {
		l.mu.Unlock()
		l.refused[refusedConnSource].Add(1)
		d.cfg.Log.Debug("quic: per-source connection cap reached", zap.Stringer("source", src), zap.Int("cap", limit))
		return nil, errQUICSourceFull
	}
	if l.shaking[src] >= HandshakesPerSource {
		l.mu.Unlock()
		l.refused[refusedHandshakeSource].Add(1)
		d.cfg.Log.Debug("quic: per-source handshake cap reached", zap.Stringer("source", src), zap.Int("cap", HandshakesPerSource))
		return nil, errQUICHandshakesFull
	}
	l.sources[src]++
	l.conns++
	hs := &handshake{l: l, src: src}
	l.shaking[src]++
	l.mu.Unlock()
	ctx = context.WithValue(ctx, handshakeKey{}, hs)
	context.AfterFunc(ctx, func() {
		hs.done()
		l.mu.Lock()
		defer l.mu.Unlock()
		l.conns--
		if l.sources[src]--; l.sources[src] <= 0 {
			delete(l.sources, src)
		}
	})
	return ctx, nil
}

// QUICConn is what the limits keep of one QUIC connection.
type QUICConn struct {
	conn      *quic.Conn
	src       netip.Prefix
	pending   int           // streams waiting for their request; guarded by limits.mu
	unauth    *list.Element // in limits.unauth until a valid token; guarded by limits.mu
	badTokens atomic.Int32
}

// Accepted counts conn, a connection whose handshake completed, among
// those without a valid token, closing the oldest of them if there are as
// many as the cap allows. Call Gone when it ends.
func (d *Door) Accepted(conn *quic.Conn) *QUICConn {
	if hs, ok := conn.Context().Value(handshakeKey{}).(*handshake); ok {
		hs.done()
	}
	cs := &QUICConn{conn: conn, src: source.Of(addrport.Parse(conn.RemoteAddr().String()).Addr())}
	d.limits.accepted(cs)
	return cs
}

func (l *limits) accepted(cs *QUICConn) {
	var evicted *quic.Conn
	l.mu.Lock()
	if l.unauth.Len() >= l.maxUnauth {
		old := l.unauth.Remove(l.unauth.Front()).(*QUICConn)
		old.unauth = nil
		evicted = old.conn
	}
	cs.unauth = l.unauth.PushBack(cs)
	l.mu.Unlock()
	if evicted != nil {
		l.refused[evictedConn].Add(1)
		evicted.CloseWithError(tunnel.ErrCodeUnauthenticated, "too many connections without a valid token")
	}
}

// Authenticated takes cs off the list of connections without a valid
// token, for good: it showed one.
func (d *Door) Authenticated(cs *QUICConn) { d.limits.authenticated(cs) }

// Gone gives back what cs, a connection that ended, held.
func (d *Door) Gone(cs *QUICConn) { d.limits.authenticated(cs) }

// BadToken counts a request with a bad token on cs, and past
// BadTokensPerConn of them closes the connection (a guesser, not a client
// with a stale token) and reports it.
func (d *Door) BadToken(cs *QUICConn) (closed bool) {
	if cs.badTokens.Add(1) < BadTokensPerConn {
		return false
	}
	d.limits.refused[closedBadTokens].Add(1)
	cs.conn.CloseWithError(tunnel.ErrCodeBadTokens, "too many bad tokens")
	return true
}

func (l *limits) authenticated(cs *QUICConn) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if cs.unauth != nil {
		l.unauth.Remove(cs.unauth)
		cs.unauth = nil
	}
}

// Pending is a stream waiting for its tunnel request.
type Pending struct {
	cs   *QUICConn
	str  *quic.Stream
	elem *list.Element // nil once its place is given back
}

// Conn is the connection of p.
func (p *Pending) Conn() *QUICConn { return p.cs }

// AdmitStream takes a place for str, a new stream of cs, among those
// waiting for their request, or resets it (tunnel.ErrCodeBusy), counts and
// logs the refusal and returns nil. Call RequestRead once its request is
// read, or its reading failed.
func (d *Door) AdmitStream(cs *QUICConn, str *quic.Stream) *Pending {
	ps, why := d.limits.admitStream(cs, str, d.settings().MaxPendingTunnels)
	if ps == nil {
		d.limits.refused[why].Add(1)
		refuseStream(str)
		if ce := d.cfg.Log.Check(zap.DebugLevel, "quic: tunnel stream refused"); ce != nil {
			ce.Write(zap.Stringer("client", cs.conn.RemoteAddr()), zap.String("reason", quicRefusalNames[why]))
		}
	}
	return ps
}

// admitStream takes a pending place for str, a new stream of cs, under
// the global cap of global streams, or says which cap refuses it.
func (l *limits) admitStream(cs *QUICConn, str *quic.Stream, global int) (ps *Pending, refusal int) {
	var evicted *quic.Stream
	defer func() {
		if evicted != nil {
			l.refused[evictedStream].Add(1)
			refuseStream(evicted) // its goroutine's read fails, and it ends
		}
	}()
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case cs.pending >= PendingPerConn:
		return nil, refusedStreamConn
	case l.pendingBy[cs.src] >= l.perSource:
		return nil, refusedStreamSource
	}
	if l.pending.Len() >= global {
		old := l.pending.Front().Value.(*Pending)
		l.unpend(old)
		evicted = old.str
	}
	ps = &Pending{cs: cs, str: str}
	ps.elem = l.pending.PushBack(ps)
	cs.pending++
	l.pendingBy[cs.src]++
	return ps, 0
}

// RequestRead gives back the pending place of ps, once its request is
// read or its reading failed (if it was not evicted already).
func (d *Door) RequestRead(ps *Pending) { d.limits.requestRead(ps) }

func (l *limits) requestRead(ps *Pending) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if ps.elem != nil {
		l.unpend(ps)
	}
}

func (l *limits) unpend(ps *Pending) {
	l.pending.Remove(ps.elem)
	ps.elem = nil
	ps.cs.pending--
	if l.pendingBy[ps.cs.src]--; l.pendingBy[ps.cs.src] <= 0 {
		delete(l.pendingBy, ps.cs.src)
	}
}

// PendingLen is the number of streams waiting for their request.
func (d *Door) PendingLen() int { return d.limits.pendingLen() }

func (l *limits) pendingLen() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.pending.Len()
}

// refuseStream resets str in both directions with tunnel.ErrCodeBusy.
func refuseStream(str *quic.Stream) {
	str.CancelRead(tunnel.ErrCodeBusy)
	str.CancelWrite(tunnel.ErrCodeBusy)
}

var (
	quicSourcesDesc = prometheus.NewDesc("bastiond_quic_sources",
		"Sources (IPv4 addresses, IPv6 /64s) with QUIC connections open, the size of the per-source table.", nil, nil)
	quicConnsDesc = prometheus.NewDesc("bastiond_quic_connections",
		"QUIC connections open or in their handshake.", nil, nil)
	quicUnauthDesc = prometheus.NewDesc("bastiond_quic_unauthenticated_connections",
		"QUIC connections past their handshake that have not shown a valid token yet.", nil, nil)
	quicPendingDesc = prometheus.NewDesc("bastiond_quic_pending_tunnel_requests",
		"QUIC streams waiting for their tunnel request, on every connection.", nil, nil)
	quicPendingSourcesDesc = prometheus.NewDesc("bastiond_quic_pending_tunnel_request_sources",
		"Sources (IPv4 addresses, IPv6 /64s) with QUIC streams waiting for their tunnel request.", nil, nil)
	quicRefusedDesc = prometheus.NewDesc("bastiond_quic_refused_total",
		"QUIC connections and streams refused by a cap (reason: connection_per_source, stream_per_connection, stream_per_source), streams waiting for their request reset to make room at the global cap (stream_evicted), connections without a valid token closed to make room (connection_evicted), connections closed after too many bad tokens (bad_tokens), and first flights dropped or connections refused while their source had too many handshakes under way (handshake_per_source).",
		[]string{"reason"}, nil)
	quicHellosDesc = prometheus.NewDesc("bastiond_quic_pending_hellos",
		"QUIC first flights the gate holds until their ClientHello is whole, the size of its table.", nil, nil)
	quicHelloSourcesDesc = prometheus.NewDesc("bastiond_quic_pending_hello_sources",
		"Sources (IPv4 addresses, IPv6 /64s) with first flights held by the gate.", nil, nil)
	quicHelloEvictionsDesc = prometheus.NewDesc("bastiond_quic_pending_hello_evictions_total",
		"First flights the gate forgot to make room in its full table.", nil, nil)
	quicHelloRefusedDesc = prometheus.NewDesc("bastiond_quic_pending_hello_refused_total",
		"Initials the gate dropped because their source held as many incomplete first flights as it may.", nil, nil)
)

// quicCollector reports the QUIC limits' tables to Prometheus.
type quicCollector struct{ d *Door }

var _ prometheus.Collector = quicCollector{}

// QUICMetrics is the collector of the QUIC front door's bounded tables:
// connections per source, pending tunnel requests, the gate's pending
// hellos, and what each cap refused or evicted.
func (d *Door) QUICMetrics() prometheus.Collector { return quicCollector{d} }

func (c quicCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{quicSourcesDesc, quicConnsDesc, quicUnauthDesc, quicPendingDesc, quicPendingSourcesDesc, quicRefusedDesc,
		quicHellosDesc, quicHelloSourcesDesc, quicHelloEvictionsDesc, quicHelloRefusedDesc} {
		ch <- d
	}
}

func (c quicCollector) Collect(ch chan<- prometheus.Metric) {
	l := c.d.limits
	l.mu.Lock()
	sources, conns, pending, pendingSources, unauth := len(l.sources), l.conns, l.pending.Len(), len(l.pendingBy), l.unauth.Len()
	l.mu.Unlock()
	ch <- prometheus.MustNewConstMetric(quicUnauthDesc, prometheus.GaugeValue, float64(unauth))
	ch <- prometheus.MustNewConstMetric(quicSourcesDesc, prometheus.GaugeValue, float64(sources))
	ch <- prometheus.MustNewConstMetric(quicConnsDesc, prometheus.GaugeValue, float64(conns))
	ch <- prometheus.MustNewConstMetric(quicPendingDesc, prometheus.GaugeValue, float64(pending))
	ch <- prometheus.MustNewConstMetric(quicPendingSourcesDesc, prometheus.GaugeValue, float64(pendingSources))
	for i, name := range quicRefusalNames {
		ch <- prometheus.MustNewConstMetric(quicRefusedDesc, prometheus.CounterValue, float64(l.refused[i].Load()), name)
	}
	var st gateStats
	for _, g := range c.d.quicGates() {
		st.add(g.stats())
	}
	ch <- prometheus.MustNewConstMetric(quicHellosDesc, prometheus.GaugeValue, float64(st.pending))
	ch <- prometheus.MustNewConstMetric(quicHelloSourcesDesc, prometheus.GaugeValue, float64(st.sources))
	ch <- prometheus.MustNewConstMetric(quicHelloEvictionsDesc, prometheus.CounterValue, float64(st.evicted))
	ch <- prometheus.MustNewConstMetric(quicHelloRefusedDesc, prometheus.CounterValue, float64(st.refused))
}
