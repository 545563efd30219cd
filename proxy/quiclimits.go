package proxy

import (
	"context"
	"errors"
	"net/netip"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/quic-go/quic-go"
	"go.uber.org/zap"

	"github.com/bastiond/bastiond/proxy/internal/source"
	"github.com/bastiond/bastiond/proxy/tunnel"
)

// What one QUIC connection may cost before it has shown a valid token.
// Every client must answer a Retry before quic-go keeps any state for it
// (see listenQUIC), so the source these limits count is one that receives
// at its address.
const (
	// pendingPerConn is how many streams of one connection may be waiting
	// for their tunnel request at once. A client sends the request as soon
	// as it opens a stream, so only a client that opens many tunnels at
	// the same instant has more than one or two waiting; it is told to
	// try again (tunnel.ErrCodeBusy).
	pendingPerConn = 8
	// badTokensPerConn is how many requests with a bad token one
	// connection may send; the next ends the connection. A client sends
	// one token per process, so a second bad one is already a guesser.
	badTokensPerConn = 4
)

// errQUICSourceFull refuses a QUIC connection over its source's cap.
var errQUICSourceFull = errors.New("proxy: quic: too many connections from this source")

// quicLimits bounds what QUIC clients hold before they are authorized:
// connections per source (an IPv4 address or an IPv6 /64) and streams
// whose tunnel request has not arrived, per connection and in all. A
// stream over either stream cap is reset at once, before any goroutine
// waits on it.
type quicLimits struct {
	pending atomic.Int64 // streams waiting for their request, on every connection

	mu      sync.Mutex           // guards sources
	sources map[netip.Prefix]int // open QUIC connections per source
	conns   atomic.Int64         // the sum of sources
	refused [numQUICRefusals]atomic.Int64
}

// The refusals quicLimits counts, a label of bastiond_quic_refused_total.
const (
	refusedConnSource = iota // a connection over its source's cap
	refusedStreamConn        // a stream over its connection's pending cap
	refusedStreamAll         // a stream over the global pending cap
	closedBadTokens          // a connection closed after too many bad tokens
	numQUICRefusals
)

var quicRefusalNames = [numQUICRefusals]string{
	refusedConnSource: "connection_per_source",
	refusedStreamConn: "stream_per_connection",
	refusedStreamAll:  "stream_pending",
	closedBadTokens:   "bad_tokens",
}

func newQUICLimits() *quicLimits {
	return &quicLimits{sources: map[netip.Prefix]int{}}
}

// connContext is the Transport's ConnContext: quic-go calls it for a new
// connection after the address validation, before the TLS handshake, and
// refuses the connection (CONNECTION_REFUSED, no TLS state) when it
// returns an error. The connection's place is given back when its context
// ends, which quic-go does when the connection closes or its handshake
// fails.
func (s *Server) connContext(ctx context.Context, info *quic.ClientInfo) (context.Context, error) {
	src := source.Of(addrPortOf(info.RemoteAddr).Addr())
	limit := s.cfg.Load().MaxConnsPerSource
	l := s.quicLimits
	l.mu.Lock()
	if l.sources[src] >= limit {
		l.mu.Unlock()
		l.refused[refusedConnSource].Add(1)
		s.log.Debug("quic: per-source connection cap reached", zap.Stringer("source", src), zap.Int("cap", limit))
		return nil, errQUICSourceFull
	}
	l.sources[src]++
	l.conns.Add(1)
	l.mu.Unlock()
	context.AfterFunc(ctx, func() {
		l.mu.Lock()
		defer l.mu.Unlock()
		l.conns.Add(-1)
		if l.sources[src]--; l.sources[src] <= 0 {
			delete(l.sources, src)
		}
	})
	return ctx, nil
}

// quicConnState is what serveQUIC keeps for one connection.
type quicConnState struct {
	conn      *quic.Conn
	pending   atomic.Int32 // streams waiting for their request
	badTokens atomic.Int32
}

// admitStream takes a pending place for a new stream of cs, or says which
// cap refuses it.
func (l *quicLimits) admitStream(cs *quicConnState, global int) (refusal int, ok bool) {
	if cs.pending.Add(1) > pendingPerConn {
		cs.pending.Add(-1)
		return refusedStreamConn, false
	}
	if l.pending.Add(1) > int64(global) {
		l.pending.Add(-1)
		cs.pending.Add(-1)
		return refusedStreamAll, false
	}
	return 0, true
}

// requestRead gives back the pending place of a stream of cs, once its
// request is read or its reading failed.
func (l *quicLimits) requestRead(cs *quicConnState) {
	cs.pending.Add(-1)
	l.pending.Add(-1)
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
	quicPendingDesc = prometheus.NewDesc("bastiond_quic_pending_tunnel_requests",
		"QUIC streams waiting for their tunnel request, on every connection.", nil, nil)
	quicRefusedDesc = prometheus.NewDesc("bastiond_quic_refused_total",
		"QUIC connections and streams refused by a cap (reason: connection_per_source, stream_per_connection, stream_pending), and connections closed after too many bad tokens (bad_tokens).",
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
type quicCollector struct{ s *Server }

var _ prometheus.Collector = quicCollector{}

// QUICMetrics is the collector of the QUIC front door's bounded tables:
// connections per source, pending tunnel requests, the gate's pending
// hellos, and what each cap refused or evicted.
func (s *Server) QUICMetrics() prometheus.Collector { return quicCollector{s} }

func (c quicCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{quicSourcesDesc, quicConnsDesc, quicPendingDesc, quicRefusedDesc,
		quicHellosDesc, quicHelloSourcesDesc, quicHelloEvictionsDesc, quicHelloRefusedDesc} {
		ch <- d
	}
}

func (c quicCollector) Collect(ch chan<- prometheus.Metric) {
	l := c.s.quicLimits
	l.mu.Lock()
	sources := len(l.sources)
	l.mu.Unlock()
	ch <- prometheus.MustNewConstMetric(quicSourcesDesc, prometheus.GaugeValue, float64(sources))
	ch <- prometheus.MustNewConstMetric(quicConnsDesc, prometheus.GaugeValue, float64(l.conns.Load()))
	ch <- prometheus.MustNewConstMetric(quicPendingDesc, prometheus.GaugeValue, float64(l.pending.Load()))
	for i, name := range quicRefusalNames {
		ch <- prometheus.MustNewConstMetric(quicRefusedDesc, prometheus.CounterValue, float64(l.refused[i].Load()), name)
	}
	var st gateStats
	c.s.mu.Lock()
	for _, e := range c.s.quic {
		st.add(e.gate.stats())
	}
	c.s.mu.Unlock()
	ch <- prometheus.MustNewConstMetric(quicHellosDesc, prometheus.GaugeValue, float64(st.pending))
	ch <- prometheus.MustNewConstMetric(quicHelloSourcesDesc, prometheus.GaugeValue, float64(st.sources))
	ch <- prometheus.MustNewConstMetric(quicHelloEvictionsDesc, prometheus.CounterValue, float64(st.evicted))
	ch <- prometheus.MustNewConstMetric(quicHelloRefusedDesc, prometheus.CounterValue, float64(st.refused))
}
